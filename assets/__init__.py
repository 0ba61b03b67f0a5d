"""Dagster software-defined assets: lake snapshots, dataset versions, breakdowns and drift; training, ONNX
export, evaluation, engines, embeddings, the review queue and the regression replay in `assets.learn_loop`. The
work itself is in plain functions (`catalog`, `learning`) that the assets call."""
