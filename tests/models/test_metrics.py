"""Evaluation arithmetic checked against figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import (
    at_threshold,
    average_precision,
    class_scores,
    confusion_matrix,
    cost_threshold,
    dice,
    mean_dice,
    pr_curve,
    recall_at_precision,
)


def test_confusion_and_per_class_scores() -> None:
    # classes 0 = ok, 1 = scratch, 2 = spot; ten images
    truth = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    pred = [0, 0, 0, 1, 1, 1, 0, 2, 2, 1]
    c = confusion_matrix(truth, pred, 3)
    assert c.tolist() == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    s = class_scores(c)
    # ok: tp 3, predicted 4, true 4 -> P 3/4, R 3/4; scratch: tp 2, predicted 4, true 3 -> P 1/2, R 2/3;
    # spot: tp 2, predicted 2, true 3 -> P 1, R 2/3
    assert s.precision == pytest.approx([0.75, 0.5, 1.0])
    assert s.recall == pytest.approx([0.75, 2 / 3, 2 / 3])
    # F1 = 2PR / (P + R): ok 0.75; scratch 2 (1/2)(2/3) / (7/6) = 4/7; spot 2 (2/3) / (5/3) = 4/5
    assert s.f1 == pytest.approx([0.75, 4 / 7, 0.8])
    assert s.support.tolist() == [4, 3, 3]
    assert s.as_dict(["ok", "scratch", "spot"])["spot"] == {
        "precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3,
    }  # fmt: skip


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    s = class_scores(confusion_matrix([0, 1], [0, 0], 3))
    assert s.precision.tolist() == [0.5, 0.0, 0.0]
    assert s.f1[2] == 0.0


def test_pr_curve_and_average_precision() -> None:
    # sorted by score: D .9, ok .8, D .7, ok .6 | D .4 and ok .4 tie, ok .2; three defects in all
    is_defect = [True, False, True, False, True, False, False]
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.4, 0.2]
    curve = pr_curve(is_defect, scores)
    assert curve.thresholds.tolist() == [0.9, 0.8, 0.7, 0.6, 0.4, 0.2]
    assert curve.true_positives.tolist() == [1, 1, 2, 2, 3, 3]
    assert curve.false_positives.tolist() == [0, 1, 1, 2, 3, 4]
    assert curve.precision == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2, 1 / 2, 3 / 7])
    assert curve.recall == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    # AP = sum of recall steps x precision: 1/3 x 1 + 1/3 x 2/3 + 1/3 x 1/2 = 13/18
    assert average_precision(is_defect, scores) == pytest.approx(13 / 18)


def test_cost_threshold_weighs_false_accepts_twenty_times() -> None:
    is_defect = [True, False, True, False, True, False, False]
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.4, 0.2]
    # threshold -> (false accepts, false rejects) -> cost at 20:1
    #   inf (0,0)... all ok: 3 FA = 60; .9: 2 FA = 40; .8: 2 FA + 1 FR = 41; .7: 1 FA + 1 FR = 21;
    #   .6: 1 FA + 2 FR = 22; .4: 0 FA + 3 FR = 3; .2: 0 FA + 4 FR = 4
    best = cost_threshold(is_defect, scores, false_accept_cost=20)
    assert (best.threshold, best.false_accepts, best.false_rejects, best.cost) == (0.4, 0, 3, 3.0)
    # At 1:1 the costs are 3, 2, 3, 2, 3, 3, 4: the tie between .9 and .7 goes to fewer false accepts.
    even = cost_threshold(is_defect, scores, false_accept_cost=1)
    assert (even.threshold, even.false_accepts, even.false_rejects) == (0.7, 1, 1)


def test_recall_at_precision_floor() -> None:
    is_defect = [True, False, True, False, True, False, False]
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.4, 0.2]
    assert recall_at_precision(is_defect, scores, 0.6).recall == pytest.approx(2 / 3)  # at .7, P = 2/3
    assert recall_at_precision(is_defect, scores, 0.6).threshold == 0.7
    assert recall_at_precision(is_defect, scores, 0.95).recall == pytest.approx(1 / 3)
    assert recall_at_precision(is_defect, scores, 0.4).recall == 1.0  # at .4, P = 1/2
    unreachable = recall_at_precision([False, True], [0.9, 0.1], 0.95)
    assert (unreachable.recall, unreachable.threshold) == (0.0, float("inf"))


def test_average_precision_needs_a_defect() -> None:
    with pytest.raises(ValueError, match="no defective image"):
        average_precision([False, False], [0.1, 0.2])


def test_dice_on_hand_made_masks() -> None:
    truth = np.zeros((4, 4), bool)
    truth[1:3, 1:3] = True  # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[1:3, 1:4] = True  # 6 pixels, 4 shared
    assert dice(pred, truth) == pytest.approx(2 * 4 / (6 + 4))
    assert dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert dice(pred, np.zeros((4, 4))) == 0.0
    assert mean_dice([pred, truth], [truth, truth]) == pytest.approx((0.8 + 1.0) / 2)
    with pytest.raises(ValueError, match="shape"):
        dice(pred, truth[:2])


def test_at_threshold_measures_a_threshold_chosen_elsewhere():
    point = at_threshold([True, True, False, False, True], [0.9, 0.4, 0.7, 0.1, 0.5], 0.5)
    assert (point.precision, point.recall, point.false_accepts, point.false_rejects) == (2 / 3, 2 / 3, 1, 1)
    nothing = at_threshold([True, False], [0.2, 0.1], 0.5)
    assert (nothing.precision, nothing.recall) == (1.0, 0.0)
    assert np.isnan(at_threshold([False, False], [0.9, 0.1], 0.5).recall)
