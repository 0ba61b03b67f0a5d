"""`visionledger simulate`: a simulated factory's deliveries, for the demo and the tests."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from apps.cli.common import out, progress_bar
from ingestion.simulated_factory import SIZE_PRESETS, simulate_factory


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", default=3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default="small", show_default=True, type=click.Choice(sorted(SIZE_PRESETS)))
@click.option("--image-size", default=512, show_default=True, help="pixels a side (DAGM 2007: 512)")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="first day (default 2026-03-02)")
def simulate(out_dir: Path, days: int, seed: int, size: str, image_size: int, start) -> None:
    """Write a simulated factory's images, manifest, labels, corrections and ontology, deterministic by seed."""
    kwargs = {"start": start.date()} if start else {}
    with progress_bar("simulating") as update:
        summary = simulate_factory(out_dir, days=days, seed=seed, size=size, image_size=image_size,
                                   progress=update, **kwargs)
    table = Table(title=f"simulated factory in {summary.out}", show_header=False)
    table.add_row("images (+ re-delivered duplicates)", f"{summary.images:,} (+{summary.duplicates})")
    table.add_row("parts", f"{summary.parts:,}")
    table.add_row("images per true class", ", ".join(f"{k} {v:,}" for k, v in summary.per_class.items()))
    table.add_row("labels (wrong) / corrections", f"{summary.labels:,} ({summary.wrong_labels}) / {summary.corrections}")
    table.add_row("bad files planted", f"{summary.bad_files}")
    out.print(table)
    out.print(f"next: visionledger ingest {out_dir}")



