"""Recording human labels and corrections: one at a time (the review page) or a whole CSV file (the importers),
checked against the catalog's images, its current ontology and what is already recorded."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import ValidationError

from catalog import AppendResult, Catalog, CatalogError, NewEvent, event_id_for
from catalog.blobs import sha256_of, uri_of
from catalog.events import (
    MAX_NAME_LENGTH,
    CorrectionRecorded,
    EventData,
    LabelRecorded,
    Region,
    describe_validation_error,
    image_stream,
    printable,
)
from catalog.lookups import (
    current_labels,
    existing_images,
    images_at_paths,
    payloads_by_id,
    predicted_class,
)
from catalog.ontology import Ontology, OntologyVersion
from ingestion.tables import field_problem, parse_aware_timestamp, read_table

BATCH_SIZE = 2_000
FREE_TEXT_COLUMNS = frozenset({"path", "mask_path", "region", "reason"})  # the other columns are identifiers
CONFLICT_REASONS = frozenset({"label_id_reused", "correction_id_reused", "old_label_mismatch"})
Progress = Callable[[int, int], None]
Fields = dict[str, Any]


class LabelError(CatalogError):
    """A label, correction or labels file the catalog cannot accept; ``reason`` is the code reports show."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Problem:
    row: int  # the line number in the file, the header being line 1
    id: str
    reason: str
    message: str


@dataclass
class ImportReport:
    """What one import did: rows recorded now, already recorded before, and the rows it refused and why."""

    file: str
    rows: int = 0
    recorded: int = 0
    already_recorded: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def conflicts(self) -> int:
        """Rows that contradict what the catalog holds (as opposed to rows that are malformed)."""
        return sum(p.reason in CONFLICT_REASONS for p in self.problems)

    @property
    def rejected(self) -> int:
        return len(self.problems) - self.conflicts

    def to_json(self) -> str:
        return json.dumps({"file": self.file, "rows": self.rows, "recorded": self.recorded,
                           "already_recorded": self.already_recorded, "rejected": self.rejected,
                           "conflicts": self.conflicts, "problems": [asdict(p) for p in self.problems]})


@dataclass(frozen=True)
class _Format:
    """One CSV format: the columns a row must fill, those it may leave empty, and how a row becomes an event."""

    name: Literal["label", "correction"]
    event: type[EventData]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    parse: Callable[[_FileState, dict[str, str]], tuple[Fields, str, bytes | None]]  # fields, time column, mask
    check: Callable[[_FileState, Fields], None]

    @property
    def id_column(self) -> str:
        return self.required[0]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.required, *self.optional, "path", "sha256")


# -- the two importers --------------------------------------------------------------------------------------


def import_labels(cat: Catalog, csv_path: Path | str, *, column_map: Mapping[str, str] | None = None,
                  actor: str | None = None, progress: Progress | None = None) -> ImportReport:
    """Record the rows of a labels CSV (label_id, path or sha256, label, labeler, labeled_at; optionally part_id,
    region, mask_path), idempotently by ``label_id``; refused rows are reported, the others recorded."""
    return _import(cat, Path(csv_path), LABELS, column_map or {}, actor, progress)


def import_corrections(cat: Catalog, csv_path: Path | str, *, column_map: Mapping[str, str] | None = None,
                       actor: str | None = None, progress: Progress | None = None,
                       signed: Mapping[str, str] | None = None) -> ImportReport:
    """Record the rows of a corrections CSV in order, idempotently by ``correction_id``; a row whose
    ``old_label`` is not the image's current label is a conflict and is not recorded. ``signed``: the
    signature (`identity.signatures.Signature.metadata()`) of the person who reviewed them, on every one."""
    return _import(cat, Path(csv_path), CORRECTIONS, column_map or {}, actor, progress, signed)


def _import(cat: Catalog, csv_path: Path, fmt: _Format, column_map: Mapping[str, str], actor: str | None,
            progress: Progress | None, signed: Mapping[str, str] | None = None) -> ImportReport:
    rows = _read_rows(csv_path, fmt, column_map)
    report = ImportReport(file=str(csv_path), rows=len(rows))
    rows = _storable_rows(rows, fmt, report)
    state = _FileState(cat, csv_path, fmt, rows)
    metadata = {"source": f"{fmt.name}s import {csv_path.name}"} | ({"actor": actor} if actor else {}) | dict(signed or {})
    batch: list[NewEvent] = []
    for done, (line, row) in enumerate(rows, 1):
        try:
            event = _row_event(state, fmt, row, metadata)
        except LabelError as exc:
            report.problems.append(Problem(line, row[fmt.id_column], exc.reason, str(exc)))
            continue
        if event is None:
            report.already_recorded += 1
            continue
        batch.append(event)
        if len(batch) >= BATCH_SIZE:
            _flush(cat, batch, report)
            if progress:
                progress(done, len(rows))
    _flush(cat, batch, report)
    cat.catch_up()
    if progress:
        progress(len(rows), len(rows))
    report.problems.sort(key=lambda p: p.row)
    return report


