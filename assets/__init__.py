"""Dagster software-defined assets: dataset versions, training, engines, evaluations (later issues)."""
