"""The learn half of the loop as assets: trained models, ONNX exports, the classifier's engine, evaluations,
embeddings, the review queue, heatmaps and the regression replay that gates promotion.

Each asset reads its config and resources, calls the plain function in `learning` (the CLI calls the same
ones) and reports what it did as metadata. The run configs are the functions' own config classes, made
Dagster configs here. What an asset works on (a dataset version, a model) is the one its config names, else
the one its upstream asset's latest materialization recorded (`upstream`), else the latest registered.
"""

# No `from __future__ import annotations`: Dagster reads the assets' config annotations as live classes.

from datetime import UTC, datetime

import dagster as dg

from assets.resources import CatalogResource, LanceDBResource
from catalog.embeddings import EmbeddingStore
from learning import evaluation, promotion, review, training
from learning import heatmaps as explanations
from learning.registry import CLASSIFIER, SEGMENTER, model_row
from models.export import PARITY_TOLERANCE
from serving.engines import build_engine

# -- run configs: the plain configs of `learning`, as Dagster reads them -------------------------------------


class TrainingConfig(training.TrainingConfig, dg.Config):
    """`learning.training.TrainingConfig` as a Dagster run config."""


class ExportConfig(training.ExportConfig, dg.Config):
    """`learning.training.ExportConfig` as a Dagster run config."""


class EvaluationConfig(evaluation.EvaluationConfig, dg.Config):
    """`learning.evaluation.EvaluationConfig` as a Dagster run config."""


class EmbeddingConfig(review.EmbeddingConfig, dg.Config):
    """`learning.review.EmbeddingConfig` as a Dagster run config."""


class ReviewQueueConfig(review.ReviewQueueConfig, dg.Config):
    """`learning.review.ReviewQueueConfig` as a Dagster run config."""


class HeatmapConfig(explanations.HeatmapConfig, dg.Config):
    """`learning.heatmaps.HeatmapConfig` as a Dagster run config."""


class ReplayConfig(promotion.ReplayConfig, dg.Config):
    """`learning.promotion.ReplayConfig` as a Dagster run config."""


class EngineConfig(dg.Config):
    """The model to build from (default: the one `classifier_onnx` exported, else the latest exported
    classifier) and the ONNX Runtime device."""

    model_id: str | None = None
    device: str = "cpu"


# -- what the upstream asset produced ---------------------------------------------------------------------


def upstream(context: dg.AssetExecutionContext, asset: str, key: str) -> str | None:
    """The ``key`` (a model id, a dataset version id) recorded by the latest materialization of the upstream
    ``asset`` on this instance: what that asset actually produced, earlier in this run or in an earlier one,
    and not "the latest registered", which another run or the CLI may have added since. None when ``asset`` was
    never materialized here (this asset run on its own): the plain function then takes the latest."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    entry = event.asset_materialization.metadata.get(key) if event and event.asset_materialization else None
    return None if entry is None else entry.value


# -- models: training, export, engine ---------------------------------------------------------------------


def _progress(context: dg.AssetExecutionContext, what: str):
    every = {"last": -1}

    def report(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done // step != every["last"] or done == total:
            every["last"] = done // step
            # Debug: the UI shows these ticks, while a console (the demo's) keeps to the epoch lines.
            context.log.debug(f"{what}: {done:,} / {total:,}")

    return report


def _trained(trained: training.TrainedModel) -> dg.MaterializeResult:
    """A training asset's result: the model id (its data version) and the validation figures."""
    result = trained.result
    return dg.MaterializeResult(
        metadata={"model_id": trained.model_id, "dataset_version_id": trained.dataset_version_id,
                  "new": trained.new, "seconds": dg.MetadataValue.float(result.seconds),
                  "validation": dg.MetadataValue.json({k: v for k, v in result.metrics.items()
                                                       if isinstance(v, int | float | str)})},
        data_version=dg.DataVersion(trained.model_id))


