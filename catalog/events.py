"""The catalog's vocabulary: every typed event, validated on append, versioned, with upcasters for old versions.

Each event class names its type (the class name), its schema version and the stream it belongs to.
Payloads are validated with pydantic; unknown fields, naive timestamps and malformed ids are refused.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from catalog.errors import EventValidationError

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
ClassName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


class EventData(BaseModel):
    """Base of every event payload. Subclasses set ``schema_version`` and implement ``stream_id``."""

    # NaN and infinities have no JSON spelling (they would be stored as null and the event could not be read
    # back): refuse them at the door.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    schema_version: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    @property
    def stream_id(self) -> str:
        raise NotImplementedError


# Stream ids: one stream per image, per part and per line, ``<kind>:<key>``. The SQL that joins the log to the read
# models spells ``IMAGE_STREAM_PREFIX || sha256``.
IMAGE_STREAM_PREFIX = "image:"


def image_stream(sha256: str) -> str:
    return IMAGE_STREAM_PREFIX + sha256


def part_stream(part_id: str) -> str:
    return f"part:{part_id}"


LINE_STREAM_PREFIX = "line:"


def line_stream(line: str) -> str:
    return LINE_STREAM_PREFIX + line


def image_of_stream(stream_id: str) -> str:
    """The sha256 of an image's stream id."""
    if not stream_id.startswith(IMAGE_STREAM_PREFIX):
        raise ValueError(f"{stream_id!r} is not an image's stream")
    return stream_id.removeprefix(IMAGE_STREAM_PREFIX)


class ImageEvent(EventData):
    """An event about one content-addressed image; its stream is ``image_stream(sha256)``."""

    sha256: Sha256

    @property
    def stream_id(self) -> str:
        return image_stream(self.sha256)


# -- ingestion ------------------------------------------------------------------------------------------------


class ImageIngested(ImageEvent):
    """A file from the line was decoded, hashed and stored. A second sighting of the same bytes is another
    ImageIngested on the same stream."""

    part_id: Name
    line: Name
    station: Name
    camera: Name
    captured_at: UtcDatetime
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    channels: int = Field(ge=1, le=4)
    bit_depth: Literal[8, 16]
    byte_size: int = Field(gt=0)
    format: str = "png"
    blob_uri: str
    thumbnail_uri: str | None = None
    source_path: str
    metadata: dict[str, str] = Field(default_factory=dict)


class RejectReason(StrEnum):
    MISSING_FILE = "missing_file"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    TOO_LARGE = "too_large"
    BAD_TIMESTAMP = "bad_timestamp"
    MISSING_FIELD = "missing_field"
    OUTSIDE_ROOT = "outside_root"


class ImageRejected(EventData):
    """A manifest row or file was quarantined. Its stream is ``quarantine:<delivery key>`` because a rejected
    file may have no hash at all."""

    delivery_key: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    reason: RejectReason
    detail: str
    source_path: str | None = None
    sha256: Sha256 | None = None
    row: dict[str, str] = Field(default_factory=dict)

    @property
    def stream_id(self) -> str:
        return f"quarantine:{self.delivery_key}"


class ImageExcluded(ImageEvent):
    """A curator took the image out of every derived dataset (it stays in the catalog and its history)."""

    reason: Annotated[str, StringConstraints(min_length=3, strip_whitespace=True)]
    selection: dict[str, Any] = Field(default_factory=dict)


class ImageIncluded(ImageEvent):
    """A curator brought an excluded image back."""

    reason: Annotated[str, StringConstraints(min_length=3, strip_whitespace=True)]
    selection: dict[str, Any] = Field(default_factory=dict)


# -- labels, corrections, ontology ----------------------------------------------------------------------------


class Region(BaseModel):
    """A weak label region in image pixels: an ellipse, a box or a polygon."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: Literal["ellipse", "box", "polygon"]
    cx: float | None = None
    cy: float | None = None
    rx: float | None = Field(default=None, ge=0)
    ry: float | None = Field(default=None, ge=0)
    angle: float | None = None
    x0: float | None = None
    y0: float | None = None
    x1: float | None = None
    y1: float | None = None
    points: list[tuple[float, float]] | None = None


class LabelRecorded(ImageEvent):
    """A human annotator's class for an image, under a given ontology version."""

    label_id: Name
    label: ClassName
    annotator: Name
    ontology_version: int = Field(ge=1)
    part_id: Name | None = None
    regions: list[Region] = Field(default_factory=list)
    mask_uri: str | None = None


class CorrectionRecorded(ImageEvent):
    """A human verdict that overrides a label or a prediction; the corrected event stays as it was."""

    correction_id: Name
    target: Literal["label", "prediction"]
    label_id: Name | None = None
    prediction_event_id: uuid.UUID | None = None
    old_label: ClassName
    new_label: ClassName
    corrected_by: Name
    reason: str = ""
    ontology_version: int = Field(ge=1)
    part_id: Name | None = None