def _storable_rows(rows: list[tuple[int, dict[str, str]]], fmt: _Format,
                   report: ImportReport) -> list[tuple[int, dict[str, str]]]:
    """The rows whose values the catalog can store; the others reported (bad_field) before anything is looked up
    with them."""
    names = set(fmt.columns) - FREE_TEXT_COLUMNS
    storable = []
    for line, row in rows:
        if (problem := field_problem(row, names=names)) is None:
            storable.append((line, row))
        else:
            report.problems.append(Problem(line, printable(row[fmt.id_column], MAX_NAME_LENGTH), "bad_field", problem))
    return storable


def _row_event(state: _FileState, fmt: _Format, row: dict[str, str], metadata: dict[str, str]) -> NewEvent | None:
    """The event a row records, or None when the same fact is already recorded; LabelError when refused."""
    missing = [c for c in fmt.required if not row[c]] + ([] if row["path"] or row["sha256"] else ["path"])
    if missing:
        raise LabelError("missing_field", f"{', '.join(missing)} empty: a {fmt.name} row needs "
                         f"{', '.join(fmt.required)} and a path (or sha256)")
    fields, time_column, mask = fmt.parse(state, row)
    occurred_at = _timestamp(row, time_column)
    event_id = event_id_for(fmt.name, row[fmt.id_column])
    stored = state.stored.get(event_id)
    if stored is not None:
        if _same_fact(fmt.event, fields, stored):
            return None
        raise LabelError(f"{fmt.id_column}_reused", f"{fmt.id_column} {row[fmt.id_column]!r} is already recorded "
                         f"with other content; an id names one {fmt.name} forever: give this one a new id")
    fmt.check(state, fields)
    data = _validated(fmt.event, fields)
    if mask is not None:
        state.cat.blobs.put(mask)
    state.accepted(event_id, data)
    return NewEvent(data=data, occurred_at=occurred_at, event_id=event_id, metadata=metadata)


def _flush(cat: Catalog, batch: list[NewEvent], report: ImportReport) -> None:
    if batch:
        result = cat.append(batch, catch_up=False)
        report.recorded += result.appended
        report.already_recorded += len(result.duplicates)  # another importer of the same file got there first
        batch.clear()


# -- reading a file -----------------------------------------------------------------------------------------


def _read_rows(csv_path: Path, fmt: _Format, column_map: Mapping[str, str]) -> list[tuple[int, dict[str, str]]]:
    """Every row as {canonical column: stripped value, "" when absent}, with its line number."""
    table = read_table(csv_path, required=fmt.required, one_of=[("path", "sha256")], column_map=column_map,
                       known=fmt.columns)
    return [(row.number, {c: row.values.get(c, "") for c in fmt.columns}) for row in table]


class _FileState:
    """What an import knows while it goes through one file's rows in order: the images and ids it names, the
    current ontology, and the labels as they stand after the rows accepted so far."""

    def __init__(self, cat: Catalog, csv_path: Path, fmt: _Format, rows: Sequence[tuple[int, dict[str, str]]]):
        self.cat = cat
        self.base = csv_path.parent.resolve()
        self.ontology = Ontology.load(cat)
        self.current = self.ontology.current  # no ontology yet: says to run `visionledger ontology publish`
        # A path with `..` or a root could only name a file outside the delivery: it never names an image.
        paths = [r["path"] for _, r in rows if r["path"] and _stays_inside(r["path"])]
        self.shas_by_path = images_at_paths(cat, paths)
        self.known_shas = existing_images(cat, [r["sha256"].lower() for _, r in rows if r["sha256"]])
        ids = [event_id_for(fmt.name, r[fmt.id_column]) for _, r in rows if r[fmt.id_column]]
        self.stored: dict[uuid.UUID, dict[str, Any]] = payloads_by_id(cat, ids)

    @cached_property
    def held(self) -> dict[str, tuple[str, int]]:
        """Each named image's current (label, ontology version), updated as corrections are accepted."""
        return current_labels(self.cat, [*self.known_shas, *(s for v in self.shas_by_path.values() for s in v)])

    def image(self, row: dict[str, str]) -> str:
        if row["sha256"]:
            sha = row["sha256"].lower()
            if sha not in self.known_shas:
                raise LabelError("unknown_image", f"no image with sha256 {sha} in the catalog: ingest it first")
            return sha
        shas = self.shas_by_path.get(row["path"], set())
        if not shas:
            raise LabelError("unknown_image", f"no image was ingested from path {row['path']!r} (relative to the "
                             "CSV's folder, as in manifest.csv): ingest it first or fix the path")
        if len(shas) > 1:
            raise LabelError("ambiguous_image", f"path {row['path']!r} was ingested with different contents "
                             f"({', '.join(sorted(shas))}): give a sha256 column instead")
        return next(iter(shas))

    def mask(self, relative: str) -> bytes | None:
        """The bytes of a mask file, which must lie in the CSV's folder (symlinks resolved) or below it."""
        if not relative:
            return None
        path = (self.base / relative).resolve()
        if not path.is_relative_to(self.base):
            raise LabelError("bad_mask_path", f"mask_path {relative!r} leads outside {self.base}: "
                             "masks must lie in the CSV's folder or below it")
        if not path.is_file():
            raise LabelError("missing_mask", f"mask_path {relative!r}: no such file in {self.base}")
        return path.read_bytes()

    def accepted(self, event_id: uuid.UUID, data: EventData) -> None:
        # Later rows of the same file see this one: a repeated id is a duplicate, a second correction of
        # the same image starts from this one's new label.
        self.stored[event_id] = data.model_dump(mode="json")
        if isinstance(data, CorrectionRecorded):
            self.held[data.sha256] = (data.new_label, data.ontology_version)


