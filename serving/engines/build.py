"""Building an engine from a registered, exported classifier, keeping its artifact as a blob and recording
`EngineBuilt` with its lineage (model, ONNX file, dataset version, manifest hash)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np

from catalog import Catalog
from catalog.blobs import sha_from_uri
from catalog.datasets import load_manifest
from catalog.events import EngineBuilt
from catalog.lineage import CLASSIFIER, DatasetVersionRow, ModelRow, champion, model_row
from catalog.store import NewEvent, event_id_for
from imaging.gray import decode_gray8
from models.export import CLASSIFIER_OUTPUTS, NORMALISATION, read_metadata
from serving.engines.artifact import BuildInputs, EngineArtifact
from serving.engines.base import BACKENDS, PRECISIONS, EngineError, EngineRecord, LineageError, cuda_index
from serving.engines.registry import ENGINE_CLASSES, engine_record, published_version

CALIBRATION_IMAGES = 64  # int8 calibration: enough to see the activations' range, quick to run


@dataclass(frozen=True)
class BuiltEngine:
    record: EngineRecord
    new: bool  # False when this very engine (same artifact bytes) was already recorded


def default_model_id(cat: Catalog) -> str:
    """The classifier to build an engine of when none is named: the champion, else the latest exported."""
    return model_row(cat, CLASSIFIER, champion(cat, CLASSIFIER), need_onnx=True).model_id


def build_engine(
    cat: Catalog,
    *,
    model_id: str,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    device: str = "cpu",
    calibration_images: np.ndarray | None = None,
    actor: str = "visionledger",
) -> BuiltEngine:
    """Build an engine of the exported classifier ``model_id``, store its artifact and record `EngineBuilt`
    (once: building the same engine again appends nothing). int8 calibration uses ``calibration_images``
    (uint8 N x H x W), by default up to 64 training images of the model's dataset version."""
    if backend not in BACKENDS or precision not in PRECISIONS:
        raise EngineError(f"backend {backend!r} / precision {precision!r}: choose a backend of {BACKENDS} "
                          f"and a precision of {PRECISIONS}")
    cuda_index(device)  # a clear error for a device name no backend knows
    model = model_row(cat, model_id=model_id)
    if model.onnx_uri is None or model.onnx_sha256 is None:
        raise EngineError(f"model {model_id} has no ONNX export yet: materialize the classifier_onnx asset "
                          f"(config model_id: {model_id}) first")
    version = published_version(cat, model, f"model {model_id}")
    onnx = cat.blobs.read(sha_from_uri(model.onnx_uri))
    if hashlib.sha256(onnx).hexdigest() != model.onnx_sha256:
        raise LineageError(f"the ONNX file of model {model_id} ({model.onnx_uri}) no longer hashes to the "
                           f"recorded {model.onnx_sha256}: export the model again")
    network = served_network(onnx, name=f"the ONNX file of {model_id}")
    threshold = operating_threshold(model)
    engine_class = ENGINE_CLASSES[backend]
    inputs = BuildInputs(
        onnx=onnx, checkpoint=cat.blobs.read(sha_from_uri(model.artifact_uri)), precision=precision,
        device=device, input_size=network["input_size"],
        calibration_images=lambda: (calibration_images if calibration_images is not None
                                    else calibration_set(cat, version, network["input_size"])))
    artifact = EngineArtifact(
        backend=backend, precision=precision, device=device, model_id=model.model_id,
        onnx_sha256=model.onnx_sha256, dataset_version_id=version.version_id,
        manifest_hash=version.manifest_hash, **network, payload=engine_class.build_payload(inputs),
        threshold=threshold)
    blob = cat.blobs.put(artifact.to_bytes())
    recorded = engine_record(cat, blob.sha256)
    if recorded is not None:
        # The first record of an artifact stands, even if the libraries have been upgraded since.
        return BuiltEngine(recorded, new=False)
    record = EngineRecord(
        engine_id=blob.sha256, model=model.model, model_id=model.model_id, onnx_sha256=model.onnx_sha256,
        dataset_version_id=version.version_id, manifest_hash=version.manifest_hash, backend=backend,
        precision=precision, device=device, library_versions=engine_class.library_versions(),
        artifact_uri=blob.uri, threshold=threshold)
    result = cat.append([NewEvent(EngineBuilt(**asdict(record)), datetime.now(UTC),
                                  event_id=event_id_for("engine", record.engine_id),
                                  metadata={"actor": actor, "source": "serving.engines.build"})])
    return BuiltEngine(record, new=bool(result.appended))


def operating_threshold(model: ModelRow) -> float | None:
    """The threshold the model's evaluation chose on its validation split, which its engines carry; None for
    a model not evaluated that way (its engines then decide at the rule set's or the fallback threshold)."""
    evaluation = model.evaluation or {}
    if evaluation.get("threshold_split") != "validation":
        return None
    return float(evaluation["threshold"])


def served_network(onnx: bytes, *, name: str) -> dict:
    """What an engine needs to know of the network, from the ONNX file's metadata, which must say it was
    exported as this code serves it: a classifier with per-cell outputs, fed as `models.data.to_input`
    feeds."""
    meta = read_metadata(onnx)
    if meta.get("kind") != "classifier":
        raise EngineError(f"{name} is a {meta.get('kind', 'unknown')} network; engines serve the classifier")
    if json.loads(meta.get("outputs", "[]")) != list(CLASSIFIER_OUTPUTS):
        raise EngineError(f"{name} has outputs {meta.get('outputs')}, not {list(CLASSIFIER_OUTPUTS)}: it "
                          "was exported before the server's defect map existed; materialize classifier_onnx "
                          "again")
    if json.loads(meta["normalisation"]) != json.loads(NORMALISATION):
        raise EngineError(f"{name} expects its input normalised as {meta['normalisation']}, and this code "
                          f"feeds {NORMALISATION}: export the model again with this version")
    h, w = json.loads(meta["input_size"])
    return {"classes": tuple(json.loads(meta["classes"])), "ok_class": meta["ok_class"], "input_size": (h, w),
            "cell_size": int(meta["cell_size"])}


def calibration_set(cat: Catalog, version: DatasetVersionRow, input_size: tuple[int, int], *,
                    count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """Up to ``count`` training images of ``version`` of the engine's input size (uint8 N x H x W): what int8
    calibration sees. The manifest is sorted by sha256, so every k-th image is a fixed sample blind to
    class."""
    manifest = load_manifest(cat.lake, version.manifest_uri, expected_hash=version.manifest_hash)
    splits = zip(manifest["sha256"].to_pylist(), manifest["split"].to_pylist(), strict=True)
    train = [sha for sha, split in splits if split == "train"]
    images = [decode_gray8(cat.blobs.read(sha)) for sha in train[::max(1, len(train) // count)][:count]]
    images = [image for image in images if image.shape == tuple(input_size)]
    if not images:
        raise EngineError(f"dataset version {version.version_id} has no training image of {input_size[0]} x "
                          f"{input_size[1]} px to calibrate int8 with: pass calibration_images")
    return np.stack(images)
