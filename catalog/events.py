"""The catalog's vocabulary: every typed event, validated on append, versioned, with upcasters for old versions.

Each event class names its type (the class name), its schema version and the stream it belongs to.
Payloads are validated with pydantic; unknown fields, naive timestamps and malformed ids are refused.
"""

from __future__ import annotations

import functools
import hashlib
import re
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
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from catalog.errors import EventValidationError

MAX_NAME_LENGTH = 200  # an identifier: a part, line, station, camera, label id, person, model, engine
MAX_TEXT_LENGTH = 10_000  # free text: a reason, a detail, a path, a URI

# C0 and C1 control characters and DEL. PostgreSQL's jsonb cannot store NUL at all (an event holding one could
# never be appended, and would jam whatever queued behind it), and the others are invisible or rewrite a
# terminal: refused at the source. Free text may keep its line breaks and tabs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be an identifier, or None: a control character, or longer than MAX_NAME_LENGTH."""
    return _problem(value, _CONTROL, MAX_NAME_LENGTH)


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be free text, or None: a control character other than a line break or a tab, or
    longer than MAX_TEXT_LENGTH."""
    return _problem(value, _CONTROL_IN_TEXT, MAX_TEXT_LENGTH)


def _problem(value: str, control: re.Pattern[str], max_length: int) -> str | None:
    if found := control.search(value):
        return f"contains the control character U+{ord(found.group()):04X} at position {found.start()}"
    if len(value) > max_length:
        return f"is {len(value):,} characters long, above the limit of {max_length:,}"
    return None


def printable(value: str, max_length: int = MAX_TEXT_LENGTH) -> str:
    """``value`` as it can be shown and stored: control characters written out (``\\x00``), cut at
    ``max_length``. For recording refused input, never for input that is accepted."""
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return shown if len(shown) <= max_length else shown[: max_length - 1] + "…"


# The validation context of events read back from the log: they are taken as they were stored, so an event
# appended before a check existed stays readable (the log is never rewritten).
STORED = "stored"


def _checked(problem: Callable[[str], str | None]) -> Callable[[str, ValidationInfo], str]:
    def check(value: str, info: ValidationInfo) -> str:
        if info.context != STORED and (found := problem(value)) is not None:
            raise PydanticCustomError("refused_characters", found)
        return value

    return check


def _json_checked(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    if info.context != STORED:
        _json_without_control_characters(value)
    return value


def _json_without_control_characters(value: Any, where: str = "") -> None:
    """Free-form JSON (a selection, a spec): every string in it, keys included, is free text."""
    if isinstance(value, str):
        if (found := _CONTROL_IN_TEXT.search(value)) is not None:
            raise PydanticCustomError("refused_characters", "{where} contains the control character {char}",
                                      {"where": where or "a value", "char": f"U+{ord(found.group()):04X}"})
    elif isinstance(value, dict):
        for key, item in value.items():
            _json_without_control_characters(str(key), f"a key of {where}" if where else "a key")
            _json_without_control_characters(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _json_without_control_characters(item, f"{where}[{i}]")


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, strip_whitespace=True),
                 AfterValidator(_checked(name_problem))]
Text = Annotated[str, AfterValidator(_checked(text_problem))]
Json = Annotated[dict[str, Any], AfterValidator(_json_checked)]
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
    format: Text = "png"
    blob_uri: Text
    thumbnail_uri: Text | None = None
    source_path: Text
    metadata: dict[Text, Text] = Field(default_factory=dict)


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
    BAD_FIELD = "bad_field"  # a control character or an over-long value; the detail names the field


class ImageRejected(EventData):
    """A manifest row or file was quarantined. Its stream is ``quarantine:<delivery key>`` because a rejected
    file may have no hash at all."""

    delivery_key: Name
    reason: RejectReason
    detail: Text
    source_path: Text | None = None
    sha256: Sha256 | None = None
    row: dict[Text, Text] = Field(default_factory=dict)

    @property
    def stream_id(self) -> str:
        return f"quarantine:{self.delivery_key}"


class ImageExcluded(ImageEvent):
    """A curator took the image out of every derived dataset (it stays in the catalog and its history)."""

    reason: Annotated[Text, StringConstraints(min_length=3, strip_whitespace=True)]
    selection: Json = Field(default_factory=dict)


class ImageIncluded(ImageEvent):
    """A curator brought an excluded image back."""

    reason: Annotated[Text, StringConstraints(min_length=3, strip_whitespace=True)]
    selection: Json = Field(default_factory=dict)


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
    mask_uri: Text | None = None


class CorrectionRecorded(ImageEvent):
    """A human verdict that overrides a label or a prediction; the corrected event stays as it was."""

    correction_id: Name
    target: Literal["label", "prediction"]
    label_id: Name | None = None
    prediction_event_id: uuid.UUID | None = None
    old_label: ClassName
    new_label: ClassName
    corrected_by: Name
    reason: Text = ""
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
    reason: Text = ""

    @property
    def stream_id(self) -> str:
        return line_stream(self.line)


# -- people ---------------------------------------------------------------------------------------------------

# A login name: lower case, so that "Ana" and "ana" cannot be two people.
Username = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9._-]{0,63}$")]
USER_STREAM_PREFIX = "user:"


def user_stream(username: str) -> str:
    return USER_STREAM_PREFIX + username


class UserEvent(EventData):
    """An event of one person's account, on the stream ``user:<username>``."""

    username: Username

    @property
    def stream_id(self) -> str:
        return user_stream(self.username)


