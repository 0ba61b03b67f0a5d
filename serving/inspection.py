"""One image through the line's inspection: checked and stored as an image, tiled at native resolution, run
through the engine, its tiles combined, and the part's decision taken over all its images: those the log holds
(read by the service, `PartRecord`) and those this process judged (`PartMemory`). A reject stands until a person's
signed disposition overturns it (`serving.decision.decide_part`).

The HTTP API and `visionledger replay` both go through `Inspector`, so what an analyst replays is exactly what
the line got.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from catalog import Catalog
from catalog.events import ImageRejected, PartDispositioned, PredictionRecorded, Region
from catalog.store import NewEvent, event_id_for
from imaging.gray import gray8
from imaging.intake import (
    Inspected,
    Limits,
    Rejected,
    check_image_bytes,
    describe,
    ingested_event,
    write_thumbnail,
)
from serving.decision import (
    DefectRegion,
    Disposition,
    Finding,
    PartDecision,
    RuleSet,
    decide_part,
    regions_from_map,
)
from serving.engines.base import Engine, EngineOutput
from serving.tiling import ImageResult, Tiles, combine, cut_tiles

ACTOR = "visionledger-serve"  # of the events `replay` records; the API's name the station that sent the image


class ImageRefused(ValueError):
    """The bytes sent are not an image the server can inspect; `rejected` says why, as the ingester would."""

    def __init__(self, rejected: Rejected):
        super().__init__(f"{rejected.reason.value}: {rejected.detail}")
        self.rejected = rejected


@dataclass(frozen=True)
class Capture:
    """What the line says about an image: which part, where and when."""

    part_id: str
    line: str
    station: str
    camera: str
    captured_at: datetime  # timezone-aware


@dataclass(frozen=True)
class Caller:
    """Who sent an image to the API, recorded in the metadata of every event it causes: the actor (the station its
    token names), the client's address and the server's own time of receipt."""

    actor: str
    client_addr: str
    received_at: datetime  # timezone-aware

    def metadata(self) -> dict[str, str]:
        return {"actor": self.actor, "client_addr": self.client_addr, "received_at": self.received_at.isoformat()}


@dataclass(frozen=True)
class Prepared:
    """An accepted image, stored, and cut into the engine's tiles."""

    capture: Capture
    image: Inspected  # what the ingester would record of the same bytes
    tiles: Tiles

    @property
    def sha256(self) -> str:
        return self.image.sha256


@dataclass(frozen=True)
class Inspection:
    """The engine's verdict on one image and the part's decision so far, with the events that record them."""

    capture: Capture
    sha256: str
    engine_id: str
    scores: dict[str, float]
    predicted_class: str
    defect_score: float
    regions: list[dict[str, Any]]
    part: PartDecision
    events: list[NewEvent] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "part_id": self.capture.part_id,
            "camera": self.capture.camera,
            "engine_id": self.engine_id,
            "scores": self.scores,
            "class": self.predicted_class,
            "defect_score": self.defect_score,
            "regions": self.regions,
            "part": {
                "decision": self.part.decision,
                "rule": self.part.rule,
                "reason": self.part.reason,
                "rules_version": self.part.rules_version,
                "images": len(self.part.image_sha256s),
            },
        }


@dataclass(frozen=True)
class PartRecord:
    """What the log holds about a part, as its next decision needs it: the findings of its images recorded by
    one engine (by sha256), and its dispositions in log order with their event ids."""

    findings: dict[str, Finding]
    dispositions: list[tuple[uuid.UUID, Disposition]]

    @classmethod
    def of(cls, events: Iterable[tuple[uuid.UUID, str, dict[str, Any], dict[str, Any]]], engine_id: str) -> PartRecord:
        """From (event id, type, payload, metadata) of one part's events in log order
        (`catalog.lookups.part_events`, or the spool's)."""
        cameras, predictions, dispositions = {}, {}, []
        for event_id, kind, payload, metadata in events:
            if kind == "ImageIngested":
                cameras.setdefault(payload["sha256"], payload["camera"])
            elif kind == "PredictionRecorded" and payload.get("engine_id") == engine_id:
                predictions[payload["sha256"]] = payload
            elif kind == "PartDispositioned":
                dispositions.append((event_id, Disposition.of(payload, metadata)))
        findings = {sha: _recorded_finding(p, cameras.get(sha, "")) for sha, p in predictions.items()}
        return cls(findings=findings, dispositions=dispositions)


