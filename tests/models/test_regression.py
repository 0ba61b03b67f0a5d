"""The promotion gate on constructed replays: it passes an equal-or-better candidate, fails one that is worse
in a single slice beyond the tolerance, fails one worse overall by any amount, and says why."""

from __future__ import annotations

import pytest

from models.regression import QualityFloor, compare

# 40 images: two cameras of 20; cam-a holds 4 cracks, cam-b 4 scratches.
TRUTH = (["crack"] * 4 + ["ok"] * 16) + (["scratch"] * 4 + ["ok"] * 16)
CAMERAS = ["cam-a"] * 20 + ["cam-b"] * 20


def test_a_candidate_as_good_everywhere_passes():
    champion = list(TRUTH)
    champion[4] = "crack"  # one false reject on cam-a
    result = compare(TRUTH, list(TRUTH), champion, {"camera": CAMERAS}, tolerance=0.02, min_images=20)
    assert result.passed
    overall = result.slices[0]
    assert (overall.kind, overall.images, overall.defects) == ("overall", 40, 8)
    assert overall.candidate_accuracy == 1.0 and overall.champion_accuracy == 39 / 40
    assert "overall not worse" in result.reasons[-1]


def test_a_candidate_worse_on_one_camera_beyond_the_tolerance_fails_even_if_better_overall():
    champion = list(TRUTH)
    for i in (4, 5, 24, 25, 26):  # champion: 5 false rejects spread over both cameras
        champion[i] = "crack"
    candidate = list(TRUTH)
    candidate[0] = "ok"  # candidate: misses one crack on cam-a (recall 0.75 there)
    result = compare(TRUTH, candidate, champion, {"camera": CAMERAS}, tolerance=0.05, min_images=20)
    assert not result.passed
    assert any(
        r.startswith("camera=cam-a (20 images): defect recall 0.750 vs champion 1.000")
        for r in result.reasons
    )
    overall = result.slices[0]
    assert overall.candidate_accuracy > overall.champion_accuracy  # better on average, still refused
    cam_a = next(s for s in result.slices if s.value == "cam-a")
    assert cam_a.worse and cam_a.candidate_recall == 0.75


def test_overall_may_not_be_worse_at_all_while_a_slice_may_wobble_within_the_tolerance():
    candidate = list(TRUTH)
    candidate[30] = "crack"  # one false reject on cam-b: 0.95 there, within a 0.10 tolerance
    loose = compare(TRUTH, candidate, list(TRUTH), {"camera": CAMERAS}, tolerance=0.10, min_images=20)
    assert not loose.passed
    assert loose.reasons == ["overall=all (40 images): accuracy 0.975 vs champion 1.000"]


def test_small_slices_are_shown_but_not_judged_and_the_first_model_passes_against_nothing():
    candidate = list(TRUTH)
    candidate[0] = "ok"
    days = ["d1"] * 38 + ["d2"] * 2
    result = compare(TRUTH, candidate, list(TRUTH), {"day": days}, tolerance=0.5, min_images=20)
    d2 = next(s for s in result.slices if s.value == "d2")
    assert not d2.judged and not d2.worse
    first = compare(TRUTH, candidate, None, {"day": days})
    assert first.passed and first.reasons[0].startswith("no champion yet")
    assert first.summary()["overall"]["champion_accuracy"] is None


def test_nothing_to_replay_fails_and_mismatched_lengths_are_refused():
    assert not compare([], [], [], {}).passed
    with pytest.raises(ValueError, match="one class per replayed image"):
        compare(TRUTH, TRUTH[:-1], TRUTH, {})


# The quality floor, which every model must pass before the gate may promote it, the first one too

def _evaluation(recall: float, good_rejected: float, split: str = "validation") -> dict:
    return {"threshold_split": split, "min_precision": 0.95,
            "metrics": {"validation_recall": recall, "validation_good_parts_rejected": good_rejected}}


def test_a_fit_model_passes_the_quality_floor():
    assert QualityFloor(0.9, 0.05).shortfalls(_evaluation(0.93, 0.02)) == []


def test_the_quality_floor_says_each_shortfall_in_one_line():
    reasons = QualityFloor(0.9, 0.05).shortfalls(_evaluation(0.35, 0.12))
    assert reasons == ["validation recall 0.350 at its threshold (chosen for precision >= 0.95) is below the "
                       "floor of 0.90",
                       "it rejects 12.0% of the good validation parts, above the ceiling of 5.0%"]


def test_no_validation_operating_point_is_no_pass():
    for evaluation in (None, _evaluation(1.0, 0.0, split="test")):
        (reason,) = QualityFloor().shortfalls(evaluation)
        assert "no operating threshold chosen on a validation split" in reason
    # a validation split without a defect cannot show recall: that falls short too
    assert len(QualityFloor().shortfalls(_evaluation(float("nan"), 0.0))) == 1
