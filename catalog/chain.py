"""The hash chain over the event log: each event's hash covers its content and its predecessor's hash, so that
changing, removing or inserting any event breaks every hash from there on, and a head kept outside the
database (``position:hash``) proves that nothing at or before it has changed since.

An event's hash is made in two steps, so that the work that grows with an event's size happens outside the
append lock, and the work under it is one small sha256 the database can do itself:

- its **content digest** (:func:`content_digest`), the sha256 of what the event says, whatever position it is
  stored at: its id, stream, type, schema version, payload, metadata and occurrence time. The writer computes
  it before it takes the lock.
- its **link** (:func:`chain_link`), the sha256 of the predecessor's hash, the event's position, stream version
  and recording time, and its content digest: computed under the append lock, where those are decided (by
  ``catalog.append_events`` in PostgreSQL, migration 0014, which mirrors :func:`chain_link` in SQL; by the
  SQLite store with this module's function). The link is the hash stored with the event.

One fact, one place: the canonical form and both steps are defined here and used by every writer (both event
stores, the migrations that hashed the events stored before) and by the verifier.

The canonical form must come out the same from what an append sends and from what the store gives back, and
PostgreSQL's jsonb rewrites JSON: it reorders keys, drops whitespace and prints numbers in plain decimal
(``1e+20`` comes back as ``100000000000000000000``). So payload and metadata are written with sorted keys
(:func:`canonical_text`), and the floats that would read back as another value are normalised: -0.0 to 0.0,
and one from 1e16 up to the integer its shortest digits spell (within the integers orjson reads as such).
Numbers are compared as the doubles every reader parses them into (an edit that no double can see, such as
``0.1`` to ``0.10000000000000000001``, is no change). An append sends the canonical text itself to the store,
so it is parsed once; the verifier gets it back from the stored text. Times are hashed in UTC to the
microsecond, the precision both stores keep.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

HASH_SIZE = 32  # sha256
GENESIS = bytes(HASH_SIZE)  # the predecessor of position 1
_PLAIN_BELOW = 1e16  # pydantic and orjson write smaller floats in plain decimal, and larger ones with an exponent: 1e+16
_INT_RANGE = (-(2**63), 2**64)  # the integers orjson reads as integers (and writes); others it reads as doubles
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# What a link hashes after the predecessor's hash: the position, the stream version and recorded_at in
# microseconds since the Unix epoch, each a big-endian signed 64-bit integer, then the content digest. The SQL
# function catalog.chain_link (migration 0014) spells the same bytes:
#   sha256(previous || int8send(position) || int8send(version) || int8send(recorded_micros) || digest)
_LINK_FIELDS = struct.Struct(">qqq")


def canonical_value(json_text: str) -> Any:
    """The JSON value of ``json_text``, numbers normalised (see the module's docstring); written with sorted
    keys it is the same for the text an append sent and the text the store gives back."""
    value = orjson.loads(json_text)
    # Only a float from 1e16 up (written "1e+16", read back as the integer's digits) or -0.0 comes back as
    # another value; a text that shows neither holds none and needs no walk: the common case, kept cheap.
    return _normalised(value) if "e+" in json_text or "-0.0" in json_text else value


def _normalised(value: Any) -> Any:
    """``value`` (just parsed, so changed in place) with each float that reads back otherwise made the value
    it reads back as."""
    kind = type(value)
    if kind is float:
        return _number(value)
    if kind is dict or kind is list:
        for key, item in list(value.items() if kind is dict else enumerate(value)):
            value[key] = _normalised(item)
    return value


def _number(value: float) -> int | float:
    if value == 0:
        return 0.0  # -0.0 too
    if abs(value) >= _PLAIN_BELOW and _INT_RANGE[0] <= value < _INT_RANGE[1]:
        return int(Decimal(repr(value)))  # the integer its shortest digits spell, as jsonb prints it
    return value


def canonical_text(json_text: str) -> str:
    """``json_text`` in canonical form: its :func:`canonical_value` written with sorted keys and no whitespace.
    What an append stores and digests, and what the verifier rebuilds from the stored text."""
    return orjson.dumps(canonical_value(json_text), option=orjson.OPT_SORT_KEYS).decode()


def content_digest(event_id: uuid.UUID | str, stream_id: str, event_type: str, schema_version: int, payload: str,
                   metadata: str, occurred_at: datetime) -> bytes:
    """sha256 of what an event says: one JSON array of its id (hyphenated text), stream, type, schema version,
    ``payload`` and ``metadata`` (both :func:`canonical_text`, embedded as they are) and occurrence time (UTC,
    RFC 3339, microseconds when not zero), written by orjson."""
    return hashlib.sha256(orjson.dumps([event_id, stream_id, event_type, schema_version, orjson.Fragment(payload),
                                        orjson.Fragment(metadata), occurred_at.astimezone(UTC)])).digest()


def recorded_micros(recorded_at: datetime) -> int:
    """``recorded_at`` (timezone-aware) in whole microseconds since the Unix epoch, as a link hashes it."""
    return (recorded_at - _EPOCH) // _MICROSECOND


def chain_link(previous: bytes, position: int, version: int, recorded_at: datetime, digest: bytes) -> bytes:
    """The hash of the event at ``position`` (stream ``version``, recorded at ``recorded_at``, whose content
    digest is ``digest``) that follows the hash ``previous``: the hash the store keeps with it."""
    return hashlib.sha256(previous + _LINK_FIELDS.pack(position, version, recorded_micros(recorded_at))
                          + digest).digest()


def stored_event_hash(previous: bytes, position: int, event_id: uuid.UUID | str, stream_id: str, version: int,
                      event_type: str, schema_version: int, payload: str, metadata: str, occurred_at: datetime,
                      recorded_at: datetime) -> bytes:
    """The hash an event as stored must carry, from its stored columns (``payload`` and ``metadata`` as the
    store's JSON text, in any key order and spelling of numbers): how the verifier and the migrations that
    hash stored events recompute the chain."""
    digest = content_digest(event_id, stream_id, event_type, schema_version, canonical_text(payload),
                            canonical_text(metadata), occurred_at)
    return chain_link(previous, position, version, recorded_at, digest)


@dataclass(frozen=True)
class ChainHead:
    """A position and the hash of the event there: what `visionledger log head` prints, to be kept outside the
    database, and what `visionledger check --against` proves the log still holds."""

    position: int
    hash: bytes

    def __str__(self) -> str:
        return f"{self.position}:{self.hash.hex()}"

    @classmethod
    def parse(cls, text: str) -> ChainHead:
        """``position:hexhash`` as :meth:`__str__` writes it; ValueError saying what is wrong otherwise."""
        position, sep, hex_hash = text.strip().partition(":")
        try:
            head = cls(int(position), bytes.fromhex(hex_hash))
        except ValueError:
            head = None
        if not sep or head is None or head.position < 0 or len(head.hash) != HASH_SIZE:
            raise ValueError(f"{text!r} is not a chain head: expected POSITION:HASH, {HASH_SIZE * 2} hex digits")
        return head


EMPTY_HEAD = ChainHead(0, GENESIS)


@dataclass(frozen=True)
class ChainReport:
    """What verifying the chain found: the verified head, and the first position that breaks it (None when
    none does) with what is wrong there."""

    head: ChainHead
    events: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None
