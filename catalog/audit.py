"""The audit chain of one part, as plain data: its decision and the rule that fired, every image with its
predictions and human label, every event in time order, and for each engine that judged it the chain
engine → model → dataset version → whether the part's images were in training → the labels and annotators
of the training images of the class the engine predicted; and every signed act behind it (corrections and
exclusions of its images, human dispositions, the promotion of a model that judged it, the publication of a
rule set that decided it) with who signed, when, and what the signature means. The Trace page shows it;
reports export it.

It only reads (projections, the event log, the lake, what publishing kept of each dataset version:
`catalog.datasets.facts`), so read-only roles can audit. The projections are read through one `Catalog.read`
(one refresh), however many engines judged the part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection

from catalog import Catalog
from catalog.datasets import load_manifest
from catalog.datasets.facts import TRAIN, VersionFacts, forget_relabelled, version_facts
from catalog.datasets.publish import file_identity, manifest_bytes, recorded_manifest_file
from catalog.dispositions import HUMAN
from catalog.errors import CatalogError
from catalog.event_log import Signature, signature_of
from catalog.events import IMAGE_STREAM_PREFIX, RULES_STREAM
from catalog.ontology import OK_CLASS, Ontology
from catalog.queries import current_class, trace_part
from catalog.store import RecordedEvent


@dataclass(frozen=True)
class SignedAct:
    """An act a person signed with their password, behind this part: what it was, what it concerns."""

    type: str  # the event's type
    subject: str  # "image <sha256>", "part <id>", "model <id>", "rules <version>"
    summary: str
    position: int
    signed: Signature


@dataclass(frozen=True)
class Decision:
    """One `PartDispositioned`: accept or reject, by which rule, why, under which rules version."""

    decision: str
    rule: str
    reason: str
    rules_version: str | None
    decided_by: str
    decider: str
    engine_id: str | None
    image_sha256s: list[str]
    decided_at: datetime
    position: int
    actor: str | None
    signed: Signature | None = None  # a person's disposition is signed

    @property
    def counts(self) -> bool:
        """An engine's decision, or a person's signed one; an unsigned human disposition decides nothing."""
        return self.decider == "engine" or self.signed is not None


@dataclass(frozen=True)
class Prediction:
    """An engine's latest prediction for an image (the one that happened last, as the read model keeps)."""

    engine_id: str
    predicted_class: str
    scores: dict[str, float]
    defect_score: float | None
    regions: list[dict[str, Any]]
    heatmap_uri: str | None
    predicted_at: datetime
    position: int


@dataclass(frozen=True)
class HumanLabel:
    """The image's current human verdict, read as today's class."""

    label: str
    as_recorded: str
    ontology_version: int
    annotator: str
    source: str  # "label" | "correction"
    labeled_at: datetime
    regions: list[dict[str, Any]]


@dataclass(frozen=True)
class PartImage:
    sha256: str
    line: str
    station: str
    camera: str
    captured_at: datetime
    width: int
    height: int
    blob_uri: str
    excluded: bool
    exclusion_reason: str | None
    label: HumanLabel | None
    predictions: list[Prediction]
    heatmaps: list[dict[str, Any]]  # kind ("grad_cam", "mask", "prediction"), model_id, class, uri


@dataclass(frozen=True)
class TimelineEvent:
    position: int
    occurred_at: datetime
    recorded_at: datetime
    type: str
    stream_id: str
    actor: str | None
    summary: str
    signed: Signature | None = None


@dataclass(frozen=True)
class Membership:
    """Where one of the part's images sits in the dataset version (split None: not in it)."""

    sha256: str
    split: str | None
    manifest_class: str | None


@dataclass(frozen=True)
class ClassEvidence:
    """The training images of one predicted class: how many, who labelled them (the label in force at the
    dataset version's position), how many were corrections, how many were relabelled since, a few examples."""

    predicted_class: str
    training_images: int
    annotators: list[dict[str, Any]]  # annotator, images, corrections
    corrections: int
    relabelled_since: int
    examples: list[dict[str, Any]]  # sha256, part_id, label, annotator, source, labeled_at


