"""The project's own PostgreSQL server, started in ``$VISIONLEDGER_HOME/pg`` when no server URL is given.

PostgreSQL refuses to run as root, so when we are root the server runs as an
unprivileged system user (``postgres`` by default, ``VISIONLEDGER_PG_USER`` to change it); where that user
cannot enter the home, the cluster lives under ``RELOCATED_ROOT`` and ``$VISIONLEDGER_HOME/pg`` links to it.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from catalog.filelock import FileLock

DATABASE = "visionledger"
# Where a cluster goes when the server user cannot reach its home (see EmbeddedPostgres._relocate_if_unreachable).
RELOCATED_ROOT = Path("/var/lib/visionledger")
ADMIN_ROLE = "visionledger_admin"  # superuser made by initdb; only bootstraps roles and databases
OWNER_ROLE = "visionledger_owner"  # owns the schema; migrations run as this role
# Login roles and the group role each belongs to; the group roles' grants are made by the migrations.
LOGIN_ROLES = {
    "visionledger_app": "visionledger_writer",
    "visionledger_analyst": "visionledger_reader",
    "visionledger_auditor": "visionledger_reader",
}
GROUP_ROLES = ("visionledger_writer", "visionledger_reader")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot be found, initialised or started; the message says what to do."""


@dataclass(frozen=True)
class ServerInfo:
    host: str
    port: int
    passwords: dict[str, str]

    def url(self, role: str, *, database: str = DATABASE, driver: str = "postgresql+psycopg") -> str:
        """A connection URL for ``role``; ``driver="postgresql"`` gives a DSN that psql accepts."""
        return f"{driver}://{role}:{self.passwords[role]}@{self.host}:{self.port}/{database}"


