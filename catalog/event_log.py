"""What an event store is, whatever it keeps its events in: the event envelope, the interface every backend
implements (``EventLog``: PostgreSQL in ``catalog.store``, SQLite in ``catalog.sqlite_store``), and the checks
and serialisation every append does before it takes its backend's lock (``prepare_events``).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, NamedTuple

import orjson

from catalog.chain import (
    EMPTY_HEAD,
    GENESIS,
    ChainHead,
    ChainReport,
    canonical_text,
    content_digest,
    stored_event_hash,
)
from catalog.errors import EventValidationError
from catalog.events import EventData, event_class, parse_event, text_problem

# who and what caused an event; a signed act adds its signature (signer, signed_at, meaning: identity/), and a
# served event the client's address and the server's own receive time.
SIGNATURE_KEYS = ("signer", "signed_at", "meaning")
METADATA_KEYS = {"actor", "source", "causation_id", "correlation_id", *SIGNATURE_KEYS, "client_addr", "received_at"}


@dataclass(frozen=True)
class Signature:
    """A signed act's signature, as its event's metadata records it (`identity.signatures.sign` makes one when the
    signer has re-entered their password): who signed, when, and what the signature means."""

    signer: str  # a username
    signed_at: datetime
    meaning: str  # "reviewed" | "approved" (`identity.signatures.Meaning`)

    @property
    def actor(self) -> str:
        return f"user:{self.signer}"

    def metadata(self) -> dict[str, str]:
        """The event metadata that records this signature, with the signer as the actor."""
        return {"actor": self.actor, "signer": self.signer, "signed_at": self.signed_at.isoformat(),
                "meaning": str(self.meaning)}

    def __str__(self) -> str:
        return f"signed by {self.signer} ({self.meaning}) at {self.signed_at.isoformat(sep=' ', timespec='seconds')}"


def signature_of(metadata: Mapping[str, Any]) -> Signature | None:
    """The signature an event's metadata records, or None unless it has all of signer, signed_at and meaning."""
    if not all(metadata.get(key) for key in SIGNATURE_KEYS):
        return None
    return Signature(signer=str(metadata["signer"]), signed_at=datetime.fromisoformat(str(metadata["signed_at"])),
                     meaning=str(metadata["meaning"]))


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended: typed data, when it happened on the line, and who or what caused it."""

    data: EventData
    occurred_at: datetime
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stream_id(self) -> str:
        return self.data.stream_id

    @property
    def type(self) -> str:
        return self.data.type_name()


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored, with its global position, per-stream version and chain hash (catalog.chain)."""

    position: int
    event_id: uuid.UUID
    stream_id: str
    version: int
    type: str
    schema_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    hash: bytes

    @cached_property
    def data(self) -> EventData:
        """The typed event, upcast to the current schema version of its type."""
        return parse_event(self.type, self.payload, self.schema_version, stored=True)


@dataclass(frozen=True)
class AppendResult:
    """What an append did: the position of every given event, in the given order (the stored position for
    an event id that was already there), and which event ids were already stored."""

    positions: list[int]
    duplicates: list[uuid.UUID]

    @property
    def appended(self) -> int:
        return len(self.positions) - len(self.duplicates)

    @property
    def all_duplicates(self) -> bool:
        return bool(self.positions) and self.appended == 0


# A stored event's columns, in the order RecordedEvent takes them: each backend selects these to build one.
RECORDED_COLUMNS = ", ".join(f.name for f in fields(RecordedEvent))


class PreparedEvent(NamedTuple):
    """One event checked and serialised for a backend, outside its append lock: its payload in canonical form
    (the text the store keeps) and its content digest (what the chain links under the lock)."""

    event_id: uuid.UUID
    stream_id: str
    type: str
    schema_version: int
    payload: str  # JSON text, catalog.chain.canonical_text
    metadata: str  # JSON text, canonical too
    occurred_at: datetime
    digest: bytes  # catalog.chain.content_digest


