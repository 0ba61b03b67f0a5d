"""Synthetic production days as events (no pixels): the load of tests and benchmarks.

Deterministic by (seed, day): event ids are derived from them, so appending the same day twice stores it
once.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from catalog.events import (
    CorrectionRecorded,
    ImageIngested,
    LabelRecorded,
    OntologyPublished,
    PartDispositioned,
    PredictionRecorded,
)
from catalog.ontology import OK_CLASS
from catalog.store import NewEvent, event_id_for

CLASSES = (OK_CLASS, "scratch", "spot", "crack")
CLASS_WEIGHTS = (0.85, 0.06, 0.05, 0.04)
ANNOTATORS = ("ana", "ben", "chen")
ENGINE_ID = "synthetic-engine-v1"


@dataclass(frozen=True)
class FactoryShape:
    lines: int = 3
    stations: int = 2
    cameras: int = 2
    parts_per_line: int = 200


def ontology_event(seed: int = 0) -> NewEvent:
    return NewEvent(
        data=OntologyPublished(version=1, classes=list(CLASSES)),
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        event_id=event_id_for("synthetic", seed, "ontology", 1),
        metadata={"actor": "synthetic", "source": "catalog.synthetic"},
    )


def simulated_day(day: date, *, seed: int = 0, shape: FactoryShape = FactoryShape()) -> Iterator[NewEvent]:
    """One production day: every image ingested, labelled (with ~5 % wrong labels, half of them corrected),
    predicted by an engine, and every part dispositioned."""
    rng = random.Random(f"{seed}:{day.isoformat()}")
    meta = {"actor": "synthetic", "source": "catalog.synthetic"}
    start = datetime(day.year, day.month, day.day, 6, tzinfo=UTC)
    for line in range(shape.lines):
        for n in range(shape.parts_per_line):
            part_id = f"L{line}-{day:%Y%m%d}-{n:05d}"
            truth = rng.choices(CLASSES, CLASS_WEIGHTS)[0]
            captured = start + timedelta(seconds=n * 57 + line * 13)
            shas = []
            for station in range(shape.stations):
                for camera in range(shape.cameras):
                    key = (seed, part_id, station, camera)
                    sha = hashlib.sha256(repr(key).encode()).hexdigest()
                    shas.append(sha)
                    at = captured + timedelta(seconds=station * 5 + camera)
                    yield NewEvent(
                        ImageIngested(
                            sha256=sha, part_id=part_id, line=f"line-{line}", station=f"st-{station}",
                            camera=f"cam-{station}{camera}", captured_at=at, width=512, height=512, channels=1,
                            bit_depth=8, byte_size=180_000 + rng.randrange(20_000), blob_uri=f"blobs/{sha[:2]}/{sha}",
                            source_path=f"line-{line}/{day}/st-{station}/{part_id}_cam-{station}{camera}.png",
                        ),
                        occurred_at=at, event_id=event_id_for(*key, "ingested"), metadata=meta,
                    )
                    label = truth if rng.random() > 0.05 else rng.choice([c for c in CLASSES if c != truth])
                    labeled_at = at + timedelta(hours=2)
                    yield NewEvent(
                        LabelRecorded(sha256=sha, label_id=f"lab-{sha[:16]}", label=label,
                                      annotator=rng.choice(ANNOTATORS), ontology_version=1, part_id=part_id),
                        occurred_at=labeled_at, event_id=event_id_for(*key, "label"), metadata=meta,
                    )
                    if label != truth and rng.random() < 0.5:
                        yield NewEvent(
                            CorrectionRecorded(
                                sha256=sha, correction_id=f"cor-{sha[:16]}", target="label",
                                label_id=f"lab-{sha[:16]}", old_label=label, new_label=truth, corrected_by="dana",
                                reason="second review", ontology_version=1, part_id=part_id,
                            ),
                            occurred_at=labeled_at + timedelta(hours=20), event_id=event_id_for(*key, "correction"),
                            metadata=meta,
                        )
                    predicted = truth if rng.random() > 0.03 else rng.choice(CLASSES)
                    scores = {c: (0.9 if c == predicted else 0.1 / (len(CLASSES) - 1)) for c in CLASSES}
                    yield NewEvent(
                        PredictionRecorded(sha256=sha, engine_id=ENGINE_ID, scores=scores, predicted_class=predicted,
                                           part_id=part_id),
                        occurred_at=at + timedelta(milliseconds=60), event_id=event_id_for(*key, "prediction"),
                        metadata=meta,
                    )
            yield NewEvent(
                PartDispositioned(
                    part_id=part_id, decision="accept" if truth == OK_CLASS else "reject", decided_by=ENGINE_ID,
                    decider="engine", rule="any_defect_image" if truth != OK_CLASS else "all_images_ok",
                    rules_version="synthetic-1", engine_id=ENGINE_ID, image_sha256s=shas,
                ),
                occurred_at=captured + timedelta(seconds=12), event_id=event_id_for(seed, part_id, "disposition"),
                metadata=meta,
            )
