"""Line stations' API tokens: each issued to one station of one line (optionally to some of its cameras) until
an expiry, and revocable. `visionledger tokens issue|list|revoke`; the inspection API verifies them.

A token reads ``vl_<token id>_<secret>``. The token id is public: it names the token's stream in the log
(StationTokenIssued, StationTokenRevoked), its read model (`projections.station_tokens`) and the listings. The
secret, 256 bits from `secrets`, is shown once, when the token is issued, and kept only as its SHA-256 in
`catalog.station_token_hashes`, which no event, read model or lake file copies and only the writers' group may
read. A fast hash is enough for a random secret of 256 bits (nobody can search that space, unlike a person's
password), and it keeps each request's check in microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import ValidationError

from catalog import Catalog, CatalogError, EventValidationError
from catalog.events import StationTokenIssued, StationTokenRevoked, describe_validation_error
from catalog.principals import station_token_rows, store_token_hash, token_hashes

TOKEN_PATTERN = re.compile(r"vl_([0-9a-f]{16})_([0-9a-f]{64})")
SOURCE = "tokens"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


# Compared against when a token id is unknown, so that an unknown id costs the same time as a wrong secret.
_NO_HASH = _hash("no such token")


@dataclass(frozen=True)
class StationToken:
    """A token as `tokens list` shows it: everything but its secret and hash."""

    token_id: str
    line: str
    station: str
    cameras: tuple[str, ...] | None  # None: any camera of the station
    expires_at: datetime
    issued_by: str
    issued_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued: ``token`` is the only copy of its secret there will ever be."""

    token: str
    record: StationToken


@dataclass(frozen=True)
class StationPrincipal:
    """The station a valid token speaks for."""

    token_id: str
    line: str
    station: str
    cameras: frozenset[str] | None  # None: any camera of the station

    @property
    def actor(self) -> str:
        """The actor of every event recorded on this station's behalf."""
        return f"station:{self.line}/{self.station}"

    def refuses(self, line: str, station: str, camera: str) -> str | None:
        """Why a capture at (line, station, camera) lies outside this token's scope; None when it does not."""
        if (line, station) != (self.line, self.station):
            return f"this token is for station {self.station} of line {self.line}, not station {station} of line {line}"
        if self.cameras is not None and camera not in self.cameras:
            return f"this token is for cameras {', '.join(sorted(self.cameras))} of its station, not {camera}"
        return None


class Refusal(StrEnum):
    """Why a token opens nothing. A wrong secret reads as UNKNOWN: only a token's holder learns that it has
    expired or been revoked."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class _Entry:
    principal: StationPrincipal
    sha256: str
    expires_at: datetime
    revoked: bool


class TokenView:
    """The tokens as the catalog held them when read, checked in memory: the server verifies every request
    against one and replaces it every few seconds, so it goes on answering while the catalog is away."""

    def __init__(self, entries: dict[str, _Entry]):
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str | None, now: datetime | None = None) -> StationPrincipal | Refusal:
        """The station ``token`` speaks for, or why it speaks for none; expiry is judged at ``now`` (default:
        the clock), whenever the view was read."""
        if not token:
            return Refusal.MISSING
        match = TOKEN_PATTERN.fullmatch(token)
        if match is None:
            return Refusal.MALFORMED
        token_id, secret = match.groups()
        entry = self._entries.get(token_id)
        if not hmac.compare_digest(_hash(secret), entry.sha256 if entry else _NO_HASH) or entry is None:
            return Refusal.UNKNOWN
        if entry.revoked:
            return Refusal.REVOKED
        if (now or datetime.now(UTC)) >= entry.expires_at:
            return Refusal.EXPIRED
        return entry.principal


def load_view(cat: Catalog) -> TokenView:
    """Every token of the catalog with its hash, for `TokenView.verify` (as a writer: readers cannot read hashes)."""
    return TokenView({
        token_id: _Entry(StationPrincipal(token_id, line, station, frozenset(cameras) if cameras else None),
                         sha256, expires_at, revoked)
        for token_id, line, station, cameras, expires_at, revoked, sha256 in token_hashes(cat)
    })


def verify(cat: Catalog, token: str | None, now: datetime | None = None) -> StationPrincipal | Refusal:
    """`TokenView.verify` against the catalog as it is now."""
    return load_view(cat).verify(token, now)


def issue(cat: Catalog, *, line: str, station: str, cameras: list[str] | None = None, expires_at: datetime,
          issued_by: str) -> IssuedToken:
    """A new token for ``station`` of ``line`` (only ``cameras``, when given) until ``expires_at``; the
    returned token is the only copy of its secret."""
    now = datetime.now(UTC)
    token_id, secret = secrets.token_hex(8), secrets.token_hex(32)
    try:
        data = StationTokenIssued(token_id=token_id, line=line, station=station, cameras=cameras,
                                  expires_at=expires_at, issued_by=issued_by)
    except ValidationError as exc:
        raise EventValidationError(f"StationTokenIssued: {describe_validation_error(exc)}") from None
    if data.expires_at <= now:
        raise EventValidationError(f"the token would expire at {data.expires_at.isoformat()}, which has passed")
    # The hash first: a hash whose event never got appended opens nothing (verification reads the issued
    # tokens), while an event without its hash would be a token nobody can use.
    store_token_hash(cat, token_id, _hash(secret))
    cat.record(data, occurred_at=now, actor=issued_by, source=SOURCE)
    return IssuedToken(token=f"vl_{token_id}_{secret}", record=StationToken(
        token_id=token_id, line=data.line, station=data.station,
        cameras=tuple(data.cameras) if data.cameras else None, expires_at=data.expires_at,
        issued_by=issued_by, issued_at=now))


def list_tokens(cat: Catalog) -> list[StationToken]:
    """Every token ever issued, the newest first (no secret, no hash)."""
    return [StationToken(token_id, line, station, tuple(cameras) if cameras else None, *rest)
            for token_id, line, station, cameras, *rest in station_token_rows(cat)]


def revoke(cat: Catalog, token_id: str, *, reason: str, revoked_by: str) -> bool:
    """Revoke a token; False (nothing recorded) when it was revoked already. Raises CatalogError for a token id
    the catalog never issued."""
    known = {t.token_id: t for t in list_tokens(cat)}
    if token_id not in known:
        raise CatalogError(f"no station token {token_id!r} was issued (see `visionledger tokens list`)")
    if known[token_id].revoked_at is not None:
        return False
    try:
        data = StationTokenRevoked(token_id=token_id, reason=reason, revoked_by=revoked_by)
    except ValidationError as exc:
        raise EventValidationError(f"StationTokenRevoked: {describe_validation_error(exc)}") from None
    cat.record(data, occurred_at=datetime.now(UTC), actor=revoked_by, source=SOURCE)
    return True
