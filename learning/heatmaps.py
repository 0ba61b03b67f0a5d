"""Per-image explanations stored as images for the trace and review pages: Grad-CAM of the classifier's
predicted class, and the U-Net's defect mask, each drawn over the gray image and kept as a blob."""

import cv2
import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from catalog import Catalog
from catalog.errors import CatalogError
from catalog.review_queue import requested_reviews
from learning.registry import (
    CLASSIFIER,
    SEGMENTER,
    dataset_version,
    load_checkpoint,
    load_image,
    model_row,
    samples,
    store_artifact,
)
from models.classifier import classify, grad_cam
from models.segmenter import segment


def overlay(gray: np.ndarray, heat: np.ndarray) -> bytes:
    """``heat`` (0..1) in the jet colour map over the gray image, as PNG bytes."""
    colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    ok, png = cv2.imencode(".png", cv2.addWeighted(base, 0.6, colour, 0.4, 0))
    if not ok:
        raise ValueError("could not encode the heatmap")
    return png.tobytes()


def images_to_explain(cat: Catalog, queue: str, test_shas: list[str], limit: int) -> list[str]:
    """The queued images first (reviewers look at them next), then the test split's: at most ``limit``."""
    chosen = list(dict.fromkeys(requested_reviews(cat, queue) + test_shas))
    return chosen[:limit]


def explain(cat: Catalog, model_id: str | None, *, queue: str, limit: int, log) -> tuple[pa.Table, str]:
    """Heatmaps of the images to explain, kept as blobs; the table listing them and its lake path."""
    row = model_row(cat, CLASSIFIER, model_id)
    classifier = load_checkpoint(cat, row.artifact_uri).model
    try:
        seg_row = model_row(cat, SEGMENTER)
        segmenter = load_checkpoint(cat, seg_row.artifact_uri).model
    except CatalogError:
        seg_row, segmenter = None, None
    _, sample_set = samples(cat, dataset_version(cat, row.dataset_version_id))
    shas = images_to_explain(cat, queue, [s.sha256 for s in sample_set.split("test")], limit)
    records = []
    for n, sha in enumerate(shas, 1):
        gray = load_image(cat, sha)
        predicted = classify(classifier, [gray]).predicted[0]
        _, uri = store_artifact(cat, overlay(gray, grad_cam(classifier, gray, predicted)))
        records.append({"sha256": sha, "model_id": row.model_id, "kind": "grad_cam", "class": predicted, "uri": uri})
        if segmenter is not None:
            _, uri = store_artifact(cat, overlay(gray, segment(segmenter, gray)[0]))
            records.append({"sha256": sha, "model_id": seg_row.model_id, "kind": "mask", "class": "defect",
                            "uri": uri})
        if n % 20 == 0 or n == len(shas):
            log(f"explained {n} / {len(shas)} images")
    table = pa.Table.from_pylist(records, schema=pa.schema([
        ("sha256", pa.string()), ("model_id", pa.string()), ("kind", pa.string()), ("class", pa.string()),
        ("uri", pa.string())]))
    return table, str(cat.lake.write_parquet(cat.lake.heatmaps_of(row.model_id), table))


class HeatmapConfig(BaseModel):
    """The classifier (default: the latest), the review queue whose images are explained first, and how many
    images at most."""

    model_id: str | None = None
    queue: str = "active-learning"
    limit: int = 100
