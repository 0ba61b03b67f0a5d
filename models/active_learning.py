"""Active learning: which images a human should look at next, ranked by named strategies over plain arrays
(the current model's softmax scores, the human labels and corrections, the embeddings), and merged into one
review batch. numpy only, deterministic: equal scores are ordered by sha256."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

UNCERTAINTY = "uncertainty"
WRONG_LABELS = "wrong_labels"
DISAGREEMENT = "disagreement"
DIVERSITY = "diversity"
RARE_CLASSES = "rare_classes"
_SAME_DIRECTION = 1e-6  # unit vectors closer than this are copies (float rounding keeps them off exactly 0)
_CHUNK_ELEMENTS = 1 << 22  # similarities computed at once by diversity: 32 MiB of float64
# Densities of the defect score are taken over its log-odds, binned (linear time at a million images) and
# smoothed by a Gaussian of one unit: a factor e in the odds is as close as two scores need to be to count as
# alike; on the benchmark's delivery half or twice that width ranked about the same.
_LOG_ODDS_LIMIT, _BIN, _BANDWIDTH = 14.0, 0.1, 1.0


@dataclass(frozen=True)
class Candidate:
    """One image proposed for review: higher scores are more worth a human's time (comparable within one
    strategy only), and the reason says why in a sentence a reviewer understands."""

    sha256: str
    strategy: str
    score: float
    reason: str


# -- strategies --------------------------------------------------------------------------------------------


def uncertainty(
    shas: Sequence[str],
    probs: ArrayLike,
    classes: Sequence[str],
    *,
    labels: Sequence[str | None] | None = None,
    measure: Literal["margin", "entropy"] = "margin",
    limit: int | None = None,
) -> list[Candidate]:
    """Images the model hesitates on: the smallest gap between its two best classes (``margin``, score
    1 - gap) or the most even spread over all classes (``entropy``, score normalised to [0, 1]). A label
    there moves the decision boundary most. With ``labels``, only unlabelled images are ranked."""
    p = _probabilities(shas, probs, classes)
    first, second = _top_two(p)
    rows = np.arange(len(shas))
    if measure == "margin":
        gap = p[rows, first] - p[rows, second]
        scores = 1.0 - gap

        def reason(i: int) -> str:
            return (
                f"margin {gap[i]:.2f} between {classes[first[i]]} ({p[i, first[i]]:.2f}) "
                f"and {classes[second[i]]} ({p[i, second[i]]:.2f})"
            )
    elif measure == "entropy":
        scores = _entropy(p) / math.log(p.shape[1])

        def reason(i: int) -> str:
            return (
                f"entropy {scores[i]:.2f} of a possible 1: {classes[first[i]]} {p[i, first[i]]:.2f}, "
                f"{classes[second[i]]} {p[i, second[i]]:.2f}"
            )
    else:
        raise ValueError(f"unknown uncertainty measure {measure!r}: use 'margin' or 'entropy'")
    return _ranked(UNCERTAINTY, shas, scores, _unlabelled(labels, len(shas)), reason, limit)


def disagreement(
    shas: Sequence[str],
    probs: ArrayLike,
    classes: Sequence[str],
    labels: Sequence[str | None],
    corrected: ArrayLike,
    *,
    min_confidence: float = 0.9,
    limit: int | None = None,
) -> list[Candidate]:
    """Images where model and humans disagree: predictions a human correction contradicts (the model has not
    learned the fix yet), and labels a confident prediction (``min_confidence`` or more) contradicts (often a
    wrong label). Scored by the model's confidence in its contrary class: the surer it is, the more one of the
    two is wrong."""
    p = _probabilities(shas, probs, classes)
    is_corrected = _flags(corrected, len(shas), "corrected")
    labelled = ~_unlabelled(labels, len(shas))
    predicted = p.argmax(axis=1)
    confidence = p.max(axis=1)
    predicted_names = [classes[c] for c in predicted]
    contradicted = labelled & np.array(
        [label != name for label, name in zip(labels, predicted_names, strict=True)], dtype=bool
    )
    chosen = contradicted & (is_corrected | (confidence >= min_confidence))

    def reason(i: int) -> str:
        said = f"the model says {predicted_names[i]} ({confidence[i]:.2f})"
        if is_corrected[i]:
            return f"a human corrected it to {labels[i]}, but {said}"
        return f"labelled {labels[i]}, but {said}"

    return _ranked(DISAGREEMENT, shas, confidence, chosen, reason, limit)


@dataclass(frozen=True)
class LabelErrorRates:
    """How often a label on each side (ok, or a defect) has turned out to be on the wrong side: the images a
    correction moved across, over those first labelled on that side, with one wrong and one right label
    added to each so that a side never corrected yet is not taken for flawless."""

    ok: float
    defect: float

    @classmethod
    def from_counts(cls, *, ok_labels: int, ok_moved: int, defect_labels: int, defect_moved: int
                    ) -> LabelErrorRates:
        if not (0 <= ok_moved <= ok_labels and 0 <= defect_moved <= defect_labels):
            raise ValueError("moved labels must be between 0 and the labels given on their side")
        return cls((ok_moved + 1) / (ok_labels + 2), (defect_moved + 1) / (defect_labels + 2))


def wrong_labels(
    shas: Sequence[str],
    probs: ArrayLike,
    classes: Sequence[str],
    labels: Sequence[str | None],
    corrected: ArrayLike,
    error_rates: LabelErrorRates,
    *,
    ok_class: str,
    limit: int | None = None,
) -> list[Candidate]:
    """Labels probably on the wrong side of ok / defect, most probable first: for each labelled image no human
    has corrected yet, the probability that its label is wrong given the model's defect score (1 - p(ok)).

    Bayes' rule with what the pool itself shows: how common the image's score is among images labelled on
    the other side against those labelled on its own (score densities, so a model that flags clean texture
    everywhere counts for little: its high scores are common among ok labels too), times the prior odds that
    a label on that side is wrong (``error_rates``, from the corrections so far). Unlike a confidence bar,
    this does not bury a defect label on a clean image under the ok images the model finds suspicious: among
    labels the defect side is both the rarer and the more often wrong. Empty unless both sides have labels."""
    p = _probabilities(shas, probs, classes)
    is_corrected = _flags(corrected, len(shas), "corrected")
    labelled = ~_unlabelled(labels, len(shas))
    if ok_class not in classes:
        raise ValueError(f"ok_class {ok_class!r} is not among the classes {list(classes)}")
    said_defect = np.array([label is not None and label != ok_class for label in labels], dtype=bool)
    said_ok = labelled & ~said_defect
    if not said_ok.any() or not said_defect.any():
        return []
    defect = 1.0 - p[:, list(classes).index(ok_class)]
    log_odds = np.log(np.clip(defect, 1e-9, 1.0)) - np.log(np.clip(1.0 - defect, 1e-9, 1.0))
    among_ok = _score_density(log_odds[said_ok], log_odds)
    among_defect = _score_density(log_odds[said_defect], log_odds)
    likelihood_ratio = np.where(said_defect, among_ok / among_defect, among_defect / among_ok)
    prior = np.where(said_defect, error_rates.defect, error_rates.ok)
    odds = likelihood_ratio * prior / (1.0 - prior)
    wrong = odds / (1.0 + odds)

    def reason(i: int) -> str:
        own, other = ("defect", "ok") if said_defect[i] else ("ok", "defect")
        return (f"labelled {labels[i]}, but a defect score of {defect[i]:.2f} is {likelihood_ratio[i]:.1f}x "
                f"as common among {other} labels as among {own} labels; with {prior[i]:.1%} of {own} labels "
                f"corrected so far, {wrong[i]:.0%} likely wrong")

    return _ranked(WRONG_LABELS, shas, wrong, labelled & ~is_corrected, reason, limit)


def diversity(
    shas: Sequence[str], embeddings: ArrayLike, *, budget: int, already_selected: Iterable[str] = ()
) -> list[Candidate]:
    """Images unlike anything already labelled or selected, by k-center greedy over unit-length embeddings
    (euclidean): each pick is the image farthest from its nearest center, so a batch covers the whole
    variety of the pool instead of many near-copies of one hard case. Starts from ``already_selected``
    (typically the labelled images) or, when empty, from the image farthest from the mean. Returned in pick
    order, scored by that distance at pick time; stops early when only copies of centers are left."""
    if budget < 0:
        raise ValueError(f"budget must be 0 or more, not {budget}")
    order = sorted(range(len(shas)), key=shas.__getitem__)  # argmax keeps the first: ties go to the lower sha
    ordered_shas = [shas[i] for i in order]
    unit = _unit_rows(embeddings, len(shas))[order]
    position = {sha: i for i, sha in enumerate(ordered_shas)}
    if len(position) != len(shas):
        raise ValueError("shas repeat an image: give each image once")
    centers = _positions(already_selected, position)
    if not budget or not shas:
        return []
    picks: list[Candidate] = []
    if centers:
        nearest = _distance_to_nearest(unit, unit[centers])
    else:
        from_mean = np.linalg.norm(unit - unit.mean(axis=0), axis=1)
        first = int(np.argmax(from_mean))
        picks.append(
            Candidate(
                ordered_shas[first],
                DIVERSITY,
                float(from_mean[first]),
                f"the image farthest from the pool's average (distance {from_mean[first]:.2f})",
            )
        )
        nearest = _distance_to_nearest(unit, unit[[first]])
    while len(picks) < budget:
        pick = int(np.argmax(nearest))
        if nearest[pick] <= _SAME_DIRECTION:  # every image left copies a center: it would add no coverage
            break
        picks.append(
            Candidate(
                ordered_shas[pick],
                DIVERSITY,
                float(nearest[pick]),
                f"distance {nearest[pick]:.2f} to the nearest selected image",
            )
        )
        nearest = np.minimum(nearest, _distance_to_nearest(unit, unit[[pick]]))
    return picks


def _distance_to_nearest(unit: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Each unit row's euclidean distance to its nearest center, from cosines (|a - b|^2 = 2 - 2 a.b for unit
    vectors): one matrix product per chunk of centers, so thousands of labelled images cost seconds."""
    nearest = np.full(len(unit), np.inf)
    chunk = max(1, _CHUNK_ELEMENTS // max(len(unit), 1))
    for start in range(0, len(centers), chunk):
        similarity = (unit @ centers[start : start + chunk].T).max(axis=1)
        nearest = np.minimum(nearest, np.sqrt(np.clip(2.0 - 2.0 * similarity, 0.0, None)))
    return nearest


def rare_classes(
    shas: Sequence[str],
    probs: ArrayLike,
    classes: Sequence[str],
    *,
    labels: Sequence[str | None] | None = None,
    max_fraction: float = 0.02,
    limit: int | None = None,
) -> list[Candidate]:
    """Images whose best or second-best class is one the model predicts for less than ``max_fraction`` of
    the pool (or never): the few examples of a rare defect, or of a class just added to the ontology, teach
    the model most per label. Scored by the probability of that rare class. With ``labels``, only unlabelled
    images are ranked."""
    p = _probabilities(shas, probs, classes)
    frequency = np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / max(len(shas), 1)
    rare = frequency < max_fraction
    first, second = _top_two(p)
    rows = np.arange(len(shas))
    # The better-ranked rare class of the two; its probability is the larger one.
    rare_class = np.where(rare[first], first, second)
    chosen = rare[first] | rare[second]
    scores = p[rows, rare_class]

    def reason(i: int) -> str:
        rank = "predicted" if rare_class[i] == first[i] else "second choice"
        share = frequency[rare_class[i]]
        how_often = "never predicts in this pool" if share == 0 else f"predicts for {share:.1%} of the pool"
        return f"{rank} {classes[rare_class[i]]} ({scores[i]:.2f}), a class the model {how_often}"

    return _ranked(RARE_CLASSES, shas, scores, chosen & _unlabelled(labels, len(shas)), reason, limit)


# -- merging -----------------------------------------------------------------------------------------------


def combine(
    results: Mapping[str, Sequence[Candidate]], budget: int, *, weights: Mapping[str, float] | None = None
) -> list[Candidate]:
    """One review batch of at most ``budget`` images from several strategies' rankings (keyed by strategy
    name, in the order their turns come): a round-robin in which each strategy takes its next image not yet
    taken, up to its share of the budget (equal, or proportional to ``weights``); shares a strategy cannot
    fill go round to the others with a weight above zero. Each image appears once, under the strategy that
    ranked it best, its reason naming the other strategies whose turn reached it."""
    if budget < 0:
        raise ValueError(f"budget must be 0 or more, not {budget}")
    weight = _weights(list(results), weights)
    shares = _shares(budget, weight)
    queues = [_Queue(name, results[name]) for name in results]
    chosen_by: dict[str, list[tuple[int, int, str]]] = {}  # sha -> (rank, turn order, strategy); pick order
    taken = dict.fromkeys(results, 0)

    def turns(may_take: Callable[[str], bool]) -> None:
        progressed = True
        while progressed and len(chosen_by) < budget:
            progressed = False
            for turn, queue in enumerate(queues):
                if len(chosen_by) < budget and may_take(queue.name) and queue.take_next(chosen_by, turn):
                    taken[queue.name] += 1
                    progressed = True

    turns(lambda name: taken[name] < shares[name])
    turns(lambda name: weight[name] > 0)  # shares left unfilled by exhausted strategies
    return [_merged(sha, choosers, results) for sha, choosers in chosen_by.items()]


class _Queue:
    """One strategy's ranking, consumed in order by the round-robin."""

    def __init__(self, name: str, candidates: Sequence[Candidate]):
        self.name = name
        self.candidates = candidates
        self.position = 0

    def take_next(self, chosen_by: dict[str, list[tuple[int, int, str]]], turn: int) -> bool:
        """Take the next image no strategy took yet; images passed on the way were chosen by this strategy
        too. False when the ranking is used up."""
        while self.position < len(self.candidates):
            rank, self.position = self.position, self.position + 1
            sha = self.candidates[rank].sha256
            is_new = sha not in chosen_by
            choosers = chosen_by.setdefault(sha, [])
            if all(name != self.name for _, _, name in choosers):
                choosers.append((rank, turn, self.name))
            if is_new:
                return True
        return False


def _merged(
    sha: str, choosers: list[tuple[int, int, str]], results: Mapping[str, Sequence[Candidate]]
) -> Candidate:
    rank, _, best = min(choosers)  # best rank wins; between equal ranks, the strategy whose turn comes first
    candidate = results[best][rank]
    others = [name for _, _, name in sorted(choosers, key=lambda chooser: chooser[1]) if name != best]
    reason = candidate.reason + (f" (also chosen by {', '.join(others)})" if others else "")
    return Candidate(sha, best, candidate.score, reason)


def _weights(names: list[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict.fromkeys(names, 1.0)
    if set(weights) != set(names):
        raise ValueError(
            f"weights name {sorted(weights)} but the strategies are {names}: give one weight each"
        )
    if any(not math.isfinite(w) or w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise ValueError(f"weights must be finite, 0 or more, and not all 0: {dict(weights)}")
    return {name: float(weights[name]) for name in names}


def _shares(budget: int, weight: dict[str, float]) -> dict[str, int]:
    """The budget split in proportion to the weights, whole images summing to the budget (largest
    remainders first, ties to the earlier strategy)."""
    total = sum(weight.values())
    exact = {name: budget * w / total for name, w in weight.items()}
    shares = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(weight, key=lambda name: -(exact[name] - shares[name]))  # stable: earlier first
    for name in by_remainder[: budget - sum(shares.values())]:
        shares[name] += 1
    return shares


# -- shared arithmetic -------------------------------------------------------------------------------------


def _probabilities(shas: Sequence[str], probs: ArrayLike, classes: Sequence[str]) -> np.ndarray:
    """``probs`` as float64 N x C, checked against the pool and the classes."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(shas), len(classes)):
        raise ValueError(
            f"probs has shape {p.shape}; expected one row per image and one column per class, "
            f"{(len(shas), len(classes))}"
        )
    if len(classes) < 2:
        raise ValueError(f"need at least two classes to rank images, got {list(classes)}")
    if len(set(shas)) != len(shas):
        raise ValueError("shas repeat an image: give each image once")
    in_range = (
        np.isfinite(p).all() and p.min(initial=0) >= -1e-6 and p.max(initial=0) <= 1 + 1e-6
    )  # float32 rounding
    if not in_range or not np.allclose(p.sum(axis=1), 1, atol=1e-3):
        raise ValueError(
            "probs must be softmax scores (each row in [0, 1], summing to 1); apply a softmax to logits first"
        )
    return p


def _score_density(sample: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The density of ``sample``'s log-odds at each of ``at``'s (see _BANDWIDTH), with one observation more
    spread evenly over the range: a score no image of the sample has is rare there, not impossible."""
    edges = np.arange(-_LOG_ODDS_LIMIT, _LOG_ODDS_LIMIT + _BIN / 2, _BIN)
    counts, _ = np.histogram(np.clip(sample, edges[0], edges[-1]), edges)
    offsets = np.arange(-4 * _BANDWIDTH, 4 * _BANDWIDTH + _BIN / 2, _BIN)
    kernel = np.exp(-0.5 * (offsets / _BANDWIDTH) ** 2)
    smooth = np.convolve(counts, kernel / kernel.sum(), mode="same") + 1.0 / len(counts)
    bins = np.clip(np.searchsorted(edges, at, side="right") - 1, 0, len(counts) - 1)
    return smooth[bins] / smooth.sum()


def _top_two(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best and second-best class per row; between equal scores, the class listed first."""
    order = np.argsort(-p, axis=1, kind="stable")
    return order[:, 0], order[:, 1]


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)  # 0 log 0 = 0
    return -terms.sum(axis=1)


def _unlabelled(labels: Sequence[str | None] | None, n: int) -> np.ndarray:
    if labels is None:
        return np.ones(n, dtype=bool)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} images")
    return np.array([label is None for label in labels], dtype=bool)


def _flags(values: ArrayLike, n: int, name: str) -> np.ndarray:
    flags = np.asarray(values, dtype=bool)
    if flags.shape != (n,):
        raise ValueError(f"{name} has shape {flags.shape}; expected one flag per image, ({n},)")
    return flags


def _unit_rows(embeddings: ArrayLike, n: int) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"embeddings has shape {x.shape}; expected one row per image ({n} rows)")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.isfinite(x).all() or (norms == 0).any():
        raise ValueError("embeddings must be finite and non-zero: a zero vector has no direction to compare")
    return x / norms


def _positions(shas: Iterable[str], position: Mapping[str, int]) -> list[int]:
    shas = list(shas)
    unknown = [sha for sha in shas if sha not in position]
    if unknown:
        raise ValueError(
            f"{len(unknown)} already-selected images are not in the pool (first {unknown[0]}): "
            "include them, with their embeddings, so that distances to them can be measured"
        )
    return [position[sha] for sha in shas]


def _ranked(
    strategy: str,
    shas: Sequence[str],
    scores: np.ndarray,
    chosen: np.ndarray,
    reason: Callable[[int], str],
    limit: int | None,
) -> list[Candidate]:
    """The chosen images by descending score, ties by sha256; reasons are written for the kept ones only."""
    ranked = sorted(np.flatnonzero(chosen).tolist(), key=lambda i: (-scores[i], shas[i]))
    return [Candidate(shas[i], strategy, float(scores[i]), reason(i)) for i in ranked[:limit]]