def prepare_events(events: Sequence[NewEvent]) -> list[PreparedEvent]:
    """Check and serialise every event (:func:`prepare_event`), or raise an EventValidationError saying what
    is wrong."""
    metadata_json: dict[tuple, str] = {}
    prepared = [prepare_event(event, metadata_json) for event in events]
    if len({p.event_id for p in prepared}) != len(prepared):
        raise EventValidationError("the same event_id appears twice in one append")
    return prepared


def prepare_event(event: NewEvent, metadata_json: dict[tuple, str]) -> PreparedEvent:
    """Check and serialise one event (its payload was validated when its model was built), or raise an
    EventValidationError saying what is wrong. ``metadata_json`` keeps the metadata already checked and
    serialised: a batch usually shares one, done once."""
    data = event.data
    if not isinstance(data, EventData):
        raise EventValidationError(f"event data must be one of the catalog's event types, not {type(data).__name__}")
    kind = event_class(data.type_name())  # refuses unregistered subclasses
    if not isinstance(event.occurred_at, datetime) or event.occurred_at.tzinfo is None:
        raise EventValidationError(
            f"{kind.__name__}.occurred_at must be a timezone-aware datetime, got {event.occurred_at!r}"
        )
    if not isinstance(event.event_id, uuid.UUID):
        raise EventValidationError(f"event_id must be a UUID, got {event.event_id!r}")
    key = tuple(event.metadata.items())
    metadata = metadata_json.get(key)
    if metadata is None:
        unknown = set(event.metadata) - METADATA_KEYS
        if unknown:
            raise EventValidationError(f"unknown metadata keys {sorted(unknown)}; allowed: {sorted(METADATA_KEYS)}")
        for name, value in key:  # an actor with a NUL could never be stored, and would jam a spool
            if value is not None and (problem := text_problem(str(value))) is not None:
                raise EventValidationError(f"metadata {name}: {problem}")
        metadata = metadata_json[key] = orjson.dumps({k: str(v) for k, v in key if v is not None},
                                                     option=orjson.OPT_SORT_KEYS).decode()
    # pydantic's own encoder, several times cheaper than model_dump + a JSON library; the canonical form then
    # sorts its keys (jsonb keeps them in no order the verifier could rebuild otherwise)
    payload = canonical_text(data.model_dump_json())
    stream_id, type_name, schema_version = data.stream_id, kind.__name__, kind.schema_version
    return PreparedEvent(event.event_id, stream_id, type_name, schema_version, payload, metadata, event.occurred_at,
                         content_digest(event.event_id, stream_id, type_name, schema_version, payload, metadata,
                                        event.occurred_at))


class StoredLink(NamedTuple):
    """An event as stored, for verifying the chain: payload and metadata as the store's JSON text, to be put in
    canonical form again (catalog.chain.canonical_text), and the hash stored with it."""

    position: int
    event_id: uuid.UUID | str
    stream_id: str
    version: int
    type: str
    schema_version: int
    payload: str
    metadata: str
    occurred_at: datetime
    recorded_at: datetime
    hash: bytes


def follow_chain(links: Iterable[StoredLink], head: ChainHead, *, against: ChainHead | None = None) -> ChainReport:
    """Recompute the hashes of ``links`` (stored events in position order, wherever they are kept: the table or
    the lake's archive) onto the chain whose verified ``head`` precedes them, and stop at the first position
    that breaks it: a missing position, or an event whose stored hash does not follow (its content, or the hash
    itself, was changed). With ``against`` (a head kept outside), the event at its position must carry its hash."""
    previous, position = head.hash, head.position
    for link in links:
        expected = position + 1
        if link.position != expected:
            return ChainReport(ChainHead(position, previous), position, expected,
                               f"position {expected} is missing: the next event stored is at {link.position}")
        if link.hash != stored_event_hash(previous, *link[:-1]):  # every column but the hash
            return ChainReport(ChainHead(position, previous), position, expected,
                               f"the event at position {expected} does not match its hash: its content, "
                               "its hash or its predecessor's was changed")
        if against is not None and expected == against.position and link.hash != against.hash:
            return ChainReport(ChainHead(position, previous), position, expected,
                               f"the event at position {expected} no longer has the hash {against}: "
                               "the log at or before it was rewritten")
        previous, position = link.hash, expected
    return ChainReport(ChainHead(position, previous), position)


