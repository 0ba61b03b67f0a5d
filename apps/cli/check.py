"""`visionledger check`: the whole-catalog consistency check, for people and for monitoring."""

from __future__ import annotations

import json

import click

from apps.cli.common import console, open_catalog, out
from catalog.consistency import check_catalog


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the figures and problems as JSON")
def check(as_json: bool) -> None:
    """Cross-check the log, its blobs, the read models (against a rebuild) and the lake mirror (each event once,
    with the same content). Exits 1 when anything is lost, doubled, altered or half-written."""
    with open_catalog() as cat, console.status("checking the log, blobs, read models and lake…"):
        report = check_catalog(cat)
    problems = report.problems()
    if as_json:
        out.print_json(json.dumps({"ok": report.ok, "head": report.head, "events": report.events,
                                   "lake_position": report.lake_position, "images": report.blobs.images,
                                   "blobs": report.blobs.blobs, "problems": problems}))
    else:
        out.print(f"{report.events:,} events up to position {report.head:,}; {report.blobs.images:,} images, "
                  f"{report.blobs.blobs:,} blobs; lake mirrored to {report.lake_position:,}")
        for line in problems:
            out.print(f"[red]{line}[/red]")
        if report.ok:
            out.print("consistent: nothing lost, doubled, altered or half-written")
    if not report.ok:
        raise SystemExit(1)
