"""The hash chain over the event log: each event's hash covers its content and its predecessor's hash, so that
changing, removing or inserting any event breaks every hash from there on, and a head kept outside the
database (``position:hash``) proves that nothing at or before it has changed since.

One fact, one place: the canonical form of an event is defined here and used by every writer (both event
stores, the migration that hashed the events stored before the chain) and by the verifier.

The canonical form must come out the same from what an append sends and from what the store gives back, and
PostgreSQL's jsonb rewrites JSON: it reorders keys, drops whitespace and prints numbers in plain decimal
(``1e+20`` comes back as ``100000000000000000000``). So payload and metadata are parsed (by orjson) and
written again with sorted keys, and the floats that would read back as another value are normalised: -0.0
to 0.0, and one from 1e16 up to the integer its shortest digits spell (within the integers orjson reads as
such). Numbers are compared as the doubles every reader parses them into (an edit that no double can see,
such as ``0.1`` to ``0.10000000000000000001``, is no change). Timestamps are hashed in UTC to the
microsecond, the precision both stores keep.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

HASH_SIZE = 32  # sha256
GENESIS = bytes(HASH_SIZE)  # the predecessor of position 1
_PLAIN_BELOW = 1e16  # pydantic writes smaller floats in plain decimal, and larger ones with an exponent: 1e+16
_INT_RANGE = (-(2**63), 2**64)  # the integers orjson reads as integers (and writes); others it reads as doubles


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


def event_hash(previous: bytes, position: int, event_id: uuid.UUID | str, stream_id: str, version: int,
               event_type: str, schema_version: int, payload: Any, metadata: Any, occurred_at: datetime,
               recorded_at: datetime) -> bytes:
    """sha256 of the predecessor's hash and the event's canonical content: one JSON array, written by orjson
    with sorted keys, ``payload`` and ``metadata`` as :func:`canonical_value` s, the id as its hyphenated text,
    the times in UTC as RFC 3339 (microseconds when not zero)."""
    content = orjson.dumps([position, event_id, stream_id, version, event_type, schema_version, payload, metadata,
                            occurred_at.astimezone(UTC), recorded_at.astimezone(UTC)], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(previous + content).digest()


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
