"""The embedded PostgreSQL: found, started as an unprivileged user, reused, stopped, and clear when it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from catalog.database import connection_urls, libpq_dsn
from catalog.embedded_postgres import (
    OWNER_ROLE,
    RELOCATED_ROOT,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    find_pg_bin,
)
from catalog.settings import Settings
from tests.conftest import reachable_tempdir

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only a root caller must hand the server to another user")


def test_running_server_is_reused(pg_server):
    server = EmbeddedPostgres(pg_server.home)
    pid_before = (server.data_dir / "postmaster.pid").read_text().split()[0]
    info = server.start()
    assert info.port == pg_server.info.port
    assert (server.data_dir / "postmaster.pid").read_text().split()[0] == pid_before


@needs_root
def test_server_runs_as_the_unprivileged_user(pg_server):
    server = EmbeddedPostgres(pg_server.home)
    assert server.data_dir.stat().st_uid != 0
    with psycopg.connect(pg_server.admin_dsn()) as conn:
        assert conn.execute("SHOW data_directory").fetchone()[0] == str(server.data_dir)


def test_url_is_a_dsn_that_psql_accepts(pg_server):
    psql = shutil.which("psql") or str(find_pg_bin() / "psql")
    dsn = pg_server.info.url("visionledger_app", driver="postgresql")
    result = subprocess.run([psql, dsn, "-Atc", "SELECT current_user"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "visionledger_app"


def test_stop_then_start_keeps_the_data():
    home = reachable_tempdir("vl-test-cycle-") / "home"
    server = EmbeddedPostgres(home)
    try:
        info = server.start()
        dsn = info.url("visionledger_owner", driver="postgresql")
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        assert server.stop() and not server.running()
        assert server.stop() is False
        assert server.start().port == info.port
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        server.stop()
        shutil.rmtree(home.parent, ignore_errors=True)


def test_external_url_starts_nothing(tmp_path: Path):
    settings = Settings(home=tmp_path / "home", database_url="postgresql://u:p@db.example:5432/vl")
    urls = connection_urls(settings)
    assert urls.app == "postgresql+psycopg://u:p@db.example:5432/vl" and urls.owner == urls.app
    assert libpq_dsn(urls.app) == "postgresql://u:p@db.example:5432/vl"
    assert not (tmp_path / "home").exists()


def test_pg_bin_without_initdb_is_reported(tmp_path: Path):
    with pytest.raises(EmbeddedPostgresError, match="holds no initdb"):
        find_pg_bin(tmp_path)


@needs_root
def test_missing_server_user_says_what_to_do():
    home = reachable_tempdir("vl-test-nouser-") / "home"
    with pytest.raises(EmbeddedPostgresError, match="refuses to run as root and there is no unprivileged user"):
        EmbeddedPostgres(home, server_user="no_such_user_vl").start()
    shutil.rmtree(home.parent, ignore_errors=True)


@needs_root
def test_a_home_the_server_user_cannot_reach_keeps_its_cluster_where_it_can():
    # A clone under /root, say: the cluster goes under RELOCATED_ROOT, home/pg links to it, and nothing
    # above the home has its permissions changed.
    locked = reachable_tempdir("vl-test-locked-") / "locked"
    locked.mkdir(mode=0o700)
    server = EmbeddedPostgres(locked / "home")
    try:
        info = server.start()
        link = locked / "home" / "pg"
        assert link.is_symlink() and link.resolve().parent == RELOCATED_ROOT
        assert (locked.stat().st_mode & 0o777) == 0o700
        with psycopg.connect(info.url(OWNER_ROLE, driver="postgresql")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        again = EmbeddedPostgres(locked / "home")  # another process finds the same cluster through the link
        assert again.data_dir == server.data_dir and again.running()
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(locked.parent, ignore_errors=True)
