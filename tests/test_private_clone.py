"""A root's clone in a folder the server's user cannot enter (a clone under /root, mode 0700) still starts its
catalog with the README's defaults, keeps the cluster's directory as tight as PostgreSQL wants, and stops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catalog.embedded_postgres import RELOCATED_ROOT, EmbeddedPostgres

REPOSITORY = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only a root caller hands the server to another user, who then may not enter a 0700 clone",
)


def _visionledger(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line of the clone, run from inside it on the defaults (home `./.visionledger`), as
    `make demo` runs it; the current interpreter stands in for the clone's `.venv`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VISIONLEDGER_", "PG"))}
    env["PYTHONPATH"] = str(clone)
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_clone_in_a_private_folder_starts_and_stops_its_catalog(tmp_path: Path):
    private = tmp_path / "private"  # stands for /root: Debian makes it 0700
    private.mkdir()
    private.chmod(0o700)
    clone = private / "visionledger"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPOSITORY), str(clone)],
                   check=True, capture_output=True, text=True, timeout=60)
    home = clone / ".visionledger"
    try:
        started = _visionledger(clone, "db", "start")  # starts the embedded server and migrates the schema
        assert started.returncode == 0, started.stdout + started.stderr
        assert "schema migrated" in started.stderr  # the console speaks on stderr

        server = EmbeddedPostgres(home)
        assert server.running()
        assert (home / "pg").is_symlink() and server.root.parent == RELOCATED_ROOT
        postgres = server._server_account()
        for directory in (server.root, server.data_dir):
            st = directory.stat()
            assert (st.st_mode & 0o777, st.st_uid) == (0o700, postgres.pw_uid), directory
        assert (home / "postgres.json").stat().st_mode & 0o777 == 0o600
        assert private.stat().st_mode & 0o777 == 0o700  # nothing above the home was opened up

        status = _visionledger(clone, "db", "status")
        assert status.returncode == 0 and str(server.data_dir) in status.stdout, status.stdout + status.stderr

        stopped = _visionledger(clone, "db", "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not server.running()
    finally:  # no server left running, no cluster left behind, even when an assertion failed
        leftover = EmbeddedPostgres(home)
        try:
            leftover.stop()
        finally:
            if leftover.root.parent == RELOCATED_ROOT:
                shutil.rmtree(leftover.root, ignore_errors=True)
            shutil.rmtree(private, ignore_errors=True)
