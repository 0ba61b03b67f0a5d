"""Dagster's own run and event storage on the catalog's PostgreSQL server (the variant in
``dagster.postgres.yaml``): one database beside the catalog's, owned by the schema owner."""

from __future__ import annotations

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from catalog.database import connection_urls, libpq_dsn
from catalog.embedded_postgres import OWNER_ROLE
from catalog.errors import CatalogError
from catalog.settings import Settings


def dagster_database_url(settings: Settings, *, database: str = "dagster") -> str:
    """The URL for ``VISIONLEDGER_DAGSTER_DATABASE_URL``, creating the database on the embedded server when
    missing. dagster-postgres speaks psycopg2, and with SQLAlchemy 2.1 the driver must be spelled out."""
    urls = connection_urls(settings)
    owner = make_url(urls.owner)
    with psycopg.connect(libpq_dsn(urls.owner)) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
    if not exists:
        if urls.admin is None:
            raise CatalogError(
                f"no database {database!r} on {owner.host}:{owner.port}: create it for Dagster's storage "
                f"(CREATE DATABASE {database} OWNER {owner.username}) and run this again")
        with psycopg.connect(libpq_dsn(urls.admin), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                       sql.Identifier(OWNER_ROLE)))
    return owner.set(drivername="postgresql+psycopg2", database=database).render_as_string(hide_password=False)
