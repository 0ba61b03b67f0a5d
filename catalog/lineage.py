"""Readers of the lineage read models: published dataset versions, registered models and the champion, built
engines, for every layer that must follow an engine or a model back to the data it learned from."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class EngineRecord:
    """An engine as `EngineBuilt` recorded it."""

    engine_id: str  # sha256 of the artifact's bytes
    model: str
    model_id: str
    onnx_sha256: str
    dataset_version_id: str
    manifest_hash: str
    backend: str  # "onnxruntime" | "tensorrt" | "torch_cuda"
    precision: str  # "fp32" | "fp16" | "int8"
    device: str
    library_versions: dict[str, str] = field(default_factory=dict)
    artifact_uri: str = ""
    threshold: float | None = None  # the model's operating threshold, chosen on its validation split


def engine_records(cat: Catalog, *, engine_id: str | None = None, backend: str | None = None) -> list[EngineRecord]:
    """The recorded engines, newest first: every one, the one ``engine_id`` names, or those of ``backend``."""
    conditions = [c for c, given in (("engine_id = %(e)s", engine_id), ("backend = %(b)s", backend)) if given]
    query = (f"SELECT {', '.join(EngineRecord.__dataclass_fields__)} FROM projections.engines"
             f"{' WHERE ' + ' AND '.join(conditions) if conditions else ''} ORDER BY position DESC")
    with cat.read() as conn:
        return [EngineRecord(*row) for row in conn.exec_driver_sql(query, {"e": engine_id, "b": backend})]


def dataset_versions(cat: Catalog) -> list[dict[str, Any]]:
    """Every published dataset version, newest first: version_id, dataset, as_of_position, counts (images and
    per split), published_at."""
    with cat.read() as conn:
        return [dict(r._mapping) for r in conn.exec_driver_sql(
            "SELECT version_id, dataset, as_of_position, counts, published_at FROM projections.dataset_versions"
            " ORDER BY position DESC")]


def dataset_version(cat: Catalog, version_id: str | None = None, *,
                    dataset: str = DEFAULT_DATASET) -> DatasetVersionRow:
    """A published dataset version: the one named, else the latest of ``dataset``."""
    query = ("SELECT version_id, dataset, as_of_position, manifest_hash, manifest_uri, spec"
             " FROM projections.dataset_versions WHERE ")
    query += "version_id = %(v)s" if version_id else "dataset = %(d)s ORDER BY position DESC LIMIT 1"
    with cat.read() as conn:
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
    query = ("SELECT model_id, model, dataset_version_id, manifest_hash, artifact_uri, onnx_uri, onnx_sha256,"
             " metrics, evaluation FROM projections.models WHERE true")
    query += " AND model = %(m)s" if model else ""
    query += " AND model_id = %(i)s" if model_id else ""
    query += " AND onnx_uri IS NOT NULL" if need_onnx else ""
    with cat.read() as conn:
        row = conn.exec_driver_sql(query + " ORDER BY position DESC LIMIT 1",
                                   {"m": model, "i": model_id}).fetchone()
    if row is None:
        what = f"model {model_id!r}" if model_id else f"{'exported ' if need_onnx else ''}{model} model"
        raise CatalogError(f"no {what} is registered: materialize its training asset first")
    return ModelRow(*row)


def list_models(cat: Catalog, model: str | None = None) -> list[ModelRow]:
    """Every registered model (only those called ``model`` when given), newest first."""
    query = ("SELECT model_id, model, dataset_version_id, manifest_hash, artifact_uri, onnx_uri, onnx_sha256,"
             " metrics, evaluation FROM projections.models")
    query += " WHERE model = %(m)s" if model else ""
    with cat.read() as conn:
        return [ModelRow(*row) for row in conn.exec_driver_sql(query + " ORDER BY position DESC", {"m": model})]


def champion_of(model: str) -> str:
    """The champion rule, as a SQL expression: the model id in service for the model named by the SQL
    expression ``model`` (a column or a parameter) is the last one promoted; NULL before any promotion."""
    return (f"(SELECT pr.model_id FROM projections.model_promotions pr WHERE pr.model = {model}"
            " ORDER BY pr.position DESC LIMIT 1)")


def champion(cat: Catalog, model: str) -> str | None:
    """The model id in service for ``model`` (`champion_of`)."""
    with cat.read() as conn:
        return conn.exec_driver_sql(f"SELECT {champion_of('%(m)s')}", {"m": model}).scalar()


def was_replayed(cat: Catalog, model_id: str) -> bool:
    """Whether a regression replay has judged ``model_id`` as the candidate."""
    return _recorded(cat, "regression_replays", "candidate_model_id", model_id)


def was_promoted(cat: Catalog, model_id: str) -> bool:
    return _recorded(cat, "model_promotions", "model_id", model_id)


def _recorded(cat: Catalog, table: str, column: str, value: str) -> bool:
    with cat.read() as conn:
        return conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM projections.{table} WHERE {column} = %(v)s)",
                                    {"v": value}).scalar()
