"""Backfilling image records whose pixels are kept elsewhere (a year of a line's history, say): a Parquet file of
the facts `ImageIngested` records, with an optional human label each, appended in large batches.

Every row is checked as any way in checks it (the events' own validation, the current ontology for a label);
a bad row becomes an `ImageRejected` with its reason and nothing of it is stored. Event ids come from the facts
(the same key as a delivered file's sighting, the label's id), so running the same file again appends nothing.
The read models are brought up to date once, at the end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

import catalog
from catalog.errors import CatalogError
from catalog.events import (
    MAX_NAME_LENGTH,
    ImageIngested,
    ImageRejected,
    LabelRecorded,
    RejectReason,
    describe_validation_error,
    printable,
)
from catalog.ontology import Ontology, OntologyVersion
from catalog.store import NewEvent, event_id_for
from imaging.intake import sighting_event_id
from ingestion.ingest import Quarantined, RejectedRow

REQUIRED = ("sha256", "blob_uri", "part_id", "line", "station", "camera", "captured_at", "width", "height",
            "byte_size")
OPTIONAL = ("channels", "bit_depth", "format", "source_path", "label", "labeler", "labeled_at", "label_id")
BATCH_ROWS = 10_000  # images per append: two events each when labelled
T = TypeVar("T")


class BackfillError(CatalogError):
    """A file that cannot be read as image records at all (not one bad row: the whole file)."""


@dataclass
class BackfillReport(Quarantined):
    """What one run did: images and labels appended now, rows an earlier run recorded, rows refused and why."""

    file: str
    rows: int = 0
    images: int = 0
    labels: int = 0
    already_recorded: int = 0  # events an earlier run appended
    rejected_rows: list[RejectedRow] = field(default_factory=list)  # row: its number in the file, from 1
    append_seconds: float = 0.0  # reading, checking and appending the batches (they overlap)
    catch_up_seconds: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "rows": self.rows, "images": self.images, "labels": self.labels,
                "already_recorded": self.already_recorded, "rejected": self.rejected,
                "rejected_by_reason": self.rejected_by_reason(),
                "rejected_rows": [asdict(r) for r in self.rejected_rows],
                "append_seconds": round(self.append_seconds, 3), "catch_up_seconds": round(self.catch_up_seconds, 3),
                "seconds": round(self.seconds, 3)}


def record_batches(path: Path, rows: int = BATCH_ROWS) -> tuple[int, Iterator[list[dict[str, Any]]]]:
    """The file's row count and its rows in batches; `BackfillError` if it is not Parquet with the columns."""
    try:
        source = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise BackfillError(f"cannot read {path} as Parquet: {exc}") from exc
    columns = source.schema_arrow.names
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise BackfillError(f"{path} lacks column(s) {', '.join(missing)}; it has {', '.join(columns)} "
                            f"(needed: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})")
    wanted = [c for c in (*REQUIRED, *OPTIONAL) if c in columns]
    return source.metadata.num_rows, (b.to_pylist() for b in source.iter_batches(batch_size=rows, columns=wanted))


def backfill(cat: catalog.Catalog, path: Path, *, actor: str | None = None, batch_rows: int = BATCH_ROWS,
             progress: Callable[[int, int], None] | None = None) -> BackfillReport:
    """Append the image records of the Parquet file ``path`` (and their labels), then catch the read models up.
    ``progress(done, total)`` is told the rows appended, then the events folded into the read models."""
    started = time.perf_counter()
    path = Path(path)
    total, batches = record_batches(path, batch_rows)
    report = BackfillReport(file=str(path))
    with cat.read() as conn:
        ontology = Ontology.read(conn.connection.driver_connection).current
    metadata = {"actor": actor or os.environ.get("USER", "backfill"), "source": f"backfill:{path.name}"}
    made = ((rows, *record_events(rows, ontology, metadata)) for rows in batches)
    # Each batch is read and checked in a thread one ahead, then staged while the server stores the one before.
    made, to_append = itertools.tee(_one_ahead(made))
    results = cat.append_batches(events + [e for _, e in rejected] for _, events, rejected in to_append)
    appending = time.perf_counter()
    for (rows, events, rejected), result in zip(made, results, strict=True):
        report.rejected_rows += [RejectedRow(report.rows + k + 1, e.data.source_path or "", e.data.reason.value,
                                             e.data.detail) for k, e in rejected]
        report.rows += len(rows)
        before = set(result.duplicates)
        report.already_recorded += len(before)
        fresh = Counter(type(e.data) for e in events if e.event_id not in before)
        report.images += fresh[ImageIngested]
        report.labels += fresh[LabelRecorded]
        if progress:
            progress(report.rows, total)
    report.append_seconds = time.perf_counter() - appending
    catching_up = time.perf_counter()
    # A long catch-up: the read models in two groups side by side, as `visionledger projections catch-up` does.
    cat.projections.catch_up(progress=progress, connections=2)
    report.catch_up_seconds = time.perf_counter() - catching_up
    report.seconds = time.perf_counter() - started
    return report


