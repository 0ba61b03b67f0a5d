"""A tiny simulated factory (128 px images) shared by the models tests, read without any database."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from ingestion.simulated_factory import simulate_factory
from models.data import SampleSet

MASK_URI_PREFIX = "blob:"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _split_of(part_id: str, validation: float, test: float) -> str:
    # By part, from a hash of its id: both cameras of a part land in one split, whatever the row order.
    u = int(hashlib.sha256(part_id.encode()).hexdigest()[:8], 16) / 2**32
    return "test" if u < test else "validation" if u < test + validation else "train"


def simulated_manifest(
    factory: Path, *, validation: float = 0.1, test: float = 0.3
) -> tuple[pa.Table, dict[str, Path], dict[str, str]]:
    """A manifest in the dataset-version layout built from a simulator run's files, the blob paths by hash
    (images and masks), and the true class of every image by hash."""
    truth = {r["path"]: r["true_label"] for r in _read_csv(factory / "truth.csv")}
    captured = {r["path"]: r for r in _read_csv(factory / "manifest.csv")}
    corrected = {r["label_id"]: r["new_label"] for r in _read_csv(factory / "corrections.csv")}
    blobs: dict[str, Path] = {}
    true_class: dict[str, str] = {}

    def blob(relative: str) -> str:
        path = factory / relative
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        blobs[sha] = path
        return sha

    rows = []
    for label in _read_csv(factory / "labels.csv"):  # broken files were never labelled
        sha = blob(label["path"])
        true_class[sha] = truth[label["path"]]
        where = captured[label["path"]]
        at = datetime.fromisoformat(where["captured_at"])
        rows.append(
            {
                "sha256": sha,
                "class": corrected.get(label["label_id"], label["label"]),
                "split": _split_of(label["part_id"], validation, test),
                "part_id": label["part_id"],
                "day": at.date(),
                "line": where["line"],
                "station": where["station"],
                "camera": where["camera"],
                "captured_at": at,
                "mask_uri": MASK_URI_PREFIX + blob(label["mask_path"]) if label["mask_path"] else None,
                "regions": json.dumps([{"shape": "ellipse", **json.loads(label["region"])}])
                if label["region"]
                else None,
            }
        )
    counts = Counter(r["class"] for r in rows)
    for r in rows:  # class-balancing weight: each class weighs as much as any other in all
        r["weight"] = len(rows) / (len(counts) * counts[r["class"]])
    return pa.Table.from_pylist(rows), blobs, true_class


# Seed 6 over 4 tiny days puts every defect class in the training split and some defects in the test split.
SEED, DAYS, IMAGE_SIZE = 6, 4, 128


@pytest.fixture(scope="session")
def tiny_samples(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    factory = tmp_path_factory.mktemp("models") / "factory"
    simulate_factory(factory, days=DAYS, seed=SEED, size="tiny", image_size=IMAGE_SIZE)
    manifest, blobs, _ = simulated_manifest(factory, validation=0.0, test=0.3)

    def read(path: Path) -> np.ndarray:
        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)

    return SampleSet.from_manifest(
        manifest, lambda sha: read(blobs[sha]), lambda uri: read(blobs[uri.removeprefix(MASK_URI_PREFIX)])
    )


@pytest.fixture(scope="session")
def tiny_images(tiny_samples: SampleSet) -> np.ndarray:
    """Three test-split images, defective ones first: the inputs of the export parity checks."""
    test = tiny_samples.split("test")
    order = sorted(range(len(test)), key=lambda i: not test[i].is_defect)
    return np.stack([test.image(i) for i in order[:3]])
