"""Ingesting a delivery: every manifest row becomes an ImageIngested (the file decoded, hashed, stored once
by content) or an ImageRejected with its reason code; the run goes on past bad rows.

Idempotent: event ids are derived from the row's facts, so the same delivery twice appends nothing.
Crash-safe: blobs are staged, then their events appended, then the blobs promoted; a run killed anywhere
is repaired by the next one (staged blobs with an event are promoted, the others discarded), so there is
never a blob without its event, an event without its blob, or a duplicate.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import catalog
from catalog.events import MAX_NAME_LENGTH, ImageRejected, RejectReason, printable
from catalog.filelock import FileLock
from catalog.lookups import ingested_in_log
from catalog.store import NewEvent, event_id_for
from imaging.intake import Inspected, Limits, Rejected, ingested_event
from ingestion.inspect_file import init_worker, inspect
from ingestion.tables import TableRow, field_problem, parse_aware_timestamp, read_table

MANIFEST_COLUMNS = ("path", "part_id", "line", "station", "camera", "captured_at")
MANIFEST_NAMES = ("part_id", "line", "station", "camera")  # identifiers; the path and other columns are text


@dataclass(frozen=True)
class RejectedRow:
    row: int
    path: str
    reason: str
    detail: str


class Quarantined:
    """What a report of an import says of the rows it quarantined (its ``rejected_rows``)."""

    rejected_rows: list[RejectedRow]

    @property
    def rejected(self) -> int:
        return len(self.rejected_rows)

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejected_rows).items()))


@dataclass
class IngestReport(Quarantined):
    """What one run did. ``ingested``: new images; ``duplicates``: bytes already in the catalog seen again
    (another path or part: one image, one more sighting); ``already_ingested``: rows an earlier run recorded."""

    ingested: int = 0
    duplicates: int = 0
    already_ingested: int = 0
    rejected_rows: list[RejectedRow] = field(default_factory=list)
    recovered_blobs: int = 0
    discarded_blobs: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "ingested": self.ingested, "duplicates": self.duplicates, "already_ingested": self.already_ingested,
            "rejected": self.rejected, "rejected_by_reason": self.rejected_by_reason(),
            "rejected_rows": [asdict(r) for r in self.rejected_rows],
            "recovered_blobs": self.recovered_blobs, "discarded_blobs": self.discarded_blobs,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Row:
    """A manifest row that passed the field checks, waiting for its file's verdict."""

    number: int
    values: dict[str, str]
    captured_at: datetime


def ingest(cat: catalog.Catalog, manifest: Path, *, root: Path | None = None, column_map: dict[str, str] | None = None,
           limits: Limits | None = None, workers: int | None = None, batch_size: int = 256, actor: str | None = None,
           progress: Callable[[int, int], None] | None = None) -> IngestReport:
    """Ingest the delivery described by ``manifest`` (paths relative to it), refusing any file outside
    ``root`` (default: the manifest's folder)."""
    started = time.perf_counter()
    limits = limits or Limits()
    manifest = Path(manifest)
    root = Path(root) if root is not None else manifest.parent
    report = IngestReport()
    rows = list(read_table(manifest, required=MANIFEST_COLUMNS, column_map=column_map))
    delivery = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    metadata = {"actor": actor or os.environ.get("USER", "ingest"), "source": f"ingest:{manifest.name}",
                "correlation_id": delivery}
    with FileLock(cat.settings.home / ".ingest.lock"):
        report.recovered_blobs, report.discarded_blobs = cat.blobs.recover(functools.partial(ingested_in_log, cat))
        checked = [_check_fields(row) for row in rows]
        to_open = [row for row in checked if isinstance(row, _Row)]
        verdicts = _inspect_all(root, manifest.parent, to_open, cat, limits, workers)
        batch: list[tuple[_Row | TableRow, Inspected | Rejected]] = []
        seen: set[str] = set()
        done = 0
        for row, verdict in _merge(checked, verdicts):
            batch.append((row, verdict))
            if len(batch) >= batch_size:
                _record(cat, batch, seen, metadata, report)
                done += len(batch)
                batch = []
                if progress:
                    progress(done, len(rows))
        _record(cat, batch, seen, metadata, report)
        if progress:
            progress(len(rows), len(rows))
    cat.catch_up()
    report.seconds = time.perf_counter() - started
    return report


