"""Training is deterministic by seed and actually learns on the simulator's tiny factory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.checkpoint import model_bytes
from models.data import SampleSet, random_turn
from models.training import (
    ClassifierParams,
    SegmenterParams,
    _Crops,
    _remember_false_alarms,
    _with_ok_share,
    train_classifier,
    train_segmenter,
)

# Small enough to train in a second or two on one CPU core, big enough to hold a 128 px image's defects.
TINY_CLASSIFIER = ClassifierParams(
    epochs=1, batch_size=8, crop_size=64, width=4, samples_per_epoch=16, seed=3
)
TINY_SEGMENTER = SegmenterParams(
    epochs=1, batch_size=4, crop_size=64, width=4, depth=3, samples_per_epoch=8, seed=3
)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("balance", ["sampler", "loss"])
def test_classifier_training_is_deterministic(tiny_samples: SampleSet, balance: str) -> None:
    train = tiny_samples.split("train")
    params = ClassifierParams(**(TINY_CLASSIFIER.to_dict() | {"balance": balance}))
    first, second = train_classifier(train, params), train_classifier(train, params)
    assert _same_weights(first.model, second.model)
    assert model_bytes(first.model, params) == model_bytes(second.model, params)
    other = train_classifier(train, ClassifierParams(**(params.to_dict() | {"seed": 4})))
    assert not _same_weights(first.model, other.model)


def test_segmenter_training_is_deterministic(tiny_samples: SampleSet) -> None:
    train = tiny_samples.split("train")
    first, second = train_segmenter(train, TINY_SEGMENTER), train_segmenter(train, TINY_SEGMENTER)
    assert _same_weights(first.model, second.model)
    assert first.history == second.history


def test_training_leaves_the_callers_torch_state_alone(tiny_samples: SampleSet) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(tiny_samples.split("train"), TINY_CLASSIFIER)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_classifier_learns_on_the_tiny_factory(tiny_samples: SampleSet) -> None:
    params = ClassifierParams(epochs=30, batch_size=32, crop_size=64, width=8, samples_per_epoch=64)
    calls: list[tuple[int, int]] = []
    result = train_classifier(
        tiny_samples.split("train"),
        params,
        validation=tiny_samples.split("test"),
        progress=lambda done, total: calls.append((done, total)),
    )
    # Epoch losses are noisy on a few dozen images: compare the first three with the last three.
    loss = result.history["loss"]
    assert len(loss) == 30 and np.mean(loss[-3:]) < 0.85 * np.mean(loss[:3]), loss
    assert calls[-1] == (60, 60) and len(calls) == 60
    assert result.model.classes == ("ok", "crack", "scratch", "spot")
    assert {"accuracy", "average_precision", "recall_at_min_precision"} <= result.metrics.keys()
    assert [v["epoch"] for v in result.history["validation"]] == [30]


def test_segmenter_learns_on_the_tiny_factory(tiny_samples: SampleSet) -> None:
    params = SegmenterParams(epochs=15, batch_size=8, crop_size=64, width=8, samples_per_epoch=48, lr=1e-2)
    result = train_segmenter(tiny_samples.split("train"), params, validation=tiny_samples.split("test"))
    loss = result.history["loss"]
    assert loss[-1] < 0.8 * loss[0], loss
    assert 0.0 <= result.metrics["dice"] <= 1.0 and result.metrics["masked_images"] > 0


def test_params_round_trip_through_json() -> None:
    params = ClassifierParams(epochs=3, balance="loss")
    assert ClassifierParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(ValueError, match="balance"):
        ClassifierParams(balance="oversample")
    with pytest.raises(ValueError, match="unknown"):
        SegmenterParams.from_dict({"epochs": 2, "colour": "red"})


def test_unknown_validation_class_fails_before_training(tiny_samples: SampleSet) -> None:
    with pytest.raises(ValueError, match="missing from classes"):
        train_classifier(tiny_samples.split("train"), TINY_CLASSIFIER, classes=("ok", "spot"))


def test_draws_share_out_ok_and_defect_images() -> None:
    draw = _with_ok_share(
        torch.tensor([1.0, 1.0, 2.0, 6.0], dtype=torch.float64), torch.tensor([True, True, False, False]), 0.5
    )
    assert draw.tolist() == [0.25, 0.25, 0.125, 0.375]


def test_false_alarms_are_remembered_where_they_lie_in_the_image() -> None:
    # A 64 px crop taken at (top 64, left 32) and turned; its worst cell was cell (1, 2) before the turn.
    grid = np.arange(16).reshape(4, 4)
    turn = random_turn(np.random.default_rng(3))
    marker = np.zeros((4, 4))
    marker[1, 2] = 1
    logits = torch.full((1, 1, 4, 4), -5.0)
    logits[0, 0][torch.from_numpy(turn(marker) == 1)] = 5.0
    crops = _Crops(
        torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64), torch.tensor([True]), [(64, 32)], [turn(grid)]
    )
    hard: dict[int, tuple[float, float]] = {}
    _remember_false_alarms(hard, [7], crops, logits, torch.tensor([True]))
    assert hard == {7: (64 + 1.5 * 16, 32 + 2.5 * 16)}
    _remember_false_alarms(hard, [7], crops, -logits.abs(), torch.tensor([True]))  # clean this time
    assert hard == {}
