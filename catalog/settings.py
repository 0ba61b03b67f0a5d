"""Where the catalog lives: settings read from the environment, shared by the CLI, tests and assets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

READER_ROLES = ("analyst", "auditor")  # read-only logins: SELECT on the log and the read models, nothing else


@dataclass(frozen=True)
class Settings:
    """Locations and connection settings of one catalog.

    ``database_url`` set means "use that server and start nothing"; unset means the
    project runs its own PostgreSQL under ``home / "pg"``.
    """

    home: Path
    database_url: str | None = None
    admin_database_url: str | None = None
    pg_bin: Path | None = None
    # With ``database_url``: the read-only logins (analyst, auditor) as (role, URL) pairs; the embedded server
    # knows its own.
    reader_urls: tuple[tuple[str, str], ...] = ()
    # A hot standby of ``database_url``'s server, for reads (its host and port; the logins are the primary's).
    # The embedded server's own standby (`visionledger db replica start`) is found in the home.
    replica_database_url: str | None = None
    # A read that must see a position waits this long for the standby to replay it, then reads the primary;
    # any read goes to the primary while the standby is more than `replica_max_lag` seconds behind.
    replica_wait: float = 1.0
    replica_max_lag: float = 30.0

    @property
    def lake_root(self) -> Path:
        return self.home / "lake"

    @property
    def blob_root(self) -> Path:
        return self.home / "blobs"

    @property
    def thumbnail_root(self) -> Path:
        return self.home / "thumbnails"

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read ``VISIONLEDGER_HOME``, ``VISIONLEDGER_DATABASE_URL``, ``VISIONLEDGER_ADMIN_DATABASE_URL``,
        ``VISIONLEDGER_ANALYST_DATABASE_URL``, ``VISIONLEDGER_AUDITOR_DATABASE_URL``,
        ``VISIONLEDGER_REPLICA_DATABASE_URL``, ``VISIONLEDGER_REPLICA_WAIT_SECONDS``,
        ``VISIONLEDGER_REPLICA_MAX_LAG_SECONDS`` and ``PG_BIN``."""
        env = dict(os.environ if env is None else env)
        home = Path(env.get("VISIONLEDGER_HOME") or ".visionledger").expanduser().resolve()
        pg_bin = env.get("PG_BIN")
        return cls(
            home=home,
            database_url=env.get("VISIONLEDGER_DATABASE_URL") or None,
            admin_database_url=env.get("VISIONLEDGER_ADMIN_DATABASE_URL") or None,
            pg_bin=Path(pg_bin) if pg_bin else None,
            reader_urls=tuple((role, env[f"VISIONLEDGER_{role.upper()}_DATABASE_URL"]) for role in READER_ROLES
                              if env.get(f"VISIONLEDGER_{role.upper()}_DATABASE_URL")),
            replica_database_url=env.get("VISIONLEDGER_REPLICA_DATABASE_URL") or None,
            replica_wait=float(env.get("VISIONLEDGER_REPLICA_WAIT_SECONDS") or cls.replica_wait),
            replica_max_lag=float(env.get("VISIONLEDGER_REPLICA_MAX_LAG_SECONDS") or cls.replica_max_lag),
        )
