"""Cross-checks of what the catalog stores: the log, its blobs, its projections and its lake mirror agree,
nothing lost, doubled or left half-written. Used after crashes in tests and by `visionledger check`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from catalog.blobs import URI_PREFIX, LocalBlobStore
from catalog.chain import ChainHead, ChainReport
from catalog.events import LogRangeArchived, image_of_stream
from catalog.store import HORIZON

if TYPE_CHECKING:
    from catalog import Catalog


@dataclass(frozen=True)
class ConsistencyReport:
    images: int
    blobs: int
    artifacts: int = 0  # other blobs the log names by URI (label masks, checkpoints, ONNX files, engines)
    events_without_blob: list[str] = field(default_factory=list)
    blobs_without_event: list[str] = field(default_factory=list)
    staged_blobs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.events_without_blob or self.blobs_without_event or self.staged_blobs)


def check_blobs(cat: Catalog, blobs: LocalBlobStore) -> ConsistencyReport:
    """Compare the blobs the log names (images, and the masks and artifacts its payloads name by URI) and the
    lake's heatmaps name with the blobs on disk."""
    with cat.db.connect() as conn:
        horizon = conn.exec_driver_sql(HORIZON).scalar()  # first: see catalog.store.HORIZON
        image_streams = {row[0] for row in conn.exec_driver_sql(
            "SELECT DISTINCT stream_id FROM catalog.events WHERE type = 'ImageIngested'")}
        # Other blobs are named by URI in a payload field: label masks, checkpoints, ONNX files, engines.
        uris = {row[0] for row in conn.exec_driver_sql(
            "SELECT DISTINCT f.value FROM catalog.events, jsonb_each_text(payload) f"
            " WHERE type <> 'ImageIngested' AND f.value LIKE %(prefix)s", {"prefix": URI_PREFIX + "%"})}
    archived_streams, archived_uris = cat.archive.blob_names(horizon, URI_PREFIX)
    images = {image_of_stream(stream) for stream in image_streams | archived_streams}
    artifacts = {uri.removeprefix(URI_PREFIX) for uri in uris | archived_uris}
    # The heatmaps asset's overlays are kept as blobs and named by its lake tables, not by an event.
    heatmaps = {uri.removeprefix(URI_PREFIX) for uri in cat.lake.heatmap_uris()}
    known = images | artifacts | heatmaps
    stored = set(blobs.all())
    return ConsistencyReport(
        images=len(images), blobs=len(stored), artifacts=len(artifacts - images),
        events_without_blob=sorted(known - stored),
        blobs_without_event=sorted(stored - known),
        staged_blobs=blobs.staged(),
    )


@dataclass(frozen=True)
class CatalogReport:
    """What :func:`check_catalog` found; each list names what is wrong (empty when nothing is)."""

    head: int
    events: int
    lake_position: int
    blobs: ConsistencyReport
    chain: ChainReport  # every event's hash recomputed from genesis (and against a head kept outside, if given)
    position_gaps: list[tuple[int, int]] = field(default_factory=list)  # (first, last) missing positions
    duplicate_event_ids: list[str] = field(default_factory=list)
    stream_version_gaps: list[str] = field(default_factory=list)  # streams whose versions are not 1..n
    projections_differing: list[str] = field(default_factory=list)  # tables unequal to a rebuild from the log
    lake_missing: list[int] = field(default_factory=list)  # positions up to the lake checkpoint not mirrored
    lake_doubled: list[int] = field(default_factory=list)  # positions mirrored more than once
    lake_mismatched: list[int] = field(default_factory=list)  # mirrored with another id, type or content
    lake_beyond_checkpoint: list[int] = field(default_factory=list)  # mirrored past the checkpoint
    lake_sync_interrupted: bool = False  # an intent or staged files left by a killed sync, not yet recovered
    archived_through: int = 0  # positions up to here are read from the lake's archive (catalog.archive)
    archive_problems: list[str] = field(default_factory=list)  # archive files unlike their LogRangeArchived records

    @property
    def ok(self) -> bool:
        return self.blobs.ok and self.chain.ok and not (
            self.position_gaps or self.duplicate_event_ids or self.stream_version_gaps
            or self.projections_differing or self.lake_missing or self.lake_doubled or self.lake_mismatched
            or self.lake_beyond_checkpoint or self.lake_sync_interrupted or self.archive_problems
        )

    def problems(self) -> list[str]:
        """One line per kind of problem, for people (empty when ``ok``)."""
        found = {
            "events without their blob": self.blobs.events_without_blob,
            "blobs without their event": self.blobs.blobs_without_event,
            "blobs staged but never promoted": self.blobs.staged_blobs,
            "missing positions (first, last)": self.position_gaps,
            "event ids stored twice": self.duplicate_event_ids,
            "streams whose versions are not 1..n": self.stream_version_gaps,
            "projections unequal to a rebuild": self.projections_differing,
            "positions missing from the lake": self.lake_missing,
            "positions mirrored twice in the lake": self.lake_doubled,
            "positions whose lake copy differs from the log": self.lake_mismatched,
            "positions mirrored past the lake checkpoint": self.lake_beyond_checkpoint,
        }
        lines = [f"{what}: {len(items)} (first: {items[:5]})" for what, items in found.items() if items]
        if not self.chain.ok:
            lines.insert(0, f"the hash chain breaks at position {self.chain.broken_at}: {self.chain.problem}")
        if self.lake_sync_interrupted:
            lines.append("a lake sync was interrupted: run `visionledger lake sync` to recover it")
        lines += [f"archive: {problem}" for problem in self.archive_problems]
        return lines


