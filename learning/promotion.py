"""Regression replay and promotion: a candidate classifier replayed beside the champion, through their ONNX
Runtime engines and the server's inspection path as production runs them, on historical images with their
human verdicts (labels and corrections), slice by slice; only a passed gate appends ``ModelPromoted``."""

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime

import pyarrow as pa
from pydantic import BaseModel

from catalog import Catalog
from catalog.datasets import load_manifest
from catalog.events import ModelPromoted, RegressionReplayed
from catalog.queries import curated_images
from catalog.store import NewEvent, event_id_for
from learning.registry import (
    CLASSIFIER,
    ModelRow,
    champion,
    dataset_version,
    model_row,
)
from models.regression import GateResult, QualityFloor, compare
from serving.engines import build_engine
from serving.replay import predicted_classes

BATCH = 16


def replay_set(cat: Catalog, models: list[ModelRow], first_day: date | None, last_day: date | None) -> pa.Table:
    """Curated images with a human verdict, captured in [first_day, last_day], that none of ``models``
    learned from (their training and validation splits are left out)."""
    images = curated_images(cat)
    learned: set[str] = set()
    for row in models:
        manifest = load_manifest(cat.lake, dataset_version(cat, row.dataset_version_id).manifest_uri)
        learned.update(s for s, split in zip(manifest["sha256"].to_pylist(), manifest["split"].to_pylist(),
                                             strict=True) if split != "test")
    keep = [label is not None and sha not in learned and (first_day is None or day >= first_day)
            and (last_day is None or day <= last_day)
            for sha, label, day in zip(images["sha256"].to_pylist(), images["label"].to_pylist(),
                                       images["day"].to_pylist(), strict=True)]
    return images.filter(pa.array(keep, pa.bool_()))


def run_engine(cat: Catalog, row: ModelRow, shas: list[str]) -> list[str]:
    """The class production would give each image: the model's ONNX Runtime engine (built and recorded if it
    is not yet) through the server's own inspection path, at the engine's operating threshold."""
    engine_id = build_engine(cat, model_id=row.model_id, actor="dagster").record.engine_id
    return predicted_classes(cat, engine_id, shas)


class ReplayConfig(BaseModel):
    """The candidate (default: the latest exported classifier), the replay window (UTC days, default all),
    the gate (how much worse a slice may be, and how many images a slice needs to be judged) and the quality
    floor every model must reach on its validation split, the first one too."""

    candidate_model_id: str | None = None
    first_day: str | None = None
    last_day: str | None = None
    tolerance: float = 0.02
    min_images: int = 20
    min_validation_recall: float = QualityFloor.min_recall
    max_good_parts_rejected: float = QualityFloor.max_good_parts_rejected


def replay_and_gate(cat: Catalog, config: ReplayConfig, log, *,
                    signed: Mapping[str, str] | None = None) -> tuple[RegressionReplayed | None, GateResult | None, bool]:
    """Replay the candidate beside the champion and promote it if it passes. A promotion by hand is ``signed``
    (`identity.signatures.Signature.metadata()`: its signer the actor of both events, the signature on
    ``ModelPromoted``); the learn loop's own is unsigned, by dagster."""
    candidate = model_row(cat, CLASSIFIER, config.candidate_model_id, need_onnx=True)
    current = champion(cat, CLASSIFIER)
    if current == candidate.model_id:
        log(f"{candidate.model_id} is already the champion: nothing to replay")
        return None, None, False
    champ = model_row(cat, CLASSIFIER, current, need_onnx=True) if current else None
    first = date.fromisoformat(config.first_day) if config.first_day else None
    last = date.fromisoformat(config.last_day) if config.last_day else None
    images = replay_set(cat, [candidate] + ([champ] if champ else []), first, last)
    shas = images["sha256"].to_pylist()
    log(f"replaying {len(shas):,} images: {candidate.model_id} vs {champ.model_id if champ else 'no champion'}")
    cand_pred = run_engine(cat, candidate, shas)
    champ_pred = run_engine(cat, champ, shas) if champ else None
    cameras = [f"{a}/{b}/{c}" for a, b, c in zip(images["line"].to_pylist(), images["station"].to_pylist(),
                                                 images["camera"].to_pylist(), strict=True)]
    truth = images["label"].to_pylist()
    gate = compare(truth, cand_pred, champ_pred,
                   {"line": images["line"].to_pylist(), "camera": cameras,
                    "day": [d.isoformat() for d in images["day"].to_pylist()], "class": truth},
                   tolerance=config.tolerance, min_images=config.min_images)
    unfit = QualityFloor(config.min_validation_recall, config.max_good_parts_rejected).shortfalls(
        candidate.evaluation)
    if unfit:  # fit first: a gate passed against no champion, or a worse one, proves nothing
        gate = replace(gate, passed=False, reasons=[f"unfit: {r}" for r in unfit]
                       + [f"regression gate alone: {r}" for r in gate.reasons])
    folder = f"replays/{candidate.model_id}/vs-{champ.model_id if champ else 'none'}-at-{cat.head()}"
    cat.lake.write_parquet(f"{folder}/images.parquet", images.append_column("candidate", pa.array(cand_pred))
                           .append_column("champion", pa.array(champ_pred or [None] * len(shas), pa.string())))
    cat.lake.write_parquet(f"{folder}/slices.parquet", pa.Table.from_pylist(
        [{k: (", ".join(v) if isinstance(v, list) else v) for k, v in s.__dict__.items()} for s in gate.slices]))
    replayed = RegressionReplayed(model=CLASSIFIER, candidate_model_id=candidate.model_id,
                                  champion_model_id=champ.model_id if champ else None, passed=gate.passed,
                                  images=len(shas), summary=gate.summary(), report_uri=folder)
    replay_id = event_id_for("replay", candidate.model_id, replayed.champion_model_id, folder)
    meta = {"actor": (signed or {}).get("actor", "dagster"), "source": "learning.promotion"}
    events = [NewEvent(replayed, datetime.now(UTC), event_id=replay_id, metadata=meta)]
    if gate.passed:
        events.append(NewEvent(
            ModelPromoted(model=CLASSIFIER, model_id=candidate.model_id, previous_model_id=replayed.champion_model_id,
                          replay_event_id=replay_id, reason="; ".join(gate.reasons)),
            datetime.now(UTC), event_id=event_id_for("promotion", candidate.model_id, replay_id),
            metadata=meta | dict(signed or {})))
    cat.append(events)
    log(("PROMOTED: " if gate.passed else "refused: ") + "; ".join(gate.reasons))
    return replayed, gate, gate.passed
