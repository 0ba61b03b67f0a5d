"""Checkpoints round-trip exactly and their bytes, hence their hash, depend only on the model."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from models.checkpoint import MAGIC, CheckpointError, load_model, model_bytes, model_from_bytes, save_model
from models.classifier import DefectClassifier
from models.segmenter import DefectSegmenter
from models.training import ClassifierParams, SegmenterParams


def _classifier(seed: int) -> DefectClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DefectClassifier(("ok", "crack"), width=4).eval()


def test_classifier_round_trip(tmp_path) -> None:
    model, params = _classifier(0), ClassifierParams(crop_size=64, width=4, epochs=2)
    sha = save_model(tmp_path / "c.vlmodel", model, params)
    assert sha == hashlib.sha256((tmp_path / "c.vlmodel").read_bytes()).hexdigest()
    loaded = load_model(tmp_path / "c.vlmodel")
    assert loaded.sha256 == sha and loaded.params == params
    assert isinstance(loaded.model, DefectClassifier) and loaded.model.classes == ("ok", "crack")
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert model_bytes(loaded.model, loaded.params) == model_bytes(model, params)


def test_bytes_depend_only_on_weights_and_settings(tmp_path) -> None:
    params = ClassifierParams(crop_size=64, width=4)
    assert save_model(tmp_path / "a", _classifier(0), params) == save_model(
        tmp_path / "b", _classifier(0), params
    )
    assert model_bytes(_classifier(0), params) != model_bytes(_classifier(1), params)
    assert model_bytes(_classifier(0), params) != model_bytes(
        _classifier(0), ClassifierParams(crop_size=64, width=4, seed=9)
    )


def test_segmenter_round_trip(tmp_path) -> None:
    model, params = DefectSegmenter(width=4, depth=3).eval(), SegmenterParams(width=4, depth=3)
    save_model(tmp_path / "s", model, params)
    loaded = load_model(tmp_path / "s")
    assert isinstance(loaded.model, DefectSegmenter) and loaded.model.depth == 3 and loaded.params == params


def test_other_files_are_refused(tmp_path) -> None:
    (tmp_path / "x").write_bytes(b"PK\x03\x04 a torch.save zip")
    with pytest.raises(CheckpointError, match="not a visionledger model checkpoint"):
        load_model(tmp_path / "x")


def test_a_classifier_saved_before_architectures_had_names_loads_as_the_standard_one() -> None:
    network = DefectClassifier(("ok", "crack"), width=4, arch="standard")
    data = model_bytes(network, ClassifierParams(width=4, arch="standard"))
    start = len(MAGIC) + 8
    size = int.from_bytes(data[len(MAGIC):start], "little")
    header = json.loads(data[start:start + size])
    del header["config"]["arch"], header["params"]["arch"]  # as written before `arch` existed
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    loaded = model_from_bytes(MAGIC + len(head).to_bytes(8, "little") + head + data[start + size:], name="old")
    assert (loaded.model.arch, loaded.params.arch) == ("standard", "standard")
    for a, b in zip(loaded.model.state_dict().values(), network.state_dict().values(), strict=True):
        assert (a == b).all()