@dg.asset(group_name="models", compute_kind="torch", deps=["dataset_inspection_all"])
def classifier_model(context: dg.AssetExecutionContext, config: TrainingConfig,
                     catalog: CatalogResource) -> dg.MaterializeResult:
    """The inspection classifier (ok and each defect class), trained from scratch on a dataset version's
    training split with its class weights, on defect-centred crops; validated on its validation split."""
    with catalog.open() as cat:
        trained = training.train_model(cat, CLASSIFIER, config.params("classifier"), context.log.info,
                                       dataset_version_id=config.dataset_version_id
                                       or upstream(context, "dataset_inspection_all", "version_id"),
                                       progress=_progress(context, "training"), device=config.device)
    return _trained(trained)


@dg.asset(group_name="models", compute_kind="torch", deps=["dataset_inspection_all"])
def segmenter_model(context: dg.AssetExecutionContext, config: TrainingConfig,
                    catalog: CatalogResource) -> dg.MaterializeResult:
    """The defect U-Net, trained on the masks of a dataset version's training split (dice as its metric)."""
    with catalog.open() as cat:
        trained = training.train_model(cat, SEGMENTER, config.params("segmenter"), context.log.info,
                                       dataset_version_id=config.dataset_version_id
                                       or upstream(context, "dataset_inspection_all", "version_id"),
                                       progress=_progress(context, "training"), device=config.device)
    return _trained(trained)


def _onnx_asset(name: str, model: str, upstream_asset: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, group_name="models", compute_kind="onnx", deps=[upstream_asset],
              description=f"The {model} exported to ONNX with a dynamic batch axis, checked with onnx.checker "
                          f"and matched against torch within {PARITY_TOLERANCE}: the model {upstream_asset} "
                          "trained.")
    def export(context: dg.AssetExecutionContext, config: ExportConfig, catalog: CatalogResource):
        with catalog.open() as cat:
            model_id, event, new = training.export_model(
                cat, model, config.model_id or upstream(context, upstream_asset, "model_id"), context.log.info)
        return dg.MaterializeResult(
            metadata={"model_id": model_id, "onnx_sha256": event.onnx_sha256, "opset": event.opset,
                      "parity_max_abs_diff": dg.MetadataValue.float(event.parity_max_abs_diff), "new": new},
            data_version=dg.DataVersion(event.onnx_sha256))

    return export


classifier_onnx = _onnx_asset("classifier_onnx", CLASSIFIER, "classifier_model")
segmenter_onnx = _onnx_asset("segmenter_onnx", SEGMENTER, "segmenter_model")


@dg.asset(group_name="models", compute_kind="onnxruntime", deps=["classifier_onnx"])
def classifier_engine(context: dg.AssetExecutionContext, config: EngineConfig,
                      catalog: CatalogResource) -> dg.MaterializeResult:
    """The ONNX Runtime engine of the classifier, recorded with its model, ONNX file, dataset version and
    manifest hash; the server loads it only while that lineage holds."""
    with catalog.open() as cat:
        model_id = (config.model_id or upstream(context, "classifier_onnx", "model_id")
                    or model_row(cat, CLASSIFIER, need_onnx=True).model_id)
        built = build_engine(cat, model_id=model_id, device=config.device, actor="dagster")
    record = built.record
    context.log.info(f"engine {record.engine_id[:12]} of {model_id}: "
                     f"{'built' if built.new else 'already built'}")
    return dg.MaterializeResult(
        metadata={"engine_id": record.engine_id, "model_id": record.model_id, "backend": record.backend,
                  "precision": record.precision, "device": record.device,
                  "dataset_version_id": record.dataset_version_id, "new": built.new,
                  "library_versions": dg.MetadataValue.json(record.library_versions),
                  **({} if record.threshold is None else {"threshold": dg.MetadataValue.float(record.threshold)})},
        data_version=dg.DataVersion(record.engine_id))


# -- evaluation and promotion -------------------------------------------------------------------------------


