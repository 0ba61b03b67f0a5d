"""The learn loop's operations as plain functions, without Dagster: training and ONNX export, evaluation,
embeddings and the review queue, heatmaps, the regression replay that gates promotion, and the cameras' drift.
The CLI, the demo and the Dagster assets (`assets`) all call them."""