def _label_fields(state: _FileState, row: dict[str, str]) -> tuple[Fields, str, bytes | None]:
    sha, mask = state.image(row), state.mask(row["mask_path"])
    fields = {"sha256": sha, "label_id": row["label_id"], "label": row["label"],
              "annotator": row["labeler"], "ontology_version": state.current.version,
              "part_id": row["part_id"] or None, "regions": _regions(row["region"]),
              "mask_uri": uri_of(sha256_of(mask)) if mask is not None else None}
    return fields, "labeled_at", mask


def _correction_fields(state: _FileState, row: dict[str, str]) -> tuple[Fields, str, bytes | None]:
    fields = {"sha256": state.image(row), "correction_id": row["correction_id"], "target": "label",
              "label_id": row["label_id"] or None, "old_label": row["old_label"], "new_label": row["new_label"],
              "corrected_by": row["corrected_by"], "reason": row["reason"],
              "ontology_version": state.current.version, "part_id": row["part_id"] or None}
    return fields, "corrected_at", None


def _check_correction(state: _FileState, fields: Fields) -> None:
    _known_class(state.current, fields["new_label"])
    held = _held_label(state.ontology, fields["sha256"], state.held.get(fields["sha256"]))
    _same_old_label(fields["old_label"], held, fields["sha256"])


LABELS = _Format("label", LabelRecorded, ("label_id", "label", "labeler", "labeled_at"),
                 ("part_id", "region", "mask_path"), _label_fields,
                 lambda state, fields: _known_class(state.current, fields["label"]))
CORRECTIONS = _Format("correction", CorrectionRecorded,
                      ("correction_id", "old_label", "new_label", "corrected_by", "corrected_at"),
                      ("label_id", "part_id", "reason"), _correction_fields, _check_correction)


# -- one label or correction at a time ----------------------------------------------------------------------


def record_label(cat: Catalog, *, sha256: str, label: str, annotator: str, label_id: str | None = None,
                 regions: Iterable[Region] = (), mask_uri: str | None = None, part_id: str | None = None,
                 occurred_at: datetime | None = None, actor: str | None = None) -> AppendResult:
    """Record one human label under the current ontology; LabelError for an unknown image or class."""
    current = Ontology.load(cat).current
    _known_class(current, label)
    if not existing_images(cat, [sha256]):
        raise LabelError("unknown_image", f"no image with sha256 {sha256} in the catalog: ingest it first")
    label_id = label_id or uuid.uuid4().hex
    data = _validated(LabelRecorded, {
        "sha256": sha256, "label_id": label_id, "label": label, "annotator": annotator,
        "ontology_version": current.version, "part_id": part_id, "regions": list(regions), "mask_uri": mask_uri})
    return cat.append([_single_event(data, ("label", label_id), occurred_at, actor)])