def _one_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, each produced in a thread while the caller works on the one before: the next batch is read
    and checked in Python while the server stores this one."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def record_events(rows: list[dict[str, Any]], ontology: OntologyVersion | None,
                  metadata: Mapping[str, str]) -> tuple[list[NewEvent], list[tuple[int, NewEvent]]]:
    """The events of ``rows`` (an ImageIngested each, and a LabelRecorded where a label is given), and an
    ImageRejected, saying why, for each row that cannot be stored (with the row's index in ``rows``)."""
    events: list[NewEvent] = []
    rejected: list[tuple[int, NewEvent]] = []
    for k, row in enumerate(rows):
        try:
            events += _row_events(row, ontology, metadata)
        except _Refused as refused:
            rejected.append((k, _rejection(row, refused.reason, refused.detail, metadata)))
    return events, rejected


class _Refused(Exception):
    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _row_events(row: dict[str, Any], ontology: OntologyVersion | None, metadata: Mapping[str, str]) -> list[NewEvent]:
    missing = [c for c in REQUIRED if row.get(c) in (None, "")]
    if missing:
        raise _Refused(RejectReason.MISSING_FIELD, f"empty field(s): {', '.join(missing)}")
    captured_at = _moment(row, "captured_at")
    source_path = row.get("source_path") or row["blob_uri"]
    try:
        image = ImageIngested(
            sha256=row["sha256"], part_id=row["part_id"], line=row["line"], station=row["station"],
            camera=row["camera"], captured_at=captured_at, width=row["width"], height=row["height"],
            channels=row.get("channels") or 1, bit_depth=row.get("bit_depth") or 8, byte_size=row["byte_size"],
            format=row.get("format") or "png", blob_uri=row["blob_uri"], source_path=source_path)
        events = [NewEvent(image, captured_at, metadata=dict(metadata), event_id=sighting_event_id(
            image.sha256, source_path, image.part_id, image.camera, captured_at))]
        if row.get("label"):
            events.append(_label_event(row, image, ontology, metadata))
    except ValidationError as exc:
        raise _Refused(RejectReason.BAD_FIELD, describe_validation_error(exc)) from None
    return events


def _label_event(row: dict[str, Any], image: ImageIngested, ontology: OntologyVersion | None,
                 metadata: Mapping[str, str]) -> NewEvent:
    if ontology is None or row["label"] not in ontology.classes:
        known = f"ontology v{ontology.version}: {', '.join(ontology.classes)}" if ontology else "no ontology published"
        raise _Refused(RejectReason.BAD_FIELD, f"label {printable(str(row['label']), 80)!r} is not a class ({known})")
    if not row.get("labeler"):
        raise _Refused(RejectReason.MISSING_FIELD, "a label needs its labeler")
    label_id = row.get("label_id") or f"backfill-{image.sha256}"
    label = LabelRecorded(sha256=image.sha256, label_id=label_id, label=row["label"], annotator=row["labeler"],
                          ontology_version=ontology.version, part_id=image.part_id)
    labeled_at = _moment(row, "labeled_at") if row.get("labeled_at") else image.captured_at
    # the same id as the labels importer gives this label id: one label, whichever way it came in
    return NewEvent(label, labeled_at, metadata=dict(metadata), event_id=event_id_for("label", label_id))


def _moment(row: dict[str, Any], column: str) -> datetime:
    """A timezone-aware timestamp column: Parquet's timestamp with a zone, or ISO 8601 text with an offset."""
    value = row[column]
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _Refused(RejectReason.BAD_TIMESTAMP, f"{column} {value!r} is not an ISO 8601 timestamp") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _Refused(RejectReason.BAD_TIMESTAMP,
                       f"{column} {value!r} is not a time with a UTC offset (a naive time is never guessed)")
    return value


def _rejection(row: dict[str, Any], reason: RejectReason, detail: str, metadata: Mapping[str, str]) -> NewEvent:
    shown = {printable(k, MAX_NAME_LENGTH): printable(str(v)) for k, v in row.items() if v is not None}
    key = hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:40]
    data = ImageRejected(delivery_key=key, reason=reason, detail=detail,
                         source_path=shown.get("source_path") or shown.get("blob_uri"), row=shown)
    return NewEvent(data, datetime.now(UTC), event_id=event_id_for("rejected", key), metadata=dict(metadata))
