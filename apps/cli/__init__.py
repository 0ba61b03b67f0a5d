"""The `visionledger` command line: thin wrappers over the packages' Python APIs, one module per group."""

from apps.cli.main import cli, main

__all__ = ["cli", "main"]