class OntologyChange(BaseModel):
    """One step from the previous ontology version: create, rename, merge (several into one), split (one into
    several)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    op: Literal["create", "rename", "merge", "split"]
    sources: list[ClassName] = Field(default_factory=list)
    targets: list[ClassName] = Field(min_length=1)


class OntologyPublished(EventData):
    version: int = Field(ge=1)
    classes: list[ClassName] = Field(min_length=1)
    changes: list[OntologyChange] = Field(default_factory=list)

    @property
    def stream_id(self) -> str:
        return "ontology"


# -- the site ---------------------------------------------------------------------------------------------------


@functools.cache
def _time_zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - {"localtime", "Factory"}  # the host's zone; no zone at all


def _known_time_zone(name: str) -> str:
    # A name from the IANA list rather than anything ZoneInfo opens: "localtime" or a path would mean
    # different things to Python and to PostgreSQL, which reads the zone in every per-day query.
    if name not in _time_zone_names():
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin, America/Chicago, UTC)")
    return name


TimeZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_known_time_zone)]


class LineTimeZoneSet(EventData):
    """Where a line stands: the time zone its factory days and shown times are in (`catalog.factory_day`).
    It applies to every capture of the line, earlier ones too: it says where the line is, not since when."""

    line: Name
    time_zone: TimeZoneName
    reason: str = ""

    @property
    def stream_id(self) -> str:
        return line_stream(self.line)


# -- stations ---------------------------------------------------------------------------------------------------

TokenId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]


def station_token_stream(token_id: str) -> str:
    return f"station_token:{token_id}"


class StationTokenIssued(EventData):
    """A line station was given an API token (`identity.stations`): its scope and expiry. The token's secret is
    never in the log: only its hash is kept, outside it, where readers cannot select it."""

    token_id: TokenId
    line: Name
    station: Name
    cameras: list[Name] | None = Field(default=None, min_length=1)  # None: any camera of the station
    expires_at: UtcDatetime
    issued_by: Name

    @property
    def stream_id(self) -> str:
        return station_token_stream(self.token_id)


class StationTokenRevoked(EventData):
    """A station's token no longer opens the API."""

    token_id: TokenId
    reason: Annotated[str, StringConstraints(min_length=3, strip_whitespace=True)]
    revoked_by: Name

    @property
    def stream_id(self) -> str:
        return station_token_stream(self.token_id)


# -- predictions and decisions --------------------------------------------------------------------------------


class PredictionRecorded(ImageEvent):
    """An engine's scores for an image."""

    engine_id: Name
    scores: dict[ClassName, float]
    predicted_class: ClassName
    part_id: Name | None = None
    heatmap_uri: str | None = None
    defect_score: float | None = Field(default=None, ge=0, le=1)  # 1 - p(ok)
    regions: list[Region] = Field(default_factory=list)  # where the engine saw defects (boxes)
    # The defect-score threshold the class was decided at, and whose it was: the engine's operating point,
    # a rule set's explicit override, or the fallback for an engine that carries none.
    threshold: float | None = Field(default=None, ge=0, le=1)
    threshold_from: Literal["engine", "rules", "default"] | None = None


class PartDispositioned(EventData):
    """The accept / reject decision for a part, by an engine's rules or a person, with the rule that fired."""

    part_id: Name
    decision: Literal["accept", "reject"]
    decided_by: Name
    decider: Literal["engine", "human"]
    rule: Name
    rules_version: str | None = None
    engine_id: str | None = None
    image_sha256s: list[Sha256] = Field(default_factory=list)
    reason: str = ""  # why the rule fired, in words

    @property
    def stream_id(self) -> str:
        return part_stream(self.part_id)


class ReviewRequested(ImageEvent):
    """An image put in a human review queue by a named strategy, with its score."""

    queue: Name
    strategy: Name
    score: float
    reason: str = ""


# -- lineage ---------------------------------------------------------------------------------------------------


class DatasetVersionPublished(EventData):
    dataset: Name
    version_id: Name
    spec: dict[str, Any]
    as_of_position: int = Field(ge=0)
    counts: dict[str, int]
    manifest_hash: Sha256
    manifest_uri: str

    @property
    def stream_id(self) -> str:
        return f"dataset:{self.dataset}"


class ModelRegistered(EventData):
    """A trained model: the dataset version it learned from, how, how well (on validation), and its bytes."""

    model: Name
    model_id: Name
    dataset_version_id: Name
    manifest_hash: Sha256
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_sha256: Sha256
    artifact_uri: str

    @property
    def stream_id(self) -> str:
        return f"model:{self.model}"


