"""The Dagster code location: every asset, check and resource of visionledger.

    dagster dev -m assets.definitions
    dagster asset materialize -m assets.definitions --select dataset_inspection_all
    dagster asset materialize -m assets.definitions --select 'classifier_model+'   # train, export, engine, ...

Resources read the same settings as the CLI (VISIONLEDGER_HOME, VISIONLEDGER_DATABASE_URL).
"""

from __future__ import annotations

import dagster as dg

from assets.breakdowns import breakdowns
from assets.datasets import dataset_assets
from assets.lake_snapshot import lake_snapshot
from assets.learning.engines import classifier_engine
from assets.resources import CatalogResource, LakeResource, LanceDBResource
from learning.drift import drift_report
from learning.evaluation import model_evaluation
from learning.heatmaps import heatmaps
from learning.promotion import regression_replay
from learning.review import embeddings, review_queue
from learning.training import classifier_model, classifier_onnx, segmenter_model, segmenter_onnx

defs = dg.Definitions(
    assets=[lake_snapshot, *dataset_assets, breakdowns, drift_report, classifier_model, segmenter_model,
            classifier_onnx, segmenter_onnx, model_evaluation, embeddings, review_queue, heatmaps,
            regression_replay, classifier_engine],
    resources={"catalog": CatalogResource(), "lake": LakeResource(), "lancedb": LanceDBResource()},
)
