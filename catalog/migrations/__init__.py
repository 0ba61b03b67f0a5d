"""Alembic migrations of the catalog schema; applied by `visionledger db upgrade`, by `db start`, and by
`catalog.open()` on the embedded server."""
