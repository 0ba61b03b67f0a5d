"""Commands for the catalog's PostgreSQL server: start, stop, status, url, dagster-url, upgrade, and its hot
standby for reads (replica start, status, stop, promote, remove)."""

from __future__ import annotations

import sys

import click

from apps.cli.common import console, out
from catalog.database import connection_urls, dagster_database_url, libpq_dsn, upgrade
from catalog.embedded_postgres import EmbeddedPostgres
from catalog.embedded_replica import EmbeddedReplica
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


@db.group()
def replica() -> None:
    """The embedded server's hot standby on this machine: reads go to it while it keeps up (else to the
    primary). VISIONLEDGER_REPLICA_DATABASE_URL names an external one instead."""


def _embedded_replica(action: str) -> EmbeddedReplica:
    settings = _embedded_only(f"{action} a replica of")
    return EmbeddedReplica(settings.home, pg_bin=settings.pg_bin)


@replica.command("start")
def replica_start() -> None:
    """Clone the embedded server into a streaming hot standby (once), and start it."""
    server = _embedded_replica("start")
    info = server.start()
    console.print(f"replica running at 127.0.0.1:{info.port}, data in {server.data_dir}")


@replica.command("status")
def replica_status() -> None:
    """Say whether the standby streams from the primary, and how far behind it is (exit 3 if not running)."""
    server = _embedded_replica("show")
    if not server.running():
        out.print(f"not running (home {server.home})")
        sys.exit(3)
    state = server.status()
    if not state.in_recovery:
        out.print(f"running at 127.0.0.1:{server.info().port} but not a standby: it was promoted")
        return
    streaming = "streaming" if state.streaming else "not streaming (is the primary running?)"
    behind = "unknown bytes (primary down)" if state.lag_bytes is None else f"{state.lag_bytes} bytes"
    paused = ", replay paused" if state.replay_paused else ""
    out.print(f"running at 127.0.0.1:{server.info().port}: {streaming}{paused}; behind the primary by {behind}, "
              f"{state.lag_seconds:.1f} s")


@replica.command("stop")
def replica_stop() -> None:
    """Stop the standby (reads go to the primary); its slot keeps WAL for it until it starts again."""
    console.print("stopped" if _embedded_replica("stop").stop() else "was not running")


@replica.command("promote")
def replica_promote() -> None:
    """Fail over: make the standby the catalog's server, in the stopped primary's place and on its port."""
    retired = _embedded_replica("promote").promote()
    console.print(f"promoted: the replica is now the catalog's server; the old primary's cluster was kept at "
                  f"{retired}: never start it again, delete it once you no longer need it")


@replica.command("remove")
def replica_remove() -> None:
    """Stop the standby, drop its slot on the primary and delete its cluster."""
    console.print("removed" if _embedded_replica("remove").remove() else "there was no replica")


def _embedded_only(action: str) -> Settings:
    settings = Settings.from_env()
    if not settings.embedded:
        raise click.ClickException(f"VISIONLEDGER_DATABASE_URL is set: there is no embedded server to {action}")
    return settings
