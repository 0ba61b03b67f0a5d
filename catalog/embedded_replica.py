"""A hot standby of the embedded server on the same machine, cloned with ``pg_basebackup`` and streaming its
WAL, for reads (`catalog.replica`): ``home/pg-replica``, its port and replication password in
``home/replica.json`` (mode 0600). Placed as the primary's cluster is (`EmbeddedPostgres`)."""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import time
from pathlib import Path

import psycopg
from psycopg import sql

from catalog.embedded_postgres import (
    ADMIN_ROLE,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    ServerInfo,
    free_port,
)
from catalog.filelock import FileLock
from catalog.replica import StandbyState, standby_state

REPLICATION_ROLE = "visionledger_replicator"  # may stream WAL and nothing else, from 127.0.0.1 only
SLOT = "visionledger_replica"  # the primary keeps the WAL the standby has not received yet
# A standby away for long would fill the primary's disk through its slot: past this much WAL the primary
# drops what the slot holds, and the standby must be cloned again (`db replica remove`, then `start`).
MAX_SLOT_WAL_KEEP = "8GB"
STANDBY_SETTINGS = {
    "hot_standby": "on",
    # The standby tells the primary which rows its open snapshots still see, so VACUUM there keeps them and
    # replay never cancels a long read (a dataset build) for removing its rows: the usual replay conflict.
    # The price is dead rows kept on the primary while such a read runs.
    "hot_standby_feedback": "on",
    # What conflicts remain take an exclusive lock (a migration, a partition detached for archiving): replay
    # waits this long for the reads in its way before cancelling them. Meanwhile the standby falls behind and
    # reads that cannot wait go to the primary (`catalog.replica.ReplicaReads`), so a long wait costs no one.
    "max_standby_streaming_delay": "'5min'",
}


class EmbeddedReplica(EmbeddedPostgres):
    """The home's hot standby. The embedded primary is started first when it is not running."""

    CLUSTER = "pg-replica"
    STATE_FILE = "replica.json"

    def __init__(self, home: Path, *, pg_bin: Path | None = None, server_user: str | None = None):
        super().__init__(home, pg_bin=pg_bin, server_user=server_user)
        self.primary = EmbeddedPostgres(home, pg_bin=pg_bin, server_user=server_user)

    def start(self) -> ServerInfo:
        """Clone the primary unless a standby exists, and start it unless it runs; returns how to reach it."""
        primary = self.primary.start()
        with FileLock(self.home / ".replica.lock"):
            if not (self.data_dir / "PG_VERSION").exists():
                self._clone(primary)
            info = self.info()
            if not self.running():
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
            self._wait_ready(info)
            return info

    def info(self) -> ServerInfo:
        """How to reach the standby: the primary's logins (a physical copy holds its roles) on its own port."""
        if not self.state_file.exists():
            raise EmbeddedPostgresError(f"no replica in {self.home}: run `visionledger db replica start`")
        return self._load_state()

    def _load_state(self) -> ServerInfo:
        return dataclasses.replace(self.primary.info(), port=int(json.loads(self.state_file.read_text())["port"]))

    def status(self) -> StandbyState:
        """How the running standby stands against the primary (bytes behind while the primary answers)."""
        info = self.info()
        with psycopg.connect(info.url(ADMIN_ROLE, database="postgres", driver="postgresql")) as standby:
            try:
                with psycopg.connect(self.primary.info().url(ADMIN_ROLE, database="postgres", driver="postgresql"),
                                     connect_timeout=3) as primary:
                    return standby_state(standby, primary)
            except psycopg.OperationalError:
                return standby_state(standby)

    def promote(self) -> Path:
        """Fail over: the standby becomes the home's server, in the primary's place and on its port, so every
        client's URL stays right. Refused while the primary runs (two servers taking writes would fork the log).
        Returns where the old primary's cluster was kept: never start it again beside this one."""
        if self.primary.running():
            raise EmbeddedPostgresError("the primary still runs: stop it first (`visionledger db stop`); promoting "
                                        "now would leave two servers taking writes")
        if not (self.data_dir / "PG_VERSION").exists():
            raise EmbeddedPostgresError(f"no replica in {self.home} to promote")
        port = self.primary.info().port
        if not self.running():
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
        self._pg_ctl("promote", "-w", "-t", "60")
        self.stop()
        place = self.primary.root
        retired = place.with_name(f"{place.name}.retired-{int(time.time())}")
        place.rename(retired)
        self.root.rename(place)  # home/pg, or its link's target, now names the promoted cluster
        link = self.home / self.CLUSTER
        if link.is_symlink():
            link.unlink()
        promoted = EmbeddedPostgres(self.home, pg_bin=self._pg_bin, server_user=self._server_user)
        promoted._configure({"port": str(port)})
        self.state_file.unlink()
        promoted.start()
        return retired

    def remove(self) -> bool:
        """Stop the standby, drop its slot on the primary (which then keeps no WAL for it) and delete its
        cluster; False if there was none."""
        if not self.state_file.exists():
            return False
        self.stop()
        with psycopg.connect(self.primary.start().url(ADMIN_ROLE, database="postgres", driver="postgresql"),
                             autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                         " WHERE slot_name = %s", [SLOT])
        shutil.rmtree(self.root)
        link = self.home / self.CLUSTER
        if link.is_symlink():
            link.unlink()
        self.state_file.unlink()
        return True

    # -- cloning ---------------------------------------------------------------------------------------

    def _clone(self, primary: ServerInfo) -> None:
        self._make_root()
        password = secrets.token_urlsafe(18)
        with psycopg.connect(primary.url(ADMIN_ROLE, database="postgres", driver="postgresql"),
                             autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [REPLICATION_ROLE]).fetchone()
            conn.execute(sql.SQL("{} ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(REPLICATION_ROLE), sql.Literal(password)))
            if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [SLOT]).fetchone():
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", [SLOT])
            conn.execute(sql.SQL("ALTER SYSTEM SET max_slot_wal_keep_size = {}").format(
                sql.Literal(MAX_SLOT_WAL_KEEP)))
            self._allow_only_our_replication()
            conn.execute("SELECT pg_reload_conf()")
        self._run([str(self.pg_bin / "pg_basebackup"), "-h", primary.host, "-p", str(primary.port),
                   "-U", REPLICATION_ROLE, "-D", str(self.data_dir), "--write-recovery-conf", "--slot", SLOT,
                   "--wal-method=stream", "--checkpoint=fast", "--no-password"], password=password)
        port = free_port()
        self._configure({"port": str(port), **STANDBY_SETTINGS})
        self._write_state({"host": primary.host, "port": port, "replication_password": password})

    def _allow_only_our_replication(self) -> None:
        """The primary's pg_hba.conf lets only the replication role stream, only from 127.0.0.1 (initdb's
        lines let any replication-capable role, the superuser among them, stream from anywhere local)."""
        hba = self.primary.data_dir / "pg_hba.conf"
        lines = [line for line in hba.read_text().splitlines()
                 if line.lstrip().startswith("#") or line.split()[1:2] != ["replication"]]
        lines.append(f"host    replication     {REPLICATION_ROLE}  127.0.0.1/32            scram-sha-256")
        hba.write_text("\n".join(lines) + "\n")  # in place: the file keeps its owner and mode
