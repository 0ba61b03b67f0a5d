"""The learn half of the loop materialized in process against the real PostgreSQL, LanceDB and lake, on the
tiny simulated factory with a short training: dataset version → models → ONNX → evaluation → embeddings →
review queue → heatmaps → regression replay and promotion."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import onnx
import pytest

import catalog
from assets.datasets import dataset_assets
from assets.learn_loop import (
    classifier_model,
    classifier_onnx,
    embeddings,
    heatmaps,
    model_evaluation,
    regression_replay,
    review_queue,
    segmenter_model,
    segmenter_onnx,
)
from assets.resources import CatalogResource, LakeResource, LanceDBResource
from catalog.blobs import sha_from_uri
from catalog.embeddings import EmbeddingStore
from catalog.lineage import CLASSIFIER, model_row
from learning import training

SHORT = {"epochs": 1, "samples_per_epoch": 48}


@pytest.fixture
def run(factory_cat: catalog.Catalog):
    cat = factory_cat
    resources = {"catalog": CatalogResource(home=str(cat.settings.home), database_url=cat.settings.database_url),
                 "lake": LakeResource(root=str(cat.settings.lake_root)),
                 "lancedb": LanceDBResource(uri=str(cat.settings.home / "lancedb"))}
    instance = dg.DagsterInstance.ephemeral()

    def materialize(asset: dg.AssetsDefinition, config: dict | None = None, *,
                    on: dg.DagsterInstance = instance) -> dg.ExecuteInProcessResult:
        name = asset.key.path[-1]
        run_config = {"ops": {name: {"config": config}}} if config else None
        return dg.materialize([asset], resources=resources, instance=on, run_config=run_config)

    return materialize


def metadata(result: dg.ExecuteInProcessResult, name: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(name)[0].metadata.items()}


def test_the_learn_loop_from_dataset_version_to_promotion(factory_cat: catalog.Catalog, run):
    cat = factory_cat
    dataset = metadata(run(next(a for a in dataset_assets if a.key.path[-1] == "dataset_inspection_all")),
                       "dataset_inspection_all")

    trained = metadata(run(classifier_model, SHORT), "classifier_model")
    model_id = trained["model_id"]
    registered = [e for e in cat.store.read_stream("model:inspection-classifier") if e.type == "ModelRegistered"]
    assert [e.data.model_id for e in registered] == [model_id]
    event = registered[0].data
    assert (event.dataset_version_id, event.hyperparameters["epochs"]) == (dataset["version_id"], 1)
    assert model_id == f"inspection-classifier-{event.artifact_sha256[:12]}"
    # deterministic: training again registers nothing new
    assert metadata(run(classifier_model, SHORT), "classifier_model") == trained | {"new": False,
                                                                                     "seconds": pytest.approx(0, abs=1e9)}
    assert len([e for e in cat.store.read_stream("model:inspection-classifier") if e.type == "ModelRegistered"]) == 1

    exported = metadata(run(classifier_onnx), "classifier_onnx")
    assert exported["parity_max_abs_diff"] <= 1e-4
    onnx_file = cat.blobs.path(exported["onnx_sha256"])
    onnx.checker.check_model(str(onnx_file))
    run(segmenter_model, SHORT)
    run(segmenter_onnx)

    evaluation = metadata(run(model_evaluation), "model_evaluation")
    assert evaluation["model_id"] == model_id and 0 <= evaluation["threshold"] <= 1
    assert "segmenter_dice" in evaluation
    slices = duckdb.sql(f"SELECT DISTINCT slice FROM '{cat.lake.root}/evaluations/{model_id}/slices.parquet'").fetchall()
    assert {s for (s,) in slices} == {"part", "day", "defect", "camera"}
    assert Path(evaluation["report"]).read_bytes()[:4] == b"\x89PNG"

    embedded = metadata(run(embeddings), "embeddings")
    store = EmbeddingStore(cat.settings.home / "lancedb")
    with cat.db.connect() as conn:
        curated = conn.exec_driver_sql("SELECT count(*) FROM projections.images WHERE NOT excluded").scalar()
    assert embedded["images"] == store.count(model_id) == curated

    queued = metadata(run(review_queue, {"budget": 12}), "review_queue")
    assert queued["queued"] == 12
    with cat.db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT strategy, count(*) FROM projections.review_queue"
                                    " WHERE queue = 'active-learning' GROUP BY 1").fetchall()
    assert sum(n for _, n in rows) == 12 and len(rows) >= 2  # several strategies took turns
    run(review_queue, {"budget": 12})  # idempotent per queue, model and image
    with cat.db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM projections.review_queue").scalar() == 12

    explained = metadata(run(heatmaps, {"limit": 5}), "heatmaps")
    assert explained["images"] == 5 and explained["heatmaps"] == 10  # Grad-CAM and U-Net mask for each
    table = duckdb.sql(f"SELECT uri FROM '{explained['table']}'").fetchall()
    assert cat.blobs.read(sha_from_uri(table[0][0]))[:4] == b"\x89PNG"

    # "no champion yet" is no pass: a second of training is below the default quality floor, and the
    # refusal says why, one line a reason
    refused = metadata(run(regression_replay, {"min_images": 5}), "regression_replay")
    assert not refused["passed"] and not refused["promoted"]
    assert "unfit: validation recall" in refused["reasons"] or "unfit: it rejects" in refused["reasons"]
    # with the floor lowered on purpose, the first classifier passes against no champion and is promoted;
    # replaying it again does nothing
    lowered = {"min_images": 5, "min_validation_recall": 0.0, "max_good_parts_rejected": 1.0}
    replay = metadata(run(regression_replay, lowered), "regression_replay")
    assert replay["passed"] and replay["promoted"] and replay["champion"] == "none"
    promotions = [e for e in cat.store.read_stream("model:inspection-classifier") if e.type == "ModelPromoted"]
    assert [p.data.model_id for p in promotions] == [model_id]
    assert metadata(run(regression_replay), "regression_replay")["promoted"] is False


def test_each_asset_works_on_what_its_upstream_produced(factory_cat: catalog.Catalog, run):
    cat = factory_cat
    run(next(a for a in dataset_assets if a.key.path[-1] == "dataset_inspection_all"))
    first = metadata(run(classifier_model, SHORT), "classifier_model")["model_id"]
    # A second model registered afterwards, outside this instance (as `visionledger models train` would): the
    # latest registered is no longer the one `classifier_model` trained.
    newer = training.train_model(cat, CLASSIFIER, training.TrainingConfig(**SHORT, seed=1).params("classifier"),
                                 lambda _: None).model_id
    assert newer != first and model_row(cat, CLASSIFIER).model_id == newer

    exported = metadata(run(classifier_onnx), "classifier_onnx")
    assert exported["model_id"] == first
    assert model_row(cat, CLASSIFIER, first).onnx_sha256 == exported["onnx_sha256"]
    assert model_row(cat, CLASSIFIER, newer).onnx_uri is None
    assert metadata(run(model_evaluation), "model_evaluation")["model_id"] == first
    assert metadata(run(embeddings), "embeddings")["model_id"] == first
    # Run on its own, on an instance where its upstream never materialized, an asset takes the latest.
    alone = run(classifier_onnx, on=dg.DagsterInstance.ephemeral())
    assert metadata(alone, "classifier_onnx")["model_id"] == newer
