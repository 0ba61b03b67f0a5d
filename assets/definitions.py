"""The Dagster code location: every asset, check and resource of visionledger.

    dagster dev -m assets.definitions
    dagster asset materialize -m assets.definitions --select dataset_inspection_all

Resources read the same settings as the CLI (VISIONLEDGER_HOME, VISIONLEDGER_DATABASE_URL).
"""

from __future__ import annotations

import dagster as dg

from assets.breakdowns import breakdowns
from assets.datasets import dataset_assets
from assets.drift import drift_report
from assets.lake_snapshot import lake_snapshot
from assets.resources import CatalogResource, LakeResource, LanceDBResource

defs = dg.Definitions(
    assets=[lake_snapshot, *dataset_assets, breakdowns, drift_report],
    resources={"catalog": CatalogResource(), "lake": LakeResource(), "lancedb": LanceDBResource()},
)
