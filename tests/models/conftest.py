"""A tiny simulated factory (128 px images) shared by the models tests, read without any database."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ingestion.simulated_factory import simulate_factory
from models.data import SampleSet
from models.quality import MASK_URI_PREFIX, simulated_manifest

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
