"""Dataset versions as assets: one asset per spec in ``assets/dataset_specs/``, each materialization a
published version (manifest in the lake, DatasetVersionPublished in the log) with its four checks."""

from pathlib import Path

import dagster as dg

from assets.resources import CatalogResource
from catalog.datasets import DatasetSpec, check_manifest, publish_dataset_version

SPEC_DIR = Path(__file__).parent / "dataset_specs"
CHECKS = ("no_part_in_two_splits", "class_proportions", "no_image_newer_than_position", "no_excluded_image")


class DatasetBuildConfig(dg.Config):
    """Run configuration: the catalog position to build at (default: the spec's ``as_of``, else the head),
    and optionally a whole spec as YAML text, which replaces the file's for this run."""

    as_of_position: int | None = None
    spec_yaml: str | None = None


def dataset_asset(spec_path: Path) -> dg.AssetsDefinition:
    spec = DatasetSpec.from_yaml(spec_path)
    name = "dataset_" + spec_path.stem.replace("-", "_")

    @dg.asset(name=name, group_name="datasets", compute_kind="duckdb",
              description=f"{spec.description or spec.name} (spec: {spec_path.name})",
              check_specs=[dg.AssetCheckSpec(check, asset=name) for check in CHECKS])
    def build(context: dg.AssetExecutionContext, config: DatasetBuildConfig, catalog: CatalogResource):
        chosen = DatasetSpec.from_yaml(config.spec_yaml) if config.spec_yaml else DatasetSpec.from_yaml(spec_path)
        with catalog.open() as cat:
            published = publish_dataset_version(cat, chosen, position=config.as_of_position, actor="dagster")
            version = published.version
            context.log.info(f"{published.version_id}: {version.counts['images']:,} images at position "
                             f"{version.position:,}" + (" (already published)" if published.already_published else ""))
            outcomes = check_manifest(cat, version.manifest, chosen, version.position)
        counts = version.counts
        classes = sorted(c for c in counts if "/" not in c and c not in ("images", "parts", "train", "validation", "test"))
        table = "| split | parts | images | " + " | ".join(classes) + " |\n|---|---|---|" + "---|" * len(classes) + "\n"
        table += "\n".join(
            f"| {split} | {counts.get(f'{split}/parts', 0):,} | {counts.get(split, 0):,} | "
            + " | ".join(f"{counts.get(f'{split}/{c}', 0):,}" for c in classes) + " |"
            for split in ("train", "validation", "test"))
        yield dg.MaterializeResult(
            metadata={
                "version_id": published.version_id,
                "as_of_position": dg.MetadataValue.int(version.position),
                "manifest_hash": published.manifest_hash,
                "manifest": dg.MetadataValue.path(str(cat.lake.root / published.manifest_uri)),
                "ontology_version": dg.MetadataValue.int(version.ontology_version),
                "images": dg.MetadataValue.int(counts["images"]),
                "parts": dg.MetadataValue.int(counts["parts"]),
                "splits": dg.MetadataValue.md(table),
                "shortfall": dg.MetadataValue.json(version.shortfall),
                "left_out": dg.MetadataValue.json(version.left_out),
                "already_published": published.already_published,
            },
            data_version=dg.DataVersion(published.manifest_hash),
        )
        for outcome in outcomes:
            yield dg.AssetCheckResult(check_name=outcome.name, passed=outcome.passed, description=outcome.detail,
                                      severity=dg.AssetCheckSeverity.ERROR,
                                      metadata={k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v
                                                for k, v in outcome.metadata.items()})

    return build


dataset_assets = [dataset_asset(path) for path in sorted(SPEC_DIR.glob("*.yaml"))]
