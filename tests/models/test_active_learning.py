"""Active-learning strategies on hand-made pools whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from models.active_learning import (
    Candidate,
    LabelErrorRates,
    combine,
    disagreement,
    diversity,
    rare_classes,
    uncertainty,
    wrong_labels,
)

CLASSES = ["ok", "crack", "scratch"]


def shas_of(candidates: list[Candidate]) -> list[str]:
    return [c.sha256 for c in candidates]


# -- uncertainty -------------------------------------------------------------------------------------------

POOL = ["a", "b", "c", "d", "e"]
PROBS = [
    [0.50, 0.46, 0.04],  # a: margin 0.04, but most mass on two classes
    [0.90, 0.05, 0.05],  # b: sure
    [0.40, 0.30, 0.30],  # c: margin 0.10, spread over all three
    [0.34, 0.33, 0.33],  # d: the most uncertain of all, but already labelled
    [0.10, 0.20, 0.70],  # e: margin 0.50
]
LABELS = [None, None, None, "ok", None]


def test_margin_ranks_the_smallest_gap_first_among_unlabelled():
    ranked = uncertainty(POOL, PROBS, CLASSES, labels=LABELS)
    assert shas_of(ranked) == ["a", "c", "e", "b"]
    assert ranked[0].reason == "margin 0.04 between ok (0.50) and crack (0.46)"
    assert ranked[0].score == pytest.approx(0.96) and ranked[0].strategy == "uncertainty"
    assert shas_of(uncertainty(POOL, PROBS, CLASSES)) == ["d", "a", "c", "e", "b"]  # no labels: whole pool


def test_entropy_prefers_an_even_spread_over_a_close_pair():
    ranked = uncertainty(POOL, PROBS, CLASSES, measure="entropy")
    assert shas_of(ranked) == ["d", "c", "a", "e", "b"]
    assert ranked[0].score == pytest.approx(1.0, abs=1e-3)
    assert shas_of(uncertainty(POOL, PROBS, CLASSES, measure="entropy", limit=2)) == ["d", "c"]


def test_equal_scores_are_ordered_by_sha():
    ranked = uncertainty(["z", "m", "a"], [[0.5, 0.5, 0.0]] * 3, CLASSES)
    assert shas_of(ranked) == ["a", "m", "z"]


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="one row per image"):
        uncertainty(POOL, PROBS[:4], CLASSES)
    with pytest.raises(ValueError, match="logits"):
        uncertainty(["a"], [[2.0, -1.0, 0.5]], CLASSES)
    with pytest.raises(ValueError, match="repeat an image"):
        uncertainty(["a", "a"], [[1.0, 0, 0]] * 2, CLASSES)
    with pytest.raises(ValueError, match="unknown uncertainty measure"):
        uncertainty(POOL, PROBS, CLASSES, measure="variance")  # type: ignore[arg-type]


# -- disagreement ------------------------------------------------------------------------------------------


def test_disagreement_finds_contradicted_corrections_and_contradicted_labels():
    shas = [
        "fixed-but-ignored",
        "fixed-and-learned",
        "doubted-label",
        "weakly-doubted",
        "unlabelled",
        "other",
    ]
    probs = [
        [0.30, 0.70, 0.0],  # corrected to ok, the model still says crack
        [0.20, 0.80, 0.0],  # corrected to crack, the model agrees
        [0.05, 0.95, 0.0],  # labelled ok, the model is sure of crack
        [0.15, 0.85, 0.0],  # labelled ok, the model leans to crack, below the confidence bar
        [0.01, 0.99, 0.0],  # no label to contradict
        [0.92, 0.08, 0.0],  # labelled crack, the model is sure of ok
    ]
    labels = ["ok", "crack", "ok", "ok", None, "crack"]
    corrected = [True, True, False, False, False, False]
    ranked = disagreement(shas, probs, CLASSES, labels, corrected)
    assert shas_of(ranked) == ["doubted-label", "other", "fixed-but-ignored"]
    assert [c.score for c in ranked] == pytest.approx([0.95, 0.92, 0.70])
    assert ranked[0].reason == "labelled ok, but the model says crack (0.95)"
    assert ranked[2].reason == "a human corrected it to ok, but the model says crack (0.70)"
    assert shas_of(disagreement(shas, probs, CLASSES, labels, corrected, min_confidence=0.8)) == [
        "doubted-label",
        "other",
        "weakly-doubted",
        "fixed-but-ignored",
    ]


# -- wrong labels ------------------------------------------------------------------------------------------


def defect_probs(scores: list[float]) -> list[list[float]]:
    """Rows over CLASSES for images with these defect scores, all of the defect mass on crack."""
    return [[1 - d, d, 0.0] for d in scores]


def label_pool() -> tuple[list[str], list[float], list[str | None], list[bool]]:
    """A model that flags clean texture: a quarter of the ok labels score as high as real cracks."""
    shas, scores, labels, corrected = [], [], [], []

    def add(sha: str, score: float, label: str | None, fixed: bool = False) -> None:
        shas.append(sha), scores.append(score), labels.append(label), corrected.append(fixed)

    for i in range(30):
        add(f"ok-{i:02}", 0.02 + 0.001 * i, "ok")
    for i in range(10):
        add(f"texture-{i:02}", 0.97 + 0.001 * i, "ok")  # clean texture the model finds suspicious
    for i in range(20):
        add(f"crack-{i:02}", 0.99 + 0.0001 * i, "crack")
    add("crack-on-clean", 0.03, "crack")  # a defect label on an image scoring like the clean ones
    add("crack-faint", 0.5, "crack")
    add("ok-on-crack", 0.999, "ok")  # a crack labelled ok: scores like cracks, but also like the texture
    add("corrected-crack", 0.02, "crack", True)  # a human already looked: not queued again
    add("unlabelled", 0.02, None)
    return shas, scores, labels, corrected


def test_wrong_labels_weighs_a_score_by_how_common_it_is_on_each_side():
    shas, scores, labels, corrected = label_pool()
    rates = LabelErrorRates.from_counts(ok_labels=1000, ok_moved=1, defect_labels=100, defect_moved=10)
    ranked = wrong_labels(shas, defect_probs(scores), CLASSES, labels, corrected, rates, ok_class="ok")
    order = shas_of(ranked)
    assert order[0] == "crack-on-clean"
    assert order.index("crack-faint") < order.index("ok-on-crack") < order.index("texture-00")
    assert "corrected-crack" not in order and "unlabelled" not in order
    assert len(ranked) == len(shas) - 2
    first = ranked[0]
    assert first.strategy == "wrong_labels" and 0.3 < first.score < 1
    assert first.reason.startswith("labelled crack, but a defect score of 0.03 is ")
    assert first.reason.endswith(
        f"with {rates.defect:.1%} of defect labels corrected so far, {first.score:.0%} likely wrong")
    # A crack label on a crack-like score is almost surely right; so is an ok label on a clean score.
    by_sha = {c.sha256: c.score for c in ranked}
    assert by_sha["crack-00"] < 0.05 and by_sha["ok-00"] < 0.01
    # The more often ok labels have been wrong, the more an ok label on a crack-like score is doubted.
    sloppy = LabelErrorRates.from_counts(ok_labels=1000, ok_moved=200, defect_labels=100, defect_moved=10)
    doubted = {c.sha256: c.score for c in
               wrong_labels(shas, defect_probs(scores), CLASSES, labels, corrected, sloppy, ok_class="ok")}
    assert doubted["ok-on-crack"] > 5 * by_sha["ok-on-crack"]
    assert shas_of(wrong_labels(shas, defect_probs(scores), CLASSES, labels, corrected, rates, ok_class="ok",
                                limit=3)) == order[:3]


def test_wrong_labels_needs_labels_on_both_sides_and_the_ok_class():
    probs = defect_probs([0.1, 0.9])
    rates = LabelErrorRates(0.01, 0.1)
    unchecked = [False, False]
    assert wrong_labels(["a", "b"], probs, CLASSES, ["ok", "ok"], unchecked, rates, ok_class="ok") == []
    assert wrong_labels(["a", "b"], probs, CLASSES, ["crack", None], unchecked, rates, ok_class="ok") == []
    with pytest.raises(ValueError, match="ok_class 'good' is not among the classes"):
        wrong_labels(["a", "b"], probs, CLASSES, ["ok", "crack"], [False, False], rates, ok_class="good")


def test_label_error_rates_never_claim_a_side_flawless():
    rates = LabelErrorRates.from_counts(ok_labels=98, ok_moved=0, defect_labels=8, defect_moved=2)
    assert rates == LabelErrorRates(ok=1 / 100, defect=3 / 10)
    with pytest.raises(ValueError, match="between 0 and the labels given"):
        LabelErrorRates.from_counts(ok_labels=3, ok_moved=4, defect_labels=0, defect_moved=0)


# -- diversity ---------------------------------------------------------------------------------------------


def at(degrees: float, length: float = 1.0) -> list[float]:
    """A 2-D embedding at an angle; its length does not matter, only its direction does."""
    return [length * np.cos(np.deg2rad(degrees)), length * np.sin(np.deg2rad(degrees))]


ANGLES = {"deg0": 0, "deg3": 3, "deg6": 6, "deg90": 90, "deg93": 93, "deg200": 200}


def chord(degrees: float) -> float:
    """Euclidean distance between unit vectors that far apart."""
    return 2 * np.sin(np.deg2rad(degrees) / 2)


def test_k_center_from_scratch_starts_at_the_outlier_then_covers_each_cluster():
    shas = list(ANGLES)
    embeddings = [at(a, length=1 + i) for i, a in enumerate(ANGLES.values())]
    picks = diversity(shas, embeddings, budget=4)
    # 200 deg lies opposite the pool's average; then the far edge of the 0-6 cluster, the far edge of the
    # 90-93 cluster, and the other edge of the 0-6 cluster.
    assert shas_of(picks) == ["deg200", "deg6", "deg93", "deg0"]
    assert [c.score for c in picks[1:]] == pytest.approx([chord(166), chord(87), chord(6)])
    assert picks[0].reason.startswith("the image farthest from the pool's average")


def test_k_center_from_labelled_images_never_returns_them_nor_their_copies():
    shas = [*ANGLES, "deg0-copy"]
    embeddings = [at(a) for a in ANGLES.values()] + [at(0, length=5)]
    picks = diversity(shas, embeddings, budget=10, already_selected=["deg0"])
    assert shas_of(picks)[:3] == ["deg200", "deg93", "deg6"]
    assert [c.score for c in picks[:3]] == pytest.approx([chord(160), chord(93), chord(6)])
    assert "deg0" not in shas_of(picks) and "deg0-copy" not in shas_of(picks)  # a copy adds no coverage
    assert sorted(shas_of(picks)) == ["deg200", "deg3", "deg6", "deg90", "deg93"]
    assert picks[1].reason == f"distance {chord(93):.2f} to the nearest selected image"


def test_k_center_breaks_ties_by_sha():
    picks = diversity(["up", "down", "east"], [[0, 1], [0, -1], [1, 0]], budget=1, already_selected=["east"])
    assert shas_of(picks) == ["down"]  # up and down are equally far from east


def test_k_center_refuses_unknown_selected_images():
    with pytest.raises(ValueError, match="not in the pool"):
        diversity(["a"], [[1, 0]], budget=1, already_selected=["b"])
    with pytest.raises(ValueError, match="non-zero"):
        diversity(["a"], [[0, 0]], budget=1)


# -- rare classes ------------------------------------------------------------------------------------------

RARE_POOL = [f"r{i}" for i in range(1, 11)]
RARE_PROBS = [
    [0.60, 0.10, 0.30],  # r1: ok, scratch second
    [0.50, 0.05, 0.45],  # r2: ok, scratch a close second
    [0.70, 0.20, 0.10],  # r3: ok, crack second
    [0.20, 0.70, 0.10],  # r4: crack
    [0.10, 0.50, 0.40],  # r5: crack, scratch second
] + [[0.80, 0.15, 0.05]] * 5  # r6-r10: ok, crack second


def test_rare_classes_finds_the_class_the_model_never_predicts():
    ranked = rare_classes(RARE_POOL, RARE_PROBS, CLASSES)  # ok 80 %, crack 20 %, scratch never
    assert shas_of(ranked) == ["r2", "r5", "r1"]
    assert [c.score for c in ranked] == pytest.approx([0.45, 0.40, 0.30])
    assert ranked[0].reason == "second choice scratch (0.45), a class the model never predicts in this pool"


def test_rare_classes_threshold_decides_what_is_rare():
    ranked = rare_classes(RARE_POOL, RARE_PROBS, CLASSES, max_fraction=0.25, labels=[None] * 9 + ["ok"])
    # crack (20 %) is rare now too; r10 is labelled, so left out.
    assert shas_of(ranked) == ["r4", "r5", "r2", "r1", "r3", "r6", "r7", "r8", "r9"]
    assert ranked[0].reason == "predicted crack (0.70), a class the model predicts for 20.0% of the pool"


# -- combine -----------------------------------------------------------------------------------------------


def ranking(strategy: str, shas: str) -> list[Candidate]:
    return [
        Candidate(sha, strategy, 1.0 - i / 10, f"{strategy} reason for {sha}") for i, sha in enumerate(shas)
    ]


RESULTS = {
    "uncertainty": ranking("uncertainty", "abcd"),
    "disagreement": ranking("disagreement", "be"),
    "diversity": ranking("diversity", "fagh"),
}


def test_combine_round_robins_shares_and_dedups():
    batch = combine(RESULTS, 5)  # shares 2, 2, 1: the two leftover images go to the first strategies
    assert shas_of(batch) == ["a", "b", "f", "c", "e"]
    assert [c.strategy for c in batch] == [
        "uncertainty",
        "disagreement",
        "diversity",
        "uncertainty",
        "disagreement",
    ]
    b = batch[1]  # ranked first by disagreement, second by uncertainty, whose turn reached it next
    assert b.score == 1.0 and b.reason == "disagreement reason for b (also chosen by uncertainty)"
    assert combine(RESULTS, 5) == batch


def test_combine_gives_the_share_of_an_exhausted_strategy_to_the_others():
    batch = combine(RESULTS, 8)
    assert shas_of(batch) == ["a", "b", "f", "c", "e", "g", "d", "h"]
    assert len(set(shas_of(batch))) == 8
    assert combine(RESULTS, 20) == batch  # every image once, however large the budget


def test_combine_weights_and_budget():
    batch = combine(RESULTS, 4, weights={"uncertainty": 1, "disagreement": 0, "diversity": 1})
    assert shas_of(batch) == ["a", "f", "b", "g"]
    assert batch[0].reason == "uncertainty reason for a (also chosen by diversity)"
    assert batch[2].strategy == "uncertainty"  # disagreement, weighted 0, had no turn
    assert combine(RESULTS, 0) == []
    with pytest.raises(ValueError, match="one weight each"):
        combine(RESULTS, 4, weights={"uncertainty": 1})


def test_strategies_compose_into_one_batch():
    labels = [None, "crack", None, "ok", None]  # b is labelled crack, and the model is sure it is ok
    labelled = [sha for sha, label in zip(POOL, labels, strict=True) if label is not None]
    batch = combine(
        {
            "disagreement": disagreement(POOL, PROBS, CLASSES, labels, [False] * 5),
            "uncertainty": uncertainty(POOL, PROBS, CLASSES, labels=labels),
            "diversity": diversity(
                POOL, np.asarray(PROBS), budget=3, already_selected=labelled
            ),  # scores as a toy embedding
        },
        3,
    )
    assert [(c.sha256, c.strategy) for c in batch] == [
        ("b", "disagreement"),
        ("a", "uncertainty"),
        ("e", "diversity"),
    ]
