"""`visionledger simulate`: a simulated factory's deliveries, for the demo and the tests."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from apps.cli.common import out, progress_bar
from ingestion.simulated_factory import SIZE_PRESETS, simulate_factory
from ingestion.simulator.photos import DEFAULT_SURFACES, PHOTOGRAPHS, check_surfaces


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", default=3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default="small", show_default=True, type=click.Choice(sorted(SIZE_PRESETS)))
@click.option("--image-size", default=512, show_default=True, help="pixels a side (DAGM 2007: 512)")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="first day (default 2026-03-02)")
@click.option("--surfaces", help="real photographs as the lines' surfaces, comma-separated, one a line "
              f"('photo' for {','.join(DEFAULT_SURFACES[:3])}…; any of {', '.join(sorted(PHOTOGRAPHS))}); "
              "default: procedural textures")
def simulate(out_dir: Path, days: int, seed: int, size: str, image_size: int, start, surfaces: str | None) -> None:
    """Write a simulated factory's images, manifest, labels, corrections and ontology, deterministic by seed."""
    kwargs = {"start": start.date()} if start else {}
    if surfaces:
        names = DEFAULT_SURFACES if surfaces == "photo" else tuple(n.strip() for n in surfaces.split(","))
        try:
            check_surfaces(names)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--surfaces") from None
        kwargs["surfaces"] = names
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



