"""`visionledger ingest`: a delivery of images from the line into the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from apps.cli.common import open_catalog, out, print_quarantine, progress_bar
from imaging.intake import Limits
from ingestion.ingest import ingest as ingest_delivery
from ingestion.tables import parse_column_map


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the manifest CSV (default DIRECTORY/manifest.csv); its paths are relative to it")
@click.option("--map", "mapping", multiple=True, metavar="CANONICAL=THEIRS", help="read column THEIRS as CANONICAL")
@click.option("--max-pixels", default=Limits.max_pixels, show_default=True, help="refuse larger images (decompression bombs)")
@click.option("--workers", type=int, help="decoding processes (default: every core)")
@click.option("--batch-size", default=256, show_default=True, help="rows appended per transaction")
@click.option("--actor", help="who delivers (recorded in each event's metadata)")
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable report")
def ingest(directory: Path, manifest: Path | None, mapping: tuple[str, ...], max_pixels: int, workers: int | None,
           batch_size: int, actor: str | None, as_json: bool) -> None:
    """Ingest every image a manifest lists; quarantine bad rows with a reason code and go on.

    Idempotent (the same delivery twice adds nothing) and safe to kill and re-run. Exit status 1 when any
    row was rejected."""
    manifest = manifest or directory / "manifest.csv"
    with open_catalog() as cat, progress_bar("ingesting") as update:
        report = ingest_delivery(cat, manifest, root=directory, column_map=parse_column_map(mapping) or None,
                                 limits=Limits(max_pixels=max_pixels), workers=workers, batch_size=batch_size, actor=actor,
                                 progress=update)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        summary = Table("", "images", title=f"ingested {manifest} in {report.seconds:.1f} s", show_header=False)
        summary.add_row("new images", f"{report.ingested:,}")
        summary.add_row("duplicates (same bytes seen again)", f"{report.duplicates:,}")
        summary.add_row("already ingested (nothing appended)", f"{report.already_ingested:,}")
        for reason, count in report.rejected_by_reason().items():
            summary.add_row(f"rejected: {reason}", f"{count:,}", style="red")
        out.print(summary)
        print_quarantine(report.rejected_rows)
    if report.rejected:
        raise SystemExit(1)
