"""The Dagster code location: every asset, check and resource of visionledger.

    dagster dev -m assets.definitions
    dagster asset materialize -m assets.definitions --select dataset_inspection_all
    dagster asset materialize -m assets.definitions --select 'classifier_model+'   # train, export, engine, ...

The jobs `learn_loop` (what `visionledger demo` runs, stage by stage) and `day_reports` (a factory day's drift
report and breakdowns, which the sensor `images_arrived` requests as a day's images arrive).

Resources read the same settings as the CLI (VISIONLEDGER_HOME, VISIONLEDGER_DATABASE_URL).
"""

from __future__ import annotations

import dagster as dg

from assets.breakdowns import breakdowns
from assets.datasets import dataset_assets
from assets.drift import drift_report
from assets.lake_snapshot import lake_snapshot
from assets.learn_loop import (
    classifier_engine,
    classifier_model,
    classifier_onnx,
    embeddings,
    heatmaps,
    learn_loop,
    model_evaluation,
    regression_replay,
    review_queue,
    segmenter_model,
    segmenter_onnx,
)
from assets.resources import CatalogResource, LakeResource, LanceDBResource
from assets.sensors import day_reports, images_arrived

defs = dg.Definitions(
    assets=[lake_snapshot, *dataset_assets, breakdowns, drift_report, classifier_model, segmenter_model,
            classifier_onnx, segmenter_onnx, model_evaluation, embeddings, review_queue, heatmaps,
            regression_replay, classifier_engine],
    jobs=[learn_loop, day_reports],
    sensors=[images_arrived],
    resources={"catalog": CatalogResource(), "lake": LakeResource(), "lancedb": LanceDBResource()},
)
