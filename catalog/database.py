"""Connections to the catalog's PostgreSQL: which server and roles to use, engines, and schema migrations."""

from __future__ import annotations

import select
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from catalog.embedded_postgres import ADMIN_ROLE, LOGIN_ROLES, OWNER_ROLE, EmbeddedPostgres
from catalog.embedded_replica import EmbeddedReplica
from catalog.errors import CatalogError
from catalog.partitions import ensure_partitions_at
from catalog.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Every payload read from the log is parsed; projections and the lake read millions.
set_json_loads(orjson.loads)


@dataclass(frozen=True)
class ConnectionUrls:
    """SQLAlchemy URLs per role. ``app`` appends and maintains projections; ``owner`` runs migrations;
    ``admin`` (embedded server only) creates databases; ``readers`` are read-only logins."""

    app: str
    owner: str
    admin: str | None = None
    readers: dict[str, str] = field(default_factory=dict)
    replica: tuple[str, int] | None = None  # host and port of a hot standby of this server, for reads

    def on_replica(self, url: str) -> str | None:
        """``url``'s login on the standby (None without one): a physical standby holds the primary's roles,
        passwords and databases, so only the address differs."""
        if self.replica is None:
            return None
        host, port = self.replica
        return make_url(url).set(host=host, port=port).render_as_string(hide_password=False)


def sqlalchemy_url(url: str) -> str:
    """Spell out the psycopg 3 driver for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def libpq_dsn(url: str) -> str:
    """A DSN that psql and psycopg.connect accept (no SQLAlchemy driver suffix)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


def connection_urls(settings: Settings, *, start: bool = True, database: str | None = None) -> ConnectionUrls:
    """Resolve the URLs: the configured server, or the embedded one (started unless ``start`` is False)."""
    if not settings.embedded:
        app = sqlalchemy_url(settings.database_url)
        replica = make_url(sqlalchemy_url(settings.replica_database_url)) if settings.replica_database_url else None
        return ConnectionUrls(app=app, owner=sqlalchemy_url(settings.admin_database_url or settings.database_url),
                              readers={role: sqlalchemy_url(url) for role, url in settings.reader_urls},
                              replica=(replica.host, replica.port or 5432) if replica else None)
    server = EmbeddedPostgres(settings.home, pg_bin=settings.pg_bin)
    info = server.start() if start else server.info()
    # The standby is started by `visionledger db replica start` alone; while it is down, reads go to the primary.
    standby = EmbeddedReplica(settings.home, pg_bin=settings.pg_bin)
    db = {"database": database} if database else {}
    return ConnectionUrls(
        app=info.url("visionledger_app", **db),
        owner=info.url(OWNER_ROLE, **db),
        admin=info.url(ADMIN_ROLE, database="postgres"),
        readers={role.removeprefix("visionledger_"): info.url(role, **db) for role, group in LOGIN_ROLES.items()
                 if group == "visionledger_reader"},
        replica=(info.host, standby.info().port) if standby.state_file.exists() else None,
    )


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine whose sessions speak UTC, never JIT-compile, and survive a server restart (stale connections
    are re-opened: :func:`_refuse_closed_connection`)."""
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=10,
        # A server that cannot be reached is reported within seconds, not after the OS's TCP timeout: the
        # inspection server spools its events then, and must notice quickly.
        # JIT compilation pays off for scans of many millions of rows, never for the catalog's questions; but
        # the planner's estimates for a join over a few generated days, a dataset version's history branch or
        # a large class's labels pass its cost threshold, and compiling then takes 0.7-2 s, more than the query.
        connect_args={"options": "-c timezone=UTC -c jit=off", "connect_timeout": 5},
    )
    event.listen(engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: psycopg.Connection, record: Any, proxy: Any) -> None:
    """Pessimistic disconnect handling without a round trip (SQLAlchemy's pre-ping costs two: BEGIN and SELECT 1,
    more than a one-event append itself): an idle connection between transactions has nothing to read, so a
    readable socket means the server has closed it (a restart, a terminated backend: PostgreSQL sends its
    FATAL message and hangs up). DisconnectionError makes the pool discard it and connect anew. A server that
    vanished without a word is found by the next statement, as it would be between a ping and that statement."""
    if dbapi_connection.closed or select.select([dbapi_connection.fileno()], [], [], 0)[0]:
        raise DisconnectionError("the server closed this pooled connection")


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # imported here: every process imports this module, few migrate

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(owner_url: str, revision: str = "head") -> None:
    """Apply the migrations as the schema owner; at the head, keep the event table's partitions ready ahead."""
    from alembic import command

    command.upgrade(alembic_config(owner_url), revision)
    if revision == "head":
        ensure_partitions_at(libpq_dsn(owner_url))


def current_revision(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            exists = conn.exec_driver_sql("SELECT to_regclass('catalog.alembic_version')").scalar()
            if exists is None:
                return None
            return conn.exec_driver_sql("SELECT version_num FROM catalog.alembic_version").scalar()
    finally:
        engine.dispose()


# -- Dagster's storage on the catalog's server (the variant in dagster.postgres.yaml) ---------------------------


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
