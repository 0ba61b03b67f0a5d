"""The learn loop at full size, through the same Dagster assets as production: a simulated factory (512 px,
DAGM-style defects) ingested into a fresh catalog, a dataset version, the classifier and the U-Net trained
from scratch on CPU, exported to ONNX and evaluated on the held-out parts. Targets: image-level defect recall
>= 99 % at precision >= 95 %, U-Net dice >= 0.8. Also times each asset."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dagster as dg
from common import console, report, temp_catalog

from assets.datasets import dataset_assets
from assets.learn_loop import (
    classifier_model,
    classifier_onnx,
    model_evaluation,
    segmenter_model,
    segmenter_onnx,
)
from assets.resources import CatalogResource, LakeResource, LanceDBResource
from ingestion.factory_delivery import deliver_factory
from ingestion.simulated_factory import simulate_factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small")
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    with temp_catalog() as cat, tempfile.TemporaryDirectory() as tmp:
        factory = Path(tmp) / "factory"
        started = time.perf_counter()
        with console.status("simulating and ingesting the factory…"):
            simulate_factory(factory, days=args.days, seed=11, size=args.size, image_size=args.image_size)
            delivered = deliver_factory(cat, factory, actor="bench")
        load_s = time.perf_counter() - started
        resources = {"catalog": CatalogResource(home=str(cat.settings.home), database_url=cat.settings.database_url),
                     "lake": LakeResource(root=str(cat.settings.lake_root)),
                     "lancedb": LanceDBResource(uri=str(cat.settings.home / "lancedb"))}
        instance = dg.DagsterInstance.ephemeral()
        seconds: dict[str, float] = {}
        results: dict[str, dict] = {}
        training = {"epochs": args.epochs}
        steps = [(next(a for a in dataset_assets if a.key.path[-1] == "dataset_inspection_all"), None),
                 (classifier_model, training), (segmenter_model, training), (classifier_onnx, None),
                 (segmenter_onnx, None), (model_evaluation, None)]
        for asset, config in steps:
            name = asset.key.path[-1]
            with console.status(f"materializing {name}…"):
                started = time.perf_counter()
                result = dg.materialize([asset], resources=resources, instance=instance,
                                        run_config={"ops": {name: {"config": config}}} if config else None)
                seconds[name] = time.perf_counter() - started
            results[name] = {k: v.value for k, v in result.asset_materializations_for_node(name)[0].metadata.items()}
        evaluation = results["model_evaluation"]
        with cat.db.connect() as conn:
            figures = dict(conn.exec_driver_sql(
                "SELECT model, evaluation->'metrics' FROM projections.models WHERE evaluation IS NOT NULL").fetchall())
    classifier = figures["inspection-classifier"]
    dice = figures.get("defect-segmenter", {}).get("dice", float("nan"))
    report("bench_learning", f"the learn loop on a simulated factory ({args.size}, {args.days} days, "
           f"{args.image_size} px, {delivered.images.ingested:,} images)", [
        ("defect recall at precision ≥ 95 % (test split)", classifier.get("recall_at_min_precision", float("nan")),
         "target ≥ 0.99"),
        ("average precision, defect vs ok", classifier.get("average_precision", float("nan")), ""),
        ("class accuracy (test split)", classifier["accuracy"], f"{int(classifier['images'])} test images"),
        ("U-Net dice (test split)", dice, "target ≥ 0.8"),
        ("cost threshold at 1:20", evaluation["threshold"], "false accept : false reject cost"),
        ("simulate + ingest (s)", load_s, ""),
        *[(f"{name} (s)", s, "") for name, s in seconds.items()],
    ], {"classifier": classifier, "segmenter_dice": dice, "seconds": seconds, "load_seconds": load_s,
        "args": vars(args)})


if __name__ == "__main__":
    main()
