"""What the learn loop's operations share: the lineage readers (dataset versions, models, the champion), reading a
version's samples through the blob store, and keeping model artifacts as content-addressed blobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from catalog import Catalog
from catalog.blobs import sha_from_uri
from catalog.datasets import load_manifest
from catalog.lineage import (
    CLASSIFIER,
    SEGMENTER,
    DatasetVersionRow,
    ModelRow,
    champion,
    dataset_version,
    model_row,
)
from imaging.gray import decode_gray8
from models.checkpoint import Checkpoint, model_from_bytes
from models.data import SampleSet

# The lineage readers live in the catalog (serving needs them too); the learn loop imports them from here.
__all__ = [
    "CLASSIFIER", "SEGMENTER", "DatasetVersionRow", "ModelRow", "champion", "dataset_version",
    "load_checkpoint", "load_image", "model_row", "onnx_path", "samples", "store_artifact",
]


def samples(cat: Catalog, version: DatasetVersionRow) -> tuple[Any, SampleSet]:
    """A version's manifest (checked against its recorded hash) and its samples, read through the blobs."""
    manifest = load_manifest(cat.lake, version.manifest_uri, expected_hash=version.manifest_hash)
    return manifest, SampleSet.from_manifest(manifest, lambda sha: load_image(cat, sha),
                                             lambda uri: load_image(cat, sha_from_uri(uri)))


def load_image(cat: Catalog, sha256: str) -> np.ndarray:
    return decode_gray8(cat.blobs.read(sha256))


def store_artifact(cat: Catalog, data: bytes) -> tuple[str, str]:
    """Keep ``data`` in the blob store; its sha256 and URI."""
    blob = cat.blobs.put(data)
    return blob.sha256, blob.uri


def load_checkpoint(cat: Catalog, artifact_uri: str) -> Checkpoint:
    return model_from_bytes(cat.blobs.read(sha_from_uri(artifact_uri)), name=artifact_uri)


def onnx_path(cat: Catalog, onnx_uri: str, folder: Path) -> Path:
    """The ONNX file of ``onnx_uri`` as a local path (ONNX Runtime opens files)."""
    path = folder / f"{sha_from_uri(onnx_uri)}.onnx"
    path.write_bytes(cat.blobs.read(sha_from_uri(onnx_uri)))
    return path