def record_correction(cat: Catalog, *, sha256: str, new_label: str, corrected_by: str, old_label: str | None = None,
                      target: Literal["label", "prediction"] = "label", label_id: str | None = None,
                      prediction_event_id: uuid.UUID | None = None, reason: str = "",
                      correction_id: str | None = None, part_id: str | None = None,
                      occurred_at: datetime | None = None, actor: str | None = None,
                      signed: Mapping[str, str] | None = None) -> AppendResult:
    """Record one human correction of an image's label or of a prediction. ``old_label`` defaults to what is
    corrected (the current label, or the prediction's class); a stale one is refused (old_label_mismatch), and
    another correction of the same image appended meanwhile raises ConcurrencyError. ``signed``: the
    corrector's signature (`identity.signatures.Signature.metadata()`)."""
    stream = image_stream(sha256)
    seen = cat.store.stream_version(stream)  # read before the label, so a later writer makes the append fail
    ontology = Ontology.load(cat)
    _known_class(ontology.current, new_label)
    if target == "prediction":
        held = _predicted_class(cat, sha256, prediction_event_id)
    else:
        held = _held_label(ontology, sha256, current_labels(cat, [sha256]).get(sha256))
    _same_old_label(old_label or held, held, sha256)
    correction_id = correction_id or uuid.uuid4().hex
    data = _validated(CorrectionRecorded, {
        "sha256": sha256, "correction_id": correction_id, "target": target, "label_id": label_id,
        "prediction_event_id": prediction_event_id, "old_label": held, "new_label": new_label,
        "corrected_by": corrected_by, "reason": reason, "ontology_version": ontology.current.version,
        "part_id": part_id})
    event = _single_event(data, ("correction", correction_id), occurred_at, actor, signed)
    return cat.append([event], expected_versions={stream: seen})


def _single_event(data: EventData, key: tuple[str, str], occurred_at: datetime | None, actor: str | None,
                  signed: Mapping[str, str] | None = None) -> NewEvent:
    metadata = {"source": "ingestion.labels"} | ({"actor": actor} if actor else {}) | dict(signed or {})
    return NewEvent(data=data, occurred_at=occurred_at or datetime.now(UTC), event_id=event_id_for(*key),
                    metadata=metadata)


# -- checks shared by both ways in ----------------------------------------------------------------------------


def _known_class(current: OntologyVersion, name: str) -> None:
    if name not in current.classes:
        raise LabelError("unknown_class", f"{name!r} is not a class of ontology version {current.version}; known "
                         f"classes: {', '.join(current.classes)} (publish a new version with `visionledger "
                         "ontology publish` to add one)")


def _held_label(ontology: Ontology, sha256: str, held: tuple[str, int] | None) -> str:
    """The label a correction of the image must start from: its current label read through the ontology."""
    if held is None:
        raise LabelError("unknown_label", f"image {sha256} has no label to correct: record a label first")
    label, version = held
    # A split class has no current name until someone chooses; the name it was recorded under is all there is.
    return ontology.resolve(label, version) or label


def _same_old_label(old_label: str, held: str, sha256: str) -> None:
    if old_label != held:
        raise LabelError("old_label_mismatch", f"old_label is {old_label!r} but the catalog holds {held!r} for "
                         f"image {sha256}; nothing was changed: check who changed it and correct from {held!r}")


def _predicted_class(cat: Catalog, sha256: str, prediction_event_id: uuid.UUID | None) -> str:
    held = predicted_class(cat, sha256, prediction_event_id) if prediction_event_id else None
    if held is None:
        raise LabelError("unknown_prediction", f"no prediction {prediction_event_id} of image {sha256}: "
                         "a correction of a prediction names the prediction's event id")
    return held


def _timestamp(row: dict[str, str], column: str) -> datetime:
    try:
        return parse_aware_timestamp(row[column])
    except ValueError as exc:
        raise LabelError("bad_timestamp", f"{column} {exc}") from None


def _regions(text: str) -> list[Region]:
    """The ellipse(s) of a ``region`` cell: a JSON object {cx, cy, rx, ry, angle} or a list of them."""
    if not text:
        return []
    try:
        parsed = json.loads(text)
        return [Region(shape="ellipse", **item) for item in (parsed if isinstance(parsed, list) else [parsed])]
    except ValidationError as exc:
        detail = describe_validation_error(exc)
    except (ValueError, TypeError) as exc:
        detail = str(exc)
    raise LabelError("bad_region", f"region {text!r} is not an ellipse {{cx, cy, rx, ry, angle}} in JSON: {detail}")


def _validated(event_class: type[EventData], fields: Fields) -> EventData:
    try:
        return event_class.model_validate(fields)
    except ValidationError as exc:
        raise LabelError("invalid_value", describe_validation_error(exc)) from None


def _same_fact(event_class: type[EventData], fields: Fields, stored: dict[str, Any]) -> bool:
    """Whether a row says what the stored event says. The ontology version is left out: re-importing a file
    after a new ontology version is published repeats old facts, it does not contradict them."""
    try:
        payload = event_class.model_validate(fields).model_dump(mode="json")
    except ValidationError:
        return False
    return {**payload, "ontology_version": None} == {**stored, "ontology_version": None}


def _stays_inside(path: str) -> bool:
    relative = PurePosixPath(path.replace("\\", "/"))
    return not relative.is_absolute() and ".." not in relative.parts