def find_pg_bin(explicit: Path | None = None) -> Path:
    """Locate the server binaries: ``PG_BIN``, ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``, then
    the ``pgserver`` wheel."""
    candidates: list[Path] = []
    if explicit is not None:
        if not (explicit / "initdb").exists():
            raise EmbeddedPostgresError(f"PG_BIN={explicit} holds no initdb; point it at PostgreSQL's bin directory")
        return explicit
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.CalledProcessError):
            pass
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    candidates += [Path(p) for p in versions]
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found (looked at PG_BIN, pg_config --bindir, /usr/lib/postgresql/*/bin "
        "and the pgserver wheel): install them (apt-get install postgresql-15, or pip install pgserver), "
        "or set VISIONLEDGER_DATABASE_URL to use an existing server"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedPostgres:
    """One PostgreSQL cluster under ``home/pg``, with its credentials in ``home/postgres.json`` (mode 0600); a
    subclass names other places (`catalog.embedded_replica`)."""

    CLUSTER = "pg"  # the cluster's folder under the home (or its link), and its relocated folder's prefix
    STATE_FILE = "postgres.json"

    def __init__(self, home: Path, *, pg_bin: Path | None = None, server_user: str | None = None):
        self.home = Path(home)
        link = self.home / self.CLUSTER
        # A cluster relocated because the server user cannot reach the home (`_initdb`) is found by its link.
        self._place(link.resolve() if link.is_symlink() else link)
        self.state_file = self.home / self.STATE_FILE
        self._pg_bin = pg_bin
        self._server_user = server_user or os.environ.get("VISIONLEDGER_PG_USER") or "postgres"

    # -- public -----------------------------------------------------------------------------------------

    def start(self) -> ServerInfo:
        """Initialise the cluster if needed, start it unless it already runs, and make sure the roles and
        the database exist. Safe to call from several processes at once."""
        self.home.mkdir(parents=True, exist_ok=True)
        with FileLock(self.home / ".postgres.lock"):
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            info = self._load_state()
            if not self.running():
                self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
            self._wait_ready(info)
            self._bootstrap(info)
            return info

    def stop(self) -> bool:
        """Stop the server (fast shutdown); False if it was not running."""
        if not self.running():
            return False
        self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
        return True

    def running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        result = self._run([str(self.pg_bin / "pg_ctl"), "status", "-D", str(self.data_dir)], check=False)
        return result.returncode == 0

    def info(self) -> ServerInfo:
        """Connection facts of an initialised cluster (it may be stopped)."""
        if not self.state_file.exists():
            raise EmbeddedPostgresError(f"no embedded PostgreSQL in {self.home}: run `visionledger db start`")
        return self._load_state()

    @property
    def pg_bin(self) -> Path:
        if self._pg_bin is None:
            self._pg_bin = find_pg_bin()
        return self._pg_bin

    # -- running commands as the server user ------------------------------------------------------------

    def _server_account(self) -> pwd.struct_passwd | None:
        """The account to run the server as: None means "as ourselves" (we are not root)."""
        if os.geteuid() != 0:
            return None
        try:
            account = pwd.getpwnam(self._server_user)
        except KeyError:
            raise EmbeddedPostgresError(
                f"PostgreSQL refuses to run as root and there is no unprivileged user {self._server_user!r} "
                "to run it as: create one (useradd --system --create-home postgres), name another with "
                "VISIONLEDGER_PG_USER, run as a normal user, or set VISIONLEDGER_DATABASE_URL to use an "
                "existing server"
            ) from None
        if account.pw_uid == 0:
            raise EmbeddedPostgresError(f"VISIONLEDGER_PG_USER={self._server_user!r} is root; name an unprivileged user")
        return account

    def _run(self, args: list[str], *, check: bool = True,
             password: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a server program as the server user; ``password`` is the one its connection logs in with."""
        account = self._server_account()
        kwargs: dict = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        if password is not None:
            env["PGPASSWORD"] = password  # not on the command line, where `ps` shows it
        if account is not None:
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            env["HOME"] = account.pw_dir
        # start_new_session: a Ctrl-C in our terminal must not kill the server we leave running.
        result = subprocess.run(
            args, capture_output=True, text=True, env=env, cwd="/", start_new_session=True, **kwargs
        )
        if check and result.returncode != 0:
            log_tail = ""
            if self.log_file.exists():
                log_tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
                + (f"\nlast lines of {self.log_file}:\n{log_tail}" if log_tail else "")
            )
        return result

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self.pg_bin / "pg_ctl"), *args[:1], "-D", str(self.data_dir), *args[1:]])

    def _place(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_file = root / "server.log"

    def _relocate_if_unreachable(self, account: pwd.struct_passwd) -> None:
        """A home the server user cannot walk down to (a clone under /root, say) keeps the cluster under
        RELOCATED_ROOT instead, one folder per home, with ``home/pg`` a link to it; nothing above the home
        has its permissions changed. Raises, saying what to do, when that place is out of reach too."""
        try:
            self._check_reachable(account)
            return
        except EmbeddedPostgresError as unreachable:
            home_hash = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
            target = RELOCATED_ROOT / f"{self.CLUSTER}-{home_hash}"
            link, root = self.home / self.CLUSTER, self.root
            self._place(target)
            try:
                self._check_reachable(account)
            except EmbeddedPostgresError:
                self._place(root)
                raise unreachable from None
        RELOCATED_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        if target.exists():  # left by an earlier home at this path, whose credentials went with it: kept aside
            target.rename(target.with_name(f"{target.name}.stale-{int(time.time())}"))
        if link.exists() or link.is_symlink():
            link.rmdir() if link.is_dir() and not link.is_symlink() else link.unlink()
        link.symlink_to(target, target_is_directory=True)

    def _check_reachable(self, account: pwd.struct_passwd) -> None:
        """The server user must be able to walk down to its data directory."""
        groups = {g.gr_gid for g in _groups_of(account)} | {account.pw_gid}
        for directory in [*reversed(self.root.parents), self.root]:
            if not directory.exists():
                continue
            st = directory.stat()
            if st.st_uid == account.pw_uid:
                ok = bool(st.st_mode & 0o100)
            elif st.st_gid in groups:
                ok = bool(st.st_mode & 0o010)
            else:
                ok = bool(st.st_mode & 0o001)
            if not ok:
                raise EmbeddedPostgresError(
                    f"the server runs as {account.pw_name!r}, who cannot enter {directory}: "
                    f"`chmod o+x {directory}` or set VISIONLEDGER_HOME to a directory it can reach"
                )

    # -- initialisation ---------------------------------------------------------------------------------

    def _make_root(self) -> pwd.struct_passwd | None:
        """The cluster's folder, empty, where the server user reaches it, theirs and 0700 as PostgreSQL wants;
        returns that user (None: ourselves)."""
        account = self._server_account()
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(f"{self.data_dir} exists but holds no cluster; move it away and retry")
        if account is not None:
            self._relocate_if_unreachable(account)
        self.root.mkdir(parents=True, exist_ok=True)
        if account is not None:
            os.chown(self.root, account.pw_uid, account.pw_gid)
        os.chmod(self.root, 0o700)
        return account

    def _write_state(self, state: dict) -> None:
        """``state`` as the state file, readable by us alone: it holds passwords."""
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self.state_file)

    def _configure(self, settings: dict[str, str]) -> None:
        """Append ``settings`` to the cluster's postgresql.conf (the last line of a setting wins)."""
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# written by visionledger\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _initdb(self) -> None:
        account = self._make_root()
        passwords = {ADMIN_ROLE: secrets.token_urlsafe(18), OWNER_ROLE: secrets.token_urlsafe(18)}
        passwords |= {role: secrets.token_urlsafe(18) for role in LOGIN_ROLES}
        pwfile = self.root / "initdb.pw"
        pwfile.write_text(passwords[ADMIN_ROLE] + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            self._run([
                str(self.pg_bin / "initdb"), "-D", str(self.data_dir), "-U", ADMIN_ROLE, "--pwfile", str(pwfile),
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        port = free_port()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": "''",  # TCP only: socket paths under a deep home exceed 107 bytes
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "max_wal_size": "'2GB'",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
        }
        self._configure(settings)
        self._write_state({"host": "127.0.0.1", "port": port, "passwords": passwords})

    def _load_state(self) -> ServerInfo:
        state = json.loads(self.state_file.read_text())
        return ServerInfo(host=state["host"], port=int(state["port"]), passwords=state["passwords"])

    def _wait_ready(self, info: ServerInfo, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(info.url(ADMIN_ROLE, database="postgres", driver="postgresql"), connect_timeout=3):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(f"server in {self.data_dir} does not accept connections: {exc}") from exc
                time.sleep(0.2)

    def _bootstrap(self, info: ServerInfo) -> None:
        """Create the roles and the database if missing (idempotent)."""
        admin_dsn = info.url(ADMIN_ROLE, database="postgres", driver="postgresql")
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
            for group in GROUP_ROLES:
                if group not in existing:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
            for role, password in [(OWNER_ROLE, info.passwords[OWNER_ROLE])] + [
                (r, info.passwords[r]) for r in LOGIN_ROLES
            ]:
                if role not in existing:
                    conn.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
                    )
            for role, group in LOGIN_ROLES.items():
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(OWNER_ROLE))
                )


def _groups_of(account: pwd.struct_passwd):
    import grp

    return [g for g in grp.getgrall() if account.pw_name in g.gr_mem]