@dg.asset(group_name="models", compute_kind="torch", deps=["classifier_model", "segmenter_model"])
def model_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig,
                     catalog: CatalogResource) -> dg.MaterializeResult:
    """Confusion matrix, per-class precision / recall, the PR curve, the cost-based threshold and per-part,
    per-day, per-defect and per-camera figures of the classifier on its test split (and the U-Net's dice)."""
    with catalog.open() as cat:
        chosen = config.model_id or upstream(context, "classifier_model", "model_id")
        event, extra = evaluation.evaluate(cat, evaluation.EvaluationConfig(
            **(config.model_dump() | {"model_id": chosen})), context.log.info)
    figures = extra["figures"]
    per_class = figures["classes"]
    table = "| class | precision | recall | f1 |\n|---|---|---|---|\n" + "\n".join(
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |" for c, v in per_class.items())
    metadata = {
        "model_id": event.model_id, "dataset_version_id": event.dataset_version_id,
        "images": dg.MetadataValue.int(figures["images"]),
        "accuracy": dg.MetadataValue.float(figures["accuracy"]),
        "per_class": dg.MetadataValue.md(table),
        "threshold": dg.MetadataValue.float(event.threshold), "cost_ratio": dg.MetadataValue.float(event.cost_ratio),
        "recall_at_min_precision": dg.MetadataValue.float(figures.get("recall_at_min_precision", float("nan"))),
        "report": dg.MetadataValue.path(extra["png"]),
        "metrics": dg.MetadataValue.json(event.metrics),
    }
    if "segmenter" in extra and "dice" in extra["segmenter"]:
        metadata["segmenter_dice"] = dg.MetadataValue.float(extra["segmenter"]["dice"])
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name="models", compute_kind="onnxruntime", deps=["classifier_onnx", "model_evaluation"])
def regression_replay(context: dg.AssetExecutionContext, config: ReplayConfig,
                      catalog: CatalogResource) -> dg.MaterializeResult:
    """Replay the candidate and the champion on history, per line, camera, day and class; promote the
    candidate only if no slice is worse than the tolerance and it is not worse overall."""
    with catalog.open() as cat:
        candidate = config.candidate_model_id or upstream(context, "classifier_onnx", "model_id")
        replayed, gate, promoted = promotion.replay_and_gate(cat, promotion.ReplayConfig(
            **(config.model_dump() | {"candidate_model_id": candidate})), context.log.info)
    if replayed is None:
        return dg.MaterializeResult(metadata={"promoted": False, "note": "the candidate is already the champion"})
    overall = gate.slices[0]
    table = "| slice | images | champion acc. | candidate acc. | champion recall | candidate recall | worse |\n" \
            "|---|---|---|---|---|---|---|\n" + "\n".join(
                f"| {s.kind}={s.value} | {s.images} | {_fmt(s.champion_accuracy)} | {_fmt(s.candidate_accuracy)} | "
                f"{_fmt(s.champion_recall)} | {_fmt(s.candidate_recall)} | {'; '.join(s.worse)} |"
                for s in gate.slices)
    return dg.MaterializeResult(metadata={
        "candidate": replayed.candidate_model_id, "champion": replayed.champion_model_id or "none",
        "passed": gate.passed, "promoted": promoted, "images": dg.MetadataValue.int(replayed.images),
        "verdict": ("passed" if gate.passed else "refused") + ": " + "; ".join(gate.reasons),
        "candidate_accuracy": dg.MetadataValue.float(overall.candidate_accuracy),
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in gate.reasons)),
        "slices": dg.MetadataValue.md(table),
    })


