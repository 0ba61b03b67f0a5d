"""People: accounts, roles, passwords, logging in and lock-out. Every change is an event on the person's stream
(``user:<username>``); the password hash is kept apart from the log (`catalog.principals`) and never leaves this
module. A failed login is an event too, so lock-out is a fact of the log that every process sees alike."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from catalog import Catalog
from catalog.errors import CatalogError
from catalog.events import (
    UserCreated,
    UserDisabled,
    UserEnabled,
    UserLoggedIn,
    UserLoginFailed,
    UserPasswordSet,
    UserRoleGranted,
    UserRoleRevoked,
)
from catalog.principals import UserRecord, password_hash, store_password_hash, user_record, user_records
from identity.roles import ROLES

MAX_FAILED_LOGINS = 5  # in a row; the next attempt within LOCKOUT is refused, even with the right password
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the account does not exist, so that a wrong name costs as long as a wrong password.
_DECOY_HASH = _hasher.hash("not a password anyone has")


class PeopleError(CatalogError):
    """An account change that cannot be made: an unknown or existing user, an unknown role, a weak password."""


class LoginRefused(Exception):
    """A login or signature refused. ``reason`` is for the log; ``str()`` is what the person is told, and never
    says whether the name exists."""

    def __init__(self, reason: str, message: str = "wrong user name or password"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Person:
    """Someone who just proved who they are."""

    username: str
    full_name: str
    roles: tuple[str, ...]

    @property
    def actor(self) -> str:
        """What the events this person causes record as their actor."""
        return f"user:{self.username}"


def locked_until(record: UserRecord, now: datetime | None = None) -> datetime | None:
    """When the account's lock-out ends, or None if it is not locked out now."""
    if record.failed_logins < MAX_FAILED_LOGINS or record.last_failure_at is None:
        return None
    until = record.last_failure_at + LOCKOUT
    return until if until > (now or datetime.now(UTC)) else None


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PeopleError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if password.strip() != password or not password.isprintable():
        raise PeopleError("a password may not start or end with spaces or hold control characters")


def add_user(cat: Catalog, username: str, full_name: str, password: str, roles: list[str], *, actor: str) -> None:
    """Create an account with its roles and first password."""
    if not USERNAME.match(username):
        raise PeopleError(f"{username!r} is not a user name: lower-case letters, digits, '.', '_' or '-', "
                          "starting with a letter, at most 64 characters")
    if user_record(cat, username) is not None:
        raise PeopleError(f"user {username!r} exists already")
    for role in roles:
        _known_role(role)
    check_password_strength(password)
    now = datetime.now(UTC)
    cat.record(UserCreated(username=username, full_name=full_name), occurred_at=now, actor=actor,
               expected_version=0)  # two admins adding the same name: one wins
    for role in roles:
        cat.record(UserRoleGranted(username=username, role=role), occurred_at=now, actor=actor)
    set_password(cat, username, password, actor=actor)


def set_password(cat: Catalog, username: str, password: str, *, actor: str) -> None:
    _existing(cat, username)
    check_password_strength(password)
    credential_id = store_password_hash(cat, username, _hasher.hash(password))
    cat.record(UserPasswordSet(username=username, credential_id=credential_id), occurred_at=datetime.now(UTC),
               actor=actor)


def grant(cat: Catalog, username: str, role: str, *, actor: str, reason: str = "") -> bool:
    """Give ``username`` the ``role``; False if they hold it already."""
    record = _existing(cat, username)
    if _known_role(role) in record.roles:
        return False
    cat.record(UserRoleGranted(username=username, role=role, reason=reason), occurred_at=datetime.now(UTC),
               actor=actor)
    return True


def revoke(cat: Catalog, username: str, role: str, *, actor: str, reason: str = "") -> bool:
    """Take the ``role`` from ``username``; False if they did not hold it."""
    if role not in _existing(cat, username).roles:
        return False
    cat.record(UserRoleRevoked(username=username, role=role, reason=reason), occurred_at=datetime.now(UTC),
               actor=actor)
    return True


def disable(cat: Catalog, username: str, *, actor: str, reason: str) -> bool:
    if _existing(cat, username).disabled:
        return False
    cat.record(UserDisabled(username=username, reason=reason), occurred_at=datetime.now(UTC), actor=actor)
    return True


def enable(cat: Catalog, username: str, *, actor: str, reason: str) -> bool:
    """Let a disabled person back in (this also ends a lock-out)."""
    record = _existing(cat, username)
    if not record.disabled and locked_until(record) is None:
        return False
    cat.record(UserEnabled(username=username, reason=reason), occurred_at=datetime.now(UTC), actor=actor)
    return True


def users(cat: Catalog) -> list[UserRecord]:
    return user_records(cat)


def verify_password(cat: Catalog, username: str, password: str, *, client: str = "") -> Person:
    """The person ``username`` if ``password`` is theirs and they may log in now; else `LoginRefused`, and the
    failure is recorded against an existing account (it counts towards lock-out). Records nothing on success:
    `log_in` records the login, a signature records itself in the act it signs."""
    record = user_record(cat, username) if USERNAME.match(username or "") else None
    if record is None:
        _verify(_DECOY_HASH, password)
        raise LoginRefused("unknown_user")
    now = datetime.now(UTC)
    until = locked_until(record, now)
    if until is not None:
        _failed(cat, username, "locked_out", client)
        raise LoginRefused("locked_out", "too many failed attempts: this account is locked for "
                           f"{max(1, round((until - now).total_seconds() / 60))} more minutes")
    stored = password_hash(cat, record.credential_id, username) if record.credential_id else None
    if not _verify(stored or _DECOY_HASH, password) or stored is None:
        _failed(cat, username, "wrong_password" if stored else "no_password", client)
        raise LoginRefused("wrong_password")
    if record.disabled:
        _failed(cat, username, "disabled", client)
        raise LoginRefused("disabled", "this account is disabled")
    return Person(record.username, record.full_name, tuple(record.roles))


def log_in(cat: Catalog, username: str, password: str, *, client: str = "") -> Person:
    """`verify_password`, and the login recorded (which ends a run of failures)."""
    person = verify_password(cat, username, password, client=client)
    cat.record(UserLoggedIn(username=username, client=client), occurred_at=datetime.now(UTC),
               actor=person.actor)
    return person


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _failed(cat: Catalog, username: str, reason: str, client: str) -> None:
    cat.record(UserLoginFailed(username=username, reason=reason, client=client), occurred_at=datetime.now(UTC),
               actor=f"user:{username}")


def _existing(cat: Catalog, username: str) -> UserRecord:
    record = user_record(cat, username)
    if record is None:
        raise PeopleError(f"no user {username!r}: `visionledger users list` shows them")
    return record


def _known_role(role: str) -> str:
    if role not in ROLES:
        raise PeopleError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role