def _check_fields(row: TableRow) -> _Row | tuple[TableRow, Rejected]:
    """The checks that need no file: required fields present, values the catalog can store, a timezone-aware
    capture time."""
    missing = [c for c in MANIFEST_COLUMNS if not row.values.get(c)]
    if missing:
        return row, Rejected(RejectReason.MISSING_FIELD, f"empty field(s): {', '.join(missing)}")
    if (problem := field_problem(row.values, names=MANIFEST_NAMES)) is not None:
        return row, Rejected(RejectReason.BAD_FIELD, problem)
    try:
        captured_at = parse_aware_timestamp(row.values["captured_at"])
    except ValueError as exc:
        return row, Rejected(RejectReason.BAD_TIMESTAMP, f"captured_at {exc}")
    return _Row(row.number, row.values, captured_at)


def _inspect_all(root: Path, base: Path, rows: list[_Row], cat: catalog.Catalog, limits: Limits,
                 workers: int | None) -> Iterator[Inspected | Rejected]:
    """Every file checked, decoded, hashed and staged on all cores, in manifest order."""
    task = functools.partial(_inspect_row, root=root, base=base, blob_root=cat.settings.blob_root,
                             thumbnail_root=cat.settings.thumbnail_root, limits=limits)
    paths = [row.values["path"] for row in rows]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < 8:
        init_worker()
        yield from map(task, paths)
        return
    # forkserver: workers must not inherit the parent's database connections
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ingestion.inspect_file"])  # workers fork with OpenCV already imported
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker) as pool:
        yield from pool.map(task, paths, chunksize=8)


def _inspect_row(relative: str, *, root: Path, base: Path, blob_root: Path, thumbnail_root: Path,
                 limits: Limits) -> Inspected | Rejected:
    # Manifest paths are relative to the manifest; the delivery root is the boundary they must stay in.
    return inspect(root, os.path.relpath(base / relative, root) if not os.path.isabs(relative) else relative,
                   blob_root, thumbnail_root, limits)


def _merge(checked: list, verdicts: Iterator[Inspected | Rejected]):
    """Rows back in manifest order with their verdicts (field failures need no file)."""
    for item in checked:
        if isinstance(item, _Row):
            yield item, next(verdicts)
        else:
            yield item


def _record(cat: catalog.Catalog, batch: list, seen: set[str], metadata: dict[str, str], report: IngestReport) -> None:
    """Append one batch's events, then make its staged blobs visible."""
    if not batch:
        return
    events: list[NewEvent] = []
    kinds: list[str] = []
    for row, verdict in batch:
        if isinstance(verdict, Rejected):
            events.append(_rejection(row, verdict, metadata))
            kinds.append("rejected")
            report.rejected_rows.append(RejectedRow(row.number, row.values.get("path", ""), verdict.reason.value,
                                                    verdict.detail))
            continue
        kinds.append("duplicate" if verdict.already_stored or verdict.sha256 in seen else "new")
        seen.add(verdict.sha256)
        events.append(_ingested(row, verdict, cat.settings, metadata))
    cat.blobs.sync()  # staged bytes durable before any event names them
    result = cat.append(events, catch_up=False)
    stored_before = set(result.duplicates)
    for event, kind in zip(events, kinds, strict=True):
        if kind == "rejected":
            continue
        if event.event_id in stored_before:
            report.already_ingested += 1
        elif kind == "new":
            report.ingested += 1
        else:
            report.duplicates += 1
    for sha in {e.data.sha256 for e, k in zip(events, kinds, strict=True) if k != "rejected"}:
        cat.blobs.promote(sha)


def _ingested(row: _Row, found: Inspected, settings: catalog.Settings, metadata: dict[str, str]) -> NewEvent:
    values = row.values
    return ingested_event(found, settings, part_id=values["part_id"], line=values["line"],
                          station=values["station"], camera=values["camera"], captured_at=row.captured_at,
                          source_path=values["path"], metadata=metadata,
                          extra={k: v for k, v in values.items() if k not in MANIFEST_COLUMNS and v})


def _rejection(row: _Row | TableRow, rejected: Rejected, metadata: dict[str, str]) -> NewEvent:
    key = hashlib.sha256(json.dumps(row.values, sort_keys=True).encode()).hexdigest()[:40]
    # The quarantine keeps the row as it can be stored and read: control characters written out, long values cut.
    shown = {printable(k, MAX_NAME_LENGTH): printable(v) for k, v in row.values.items()}
    data = ImageRejected(delivery_key=key, reason=rejected.reason, detail=rejected.detail,
                         source_path=shown.get("path") or None, sha256=rejected.sha256, row=shown)
    occurred = row.captured_at if isinstance(row, _Row) else datetime.now(UTC)
    return NewEvent(data=data, occurred_at=occurred, event_id=event_id_for("rejected", key), metadata=metadata)