WaitForAppend = Callable[[float | None], None]


class EventLog(ABC):
    """An append-only log of events: the interface of every event store. Each backend keeps these promises,
    and tests/catalog/test_store_contract.py checks them against each one, under concurrent writers too:

    - **One global order.** Every event has a position; positions run 1, 2, 3 ... in commit order, and a reader
      never sees a hole: when it has read up to position N, no event will later appear below N, so a reader
      that resumes after N misses nothing. One append's new events take consecutive positions, in the given
      order. ``recorded_at`` (when the store recorded the event) never decreases along positions.
    - **Streams.** Each event belongs to the stream its data names; its version counts the stream's events from
      1, without holes.
    - **Optimistic concurrency.** An append that states the version it expects a stream at raises
      :class:`ConcurrencyError` and appends nothing when the stream has moved on: of several writers that read
      the same version and append expecting it, exactly one succeeds.
    - **Idempotency.** An event id is stored once. Appending it again stores nothing and reports it as a
      duplicate, at its stored position; the same id with other content raises :class:`EventIdConflict`.
    - **Atomicity.** An append stores all of its new events or none; an invalid envelope raises
      :class:`EventValidationError` before anything is stored.
    - **Immutability.** Stored events are never changed or removed.
    - **A hash chain.** Each event's hash links its content digest (computed by :func:`prepare_events`) to its
      predecessor's hash, under the append lock (``catalog.chain``), so every backend computes the same chain;
      :meth:`verify_chain` recomputes it from what the store gives back.
    """

    # -- appending -------------------------------------------------------------------------------------

    @abstractmethod
    def append(self, events: Sequence[NewEvent], *, expected_versions: Mapping[str, int] | None = None) -> AppendResult:
        """Append ``events`` atomically, in order.

        ``expected_versions`` maps stream ids to the version the caller last saw (0: the stream must not
        exist yet); a mismatch raises :class:`ConcurrencyError` and appends nothing. An event whose id is
        already stored is not stored again (it is reported in ``duplicates``); the same id with other content
        raises :class:`EventIdConflict`.
        """

    def append_batches(self, batches: Iterable[Sequence[NewEvent]]) -> Iterator[AppendResult]:
        """Append each of ``batches`` as :meth:`append` does (each atomically, in the given order), yielding
        each one's result once it is stored; a bulk load's way. A failed batch raises: the batches before it
        are stored, none after it."""
        for batch in batches:
            yield self.append(batch)

    def append_one(self, event: NewEvent, *, expected_version: int | None = None) -> AppendResult:
        """Append a single event; ``expected_version`` as in :meth:`append` for its stream."""
        expected = {event.stream_id: expected_version} if expected_version is not None else None
        return self.append([event], expected_versions=expected)

    # -- reading ---------------------------------------------------------------------------------------

    @abstractmethod
    def head(self) -> int:
        """The position of the last committed event (0 for an empty log)."""

    @abstractmethod
    def read(self, after: int = 0, *, upto: int | None = None, limit: int | None = 10_000,
             types: Iterable[str] | None = None) -> list[RecordedEvent]:
        """Events with ``after < position <= upto`` (no upper bound when ``upto`` is None), of the given
        ``types`` (any when None), in position order, at most ``limit`` of them (all when None)."""

    def iter_events(self, after: int = 0, *, upto: int | None = None, page_size: int = 10_000) -> Iterator[list[RecordedEvent]]:
        """Pages of events after ``after`` (up to ``upto``, or the head at the time each page is read)."""
        while True:
            page = self.read(after, upto=upto, limit=page_size)
            if not page:
                return
            yield page
            after = page[-1].position

    @abstractmethod
    def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        """Every event of one stream, in version order (empty for a stream with no events)."""

    def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Every event of each of ``stream_ids``, in version order, read together (a trace's images and part)."""
        return {stream_id: self.read_stream(stream_id) for stream_id in stream_ids}

    @abstractmethod
    def stream_version(self, stream_id: str) -> int:
        """The version of the stream's last event (0 for a stream with no events)."""

    def position_at(self, moment: datetime) -> int:
        """The last position recorded at or before ``moment`` (timezone-aware): the catalog as it was then."""
        if moment.tzinfo is None:
            raise EventValidationError(f"as-of time must be timezone-aware, got {moment!r}")
        return self._last_position_recorded_by(moment.astimezone(UTC))

    @abstractmethod
    def _last_position_recorded_by(self, moment: datetime) -> int:
        """:meth:`position_at` for a moment already checked and in UTC."""

    # -- the hash chain (catalog.chain) ----------------------------------------------------------------

    def chain_head(self) -> ChainHead:
        """The head position and its event's hash: keep it outside the database, and :meth:`verify_chain`
        against it later proves that nothing at or before it changed."""
        last = self.read(max(self.head() - 1, 0), limit=1)
        return ChainHead(last[0].position, last[0].hash) if last else EMPTY_HEAD

    def verify_chain(self, *, against: ChainHead | None = None, page_size: int = 10_000,
                     progress: Callable[[int, int], None] | None = None) -> ChainReport:
        """Recompute every event's hash from its stored content and its predecessor's, in pages (memory stays
        bounded whatever the log's size), and stop at the first position that breaks the chain: a missing
        position, or an event whose stored hash does not follow (its content, or the hash itself, was
        changed). With ``against`` (a head kept outside), the event at that position must still carry that
        hash, and the log must reach it."""
        total = self.head()
        report = ChainReport(EMPTY_HEAD, 0)
        while page := self._links(report.head.position, page_size):
            report = follow_chain(page, report.head, against=against)
            if not report.ok:
                return report
            if progress:
                progress(report.events, max(total, report.events))
        head, position = report.head, report.events
        if against is not None and position < against.position:
            return ChainReport(head, position, position + 1,
                               f"the log ends at position {position}, before the head held outside ({against}): "
                               "events were removed")
        if against is not None and against.position == 0 and against.hash != GENESIS:
            return ChainReport(head, position, 0, f"{against} is not the empty log's head")
        return report

    @abstractmethod
    def _links(self, after: int, limit: int) -> list[StoredLink]:
        """Up to ``limit`` stored events after position ``after``, in position order, as :class:`StoredLink` s."""

    def tail(self, after: int = 0, *, idle_timeout: float = 1.0, page_size: int = 1_000) -> Iterator[RecordedEvent]:
        """Follow the log from ``after``: yield every event once, in order, waiting for new ones; stop after
        ``idle_timeout`` seconds without a new event (never, if infinite)."""
        with self._waiting_for_appends() as wait_for_append:
            idle_since = time.monotonic()
            while True:
                page = self.read(after, limit=page_size)
                yield from page
                if page:
                    after = page[-1].position
                    idle_since = time.monotonic()
                    continue
                remaining = idle_timeout - (time.monotonic() - idle_since)
                if remaining <= 0:
                    return
                wait_for_append(None if math.isinf(remaining) else remaining)

    @abstractmethod
    def _waiting_for_appends(self) -> AbstractContextManager[WaitForAppend]:
        """A function that returns once another append may have committed, or after at most the given seconds
        (None: no limit). It is entered before :meth:`tail` first reads, so an append that commits after that
        read still wakes it."""


def event_id_for(*parts: object) -> uuid.UUID:
    """A deterministic event id from a natural key, so that re-delivering the same fact appends nothing."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "visionledger:" + json.dumps([str(p) for p in parts]))
