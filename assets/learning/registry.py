"""What the learn-loop assets share: finding dataset versions, models and the champion in the read models,
reading a version's samples through the blob store, and keeping model artifacts as content-addressed blobs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catalog import Catalog
from catalog.blobs import sha_from_uri
from catalog.datasets import load_manifest
from catalog.errors import CatalogError
from models.checkpoint import Checkpoint, load_model
from models.data import SampleSet, decode_png

CLASSIFIER = "inspection-classifier"
SEGMENTER = "defect-segmenter"
DEFAULT_DATASET = "inspection-all"


@dataclass(frozen=True)
class DatasetVersionRow:
    version_id: str
    dataset: str
    as_of_position: int
    manifest_hash: str
    manifest_uri: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class ModelRow:
    model_id: str
    model: str
    dataset_version_id: str
    manifest_hash: str
    artifact_uri: str
    onnx_uri: str | None
    onnx_sha256: str | None
    metrics: dict[str, Any]
    evaluation: dict[str, Any] | None


def dataset_version(cat: Catalog, version_id: str | None = None, *, dataset: str = DEFAULT_DATASET) -> DatasetVersionRow:
    """A published dataset version: the one named, else the latest of ``dataset``."""
    cat.catch_up()
    query = ("SELECT version_id, dataset, as_of_position, manifest_hash, manifest_uri, spec"
             " FROM projections.dataset_versions WHERE ")
    query += "version_id = %(v)s" if version_id else "dataset = %(d)s ORDER BY position DESC LIMIT 1"
    with cat.engine.connect() as conn:
        row = conn.exec_driver_sql(query, {"v": version_id, "d": dataset}).fetchone()
    if row is None:
        raise CatalogError(f"no dataset version {version_id!r}" if version_id else
                           f"no version of dataset {dataset!r} is published: materialize its dataset asset first")
    return DatasetVersionRow(*row)


def model_row(cat: Catalog, model: str, model_id: str | None = None, *, need_onnx: bool = False) -> ModelRow:
    """A registered model: the one named, else the latest registered of its name (with an ONNX export when
    ``need_onnx``)."""
    cat.catch_up()
    query = ("SELECT model_id, model, dataset_version_id, manifest_hash, artifact_uri, onnx_uri, onnx_sha256,"
             " metrics, evaluation FROM projections.models WHERE model = %(m)s")
    query += " AND model_id = %(i)s" if model_id else ""
    query += " AND onnx_uri IS NOT NULL" if need_onnx else ""
    with cat.engine.connect() as conn:
        row = conn.exec_driver_sql(query + " ORDER BY position DESC LIMIT 1", {"m": model, "i": model_id}).fetchone()
    if row is None:
        what = f"model {model_id!r}" if model_id else f"{'exported ' if need_onnx else ''}{model} model"
        raise CatalogError(f"no {what} is registered: materialize its training asset first")
    return ModelRow(*row)


def champion(cat: Catalog, model: str) -> str | None:
    """The model id in service for ``model``: the last promoted."""
    with cat.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT model_id FROM projections.model_promotions WHERE model = %(m)s"
                                   " ORDER BY position DESC LIMIT 1", {"m": model}).fetchone()
    return row[0] if row else None


def samples(cat: Catalog, version: DatasetVersionRow) -> tuple[Any, SampleSet]:
    """A version's manifest (checked against its recorded hash) and its samples, read through the blobs."""
    manifest = load_manifest(cat.lake, version.manifest_uri, expected_hash=version.manifest_hash)
    return manifest, SampleSet.from_manifest(manifest, lambda sha: load_image(cat, sha),
                                             lambda uri: load_image(cat, sha_from_uri(uri)))


def load_image(cat: Catalog, sha256: str) -> np.ndarray:
    return decode_png(cat.blobs.read(sha256))


def store_artifact(cat: Catalog, data: bytes) -> tuple[str, str]:
    """Keep ``data`` in the blob store; its sha256 and URI."""
    blob = cat.blobs.put(data)
    return blob.sha256, blob.uri


def load_checkpoint(cat: Catalog, artifact_uri: str) -> Checkpoint:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.vlm"
        path.write_bytes(cat.blobs.read(sha_from_uri(artifact_uri)))
        return load_model(path)


def onnx_path(cat: Catalog, onnx_uri: str, folder: Path) -> Path:
    """The ONNX file of ``onnx_uri`` as a local path (ONNX Runtime opens files)."""
    path = folder / f"{sha_from_uri(onnx_uri)}.onnx"
    path.write_bytes(cat.blobs.read(sha_from_uri(onnx_uri)))
    return path
