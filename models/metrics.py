"""Evaluation arithmetic in plain numpy: confusion counts, precision / recall, PR curves, cost-based
thresholds and dice, so the same figures can be computed anywhere, with or without torch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# DAGM 2007 weighed a false accept (a defective part shipped as ok) 20 times a false reject.
DAGM_FALSE_ACCEPT_COST = 20.0


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> np.ndarray:
    """Counts (int64, n_classes x n_classes): rows are true classes, columns predicted classes."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and alike, got {t.shape} and {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must lie in [0, {n_classes})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class ClassScores:
    """Per-class figures from a confusion matrix; 0 where a ratio has nothing to divide by."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true images per class

    def as_dict(self, classes: Iterable[str]) -> dict[str, dict[str, float]]:
        """{class: {precision, recall, f1, support}}, ready to record as JSON."""
        return {
            c: {
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1": float(self.f1[i]),
                "support": int(self.support[i]),
            }
            for i, c in enumerate(classes)
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def class_scores(confusion: np.ndarray) -> ClassScores:
    c = np.asarray(confusion)
    tp = np.diag(c)
    precision = _ratio(tp, c.sum(axis=0))
    recall = _ratio(tp, c.sum(axis=1))
    return ClassScores(precision, recall, _ratio(2 * precision * recall, precision + recall), c.sum(axis=1))


@dataclass(frozen=True)
class PRCurve:
    """Image-level defect-versus-ok operating points: call an image defective when its score >= threshold.

    One point per distinct score, thresholds descending; counts are numbers of images.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    positives: int  # defective images in all
    negatives: int  # ok images in all


def _checked(is_defect: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_defect, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"is_defect and scores must be 1-D and alike, got {y.shape} and {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def pr_curve(is_defect: ArrayLike, scores: ArrayLike) -> PRCurve:
    """Precision and recall of "defect" at every distinct score (defect score = 1 - p(ok))."""
    y, s = _checked(is_defect, scores)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # Images with equal scores are called together: keep the last index of each run of equal scores.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.zeros(0, np.int64)
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    positives = int(y.sum())
    return PRCurve(
        thresholds=s[last],
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, np.full_like(tp, positives)),
        true_positives=tp,
        false_positives=fp,
        positives=positives,
        negatives=len(y) - positives,
    )


def average_precision(is_defect: ArrayLike, scores: ArrayLike) -> float:
    """Area under the step PR curve: sum over thresholds of (recall gained) x (precision there)."""
    curve = pr_curve(is_defect, scores)
    if curve.positives == 0:
        raise ValueError("no defective image among the scores: average precision is undefined")
    gained = np.diff(np.r_[0.0, curve.recall])
    return float(np.sum(gained * curve.precision))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold (defect when score >= threshold) and what it yields on the scored images."""

    threshold: float
    precision: float
    recall: float
    false_accepts: int  # defective images called ok
    false_rejects: int  # ok images called defective
    cost: float  # false_accepts x false accept cost + false_rejects x false reject cost (1 and 1 if unstated)


def _point(curve: PRCurve, i: int, fa_cost: float = 1.0, fr_cost: float = 1.0) -> OperatingPoint:
    fa = curve.positives - int(curve.true_positives[i])
    fr = int(curve.false_positives[i])
    return OperatingPoint(
        float(curve.thresholds[i]),
        float(curve.precision[i]),
        float(curve.recall[i]),
        fa,
        fr,
        fa * fa_cost + fr * fr_cost,
    )


def _nothing_flagged(curve: PRCurve, fa_cost: float = 1.0) -> OperatingPoint:
    # Calling every image ok: precision is taken as 1 (no false alarm), as PR curves conventionally start.
    return OperatingPoint(float("inf"), 1.0, 0.0, curve.positives, 0, curve.positives * fa_cost)


def cost_threshold(
    is_defect: ArrayLike,
    scores: ArrayLike,
    *,
    false_accept_cost: float = DAGM_FALSE_ACCEPT_COST,
    false_reject_cost: float = 1.0,
) -> OperatingPoint:
    """The threshold with the lowest total cost on these images; on a tie, the one with fewer false accepts.

    The threshold is one of the observed scores (or +inf: call everything ok).
    """
    curve = pr_curve(is_defect, scores)
    best = _nothing_flagged(curve, false_accept_cost)
    for i in range(len(curve.thresholds)):
        point = _point(curve, i, false_accept_cost, false_reject_cost)
        # Thresholds descend, so a later point has fewer false accepts: "<=" prefers it on equal cost.
        if point.cost <= best.cost:
            best = point
    return best


def at_threshold(is_defect: ArrayLike, scores: ArrayLike, threshold: float) -> OperatingPoint:
    """What calling an image defective from `threshold` on gives on these images (a threshold chosen on
    other images, say). Precision is 1 when nothing is flagged; recall is NaN when nothing is defective."""
    y, s = _checked(is_defect, scores)
    called = s >= threshold
    tp = int((called & y).sum())
    fp = int((called & ~y).sum())
    fa = int(y.sum()) - tp
    return OperatingPoint(float(threshold), tp / (tp + fp) if tp + fp else 1.0,
                          tp / int(y.sum()) if y.any() else float("nan"), fa, fp, float(fa + fp))


def recall_at_precision(
    is_defect: ArrayLike, scores: ArrayLike, min_precision: float = 0.95
) -> OperatingPoint:
    """The highest recall whose precision is at least `min_precision` (the highest threshold reaching it)."""
    curve = pr_curve(is_defect, scores)
    best = _nothing_flagged(curve)
    for i in range(len(curve.thresholds)):
        if curve.precision[i] >= min_precision and curve.recall[i] > best.recall:
            best = _point(curve, i)
    return best


def dice(predicted: ArrayLike, truth: ArrayLike) -> float:
    """2 |P and T| / (|P| + |T|) of two masks (non-zero = defect); 1.0 when both are empty."""
    p = np.asarray(predicted).astype(bool)
    t = np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"masks differ in shape: {p.shape} and {t.shape}")
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total


def mean_dice(predicted: Iterable[ArrayLike], truth: Iterable[ArrayLike]) -> float:
    """Dice per image pair, averaged: each defect counts once whatever its size."""
    values = [dice(p, t) for p, t in zip(predicted, truth, strict=True)]
    if not values:
        raise ValueError("no masks to compare")
    return float(np.mean(values))
