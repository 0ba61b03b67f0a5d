"""The classifier's inference engine as an asset: the ONNX Runtime engine of the latest exported classifier,
built and recorded (`EngineBuilt`) by `serving.engines.build_engine`."""

import dagster as dg

from assets.resources import CatalogResource
from learning.registry import CLASSIFIER, model_row
from serving.engines import build_engine


class EngineConfig(dg.Config):
    """The model to build from (default: the latest exported classifier) and the ONNX Runtime device."""

    model_id: str | None = None
    device: str = "cpu"


@dg.asset(group_name="models", compute_kind="onnxruntime", deps=["classifier_onnx"])
def classifier_engine(context: dg.AssetExecutionContext, config: EngineConfig,
                      catalog: CatalogResource) -> dg.MaterializeResult:
    """The ONNX Runtime engine of the classifier, recorded with its model, ONNX file, dataset version and
    manifest hash; the server loads it only while that lineage holds."""
    with catalog.open() as cat:
        model_id = config.model_id or model_row(cat, CLASSIFIER, need_onnx=True).model_id
        built = build_engine(cat, model_id=model_id, device=config.device, actor="dagster")
    record = built.record
    context.log.info(f"engine {record.engine_id[:12]} of {model_id}: "
                     f"{'built' if built.new else 'already built'}")
    return dg.MaterializeResult(
        metadata={"engine_id": record.engine_id, "model_id": record.model_id, "backend": record.backend,
                  "precision": record.precision, "device": record.device,
                  "dataset_version_id": record.dataset_version_id, "new": built.new,
                  "library_versions": dg.MetadataValue.json(record.library_versions)},
        data_version=dg.DataVersion(record.engine_id))
