"""Commands for the catalog's PostgreSQL server: start, stop, status, url, dagster-url, upgrade."""

from __future__ import annotations

import sys

import click

from apps.cli.common import console, out
from catalog.database import connection_urls, dagster_database_url, libpq_dsn, upgrade
from catalog.embedded_postgres import EmbeddedPostgres
from catalog.settings import Settings


@click.group()
def db() -> None:
    """The catalog's PostgreSQL server: the embedded one unless VISIONLEDGER_DATABASE_URL is set."""


@db.command("start")
def db_start() -> None:
    """Start the embedded server (reusing a running one) and apply the migrations."""
    settings = Settings.from_env()
    urls = connection_urls(settings)
    if not settings.embedded:
        console.print("VISIONLEDGER_DATABASE_URL is set: using that server, starting nothing")
    upgrade(urls.owner)
    console.print(f"catalog ready at {libpq_dsn(urls.app).split('@')[-1]} (schema migrated)")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    settings = _embedded_only("stop")
    stopped = EmbeddedPostgres(settings.home, pg_bin=settings.pg_bin).stop()
    console.print("stopped" if stopped else "was not running")


@db.command("status")
def db_status() -> None:
    """Say whether the embedded server runs, and where."""
    settings = Settings.from_env()
    if not settings.embedded:
        console.print("external server (VISIONLEDGER_DATABASE_URL); nothing embedded")
        return
    server = EmbeddedPostgres(settings.home, pg_bin=settings.pg_bin)
    if server.running():
        info = server.info()
        out.print(f"running: 127.0.0.1:{info.port}, data in {server.data_dir}")
    else:
        out.print(f"not running (home {settings.home})")
        sys.exit(3)


@db.command("url")
@click.option("--role", default="app", show_default=True,
              type=click.Choice(["app", "owner", "analyst", "auditor", "admin"]),
              help="app appends; owner migrates; analyst and auditor only read")
def db_url(role: str) -> None:
    """Print a DSN that psql accepts, for one role."""
    settings = Settings.from_env()
    urls = connection_urls(settings)
    url = {"app": urls.app, "owner": urls.owner, "admin": urls.admin, **urls.readers}.get(role)
    if url is None:
        raise click.ClickException(f"no {role} URL: roles other than app and owner exist only on the embedded server")
    out.print(libpq_dsn(url), soft_wrap=True)


@db.command("dagster-url")
@click.option("--database", default="dagster", show_default=True)
def db_dagster_url(database: str) -> None:
    """Print the URL for Dagster's storage on this server (dagster.postgres.yaml reads it from
    VISIONLEDGER_DAGSTER_DATABASE_URL), creating the database on the embedded server if needed."""
    out.print(dagster_database_url(Settings.from_env(), database=database), soft_wrap=True)


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (as the owner role)."""
    urls = connection_urls(Settings.from_env())
    upgrade(urls.owner)
    console.print("schema at head")


def _embedded_only(action: str) -> Settings:
    settings = Settings.from_env()
    if not settings.embedded:
        raise click.ClickException(f"VISIONLEDGER_DATABASE_URL is set: there is no embedded server to {action}")
    return settings
