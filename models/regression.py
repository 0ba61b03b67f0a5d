"""The promotion gate: a candidate replayed beside the champion on history, compared slice by slice.

A model that is better on average can still be worse where it matters (one camera, one defect, the day the
lamp dimmed). So the gate compares per slice (line, camera, day, true class, ...) as well as overall, and
refuses a candidate that is worse than the champion by more than a tolerance in any slice large enough to
judge, or worse at all overall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

OK = "ok"


@dataclass(frozen=True)
class SliceComparison:
    kind: str  # "overall", "line", "camera", "day", "class", ...
    value: str
    images: int
    defects: int  # images whose human verdict is a defect
    champion_accuracy: float | None
    candidate_accuracy: float
    champion_recall: float | None  # defect recall: defective images called defective (any defect class)
    candidate_recall: float | None
    judged: bool  # large enough to hold against the candidate
    worse: list[str] = field(default_factory=list)  # which figures fell by more than the tolerance


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]
    slices: list[SliceComparison]
    tolerance: float
    min_images: int

    def summary(self) -> dict[str, Any]:
        """What the RegressionReplayed event records: the verdict, the reasons and the overall figures."""
        overall = next(s for s in self.slices if s.kind == "overall")
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "tolerance": self.tolerance,
            "min_images": self.min_images,
            "overall": asdict(overall),
            "slices_judged": sum(s.judged for s in self.slices),
            "slices_worse": [f"{s.kind}={s.value}" for s in self.slices if s.worse],
        }


def _accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(truth == predicted)) if len(truth) else float("nan")


def _recall(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    defective = truth != OK
    return float(np.mean(predicted[defective] != OK)) if defective.any() else None


def compare(
    truth: Sequence[str],
    candidate: Sequence[str],
    champion: Sequence[str] | None,
    slices: Mapping[str, Sequence[str]],
    *,
    tolerance: float = 0.02,
    min_images: int = 20,
) -> GateResult:
    """Compare ``candidate`` and ``champion`` predictions (class names) against the human ``truth`` overall
    and within each slice (``slices`` maps a kind, e.g. "camera", to each image's value). Without a champion
    (the first model of its name) every figure passes against nothing, and the verdict says so."""
    truth_a, cand_a = np.asarray(truth, dtype=object), np.asarray(candidate, dtype=object)
    champ_a = np.asarray(champion, dtype=object) if champion is not None else None
    if len(cand_a) != len(truth_a) or (champ_a is not None and len(champ_a) != len(truth_a)):
        raise ValueError("truth, candidate and champion must hold one class per replayed image")
    groups: list[tuple[str, str, np.ndarray]] = [("overall", "all", np.ones(len(truth_a), dtype=bool))]
    for kind, values in slices.items():
        values_a = np.asarray(values, dtype=object)
        groups += [(kind, str(v), values_a == v) for v in sorted(set(values_a.tolist()), key=str)]
    comparisons = [
        _compare_slice(
            kind,
            value,
            truth_a[m],
            cand_a[m],
            None if champ_a is None else champ_a[m],
            tolerance,
            min_images,
            overall=kind == "overall",
        )
        for kind, value, m in groups
    ]
    reasons = []
    if champ_a is None:
        reasons.append("no champion yet: the first model of its name passes against nothing")
    for s in comparisons:
        if s.worse:
            reasons.append(f"{s.kind}={s.value} ({s.images} images): " + ", ".join(s.worse))
    if not len(truth_a):
        reasons.append("no historical images with a human verdict to replay")
    passed = bool(len(truth_a)) and not any(s.worse for s in comparisons)
    if passed and champ_a is not None:
        reasons.append(f"no slice worse by more than {tolerance:.3f}, overall not worse")
    return GateResult(passed, reasons, comparisons, tolerance, min_images)


def _compare_slice(
    kind: str,
    value: str,
    truth: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray | None,
    tolerance: float,
    min_images: int,
    *,
    overall: bool,
) -> SliceComparison:
    cand_acc, cand_rec = _accuracy(truth, candidate), _recall(truth, candidate)
    champ_acc = _accuracy(truth, champion) if champion is not None else None
    champ_rec = _recall(truth, champion) if champion is not None else None
    judged = len(truth) >= min_images and champion is not None
    # Overall the candidate may not be worse at all; a slice may wobble within the tolerance.
    allowed = 0.0 if overall else tolerance
    worse = []
    if judged and champ_acc is not None and cand_acc < champ_acc - allowed - 1e-12:
        worse.append(f"accuracy {cand_acc:.3f} vs champion {champ_acc:.3f}")
    if judged and champ_rec is not None and cand_rec is not None and cand_rec < champ_rec - allowed - 1e-12:
        worse.append(f"defect recall {cand_rec:.3f} vs champion {champ_rec:.3f}")
    return SliceComparison(
        kind,
        value,
        len(truth),
        int(np.sum(truth != OK)),
        champ_acc,
        cand_acc,
        champ_rec,
        cand_rec,
        judged,
        worse,
    )


@dataclass(frozen=True)
class QualityFloor:
    """What a model must reach on its validation split, at its operating threshold, before it may serve:
    the first model too, for "no champion yet" says nothing about fitness."""

    min_recall: float = 0.90  # defective validation images called defective (at precision >= the floor)
    max_good_parts_rejected: float = 0.05  # validation parts with every image ok that it would reject

    def shortfalls(self, evaluation: Mapping[str, Any] | None) -> list[str]:
        """One readable line per reason the model falls short; empty when it is fit."""
        if not evaluation or evaluation.get("threshold_split") != "validation":
            return ["no operating threshold chosen on a validation split: evaluate the model first "
                    "(`visionledger models evaluate`)"]
        figures = evaluation.get("metrics", {})
        reasons = []
        recall = figures.get("validation_recall", float("nan"))
        if not recall >= self.min_recall:  # NaN (no defect in validation) falls short too
            reasons.append(f"validation recall {recall:.3f} at its threshold (chosen for precision >= "
                           f"{evaluation.get('min_precision')}) is below the floor of {self.min_recall:.2f}")
        rejected = figures.get("validation_good_parts_rejected", float("nan"))
        if not rejected <= self.max_good_parts_rejected:
            reasons.append(f"it rejects {rejected:.1%} of the good validation parts, above the ceiling of "
                           f"{self.max_good_parts_rejected:.1%}")
        return reasons