def _recorded_finding(prediction: dict[str, Any], camera: str) -> Finding:
    # A prediction records each region's box, not its cells: the box's area stands for the region's. It is
    # never smaller, so an area rule fires on a recorded image at least as readily as it did when judged.
    scores = prediction["scores"]
    defect_score = prediction.get("defect_score")
    if defect_score is None:
        defect_score = 1.0 - max(scores.values(), default=0.0)
    regions = [DefectRegion(area_px=int((r["x1"] - r["x0"]) * (r["y1"] - r["y0"])),
                            bbox=(int(r["x0"]), int(r["y0"]), int(r["x1"]), int(r["y1"])), peak=float(defect_score))
               for r in prediction.get("regions", []) if r.get("shape") == "box"]
    return Finding(sha256=prediction["sha256"], camera=camera, predicted_class=prediction["predicted_class"],
                   scores=scores, defect_score=defect_score, regions=regions)


@dataclass
class _Remembered:
    findings: dict[str, Finding] = field(default_factory=dict)
    dispositions: list[tuple[uuid.UUID, Disposition]] = field(default_factory=list)


class PartMemory:
    """What this process judged and decided about recent parts, taken with what the log holds about them: the
    log has what other servers and people recorded, this memory what the log does not have yet (events still
    on their way, or spooled while the catalog is away). The oldest parts are forgotten beyond `capacity`
    (a part's cameras fire within seconds of each other)."""

    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        self._parts: OrderedDict[str, _Remembered] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, part_id: str, finding: Finding, rules: RuleSet, engine_id: str,
            recorded: PartRecord | None = None) -> tuple[PartDecision, uuid.UUID | None]:
        """The part's decision with `finding` added, and the event id of the PartDispositioned to record when
        it differs from the decision the part stood at (None when it does not)."""
        with self._lock:
            remembered = self._parts.pop(part_id, None) or _Remembered()
            remembered.findings[finding.sha256] = finding  # the same image sent twice counts once
            recorded = recorded or PartRecord({}, [])
            in_log = {event_id for event_id, _ in recorded.dispositions}
            # The log's dispositions, then this process's that have not reached it yet (the newest).
            dispositions = recorded.dispositions + [d for d in remembered.dispositions if d[0] not in in_log]
            findings = recorded.findings | remembered.findings  # this process's own findings have the cells
            decision = decide_part(rules, list(findings.values()), [d for _, d in dispositions])
            before = next((d for _, d in reversed(dispositions) if d.counts), None)
            event_id = None
            if before is None or (before.decision, before.rule_decided) != (decision.decision, decision.rule):
                event_id = disposition_id(part_id, engine_id, decision)
                remembered.dispositions.append((event_id, Disposition(
                    decision=decision.decision, decider="engine", rule=decision.rule, reason=decision.reason,
                    rules_version=decision.rules_version)))
            self._parts[part_id] = remembered
            while len(self._parts) > self.capacity:
                self._parts.popitem(last=False)
        return decision, event_id

    def remember(self, events: Sequence[NewEvent], engine_id: str) -> None:
        """Take in events recorded before this process started that the log may not have yet (the spool's)."""
        parts: dict[str, list] = {}
        for e in events:
            part_id = getattr(e.data, "part_id", None)
            if part_id is not None:
                parts.setdefault(part_id, []).append(
                    (e.event_id, type(e.data).__name__, e.data.model_dump(mode="json"), e.metadata))
        with self._lock:
            for part_id, part_events in parts.items():
                record = PartRecord.of(part_events, engine_id)
                self._parts[part_id] = _Remembered(dict(record.findings), list(record.dispositions))


def disposition_id(part_id: str, engine_id: str, decision: PartDecision) -> uuid.UUID:
    """The PartDispositioned's id: the part, engine, rules and images it was decided on, and what was decided
    (the same images may be decided again differently once the log says more, e.g. that a reject stands)."""
    return event_id_for("disposition", part_id, engine_id, decision.rules_version, decision.decision, decision.rule,
                        decision.reason, *sorted(decision.image_sha256s))


