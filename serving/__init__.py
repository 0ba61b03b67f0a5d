"""Inference engines behind a thin HTTP API, appending every prediction as an event (later issues)."""
