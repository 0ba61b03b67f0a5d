"""Finding recorded engines and loading one only when its lineage holds: its model, ONNX file, dataset version
and manifest hash as the catalog knows them, and artifact bytes that hash to its id."""

from __future__ import annotations

import hashlib

from catalog import Catalog
from catalog.blobs import sha_from_uri
from catalog.errors import CatalogError
from catalog.lineage import (
    CLASSIFIER,
    DatasetVersionRow,
    ModelRow,
    champion,
    dataset_version,
    engine_records,
    model_row,
)
from serving.engines.artifact import EngineArtifact
from serving.engines.base import Engine, EngineError, EngineRecord, LineageError
from serving.engines.onnxruntime_backend import OnnxRuntimeEngine
from serving.engines.tensorrt_backend import TensorRTEngine
from serving.engines.torch_cuda_backend import TorchCudaEngine

ENGINE_CLASSES: dict[str, type[OnnxRuntimeEngine | TensorRTEngine | TorchCudaEngine]] = {
    "onnxruntime": OnnxRuntimeEngine, "tensorrt": TensorRTEngine, "torch_cuda": TorchCudaEngine,
}
# What an artifact's header repeats of its record; any difference means the record does not describe it.
_HEADER_FIELDS = ("backend", "precision", "device", "model_id", "onnx_sha256", "dataset_version_id",
                  "manifest_hash", "threshold")


def engine_record(cat: Catalog, engine_id: str) -> EngineRecord | None:
    """The engine as `EngineBuilt` recorded it, or None."""
    found = engine_records(cat, engine_id=engine_id)
    return found[0] if found else None


def list_engines(cat: Catalog) -> list[EngineRecord]:
    """Every recorded engine, newest first."""
    return engine_records(cat)


def engine_to_serve(cat: Catalog, *, backend: str | None = None) -> str:
    """The id of the engine to serve: the newest built from the champion classifier, else the newest of all
    (only of ``backend`` when given, e.g. "onnxruntime" on a machine without a GPU)."""
    engines = engine_records(cat, backend=backend)
    if not engines:
        raise EngineError(f"no {backend + ' ' if backend else ''}engine is recorded: build one with "
                          f"`visionledger engines build{' --backend ' + backend if backend else ''}`")
    served = champion(cat, CLASSIFIER)
    return next((e for e in engines if e.model_id == served), engines[0]).engine_id


def load_engine(cat: Catalog, engine_id: str, *, threads: int | None = None) -> Engine:
    """The engine, verified against the catalog and ready to run; `LineageError` saying what is wrong where
    its record, model, ONNX file, dataset version, manifest hash or artifact bytes do not agree.

    ``threads``: ONNX Runtime's intra-op threads (default: one per core); the GPU backends ignore it.
    """
    record = engine_record(cat, engine_id)
    if record is None:
        raise LineageError(f"no EngineBuilt records engine {engine_id!r}: build one with `visionledger "
                           "engines build` and load it by the id that prints (`visionledger engines list`)")
    artifact = verify_lineage(cat, record)
    return ENGINE_CLASSES[record.backend](record, artifact, threads=threads)


def published_version(cat: Catalog, model: ModelRow, name: str) -> DatasetVersionRow:
    """The dataset version ``model`` learned from, published with the manifest hash the model records; else
    `LineageError` (``name`` says whose lineage it is)."""
    try:
        version = dataset_version(cat, model.dataset_version_id)
    except CatalogError:
        raise LineageError(
            f"{name} names dataset version {model.dataset_version_id}, which is not published, so it cannot "
            "be traced to its data: publish that version, or use a model of a published one") from None
    if version.manifest_hash != model.manifest_hash:
        raise LineageError(
            f"{name} records manifest hash {model.manifest_hash}, but dataset version {version.version_id} "
            f"was published with {version.manifest_hash}: the model did not learn from the version it names; "
            "train again on the published version")
    return version


def verify_lineage(cat: Catalog, record: EngineRecord) -> EngineArtifact:
    """Check ``record`` against the catalog and its artifact's bytes: the parsed artifact, else
    `LineageError`."""
    name = f"engine {record.engine_id[:12]}"
    try:
        model = model_row(cat, record.model, record.model_id)
    except CatalogError:
        raise LineageError(
            f"{name} names model {record.model_id} ({record.model}), which the catalog has not registered, "
            "so it cannot be traced to its training data: build an engine from a registered model instead"
        ) from None
    for field in ("onnx_sha256", "dataset_version_id", "manifest_hash"):
        recorded, registered = getattr(record, field), getattr(model, field)
        if recorded != registered:
            raise LineageError(
                f"{name} records {field} {recorded}, but model {record.model_id} has {registered}: the "
                "engine was not built from this model as registered (or the model was exported again since); "
                "build a new engine from the model")
    published_version(cat, model, name)
    try:
        data = cat.blobs.read(sha_from_uri(record.artifact_uri))
    except (KeyError, ValueError):
        raise LineageError(f"{name}: its artifact {record.artifact_uri} is not in the blob store "
                           f"({cat.settings.blob_root}): restore it, or build the engine again") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != record.engine_id:
        raise LineageError(
            f"{name}: the bytes of {record.artifact_uri} hash to {actual}, not to the engine id "
            f"{record.engine_id}: the artifact was altered or replaced; do not serve it, build the engine "
            "again")
    artifact = EngineArtifact.from_bytes(data, name=record.artifact_uri)
    differ = [f"{f} {getattr(artifact, f)} (record: {getattr(record, f)})" for f in _HEADER_FIELDS
              if getattr(artifact, f) != getattr(record, f)]
    if differ:
        raise LineageError(f"{name}: its artifact was built with {', '.join(differ)}: the record does not "
                           "describe it; build the engine again")
    return artifact