class Inspector:
    """Checks, stores, tiles and judges images for one engine under one rule set."""

    def __init__(
        self,
        cat: Catalog,
        engine: Engine,
        rules: RuleSet,
        *,
        limits: Limits | None = None,
        source: str = "serve",
        parts: PartMemory | None = None,
    ):
        self.cat = cat
        self.engine = engine
        # The engine's operating threshold unless the rule set overrides it; predictions record which.
        self.rules, self.threshold_from = rules.resolved(engine.record.threshold)
        self.limits = limits or Limits()
        self.source = source
        self.parts = parts or PartMemory()

    def metadata(self, caller: Caller | None) -> dict[str, str]:
        return {"actor": ACTOR, "source": self.source} | (caller.metadata() if caller else {})

    def prepare(self, data: bytes, capture: Capture) -> Prepared:
        """Check the bytes as the ingester would, store them and cut the tiles; raises ImageRefused."""
        checked = check_image_bytes(data, self.limits)
        if isinstance(checked, Rejected):
            raise ImageRefused(checked)
        sha, fmt, pixels = checked
        already = self.cat.blobs.exists(sha)
        if not already:
            self.cat.blobs.put(data)
        thumbnail = write_thumbnail(pixels, sha, self.cat.settings.thumbnail_root)
        return Prepared(
            capture=capture,
            image=describe(sha, fmt, pixels, len(data), already_stored=already, thumbnail=thumbnail),
            tiles=cut_tiles(gray8(pixels), self.engine.input_size),
        )

    def judge(self, prepared: Prepared, output: EngineOutput, *, ingest: bool = True,
              recorded: PartRecord | None = None, caller: Caller | None = None) -> Inspection:
        """Combine the engine's tile results into the image's verdict, take the part's decision over its images
        here and what the log holds about it (`recorded`), and build the events that record them
        (ImageIngested unless `ingest` is False, PredictionRecorded, and PartDispositioned when the part's
        decision is new or changed), sent by ``caller``."""
        metadata = self.metadata(caller)
        engine = self.engine
        result: ImageResult = combine(
            prepared.tiles, output.probabilities, output.defect_cells,
            cell_size=engine.cell_size, ok_index=engine.ok_index,
        )
        scores = {c: round(float(p), 6) for c, p in zip(engine.classes, result.probabilities, strict=True)}
        defect_score = float(result.defect_score)
        predicted = self._predicted_class(result)
        regions = regions_from_map(
            result.defect_map, cell_size=engine.cell_size, threshold=self.rules.region_threshold
        )
        capture = prepared.capture
        finding = Finding(
            sha256=prepared.sha256, camera=capture.camera, predicted_class=predicted, scores=scores,
            defect_score=defect_score, regions=regions,
        )
        events = []
        if ingest:
            events.append(self._ingested(prepared, metadata))
        events.append(NewEvent(
            data=PredictionRecorded(
                sha256=prepared.sha256, engine_id=engine.engine_id, scores=scores, predicted_class=predicted,
                part_id=capture.part_id, defect_score=min(1.0, max(0.0, defect_score)),
                regions=[Region(shape="box", x0=r.bbox[0], y0=r.bbox[1], x1=r.bbox[2], y1=r.bbox[3])
                         for r in regions],
                threshold=self.rules.threshold, threshold_from=self.threshold_from,
            ),
            occurred_at=capture.captured_at,
            event_id=event_id_for("prediction", prepared.sha256, engine.engine_id, capture.part_id,
                                  capture.captured_at.isoformat(), self.rules.rules_version),
            metadata=metadata,
        ))
        part, new_decision_id = self.parts.add(capture.part_id, finding, self.rules, engine.engine_id, recorded)
        if new_decision_id is not None:
            events.append(NewEvent(
                data=PartDispositioned(
                    part_id=capture.part_id, decision=part.decision, decided_by=engine.engine_id,
                    decider="engine", rule=part.rule, rules_version=part.rules_version,
                    engine_id=engine.engine_id, image_sha256s=sorted(part.image_sha256s), reason=part.reason,
                ),
                occurred_at=capture.captured_at,
                event_id=new_decision_id,
                metadata=metadata,
            ))
        return Inspection(
            capture=capture, sha256=prepared.sha256, engine_id=engine.engine_id, scores=scores,
            predicted_class=predicted, defect_score=defect_score,
            regions=[{"bbox": list(r.bbox), "area_px": r.area_px, "peak": round(float(r.peak), 6)}
                     for r in regions],
            part=part, events=events,
        )

    def rejection(self, refused: ImageRefused, capture: Capture | None, request_key: str,
                  caller: Caller | None = None) -> NewEvent:
        """The quarantine event for bytes the server refused, keyed by the request's fields and bytes."""
        rejected = refused.rejected
        row = {"source": self.source}
        if capture is not None:
            row |= {"part_id": capture.part_id, "line": capture.line, "station": capture.station,
                    "camera": capture.camera, "captured_at": capture.captured_at.isoformat()}
        return NewEvent(
            data=ImageRejected(delivery_key=request_key, reason=rejected.reason, detail=rejected.detail,
                               source_path=f"{self.source}:{capture.camera if capture else '?'}",
                               sha256=rejected.sha256, row=row),
            occurred_at=capture.captured_at if capture else datetime.now().astimezone(),
            event_id=event_id_for("rejected", request_key),
            metadata=self.metadata(caller),
        )

    def _predicted_class(self, result: ImageResult) -> str:
        engine = self.engine
        if result.defect_score < self.rules.threshold:
            return engine.ok_class
        defect = [i for i in range(len(engine.classes)) if i != engine.ok_index]
        return engine.classes[max(defect, key=lambda i: result.probabilities[i])]

    def _ingested(self, prepared: Prepared, metadata: dict[str, str]) -> NewEvent:
        c = prepared.capture
        return ingested_event(prepared.image, self.cat.settings, part_id=c.part_id, line=c.line, station=c.station,
                              camera=c.camera, captured_at=c.captured_at,
                              source_path=f"{self.source}:{c.line}/{c.station}/{c.camera}/{c.part_id}",
                              metadata=metadata)