def _fmt(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"


# -- review: embeddings, the review queue, heatmaps ---------------------------------------------------------


@dg.asset(group_name="review", compute_kind="lancedb", deps=["classifier_model"])
def embeddings(context: dg.AssetExecutionContext, config: EmbeddingConfig, catalog: CatalogResource,
               lancedb: LanceDBResource) -> dg.MaterializeResult:
    """Penultimate-layer embeddings of every curated image in LanceDB (one table per model, with part / line /
    day / label columns and an ANN index once the table is large), the model's scores in the lake, and a
    near-duplicate report."""
    with catalog.open() as cat:
        model_id = config.model_id or upstream(context, "classifier_model", "model_id")
        figures = review.embed_catalog(cat, EmbeddingStore(lancedb.location()), model_id,
                                       near_duplicate_distance=config.near_duplicate_distance, log=context.log.info)
    return dg.MaterializeResult(metadata={
        "model_id": figures["model_id"], "images": dg.MetadataValue.int(figures["images"]),
        "ann_index": figures["indexed"], "near_duplicate_pairs": dg.MetadataValue.int(figures["near_duplicates"]),
        "near_duplicates_across_parts": dg.MetadataValue.int(figures["near_duplicates_other_part"]),
        "scores": dg.MetadataValue.path(figures["scores"]),
        "near_duplicate_report": dg.MetadataValue.path(figures["report"]),
    })


@dg.asset(group_name="review", compute_kind="numpy", deps=["embeddings"])
def review_queue(context: dg.AssetExecutionContext, config: ReviewQueueConfig, catalog: CatalogResource,
                 lancedb: LanceDBResource) -> dg.MaterializeResult:
    """The active-learning queue: the images humans should label or check next, by labels probably on the
    wrong side of ok / defect, disagreement with corrections and labels, uncertainty, diversity over the
    embeddings and rarely predicted classes."""
    with catalog.open() as cat:
        model_id = (config.model_id or upstream(context, "embeddings", "model_id")
                    or model_row(cat, CLASSIFIER).model_id)
        batch = review.build_review_queue(cat, EmbeddingStore(lancedb.location()), model_id,
                                          budget=config.budget, strategies=config.strategies, queue=config.queue,
                                          weights=config.weights)
    by_strategy: dict[str, int] = {}
    for candidate in batch:
        by_strategy[candidate.strategy] = by_strategy.get(candidate.strategy, 0) + 1
    return dg.MaterializeResult(metadata={
        "model_id": model_id, "queued": dg.MetadataValue.int(len(batch)),
        "by_strategy": dg.MetadataValue.json(by_strategy),
        "first": dg.MetadataValue.md("| image | strategy | score | reason |\n|---|---|---|---|\n" + "\n".join(
            f"| {c.sha256[:12]} | {c.strategy} | {c.score:.3f} | {c.reason} |" for c in batch[:15])),
    })


@dg.asset(group_name="review", compute_kind="torch", deps=["review_queue", "segmenter_model"])
def heatmaps(context: dg.AssetExecutionContext, config: HeatmapConfig,
             catalog: CatalogResource) -> dg.MaterializeResult:
    """Grad-CAM and U-Net masks for the queued images and the test split, as images in the blob store and a
    table `Lake.heatmaps_of(model)` (image, model, kind, class, blob URI)."""
    started = datetime.now(UTC)
    with catalog.open() as cat:
        model_id = config.model_id or upstream(context, "review_queue", "model_id")
        table, path = explanations.explain(cat, model_id, queue=config.queue, limit=config.limit,
                                           log=context.log.info)
    return dg.MaterializeResult(metadata={
        "images": dg.MetadataValue.int(len(set(table["sha256"].to_pylist()))),
        "heatmaps": dg.MetadataValue.int(table.num_rows),
        "seconds": dg.MetadataValue.float((datetime.now(UTC) - started).total_seconds()),
        "table": dg.MetadataValue.path(path),
    })


# The learn loop as one job (dataset versions, models, review): a run selects the assets it materializes, in
# their dependency order, each reading what its upstream produced.
learn_loop = dg.define_asset_job("learn_loop", selection=dg.AssetSelection.groups("datasets", "models", "review"),
                                 description="Dataset versions, models, engines, evaluation, replay and review.")
