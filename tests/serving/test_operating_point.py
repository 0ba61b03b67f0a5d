"""The operating point belongs to the model: chosen on the validation split by the evaluation, carried by the
engine, used by the server and replay unless a rule set overrides it (and then recorded as such), and what
is served matches what the evaluation measured. The learn loop's commands (`visionledger models …`) run as
a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from catalog.datasets import load_manifest
from catalog.lineage import CLASSIFIER, dataset_version, model_row
from identity.people import add_user
from learning.evaluation import EvaluationConfig, evaluate
from serving.decision import load_rules
from serving.engines import build_engine, load_engine
from serving.replay import predicted_classes
from tests.builders import cli_env, run_cli


def _quiet(message: str) -> None:
    pass


def test_the_engine_carries_the_threshold_chosen_on_validation_and_serving_matches_the_evaluation(
        built_engine) -> None:
    cat, untuned_engine = built_engine
    assert load_engine(cat, untuned_engine).record.threshold is None  # built before any evaluation
    event, _ = evaluate(cat, EvaluationConfig(min_precision=0.5), _quiet)
    assert event.threshold_split == "validation" and event.min_precision == 0.5
    assert 0 <= event.threshold <= 1 and "validation_recall" in event.metrics

    model = model_row(cat, CLASSIFIER, event.model_id)
    engine = build_engine(cat, model_id=model.model_id, actor="test").record
    assert engine.threshold == event.threshold and engine.engine_id != untuned_engine  # a new operating point
    loaded = load_engine(cat, engine.engine_id)
    assert loaded.record.threshold == event.threshold
    loaded.close()

    # The test split served through the server's inspection path, at the threshold it picks by itself,
    # gives the evaluation's precision and recall: the same images, the same threshold, ONNX against torch.
    version = dataset_version(cat, model.dataset_version_id)
    manifest = load_manifest(cat.lake, version.manifest_uri).to_pylist()
    test = [r for r in manifest if r["split"] == "test"]
    served = predicted_classes(cat, engine.engine_id, [r["sha256"] for r in test])
    is_defect = np.array([r["class"] != "ok" for r in test])
    called = np.array([c != "ok" for c in served])
    recall = called[is_defect].mean() if is_defect.any() else float("nan")
    precision = is_defect[called].mean() if called.any() else 1.0
    one_image = 1 / max(1, min(int(is_defect.sum()), int(called.sum()) or 1))
    if is_defect.any():
        assert abs(recall - event.metrics["recall_at_threshold"]) <= one_image
    assert abs(precision - event.metrics["precision_at_threshold"]) <= one_image


def test_a_rule_set_overrides_the_engine_threshold_and_each_prediction_records_whose_it_was(
        built_engine, tmp_path) -> None:
    cat, _ = built_engine
    event, _ = evaluate(cat, EvaluationConfig(), _quiet)
    engine_id = build_engine(cat, model_id=event.model_id, actor="test").record.engine_id
    from serving.inspection import Inspector

    engine = load_engine(cat, engine_id)
    by_engine = Inspector(cat, engine, load_rules())
    assert (by_engine.rules.threshold, by_engine.threshold_from) == (event.threshold, "engine")
    override = load_rules().model_copy(update={"threshold": 0.9})
    by_rules = Inspector(cat, engine, override)
    assert (by_rules.rules.threshold, by_rules.threshold_from) == (0.9, "rules")
    assert by_rules.rules.rules_version != by_engine.rules.rules_version  # the override shows in the version

    result = run_cli("replay", "--engine", engine_id, env=cli_env(cat))
    report = json.loads(result.stdout)
    assert report["images"] > 0
    with cat.db.connect() as conn:
        recorded = conn.exec_driver_sql(
            "SELECT DISTINCT payload->>'threshold_from', (payload->>'threshold')::float FROM catalog.events"
            " WHERE type = 'PredictionRecorded' AND payload->>'engine_id' = %(e)s", {"e": engine_id}).fetchall()
    assert recorded == [("engine", event.threshold)]
    rows = pq.read_table(report["report"]).to_pylist()
    assert rows and all((r["predicted_class"] != "ok") == (r["defect_score"] >= event.threshold) for r in rows)
    engine.close()


def test_the_models_commands_train_export_evaluate_list_and_refuse_an_unfit_promotion(built_engine) -> None:
    cat, _ = built_engine
    env = cli_env(cat)
    trained = json.loads(run_cli("models", "train", "--epochs", "1", "--samples-per-epoch", "16", "--json",
                                 env=env).stdout)
    assert trained["new"] and trained["model_id"].startswith("inspection-classifier-")
    again = json.loads(run_cli("models", "train", "--epochs", "1", "--samples-per-epoch", "16", "--json",
                               env=env).stdout)
    assert again["model_id"] == trained["model_id"] and not again["new"]  # deterministic: nothing new
    exported = json.loads(run_cli("models", "export", trained["model_id"], "--json", env=env).stdout)
    assert exported["model_id"] == trained["model_id"] and exported["parity_max_abs_diff"] < 1e-3
    evaluated = json.loads(run_cli("models", "evaluate", trained["model_id"], "--json", env=env).stdout)
    assert 0 <= evaluated["threshold"] <= 1 and "validation_recall" in evaluated["metrics"]
    listed = [json.loads(line) for line in run_cli("models", "list", "--json", env=env).stdout.splitlines()]
    mine = next(m for m in listed if m["model_id"] == trained["model_id"])
    assert mine["exported"] and mine["evaluation"]["threshold_split"] == "validation" and not mine["champion"]

    add_user(cat, "eli", "Eli Engineer", "correct horse battery", ["engineer"], actor="test")
    refused = run_cli("models", "promote", trained["model_id"], "--min-validation-recall", "1.01", "--json",
                      "--user", "eli", "--password-stdin", env=env, stdin="correct horse battery\n", check=False)
    assert refused.returncode == 1
    verdict = json.loads(refused.stdout)
    assert not verdict["promoted"]
    assert any(r.startswith("unfit: validation recall") and "below the floor of 1.01" in r
               for r in verdict["reasons"])