class UserCreated(UserEvent):
    """A person gets an account. Roles and a password come with their own events."""

    full_name: Name


class UserRoleGranted(UserEvent):
    role: ClassName
    reason: Text = ""


class UserRoleRevoked(UserEvent):
    role: ClassName
    reason: Text = ""


class UserDisabled(UserEvent):
    """The person may no longer log in or sign; their history stays."""

    reason: Text = Field(min_length=1)


class UserEnabled(UserEvent):
    reason: Text = Field(min_length=1)


class UserPasswordSet(UserEvent):
    """A new password. The log holds only the id of its hash: the hash itself sits in ``catalog.credentials``,
    which no reader role can select and the lake never mirrors."""

    credential_id: uuid.UUID


class UserLoggedIn(UserEvent):
    client: Text = ""  # where from, as the app saw it


class UserLoginFailed(UserEvent):
    """A refused login or signature: a wrong password, or an attempt while disabled or locked out."""

    reason: Literal["wrong_password", "disabled", "locked_out", "no_password"]
    client: Text = ""


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
    reason: Annotated[Text, StringConstraints(min_length=3, strip_whitespace=True)]
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
    heatmap_uri: Text | None = None
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
    rules_version: Text | None = None
    engine_id: Text | None = None
    image_sha256s: list[Sha256] = Field(default_factory=list)
    reason: Text = ""  # why the rule fired, in words

    @property
    def stream_id(self) -> str:
        return part_stream(self.part_id)


# The one stream of rule-set publications (plant-wide and per line): few events, read whole.
RULES_STREAM = "rules"


class RuleSetPublished(EventData):
    """A part rule set put in force by a signed act, for one line or (``line`` None) every line without its
    own: its version as decisions record it (``name@version+hash``, `serving.decision.RuleSet.rules_version`),
    the YAML as written, that text's SHA-256, and why."""

    rules_version: Name
    text: Text = Field(min_length=1)
    text_sha256: Sha256
    line: Name | None = None
    reason: Annotated[Text, StringConstraints(min_length=3, strip_whitespace=True)]

    @model_validator(mode="after")
    def _text_matches_its_hash(self) -> RuleSetPublished:
        if hashlib.sha256(self.text.encode()).hexdigest() != self.text_sha256:
            raise ValueError("text_sha256 is not the SHA-256 of the text")
        return self

    @property
    def stream_id(self) -> str:
        return RULES_STREAM


class ReviewRequested(ImageEvent):
    """An image put in a human review queue by a named strategy, with its score."""

    queue: Name
    strategy: Name
    score: float
    reason: Text = ""


# -- lineage ---------------------------------------------------------------------------------------------------


