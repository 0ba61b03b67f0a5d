"""Readers of the lineage read models: published dataset versions, registered models and the champion, for
every layer that must follow an engine or a model back to the data it learned from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catalog import Catalog
from catalog.errors import CatalogError

CLASSIFIER = "inspection-classifier"
SEGMENTER = "defect-segmenter"
DEFAULT_DATASET = "inspection-all"


@dataclass(frozen=True)
class DatasetVersionRow:
    version_id: str
    dataset: str
    as_of_position: int
    manifest_hash: str
    manifest_uri: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class ModelRow:
    model_id: str
    model: str
    dataset_version_id: str
    manifest_hash: str
    artifact_uri: str
    onnx_uri: str | None
    onnx_sha256: str | None
    metrics: dict[str, Any]
    evaluation: dict[str, Any] | None


def dataset_version(cat: Catalog, version_id: str | None = None, *,
                    dataset: str = DEFAULT_DATASET) -> DatasetVersionRow:
    """A published dataset version: the one named, else the latest of ``dataset``."""
    cat.catch_up()
    query = ("SELECT version_id, dataset, as_of_position, manifest_hash, manifest_uri, spec"
             " FROM projections.dataset_versions WHERE ")
    query += "version_id = %(v)s" if version_id else "dataset = %(d)s ORDER BY position DESC LIMIT 1"
    with cat.db.connect() as conn:
        row = conn.exec_driver_sql(query, {"v": version_id, "d": dataset}).fetchone()
    if row is None:
        raise CatalogError(f"no dataset version {version_id!r}" if version_id else
                           f"no version of dataset {dataset!r} is published: materialize its dataset asset "
                           "first")
    return DatasetVersionRow(*row)


def model_row(cat: Catalog, model: str | None = None, model_id: str | None = None, *,
              need_onnx: bool = False) -> ModelRow:
    """A registered model: the one named by ``model_id``, else the latest registered called ``model`` (with an
    ONNX export when ``need_onnx``)."""
    if model is None and model_id is None:
        raise CatalogError("name a model or a model id")
    cat.catch_up()
    query = ("SELECT model_id, model, dataset_version_id, manifest_hash, artifact_uri, onnx_uri, onnx_sha256,"
             " metrics, evaluation FROM projections.models WHERE true")
    query += " AND model = %(m)s" if model else ""
    query += " AND model_id = %(i)s" if model_id else ""
    query += " AND onnx_uri IS NOT NULL" if need_onnx else ""
    with cat.db.connect() as conn:
        row = conn.exec_driver_sql(query + " ORDER BY position DESC LIMIT 1",
                                   {"m": model, "i": model_id}).fetchone()
    if row is None:
        what = f"model {model_id!r}" if model_id else f"{'exported ' if need_onnx else ''}{model} model"
        raise CatalogError(f"no {what} is registered: materialize its training asset first")
    return ModelRow(*row)


def list_models(cat: Catalog, model: str | None = None) -> list[ModelRow]:
    """Every registered model (only those called ``model`` when given), newest first."""
    cat.catch_up()
    query = ("SELECT model_id, model, dataset_version_id, manifest_hash, artifact_uri, onnx_uri, onnx_sha256,"
             " metrics, evaluation FROM projections.models")
    query += " WHERE model = %(m)s" if model else ""
    with cat.db.connect() as conn:
        return [ModelRow(*row) for row in conn.exec_driver_sql(query + " ORDER BY position DESC", {"m": model})]


def champion_of(model: str) -> str:
    """The champion rule, as a SQL expression: the model id in service for the model named by the SQL
    expression ``model`` (a column or a parameter) is the last one promoted; NULL before any promotion."""
    return (f"(SELECT pr.model_id FROM projections.model_promotions pr WHERE pr.model = {model}"
            " ORDER BY pr.position DESC LIMIT 1)")


def champion(cat: Catalog, model: str) -> str | None:
    """The model id in service for ``model`` (`champion_of`)."""
    with cat.db.connect() as conn:
        return conn.exec_driver_sql(f"SELECT {champion_of('%(m)s')}", {"m": model}).scalar()


def was_replayed(cat: Catalog, model_id: str) -> bool:
    """Whether a regression replay has judged ``model_id`` as the candidate."""
    return _recorded(cat, "regression_replays", "candidate_model_id", model_id)


def was_promoted(cat: Catalog, model_id: str) -> bool:
    return _recorded(cat, "model_promotions", "model_id", model_id)


def _recorded(cat: Catalog, table: str, column: str, value: str) -> bool:
    cat.catch_up()
    with cat.db.connect() as conn:
        return conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM projections.{table} WHERE {column} = %(v)s)",
                                    {"v": value}).scalar()
