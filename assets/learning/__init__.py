"""The learn half of the loop as assets: trained models, ONNX exports, evaluations, embeddings, the review
queue, heatmaps and the regression replay that gates promotion."""
