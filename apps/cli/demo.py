"""The README's main job: `visionledger demo`, the whole pipeline so far on the embedded defaults."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click
from rich.table import Table

from apps.cli.common import console, open_catalog, out, progress_bar
from catalog.curation import set_excluded
from catalog.datasets import DatasetSpec, publish_dataset_version
from catalog.queries import ImageFilter, count_images
from ingestion.factory_delivery import deliver_factory
from ingestion.simulated_factory import DRIFT, SIZE_PRESETS, simulate_factory

START = date(2026, 3, 2)
DATASET_SPEC = Path(__file__).resolve().parents[2] / "assets" / "dataset_specs" / "inspection_all.yaml"


@click.command()
@click.option("--days", default=3, show_default=True, help="days of production to simulate")
@click.option("--size", default="small", show_default=True, type=click.Choice(sorted(SIZE_PRESETS)))
@click.option("--seed", default=0, show_default=True)
@click.option("--image-size", default=512, show_default=True)
def demo(days: int, size: str, seed: int, image_size: int) -> None:
    """Simulate a factory, then take its deliveries through the catalog: ontology, ingestion with quarantine,
    labels, corrections, a curator's query and exclusion, the lake. Safe to run again: nothing is doubled."""
    with open_catalog() as cat:
        console.rule("visionledger demo")
        factory = cat.settings.home / "factory" / f"{size}-{days}d-seed{seed}-{image_size}px"
        if not (factory / "manifest.csv").exists():
            with progress_bar("simulating the factory") as update:
                simulate_factory(factory, days=days, seed=seed, size=size, start=START, image_size=image_size,
                                 progress=update)
        delivered = deliver_factory(cat, factory, actor="demo", progress=progress_bar)
        published, ingested, labels, corrections = (delivered.ontology, delivered.images, delivered.labels,
                                                    delivered.corrections)
        # A curator's day: the dimming lamp of the drift schedule spoiled one line's last day; exclude it.
        last_day = datetime.combine(START + timedelta(days=days - 1), datetime.min.time(), UTC)
        window = ImageFilter(lines=(DRIFT.dimming_line,), captured_from=last_day, captured_to=last_day + timedelta(days=1))
        curated = set_excluded(cat, window, exclude=True, reason="lamp too dim: wrongly collected", actor="demo")
        cracks = count_images(cat.engine, ImageFilter(labels=("crack",), excluded=False))
        with console.status("building the dataset version"):
            dataset = publish_dataset_version(cat, DatasetSpec.from_yaml(DATASET_SPEC), actor="demo")
        with progress_bar("lake sync") as update:
            lake = cat.sync_lake(progress=update)
        per_day = cat.duckdb().execute(
            "SELECT day, count(*) FILTER (WHERE type = 'ImageIngested'), count(*) FILTER (WHERE type = 'ImageRejected'),"
            " count(*) FILTER (WHERE type = 'LabelRecorded'), count(*) FILTER (WHERE type = 'CorrectionRecorded')"
            " FROM events WHERE type LIKE 'Image%' OR type IN ('LabelRecorded', 'CorrectionRecorded')"
            " GROUP BY day ORDER BY day"
        ).fetchall()

        summary = Table(title=f"the factory in {factory}", show_header=False)
        summary.add_row("ontology", f"version {published.version}: {', '.join(published.classes)}")
        summary.add_row("images: new / duplicate / known",
                        f"{ingested.ingested} / {ingested.duplicates} / {ingested.already_ingested}")
        summary.add_row("quarantined", ", ".join(f"{k} {v}" for k, v in ingested.rejected_by_reason().items()) or "none")
        summary.add_row("labels: new / known / refused",
                        f"{labels.recorded} / {labels.already_recorded} / {len(labels.problems)}")
        summary.add_row("corrections: new / known / refused",
                        f"{corrections.recorded} / {corrections.already_recorded} / {len(corrections.problems)}")
        summary.add_row(f"excluded {DRIFT.dimming_line} {last_day:%Y-%m-%d}",
                        f"{curated.changed} newly, {curated.matched} in all")
        summary.add_row("crack images, curated", f"{cracks}")
        counts = dataset.version.counts
        summary.add_row("dataset version", f"{dataset.version_id}: {counts['images']} images, train / validation / "
                        f"test {counts['train']} / {counts['validation']} / {counts['test']} (by part)")
        summary.add_row("catalog / lake", f"{cat.head():,} events / {lake.end:,} mirrored")
        out.print(summary)
        days_table = Table("day (lake, DuckDB)", "ingested", "quarantined", "labels", "corrections")
        for row in per_day:
            days_table.add_row(*[str(v) for v in row])
        out.print(days_table)
        out.print("next: visionledger images query --label crack | visionledger trace part <id> | "
                  "visionledger datasets list | visionledger app --role curator | make dagster | "
                  "psql \"$(visionledger db url)\"")
