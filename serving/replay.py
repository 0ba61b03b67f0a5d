"""Replay: an engine run over historical images through the server's own inspection path.

Predictions are recorded (with deterministic ids, so replaying twice appends nothing) under the replayed
engine; part decisions are computed for the report but not recorded, because the line's real decisions stand.
The per-image report, with the human verdict beside the engine's, goes to the lake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa

from catalog import Catalog
from catalog.events import PredictionRecorded
from catalog.queries import images_to_replay
from serving.decision import RuleSet, load_rules
from serving.engines import load_engine
from serving.engines.base import EngineOutput
from serving.inspection import Capture, Inspection, Inspector

Progress = Callable[[int, int], None]
BATCH_TILES = 16


@dataclass(frozen=True)
class ReplayReport:
    engine_id: str
    images: int
    recorded: int  # predictions appended (0 when replayed before)
    agreement: float | None  # share of images with a human verdict where the engine's class matches it
    verdicts: int  # images with a human verdict
    rejected_parts: int
    parts: int
    report_uri: str


def inspect_history(
    cat: Catalog, inspector: Inspector, images: list[tuple], *, progress: Progress | None = None
) -> Iterator[Inspection]:
    """The inspector's verdict on each of `images` ((sha256, part, line, station, camera, captured_at, ...)
    rows), read back from the blob store, in order; tiles of consecutive images share engine runs."""
    engine, pending = inspector.engine, []

    def flush() -> Iterator[Inspection]:
        output = engine.infer(np.concatenate([p.tiles.tiles for p in pending]))
        start = 0
        for prepared in pending:
            n = len(prepared.tiles.tiles)
            part = EngineOutput(output.probabilities[start:start + n], output.defect_cells[start:start + n])
            start += n
            yield inspector.judge(prepared, part, ingest=False)
        pending.clear()

    for i, (sha, part_id, line, station, camera, captured_at, *_) in enumerate(images):
        capture = Capture(part_id=part_id, line=line, station=station, camera=camera, captured_at=captured_at)
        pending.append(inspector.prepare(cat.blobs.read(sha), capture))
        if sum(len(p.tiles.tiles) for p in pending) >= BATCH_TILES:
            yield from flush()
        if progress:
            progress(i + 1, len(images))
    if pending:
        yield from flush()


def replay(
    cat: Catalog,
    engine_id: str,
    *,
    first_day: date | None = None,
    last_day: date | None = None,
    rules: RuleSet | None = None,
    record: bool = True,
    progress: Progress | None = None,
) -> ReplayReport:
    """Run `engine_id` over the images captured on the factory days [first_day, last_day] (each line's own,
    `catalog.factory_day`; open when None)."""
    engine = load_engine(cat, engine_id)
    inspector = Inspector(cat, engine, rules or load_rules(), source="replay")
    images = images_to_replay(cat, first_day=first_day, last_day=last_day)
    labels = {sha: label for sha, *_, label in images}
    rows, events = [], []
    for inspection in inspect_history(cat, inspector, images, progress=progress):
        events.extend(e for e in inspection.events if isinstance(e.data, PredictionRecorded))
        rows.append({"sha256": inspection.sha256, "part_id": inspection.capture.part_id,
                     "camera": inspection.capture.camera, "captured_at": inspection.capture.captured_at,
                     "predicted_class": inspection.predicted_class, "defect_score": inspection.defect_score,
                     "human_class": labels.get(inspection.sha256),
                     "part_decision": inspection.part.decision, "part_rule": inspection.part.rule})
    engine.close()
    appended = cat.append(events).appended if record and events else 0
    # Parts are judged on all their replayed images: their last row holds the final decision.
    final = {r["part_id"]: r["part_decision"] for r in rows}
    judged = [r for r in rows if r["human_class"] is not None]
    window = f"{first_day or 'start'}_{last_day or 'end'}"
    uri = f"replays/engine-{engine.engine_id[:12]}/{window}.parquet"
    cat.lake.write_parquet(uri, pa.Table.from_pylist(rows, schema=_SCHEMA))
    return ReplayReport(
        engine_id=engine.engine_id, images=len(rows), recorded=appended,
        agreement=sum(r["predicted_class"] == r["human_class"] for r in judged) / len(judged) if judged else None,
        verdicts=len(judged), rejected_parts=sum(d == "reject" for d in final.values()), parts=len(final),
        report_uri=uri,
    )


def predicted_classes(cat: Catalog, engine_id: str, shas: Sequence[str]) -> list[str]:
    """The class the line would give each image (by sha256) under `engine_id` and the packaged rules, at the
    threshold the server would use (the engine's own): for the regression gate, which records nothing."""
    rules = load_rules()
    engine = load_engine(cat, engine_id)
    try:
        found = {row[0]: row for row in images_to_replay(cat, shas=shas)}
        missing = [s for s in shas if s not in found]
        if missing:
            raise ValueError(f"{len(missing)} image(s) unknown to the catalog or excluded, e.g. {missing[0]}")
        inspector = Inspector(cat, engine, rules, source="regression-replay")
        return [i.predicted_class for i in inspect_history(cat, inspector, [found[s] for s in shas])]
    finally:
        engine.close()


_SCHEMA = pa.schema([
    ("sha256", pa.string()), ("part_id", pa.string()), ("camera", pa.string()),
    ("captured_at", pa.timestamp("us", tz="UTC")), ("predicted_class", pa.string()),
    ("defect_score", pa.float64()), ("human_class", pa.string()), ("part_decision", pa.string()),
    ("part_rule", pa.string()),
])
