"""Dagster's own run and event storage: the instance beside the catalog (``<VISIONLEDGER_HOME>/dagster``,
local files as ``dagster.yaml`` says, where `make dagster` opens the UI and the demo records its runs), or on
the catalog's PostgreSQL server (the variant in ``dagster.postgres.yaml``): one database beside the
catalog's, owned by the schema owner."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import psycopg
from dagster._core.instance import InstanceRef  # among Dagster's documented internals
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


INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"


def instance_home(settings: Settings) -> Path:
    """The Dagster instance's folder (its ``DAGSTER_HOME``) beside the catalog of ``settings``."""
    return settings.home / "dagster"


def local_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance beside the catalog, for runs in this process (the demo's), created
    with the repository's ``dagster.yaml`` when missing; a ``dagster.yaml`` already there (the PostgreSQL
    variant, say) is kept. Close it when done.

    Its runs leave this process's stdout and stderr alone: capturing them would redirect the caller's own
    console through two `tail` and two watcher processes a run, late and dear on a small machine, and the
    assets' log lines are in the event log anyway."""
    home = instance_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides={"compute_logs": {
        "module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}}))
