"""Running a trained network over whole images of a sample set and summing up how it did, as plain dicts
ready to record as JSON (the arithmetic itself lives in `models.metrics`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from models import metrics
from models.classifier import Classification, DefectClassifier, classify
from models.data import SampleSet
from models.segmenter import DefectSegmenter, segment


def evaluate_classifier(
    model: DefectClassifier,
    samples: SampleSet,
    *,
    min_precision: float = 0.95,
    false_accept_cost: float = metrics.DAGM_FALSE_ACCEPT_COST,
    classification: Classification | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class scores and the image-level defect-versus-ok figures of `samples` (their labels are
    the truth); with `threshold` (an operating point chosen elsewhere), precision and recall there too. Pass
    `classification` when the images were already classified."""
    unknown = sorted(set(samples.labels) - set(model.classes))
    if unknown:
        raise ValueError(f"samples carry class(es) {unknown} the model does not know ({list(model.classes)})")
    result = classification or classify(model, [samples.image(i) for i in range(len(samples))])
    truth = np.array([model.classes.index(label) for label in samples.labels], dtype=np.int64)
    predicted = result.probabilities.argmax(axis=1)
    confusion = metrics.confusion_matrix(truth, predicted, len(model.classes))
    picked = result.probabilities[np.arange(len(truth)), truth]
    out: dict[str, Any] = {
        "images": len(truth),
        "loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()) if len(truth) else float("nan"),
        "accuracy": float((predicted == truth).mean()) if len(truth) else float("nan"),
        "confusion": confusion.tolist(),
        "classes": metrics.class_scores(confusion).as_dict(model.classes),
    }
    is_defect = truth != model.ok_index
    if is_defect.any():
        scores = result.defect_scores
        at_floor = metrics.recall_at_precision(is_defect, scores, min_precision)
        cheapest = metrics.cost_threshold(is_defect, scores, false_accept_cost=false_accept_cost)
        out |= {
            "average_precision": metrics.average_precision(is_defect, scores),
            "min_precision": min_precision,
            "recall_at_min_precision": at_floor.recall,
            "threshold_at_min_precision": at_floor.threshold,
            "false_accept_cost": false_accept_cost,
            "cost_threshold": cheapest.threshold,
            "cost_false_accepts": cheapest.false_accepts,
            "cost_false_rejects": cheapest.false_rejects,
            "recall_at_0_99_precision": metrics.recall_at_precision(is_defect, scores, 0.99).recall,
        }
        if threshold is not None:
            there = metrics.at_threshold(is_defect, scores, threshold)
            out |= {"precision_at_threshold": there.precision, "recall_at_threshold": there.recall}
    return out


def evaluate_segmenter(
    model: DefectSegmenter, samples: SampleSet, *, threshold: float = 0.5
) -> dict[str, Any]:
    """Dice on the samples that have a defect mask, and how clean the ok samples stay."""
    masked = [i for i in range(len(samples)) if samples.mask(i) is not None]
    ok = [i for i in range(len(samples)) if not samples[i].is_defect]
    out: dict[str, Any] = {"threshold": threshold, "masked_images": len(masked), "ok_images": len(ok)}
    if masked:
        predicted = [segment(model, samples.image(i))[0] >= threshold for i in masked]
        truth = [samples.mask(i) for i in masked]
        inter = sum(int(np.logical_and(p, t).sum()) for p, t in zip(predicted, truth, strict=True))
        total = sum(int(p.sum()) + int(t.sum()) for p, t in zip(predicted, truth, strict=True))
        out["dice"] = metrics.mean_dice(predicted, truth)
        out["pooled_dice"] = 2 * inter / total if total else 1.0  # large defects weigh more here
    if ok:
        flagged = [bool((segment(model, samples.image(i))[0] >= threshold).any()) for i in ok]
        out["ok_images_flagged"] = float(np.mean(flagged))
    return out