@dataclass(frozen=True)
class Chain:
    """engine → model → dataset version → this part in training → the labels behind the predicted classes.
    ``problem`` says where the chain breaks (a link not recorded, a manifest missing or altered)."""

    engine_id: str
    engine: dict[str, Any] | None
    model: dict[str, Any] | None
    dataset_version: dict[str, Any] | None
    manifest_verified: bool
    membership: list[Membership]
    evidence: list[ClassEvidence]
    problem: str | None = None

    @property
    def in_training(self) -> bool:
        return any(m.split == TRAIN for m in self.membership)

    def training_verdict(self) -> str:
        """In words: were this part's images in the training set?"""
        if not self.manifest_verified:
            return "unknown: " + (self.problem or "the manifest could not be read")
        splits = [m.split for m in self.membership]
        trained = splits.count(TRAIN)
        others = sorted({s for s in splits if s and s != TRAIN})
        if trained:
            verdict = f"yes: {trained} of {len(splits)} image(s) in the training split"
        else:
            verdict = f"no: none of the part's {len(splits)} image(s) in the training split"
        if others:
            verdict += f" (others in {', '.join(others)})"
        missing = splits.count(None)
        if missing:
            verdict += f"; {missing} not in the dataset version at all"
        return verdict


@dataclass(frozen=True)
class PartAudit:
    part_id: str
    line: str | None
    first_captured_at: datetime | None
    last_captured_at: datetime | None
    decision: Decision | None  # the one that stands: a person's latest signed one, else the engine's latest
    decision_history: list[Decision]
    images: list[PartImage]
    timeline: list[TimelineEvent]
    chains: list[Chain]
    signed_acts: list[SignedAct]  # in the order they were signed
    catalog_position: int  # the log's head when the audit was read
    read_at: datetime = field(default_factory=lambda: datetime.now().astimezone())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601 with their offset), with each chain's verdict spelled out."""
        data = _jsonable(dataclasses.asdict(self))
        for chain, raw in zip(self.chains, data["chains"], strict=True):
            raw["in_training"] = chain.in_training
            raw["training_verdict"] = chain.training_verdict()
        return data


def part_audit(cat: Catalog, part_id: str) -> PartAudit:
    """The whole chain of ``part_id``; `CatalogError` when the catalog knows no such part."""
    part_id = part_id.strip()
    head = cat.head()
    trace = trace_part(cat, part_id)
    shas = [image["sha256"] for image in trace.images]
    events = [e for image in trace.images for e in image["events"]] + trace.part_events
    decisions = [_decision(e) for e in trace.part_events if e.type == "PartDispositioned"]
    predictions = _latest_predictions(events)
    with cat.read() as conn:  # one fresh read for all the rest
        images = _images(conn, shas, predictions)
        engine_ids = list(dict.fromkeys(
            [p.engine_id for image in images for p in image.predictions]
            + [d.engine_id for d in reversed(decisions) if d.engine_id]))
        chains = engine_chains(cat, conn, engine_ids, shas, {e: _predicted_classes(images, e) for e in engine_ids})
        part = _row(conn, "SELECT line, first_captured_at, last_captured_at FROM projections.parts"
                    " WHERE part_id = %(p)s", p=part_id) or {}
    images = _with_heatmaps(cat, images, [c.model["model_id"] for c in chains if c.model])
    return PartAudit(
        part_id=part_id, line=part.get("line"), first_captured_at=part.get("first_captured_at"),
        last_captured_at=part.get("last_captured_at"), decision=_standing(decisions),
        decision_history=decisions, images=images,
        timeline=[_timeline_event(e) for e in sorted({e.position: e for e in events}.values(),
                                                      key=lambda e: (e.occurred_at, e.position))],
        chains=chains, signed_acts=signed_acts(cat, events, chains, decisions), catalog_position=head)


def signed_acts(cat: Catalog, events: Sequence[RecordedEvent], chains: Sequence[Chain],
                decisions: Sequence[Decision]) -> list[SignedAct]:
    """The signed acts behind a part: those among its own and its images' ``events`` (corrections, exclusions,
    human dispositions), the promotions of the models of its ``chains``, and the publications of the rule
    set versions its ``decisions`` name."""
    acts = [_signed_act(e, _subject(e)) for e in events]
    models = {(c.model["model"], c.model["model_id"]) for c in chains if c.model}
    for name in sorted({name for name, _ in models}):
        acts += [_signed_act(e, f"model {e.payload['model_id']}") for e in cat.store.read_stream(f"model:{name}")
                 if e.type == "ModelPromoted" and (name, e.payload["model_id"]) in models]
    versions = {d.rules_version for d in decisions if d.rules_version}
    if versions:
        acts += [_signed_act(e, f"rules {e.payload['rules_version']}") for e in cat.store.read_stream(RULES_STREAM)
                 if e.payload["rules_version"] in versions]
    found = {act.position: act for act in acts if act is not None}
    return sorted(found.values(), key=lambda act: (act.signed.signed_at, act.position))