def check_catalog(cat: Catalog, *, against: ChainHead | None = None,
                  progress: Callable[[int, int], None] | None = None) -> CatalogReport:
    """Cross-check the whole catalog: the log (gap-free positions, unique ids, stream versions 1..n, every
    event's hash in the chain, and, given ``against``, a head kept outside still in it), its blobs, its
    projections (against a rebuild from the log; needs the ``app`` role) and its lake mirror (each event
    exactly once up to the lake's checkpoint, with the same content). ``progress(done, total)`` follows the
    chain's verification, the part that grows with the log."""
    chain = cat.store.verify_chain(against=against, progress=progress)
    with cat.db.connect() as conn:
        horizon = conn.exec_driver_sql(HORIZON).scalar()  # first: see catalog.store.HORIZON
        live_events, head = conn.exec_driver_sql(
            "SELECT count(*), coalesce(max(position), 0) FROM catalog.events").one()
        gaps = [(int(a), int(b)) for a, b in conn.exec_driver_sql(
            "SELECT prev + 1, position - 1 FROM (SELECT position, coalesce(lag(position) OVER (ORDER BY position),"
            " %(h)s) AS prev FROM catalog.events) p WHERE position <> prev + 1", {"h": horizon})]
        # Unique within the table and within the archive; across the two, the idempotency window (catalog.store).
        duplicates = [row[0] for row in conn.exec_driver_sql(
            "SELECT event_id::text FROM catalog.events GROUP BY event_id HAVING count(*) > 1 ORDER BY 1")]
        duplicates += cat.archive.duplicate_event_ids(horizon)
        # A stream's versions run 1..n across the archive (its index, archived_streams) and on in the table.
        version_gaps = [row[0] for row in conn.exec_driver_sql(
            "SELECT stream_id FROM (SELECT stream_id, min(version) AS lo, max(version) AS hi, count(*) AS n,"
            "  count(DISTINCT version) AS d FROM catalog.events GROUP BY stream_id) t"
            " FULL JOIN catalog.archived_streams a USING (stream_id)"
            " WHERE coalesce(t.lo, a.last_version + 1) <> coalesce(a.last_version, 0) + 1"
            "  OR t.hi - t.lo + 1 <> t.n OR t.n <> t.d OR a.events <> a.last_version ORDER BY 1")]
        indexed = {row[0]: tuple(row[1:]) for row in conn.exec_driver_sql(
            "SELECT stream_id, last_version, events, first_position, last_position FROM catalog.archived_streams")}
        lake_position = cat.lake.synced_position()
        # Each event's content is compared by digest as well: the lake is the log's second copy, so an event
        # altered in place (only the owner, by disabling the append-only trigger, could) shows as a mismatch.
        logged = {int(p): (e, t, d) for p, e, t, d in conn.exec_driver_sql(
            "SELECT position, event_id::text, type, md5(concat_ws('|', stream_id, version,"
            " (extract(epoch FROM occurred_at) * 1000000)::bigint, payload::text, metadata::text))"
            " FROM catalog.events WHERE position <= %(p)s", {"p": lake_position})}
    rebuilt = cat.rebuild_projections(check_only=True)
    archive_problems = _archive_problems(cat, horizon, indexed)
    mirrored: dict[int, list[tuple[str, str, str]]] = {}
    for position, event_id, event_type, digest in cat.duckdb().execute(
            "SELECT position, event_id, type, md5(concat_ws('|', stream_id, version, epoch_us(occurred_at),"
            " payload, metadata)) FROM events").fetchall():
        mirrored.setdefault(position, []).append((event_id, event_type, digest))
    return CatalogReport(
        head=head, events=horizon + live_events, lake_position=lake_position, blobs=check_blobs(cat, cat.blobs), chain=chain,
        position_gaps=gaps, duplicate_event_ids=duplicates, stream_version_gaps=version_gaps,
        projections_differing=[t.table for t in rebuilt.tables if not t.equal],
        lake_missing=sorted(logged.keys() - mirrored.keys()),
        lake_doubled=sorted(p for p, copies in mirrored.items() if len(copies) > 1),
        lake_mismatched=sorted(p for p, copies in mirrored.items()
                               if p in logged and any(c != logged[p] for c in copies)),
        lake_beyond_checkpoint=sorted(p for p in mirrored if p > lake_position),
        lake_sync_interrupted=cat.lake.sync_interrupted(),
        archived_through=horizon, archive_problems=archive_problems,
    )


def _archive_problems(cat: Catalog, horizon: int, indexed: dict[str, tuple]) -> list[str]:
    """The archive against its records: each LogRangeArchived's files as recorded (size, sha256, count, digest;
    the chain through them is verified with the rest), the records covering 1..horizon end to end, and the
    table's index of archived streams equal to what the files hold."""
    records = [e.data for e in cat.store.read(types=[LogRangeArchived.type_name()], limit=None)]
    problems = [problem for record in records for problem in cat.archive.record_problems(record)]
    covered = 0
    for record in sorted(records, key=lambda r: r.first_position):
        if record.first_position != covered + 1:
            problems.append(f"positions {covered + 1}..{record.first_position - 1} have no LogRangeArchived record")
        covered = max(covered, record.last_position)
    if covered < horizon:
        problems.append(f"positions {covered + 1}..{horizon} are gone from the table without a LogRangeArchived record")
    held = cat.archive.stream_index(horizon)
    if differing := {s for s in held.keys() | indexed.keys() if held.get(s) != indexed.get(s)}:
        problems.append(f"catalog.archived_streams differs from the archive for {len(differing)} streams"
                        f" (first: {sorted(differing)[:3]})")
    return problems
