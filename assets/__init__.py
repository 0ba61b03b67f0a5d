"""Dagster software-defined assets: lake snapshots, dataset versions, breakdowns and drift here; training, ONNX
export, evaluation, engines, embeddings, the review queue and the regression replay in `assets.learning`."""