_ENGINES = ("SELECT engine_id, model, model_id, onnx_sha256, dataset_version_id, manifest_hash, backend, precision,"
            " device, library_versions, artifact_uri, built_at FROM projections.engines WHERE engine_id = ANY(%(ids)s)")
_MODELS = ("SELECT model_id, model, dataset_version_id, manifest_hash, hyperparameters, metrics, artifact_sha256,"
           " artifact_uri, onnx_sha256, onnx_uri, evaluation, registered_at, promoted_at"
           " FROM projections.models WHERE model_id = ANY(%(ids)s)")
_VERSIONS = ("SELECT version_id, dataset, spec, as_of_position, counts, manifest_hash, manifest_uri, published_at"
             " FROM projections.dataset_versions WHERE version_id = ANY(%(ids)s)")


def engine_chains(cat: Catalog, conn: Connection, engine_ids: Sequence[str], shas: Sequence[str],
                  predicted: Mapping[str, Sequence[str]]) -> list[Chain]:
    """The chain behind each of ``engine_ids`` for the images ``shas``, whose predictions by each engine were
    ``predicted[engine_id]``, read through ``conn``. Engines built from one dataset version share what is read
    of it: a part judged by eight engines of one version reads its facts once."""
    engines = _rows_by(conn, _ENGINES, engine_ids)
    models = _rows_by(conn, _MODELS, [e["model_id"] for e in engines.values()])
    versions = _rows_by(conn, _VERSIONS, [m["dataset_version_id"] for m in models.values()])
    read: dict[str, tuple[VersionFacts, dict[str, tuple[str, str]]]] = {}
    evidence: dict[tuple[str, str], ClassEvidence] = {}

    def chain(engine_id: str) -> Chain:
        engine = engines.get(engine_id)
        if engine is None:
            return _broken(engine_id, f"no EngineBuilt records engine {engine_id}: its lineage is unknown")
        model = models.get(engine["model_id"])
        if model is None:
            return _broken(engine_id, f"no ModelRegistered records model {engine['model_id']}", engine=engine)
        version = versions.get(model["dataset_version_id"])
        if version is None:
            return _broken(engine_id, f"no DatasetVersionPublished records {model['dataset_version_id']}",
                           engine=engine, model=model)
        if version["manifest_hash"] != model["manifest_hash"] or engine["manifest_hash"] != model["manifest_hash"]:
            return _broken(engine_id, f"the manifest hashes of engine, model and {version['version_id']} disagree",
                           engine=engine, model=model, version=version)
        version_id, uri, manifest_hash = version["version_id"], version["manifest_uri"], version["manifest_hash"]
        try:
            _verify_manifest(cat, conn, uri, manifest_hash)
        except CatalogError as exc:
            return _broken(engine_id, str(exc), engine=engine, model=model, version=version)
        if version_id not in read:
            facts = version_facts(conn, manifest_hash, version["as_of_position"],
                                  lambda: load_manifest(cat.lake, uri, expected_hash=manifest_hash))
            read[version_id] = facts, facts.membership(shas)
        facts, members = read[version_id]
        for c in predicted[engine_id]:
            if (version_id, c) not in evidence:
                evidence[version_id, c] = class_evidence(facts, c)
        return Chain(engine_id=engine_id, engine=engine, model=model, dataset_version=version,
                     manifest_verified=True,
                     membership=[Membership(sha, *members.get(sha, (None, None))) for sha in shas],
                     evidence=[evidence[version_id, c] for c in predicted[engine_id]])

    return [chain(engine_id) for engine_id in engine_ids]


# A million-image manifest takes ~60 ms to hash, and every engine built from the same dataset version needs it
# checked. A file is taken as intact while its identity on disk is one it had when found intact: this process
# remembers those it hashed, and the publisher records the one it wrote (catalog.manifest_files). Any write to
# the file or its replacement moves its change time, so such a file is hashed afresh.
_VERIFIED: dict[tuple[str, str, str], None] = {}
_VERIFIED_KEPT = 16


def _verify_manifest(cat: Catalog, conn: Connection, uri: str, manifest_hash: str) -> None:
    identity = file_identity(cat.lake, uri)
    key = (uri, manifest_hash, identity or "")
    if identity is not None and (key in _VERIFIED or identity == recorded_manifest_file(conn, manifest_hash, uri)):
        return
    manifest_bytes(cat.lake, uri, expected_hash=manifest_hash)  # raises what is wrong with it
    while len(_VERIFIED) >= _VERIFIED_KEPT:
        del _VERIFIED[next(iter(_VERIFIED))]
    _VERIFIED[key] = None


