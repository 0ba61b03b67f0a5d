"""Training a model on a dataset version and exporting it to ONNX.

A model is identified by its checkpoint's bytes (training is deterministic: the same dataset version and
hyper-parameters give the same bytes, so training again registers nothing new). ``ModelRegistered`` names
the dataset version and manifest hash it learned from; ``ModelExported`` the checked ONNX file.
"""

import math
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from pydantic import BaseModel

from catalog import Catalog
from catalog.events import ModelExported, ModelRegistered
from catalog.ontology import Ontology
from catalog.store import NewEvent, event_id_for
from learning.registry import (
    CLASSIFIER,
    SEGMENTER,
    dataset_version,
    load_checkpoint,
    model_row,
    samples,
    store_artifact,
)
from models.checkpoint import model_bytes
from models.export import PARITY_TOLERANCE, export_classifier, export_segmenter
from models.training import (
    ClassifierParams,
    SegmenterParams,
    TrainingResult,
    class_order,
    train_classifier,
    train_segmenter,
)

MODEL_NAMES = {"classifier": CLASSIFIER, "segmenter": SEGMENTER}


def default_params(which: str) -> ClassifierParams | SegmenterParams:
    """The default hyper-parameters of "classifier" or "segmenter": what the CLI and the assets start from."""
    return ClassifierParams() if which == "classifier" else SegmenterParams()


class TrainingConfig(BaseModel):
    """Which dataset version to learn from (default: the latest of inspection-all), how long (default: the
    model's own defaults) and where (cpu, or cuda / cuda:N)."""

    dataset_version_id: str | None = None
    epochs: int = 0  # 0: the model's default
    samples_per_epoch: int = 0  # 0: one pass over the training images per epoch
    seed: int = 0
    device: str = "cpu"

    def params(self, which: str) -> ClassifierParams | SegmenterParams:
        overrides = {"epochs": self.epochs} if self.epochs else {}
        return replace(default_params(which), samples_per_epoch=self.samples_per_epoch, seed=self.seed,
                       **overrides)


def register_model(cat: Catalog, model: str, network, params, version, metrics: dict,
                   log) -> tuple[str, bool]:
    """Keep the trained network as a blob and record ``ModelRegistered``: its model id, and whether new."""
    data = model_bytes(network, params)
    sha, uri = store_artifact(cat, data)
    model_id = f"{model}-{sha[:12]}"
    numbers = {k: float(v) for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    result = cat.append([NewEvent(
        ModelRegistered(model=model, model_id=model_id, dataset_version_id=version.version_id,
                        manifest_hash=version.manifest_hash, hyperparameters=params.to_dict(), metrics=numbers,
                        artifact_sha256=sha, artifact_uri=uri),
        datetime.now(UTC), event_id=event_id_for("model", model_id),
        metadata={"actor": "dagster", "source": "learning.training"})])
    log(f"{model_id}: {'registered' if result.appended else 'already registered'} ({len(data):,} bytes)")
    return model_id, bool(result.appended)


def _epoch_log(log, epochs: int):
    def report(figures: dict) -> None:
        text = f"epoch {figures['epoch']}/{epochs}: loss {figures['loss']:.4f}, {figures['seconds']:.0f} s"
        validation = figures.get("validation") or {}
        if "average_precision" in validation:
            text += (f"; validation AP {validation['average_precision']:.3f}, recall at precision >= "
                     f"{validation['min_precision']} {validation['recall_at_min_precision']:.3f}")
        elif "dice" in validation:
            text += f"; validation dice {validation['dice']:.3f}"
        log(text)

    return report


@dataclass(frozen=True)
class TrainedModel:
    model_id: str
    new: bool  # False when the same model was registered before (training is deterministic)
    dataset_version_id: str
    result: TrainingResult


def train_model(cat: Catalog, model: str, params: ClassifierParams | SegmenterParams, log, *,
                dataset_version_id: str | None = None, progress=None, device: str = "cpu") -> TrainedModel:
    """Train ``model`` (the classifier or the U-Net) on a dataset version's training split (default: the
    latest of inspection-all) on ``device``, validate it on its validation split and register it. ``log``
    hears each epoch's loss and, where there are any, its validation figures."""
    version = dataset_version(cat, dataset_version_id)
    _, sample_set = samples(cat, version)
    train, validation = sample_set.split("train"), sample_set.split("validation")
    log(f"training {model} on {version.version_id}: {len(train):,} images, {params.epochs} epochs on {device}")
    epoch_log = _epoch_log(log, params.epochs)
    if model == CLASSIFIER:
        ontology = Ontology.load(cat)
        classes = class_order(ontology.versions[version.spec["ontology_version"]].classes)
        result = train_classifier(train, params, validation=validation, classes=classes, progress=progress,
                                  device=device, on_epoch=epoch_log)
    else:
        result = train_segmenter(train, params, validation=validation, progress=progress, device=device,
                                 on_epoch=epoch_log)
    model_id, new = register_model(cat, model, result.model, params, version, result.metrics, log)
    return TrainedModel(model_id, new, version.version_id, result)


class ExportConfig(BaseModel):
    """The model to export (default: the latest registered of its name)."""

    model_id: str | None = None


def export_model(cat: Catalog, model: str, model_id: str | None, log) -> tuple[str, ModelExported, bool]:
    """Export a registered model to ONNX (dynamic batch, checked, parity with torch on its own dataset's
    images), keep the file as a blob and record ``ModelExported``."""
    row = model_row(cat, model, model_id)
    checkpoint = load_checkpoint(cat, row.artifact_uri)
    _, sample_set = samples(cat, dataset_version(cat, row.dataset_version_id))
    check = np.stack([sample_set.image(i) for i in range(min(4, len(sample_set)))])
    export = export_classifier if model == CLASSIFIER else export_segmenter
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        report = export(checkpoint.model, path, input_size=check.shape[1:],
                        metadata={"model_id": row.model_id, "dataset_version_id": row.dataset_version_id,
                                  "manifest_hash": row.manifest_hash},
                        check_images=check)
        data = path.read_bytes()
        opset = next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))
    sha, uri = store_artifact(cat, data)
    event = ModelExported(model=model, model_id=row.model_id, onnx_sha256=sha, onnx_uri=uri, opset=opset,
                          parity_max_abs_diff=max(report.max_abs_diff.values()), parity_tolerance=PARITY_TOLERANCE)
    result = cat.append([NewEvent(event, datetime.now(UTC), event_id=event_id_for("onnx", row.model_id, sha),
                                  metadata={"actor": "dagster", "source": "learning.training"})])
    log(f"{row.model_id} → ONNX {sha[:12]} (opset {opset}, parity {event.parity_max_abs_diff:.2e})")
    return row.model_id, event, bool(result.appended)
