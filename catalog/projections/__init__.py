"""Read models derived from the event log: kept up to date, rebuilt from scratch, and asked as of a position."""

from catalog.projections.framework import Projection
from catalog.projections.read_models import ALL_PROJECTIONS
from catalog.projections.runner import ProjectionRunner, RebuildReport, TableComparison, labels_as_of, rebuild

__all__ = [
    "ALL_PROJECTIONS", "Projection", "ProjectionRunner", "RebuildReport", "TableComparison", "labels_as_of", "rebuild",
]