class ModelExported(EventData):
    """A registered model exported to ONNX, checked, and matched against torch within ``parity_tolerance``."""

    model: Name
    model_id: Name
    onnx_sha256: Sha256
    onnx_uri: str
    opset: int = Field(ge=1)
    parity_max_abs_diff: float = Field(ge=0)
    parity_tolerance: float = Field(gt=0)

    @property
    def stream_id(self) -> str:
        return f"model:{self.model}"


class ModelEvaluated(EventData):
    """A model's figures on a dataset version's held-out split, and the decision threshold chosen for a
    stated cost ratio of false accepts to false rejects; the per-slice tables are in the lake."""

    model: Name
    model_id: Name
    dataset_version_id: Name
    split: Literal["train", "validation", "test"]
    metrics: dict[str, float]
    threshold: float = Field(ge=0, le=1)
    cost_ratio: float = Field(gt=0)
    report_uri: str
    # Where `threshold` was chosen: on the validation split for the precision floor `min_precision` (the
    # operating point engines carry), or, for evaluations recorded before, on the test split itself.
    threshold_split: Literal["validation", "test"] = "test"
    min_precision: float | None = Field(default=None, gt=0, le=1)

    @property
    def stream_id(self) -> str:
        return f"model:{self.model}"


class RegressionReplayed(EventData):
    """A candidate replayed beside the champion on historical production images and their human verdicts;
    whether it passed the promotion gate, and why."""

    model: Name
    candidate_model_id: Name
    champion_model_id: Name | None = None
    passed: bool
    images: int = Field(ge=0)
    summary: dict[str, Any]
    report_uri: str

    @property
    def stream_id(self) -> str:
        return f"model:{self.model}"


class ModelPromoted(EventData):
    """The model now in service for its name: appended only after a passed regression replay."""

    model: Name
    model_id: Name
    previous_model_id: Name | None = None
    replay_event_id: uuid.UUID
    reason: str

    @property
    def stream_id(self) -> str:
        return f"model:{self.model}"


class EngineBuilt(EventData):
    engine_id: Name
    model: Name
    model_id: Name
    onnx_sha256: Sha256
    dataset_version_id: Name
    manifest_hash: Sha256
    backend: Literal["onnxruntime", "tensorrt", "torch_cuda"]
    precision: Literal["fp32", "fp16", "int8"]
    device: Name
    library_versions: dict[str, str]
    artifact_uri: str
    # The model's operating threshold (defect score from which an image is defective), chosen on its
    # validation split and carried by the engine; None for engines recorded before thresholds travelled.
    threshold: float | None = Field(default=None, ge=0, le=1)

    @property
    def stream_id(self) -> str:
        return f"engine:{self.engine_id}"


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.type_name(): cls
    for cls in (
        ImageIngested, ImageRejected, ImageExcluded, ImageIncluded, LabelRecorded, CorrectionRecorded,
        OntologyPublished, PredictionRecorded, PartDispositioned, ReviewRequested, DatasetVersionPublished,
        ModelRegistered, ModelExported, ModelEvaluated, RegressionReplayed, ModelPromoted, EngineBuilt,
        LineTimeZoneSet, StationTokenIssued, StationTokenRevoked,
    )
}

# (type, stored schema version) -> function returning the payload at the next version. Reading an old event
# walks this chain up to the class's current schema_version, so stored events never need rewriting.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the step that lifts a ``type_name`` payload from ``from_version`` to ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


def upcast(type_name: str, schema_version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload lifted to the current schema version of its type."""
    cls = event_class(type_name)
    while schema_version < cls.schema_version:
        step = UPCASTERS.get((type_name, schema_version))
        if step is None:
            raise EventValidationError(f"no upcaster for {type_name} v{schema_version} -> v{schema_version + 1}")
        payload = step(dict(payload))
        schema_version += 1
    return payload


def event_class(type_name: str) -> type[EventData]:
    try:
        return EVENT_TYPES[type_name]
    except KeyError:
        raise EventValidationError(f"unknown event type {type_name!r}; known types: {', '.join(sorted(EVENT_TYPES))}") from None


def parse_event(type_name: str, payload: dict[str, Any], schema_version: int | None = None) -> EventData:
    """Validate a payload into its typed event, upcasting it first when it is older than the current version."""
    cls = event_class(type_name)
    if schema_version is not None and schema_version > cls.schema_version:
        raise EventValidationError(
            f"{type_name} v{schema_version} is newer than this code knows (v{cls.schema_version}): upgrade visionledger"
        )
    if schema_version is not None:
        payload = upcast(type_name, schema_version, payload)
    try:
        return cls.model_validate(payload)
    except ValidationError as exc:
        raise EventValidationError(f"invalid {type_name}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as 'field: problem; field: problem', for messages a person reads."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