def forget_versions() -> None:
    """Forget what this process remembers of dataset versions (the manifests found intact, the images relabelled
    since): the next trace of each is its first."""
    _VERIFIED.clear()
    forget_relabelled()


def class_evidence(facts: VersionFacts, predicted_class: str) -> ClassEvidence:
    """Who labelled the training images of ``predicted_class``: the label of each in force at the dataset
    version's position (the one the version learned from), counted per annotator, with a few examples, and
    how many were relabelled since."""
    labels = facts.class_labels(predicted_class)
    return ClassEvidence(
        predicted_class=predicted_class, training_images=labels.training_images, annotators=labels.annotators,
        corrections=sum(a["corrections"] for a in labels.annotators),
        relabelled_since=facts.relabelled_since(predicted_class), examples=labels.examples)


def event_summary(event_type: str, payload: dict[str, Any]) -> str:
    """One line saying what an event recorded."""
    p = payload
    if event_type == "PredictionRecorded":
        score = p.get("scores", {}).get(p.get("predicted_class"))
        return f"{p['predicted_class']} {score:.2f} by engine {p['engine_id'][:12]}" if score is not None \
            else f"{p['predicted_class']} by engine {p['engine_id'][:12]}"
    if event_type == "PartDispositioned":
        return f"{p['decision']} by rule {p['rule']} ({p.get('rules_version') or 'unversioned'}): {p.get('reason', '')}"
    if event_type == "LabelRecorded":
        return f"{p['label']} by {p['annotator']} (ontology v{p['ontology_version']})"
    if event_type == "CorrectionRecorded":
        return f"{p['old_label']} → {p['new_label']} by {p['corrected_by']}" + (f": {p['reason']}" if p.get("reason") else "")
    if event_type == "ImageIngested":
        return f"{p['camera']} at {p['station']} on {p['line']}: {p['source_path']}"
    if event_type in ("ImageExcluded", "ImageIncluded"):
        return p.get("reason", "")
    if event_type == "ReviewRequested":
        return f"queue {p['queue']} by {p['strategy']} (score {p['score']:.2f})"
    if event_type == "ModelPromoted":
        return f"{p['model_id']} in service for {p['model']}" + (
            f" after {p['previous_model_id']}" if p.get("previous_model_id") else "") + f": {p['reason']}"
    if event_type == "RuleSetPublished":
        return f"rules {p['rules_version']} for {('line ' + p['line']) if p.get('line') else 'every line'}: {p['reason']}"
    keys = ("label", "decision", "rule", "reason", "source_path")
    return " ".join(f"{k}={p[k]}" for k in keys if p.get(k))


# -- reading --------------------------------------------------------------------------------------------------


def _row(conn: Connection, sql: str, **params: Any) -> dict[str, Any] | None:
    row = conn.exec_driver_sql(sql, params).fetchone()
    return dict(row._mapping) if row else None


