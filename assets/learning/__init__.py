"""The learn half of the loop as assets: trained models, ONNX exports, the classifier's engine, evaluations,
embeddings, the review queue, heatmaps and the regression replay that gates promotion."""