class DatasetVersionPublished(EventData):
    dataset: Name
    version_id: Name
    spec: Json
    as_of_position: int = Field(ge=0)
    counts: dict[str, int]
    manifest_hash: Sha256
    manifest_uri: Text

    @property
    def stream_id(self) -> str:
        return f"dataset:{self.dataset}"


class ModelRegistered(EventData):
    """A trained model: the dataset version it learned from, how, how well (on validation), and its bytes."""

    model: Name
    model_id: Name
    dataset_version_id: Name
    manifest_hash: Sha256
    hyperparameters: Json = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_sha256: Sha256
    artifact_uri: Text

    @property
    def stream_id(self) -> str:
        return f"model:{self.model}"


class ModelExported(EventData):
    """A registered model exported to ONNX, checked, and matched against torch within ``parity_tolerance``."""

    model: Name
    model_id: Name
    onnx_sha256: Sha256
    onnx_uri: Text
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
    report_uri: Text
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
    summary: Json
    report_uri: Text

    @property
    def stream_id(self) -> str:
        return f"model:{self.model}"


class ModelPromoted(EventData):
    """The model now in service for its name: appended only after a passed regression replay."""

    model: Name
    model_id: Name
    previous_model_id: Name | None = None
    replay_event_id: uuid.UUID
    reason: Text

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
    library_versions: dict[Text, Text]
    artifact_uri: Text
    # The model's operating threshold (defect score from which an image is defective), chosen on its
    # validation split and carried by the engine; None for engines recorded before thresholds travelled.
    threshold: float | None = Field(default=None, ge=0, le=1)

    @property
    def stream_id(self) -> str:
        return f"engine:{self.engine_id}"


# -- the log itself --------------------------------------------------------------------------------------------

LOG_STREAM = "log"  # events about the event log: its ranges archived to the lake


class ArchiveFile(BaseModel):
    """One file of an archived range, as written: its path under the lake's root, its size and its sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Text
    bytes: int = Field(ge=0)
    sha256: Sha256


class LogRangeArchived(EventData):
    """A range of positions (one partition of the event table) written to the lake's archive, verified there (its
    count, every event's hash recomputed and chained to its neighbours, its digest equal to the log's), then
    detached and dropped from PostgreSQL (catalog.archive). ``digest``: the sha256 of the range's event
    hashes, in position order."""

    first_position: int = Field(ge=1)
    last_position: int = Field(ge=1)
    events: int = Field(ge=1)
    digest: Sha256
    files: list[ArchiveFile]

    @property
    def stream_id(self) -> str:
        return LOG_STREAM


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.type_name(): cls
    for cls in (
        ImageIngested, ImageRejected, ImageExcluded, ImageIncluded, LabelRecorded, CorrectionRecorded,
        OntologyPublished, PredictionRecorded, PartDispositioned, ReviewRequested, DatasetVersionPublished,
        ModelRegistered, ModelExported, ModelEvaluated, RegressionReplayed, ModelPromoted, EngineBuilt,
        LineTimeZoneSet, UserCreated, UserRoleGranted, UserRoleRevoked, UserDisabled, UserEnabled,
        UserPasswordSet, UserLoggedIn, UserLoginFailed, RuleSetPublished,
        StationTokenIssued, StationTokenRevoked, LogRangeArchived,
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


def parse_event(type_name: str, payload: dict[str, Any], schema_version: int | None = None, *,
                stored: bool = False) -> EventData:
    """Validate a payload into its typed event, upcasting it first when it is older than the current version.
    ``stored``: read back from the log, so the character checks added since it was appended are not applied."""
    cls = event_class(type_name)
    if schema_version is not None and schema_version > cls.schema_version:
        raise EventValidationError(
            f"{type_name} v{schema_version} is newer than this code knows (v{cls.schema_version}): upgrade visionledger"
        )
    if schema_version is not None:
        payload = upcast(type_name, schema_version, payload)
    try:
        return cls.model_validate(payload, context=STORED if stored else None)
    except ValidationError as exc:
        raise EventValidationError(f"invalid {type_name}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as 'field: problem; field: problem', for messages a person reads."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