def _rows_by(conn: Connection, sql: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The rows of ``sql`` for ``ids`` (its ``%(ids)s``), by their first column."""
    return {r[0]: dict(r._mapping) for r in conn.exec_driver_sql(sql, {"ids": list(dict.fromkeys(ids))})}


def _decision(e: RecordedEvent) -> Decision:
    p = e.payload
    return Decision(decision=p["decision"], rule=p["rule"], reason=p.get("reason", ""),
                    rules_version=p.get("rules_version"), decided_by=p["decided_by"], decider=p["decider"],
                    engine_id=p.get("engine_id"), image_sha256s=list(p.get("image_sha256s", [])),
                    decided_at=e.occurred_at, position=e.position, actor=e.metadata.get("actor"),
                    signed=signature_of(e.metadata))


def _signed_act(e: RecordedEvent, subject: str) -> SignedAct | None:
    signed = signature_of(e.metadata)
    return signed and SignedAct(type=e.type, subject=subject, summary=event_summary(e.type, e.payload),
                                position=e.position, signed=signed)


def _subject(e: RecordedEvent) -> str:
    """What an event of a part's trace concerns: one of its images, or the part."""
    if e.stream_id.startswith(IMAGE_STREAM_PREFIX):
        return f"image {e.stream_id.removeprefix(IMAGE_STREAM_PREFIX)}"
    return e.stream_id.replace(":", " ", 1)


def _standing(decisions: Sequence[Decision]) -> Decision | None:
    """The decision that stands, as the server takes it (serving.decision.decide_part): a person's latest
    signed one; else the engine's latest, which never turns a reject into an accept."""
    counting = [d for d in decisions if d.counts]
    signed = [d for d in counting if d.decider == HUMAN]
    return (signed or counting or [None])[-1]


def _latest_predictions(events: Sequence[RecordedEvent]) -> dict[str, list[Prediction]]:
    """Per image, the latest prediction of each engine (replays of history may arrive after newer live
    predictions: the one that happened last stands, as in the read model)."""
    latest: dict[tuple[str, str], RecordedEvent] = {}
    for e in events:
        if e.type != "PredictionRecorded":
            continue
        key = (e.payload["sha256"], e.payload["engine_id"])
        if key not in latest or latest[key].occurred_at <= e.occurred_at:
            latest[key] = e
    per_image: dict[str, list[Prediction]] = {}
    for (sha, engine_id), e in sorted(latest.items(), key=lambda kv: kv[1].position):
        p = e.payload
        per_image.setdefault(sha, []).append(Prediction(
            engine_id=engine_id, predicted_class=p["predicted_class"], scores=p["scores"],
            defect_score=p.get("defect_score"), regions=p.get("regions", []), heatmap_uri=p.get("heatmap_uri"),
            predicted_at=e.occurred_at, position=e.position))
    return per_image


def _images(conn: Connection, shas: list[str], predictions: dict[str, list[Prediction]]) -> list[PartImage]:
    ontology = Ontology.read(conn.connection.driver_connection)
    rows = {r.sha256: r for r in conn.exec_driver_sql(
        "SELECT i.sha256, i.line, i.station, i.camera, i.captured_at, i.width, i.height, i.blob_uri, i.excluded,"
        " i.exclusion_reason, c.label, c.ontology_version, c.annotator, c.source, c.labeled_at, c.regions"
        " FROM projections.images i LEFT JOIN projections.current_labels c USING (sha256)"
        " WHERE i.sha256 = ANY(%(shas)s)", {"shas": shas})}
    images = []
    for sha in shas:
        r = rows[sha]
        label = None if r.label is None else HumanLabel(
            label=current_class(ontology, r.label, r.ontology_version), as_recorded=r.label,
            ontology_version=r.ontology_version, annotator=r.annotator, source=r.source, labeled_at=r.labeled_at,
            regions=r.regions or [])
        own = predictions.get(sha, [])
        images.append(PartImage(
            sha256=sha, line=r.line, station=r.station, camera=r.camera, captured_at=r.captured_at, width=r.width,
            height=r.height, blob_uri=r.blob_uri, excluded=r.excluded, exclusion_reason=r.exclusion_reason,
            label=label, predictions=own,
            heatmaps=[{"kind": "prediction", "model_id": None, "class": p.predicted_class, "uri": p.heatmap_uri}
                      for p in own if p.heatmap_uri]))
    return images


def _with_heatmaps(cat: Catalog, images: list[PartImage], model_ids: Sequence[str]) -> list[PartImage]:
    """Add the explanations the heatmaps asset kept for these images (`Lake.heatmaps_of`)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for model_id in dict.fromkeys(model_ids):
        path = cat.lake.root / cat.lake.heatmaps_of(model_id)
        if not path.is_file():
            continue
        table = pq.read_table(path)
        shas = pa.array([i.sha256 for i in images], pa.string())
        for row in table.filter(pc.is_in(table["sha256"], value_set=shas)).to_pylist():
            found.setdefault(row["sha256"], []).append(
                {"kind": row["kind"], "model_id": row["model_id"], "class": row["class"], "uri": row["uri"]})
    return [dataclasses.replace(i, heatmaps=i.heatmaps + found.get(i.sha256, [])) for i in images]


def _predicted_classes(images: list[PartImage], engine_id: str) -> list[str]:
    """The classes ``engine_id`` gave the part's images, defects first (they are what a reject rests on)."""
    classes = {p.predicted_class for i in images for p in i.predictions if p.engine_id == engine_id}
    return sorted(classes, key=lambda c: (c == OK_CLASS, c))


def _broken(engine_id: str, problem: str, *, engine: dict[str, Any] | None = None,
            model: dict[str, Any] | None = None, version: dict[str, Any] | None = None) -> Chain:
    return Chain(engine_id=engine_id, engine=engine, model=model, dataset_version=version, manifest_verified=False,
                 membership=[], evidence=[], problem=problem)


def _timeline_event(e: RecordedEvent) -> TimelineEvent:
    return TimelineEvent(position=e.position, occurred_at=e.occurred_at, recorded_at=e.recorded_at, type=e.type,
                         stream_id=e.stream_id, actor=e.metadata.get("actor"), summary=event_summary(e.type, e.payload),
                         signed=signature_of(e.metadata))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
