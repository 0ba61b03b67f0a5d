"""Test fixtures: one real PostgreSQL started by the test session, and a fresh migrated database per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

import catalog
from catalog.database import libpq_dsn, upgrade
from catalog.embedded_postgres import OWNER_ROLE, EmbeddedPostgres, ServerInfo
from catalog.settings import Settings
from ingestion.factory_delivery import deliver_factory
from ingestion.simulated_factory import simulate_factory

# Fixtures of a catalog with a trained model and its engine, shared by the serving and app tests.
pytest_plugins = ["tests.engine_fixtures"]

TEMPLATE = "vl_test_template"


@dataclass(frozen=True)
class TestServer:
    home: Path
    info: ServerInfo

    def admin_dsn(self) -> str:
        return self.info.url("visionledger_admin", database="postgres", driver="postgresql")

    def url(self, role: str, database: str) -> str:
        return self.info.url(role, database=database)


@dataclass(frozen=True)
class TestDatabase:
    name: str
    server: TestServer
    settings: Settings  # external-server settings pointing at this database, with a private home for the lake

    def url(self, role: str) -> str:
        return self.server.url(role, self.name)

    def dsn(self, role: str) -> str:
        return libpq_dsn(self.url(role))

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (CLI) that should use this database."""
        return {
            **os.environ,
            "VISIONLEDGER_HOME": str(self.settings.home),
            "VISIONLEDGER_DATABASE_URL": self.settings.database_url,
            "VISIONLEDGER_ADMIN_DATABASE_URL": self.settings.admin_database_url,
            "VISIONLEDGER_ANALYST_DATABASE_URL": self.url("visionledger_analyst"),
            "VISIONLEDGER_AUDITOR_DATABASE_URL": self.url("visionledger_auditor"),
        }


def reachable_tempdir(prefix: str) -> Path:
    """A temp dir the unprivileged server user can enter (mkdtemp makes 0700 dirs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    root = reachable_tempdir("vl-test-pg-")
    server = EmbeddedPostgres(root / "home")
    info = server.start()
    test_server = TestServer(home=root / "home", info=info)
    with psycopg.connect(test_server.admin_dsn(), autocommit=True) as conn:
        # Throwaway databases: no flushes to disk. The fault tests kill clients and stop servers cleanly; none
        # simulates the machine losing power, and the suite spends much of its time creating databases.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(f"CREATE DATABASE {TEMPLATE} OWNER {OWNER_ROLE}")
    upgrade(test_server.url(OWNER_ROLE, TEMPLATE))
    yield test_server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def database_at_revision(pg_server: TestServer, home: Path, revision: str) -> Iterator[Settings]:
    """A fresh database migrated up to ``revision`` only, for a migration's test to fill as the code of that
    time did before migrating it further; dropped afterwards."""
    name = f"vl_test_{revision}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.admin_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
    try:
        upgrade(pg_server.url(OWNER_ROLE, name), revision)
        yield Settings(home=home, database_url=pg_server.url("visionledger_app", name),
                       admin_database_url=pg_server.url(OWNER_ROLE, name))
    finally:
        with psycopg.connect(pg_server.admin_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database(pg_server: TestServer, tmp_path: Path) -> Iterator[TestDatabase]:
    name = f"vl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.admin_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} OWNER {OWNER_ROLE}")
    home = reachable_tempdir("vl-test-home-")
    settings = Settings(
        home=home,
        database_url=pg_server.url("visionledger_app", name),
        admin_database_url=pg_server.url(OWNER_ROLE, name),
    )
    yield TestDatabase(name=name, server=pg_server, settings=settings)
    with psycopg.connect(pg_server.admin_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def cat(database: TestDatabase) -> Iterator[catalog.Catalog]:
    with catalog.open(database.settings) as opened:
        yield opened


FACTORY_DAYS = 4  # the drift schedule's dimming, stuck pixels and dust all show by the fourth day


@pytest.fixture(scope="session")
def factory_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny simulated factory (128 px images, 4 days), rendered once per test session."""
    folder = tmp_path_factory.mktemp("factory") / "tiny"
    simulate_factory(folder, days=FACTORY_DAYS, seed=3, size="tiny", image_size=128, workers=1)
    return folder


@pytest.fixture
def factory_cat(cat: catalog.Catalog, factory_dir: Path) -> catalog.Catalog:
    """A fresh catalog holding the tiny factory's ontology, images, labels and corrections."""
    deliver_factory(cat, factory_dir, actor="test", workers=1)
    return cat
