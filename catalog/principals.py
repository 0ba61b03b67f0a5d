"""The records of who acts, as the catalog keeps them: people (the users read model, and the password hashes
kept beside the log) and line stations (their tokens' read model, and the tokens' hashes). Only the writers'
group may read a hash, and the lake never mirrors one. What the records mean, and every rule of logging in or
verifying a token, is `identity`'s."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catalog import Catalog

USER_COLUMNS = ("username, full_name, roles, disabled, credential_id, password_set_at, created_at, last_login_at,"
                " failed_logins, last_failure_at")


@dataclass(frozen=True)
class UserRecord:
    """One account as the users read model has it (never the hash)."""

    username: str
    full_name: str
    roles: list[str]
    disabled: bool
    credential_id: uuid.UUID | None
    password_set_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None
    failed_logins: int  # in a row, since the last success or new password
    last_failure_at: datetime | None


def user_record(cat: Catalog, username: str) -> UserRecord | None:
    """The account as the primary holds it now: logins, lock-outs and role checks must not rest on a replica's
    lag."""
    with cat.read(latest=True) as conn:
        row = conn.exec_driver_sql(f"SELECT {USER_COLUMNS} FROM projections.users WHERE username = %(u)s",
                                   {"u": username}).first()
    return UserRecord(*row) if row else None


def user_records(cat: Catalog) -> list[UserRecord]:
    with cat.read() as conn:
        rows = conn.exec_driver_sql(f"SELECT {USER_COLUMNS} FROM projections.users ORDER BY username").fetchall()
    return [UserRecord(*row) for row in rows]


def store_password_hash(cat: Catalog, username: str, password_hash: str) -> uuid.UUID:
    """Keep a new hash; it counts once a `UserPasswordSet` names its id (a hash no event names is never used)."""
    credential_id = uuid.uuid4()
    with cat.db.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO catalog.credentials (credential_id, username, password_hash) VALUES (%(c)s, %(u)s, %(h)s)",
            {"c": credential_id, "u": username, "h": password_hash})
    return credential_id


def password_hash(cat: Catalog, credential_id: uuid.UUID, username: str) -> str | None:
    """The hash stored under ``credential_id`` for ``username`` (None if there is none)."""
    with cat.db.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT password_hash FROM catalog.credentials WHERE credential_id = %(c)s AND username = %(u)s",
            {"c": credential_id, "u": username}).scalar()


# -- line stations' tokens ---------------------------------------------------------------------------------------


def store_token_hash(cat: Catalog, token_id: str, sha256: str) -> None:
    """Keep a new token's hash; it opens nothing until a `StationTokenIssued` names its id."""
    with cat.db.begin() as conn:
        conn.exec_driver_sql("INSERT INTO catalog.station_token_hashes (token_id, sha256) VALUES (%(t)s, %(h)s)",
                             {"t": token_id, "h": sha256})


def token_hashes(cat: Catalog) -> list[tuple[Any, ...]]:
    """(token_id, line, station, cameras, expires_at, revoked, sha256) of every issued token (as a writer:
    readers cannot read hashes), as the primary holds them now: a revoked token opens nothing."""
    with cat.read(latest=True) as conn:
        return [tuple(row) for row in conn.exec_driver_sql(
            "SELECT t.token_id, t.line, t.station, t.cameras, t.expires_at, t.revoked_at IS NOT NULL, h.sha256"
            " FROM projections.station_tokens t JOIN catalog.station_token_hashes h USING (token_id)").fetchall()]


def station_token_rows(cat: Catalog) -> list[tuple[Any, ...]]:
    """(token_id, line, station, cameras, expires_at, issued_by, issued_at, revoked_at, revoked_by,
    revoke_reason) of every issued token, the newest first (no hash)."""
    with cat.read() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(
            "SELECT token_id, line, station, cameras, expires_at, issued_by, issued_at, revoked_at, revoked_by,"
            " revoke_reason FROM projections.station_tokens ORDER BY issued_at DESC, token_id").fetchall()]
