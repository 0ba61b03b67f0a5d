"""Torch models, training loops, ONNX export and evaluation metrics (later issues)."""
