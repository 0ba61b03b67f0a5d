"""Alembic migrations of the catalog schema; applied by `visionledger db upgrade` and by `db start`."""
