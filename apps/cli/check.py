"""`visionledger check`: the whole-catalog consistency check, for people and for monitoring."""

from __future__ import annotations

import json

import click

from apps.cli.common import open_catalog, out, progress_bar
from catalog.chain import ChainHead
from catalog.consistency import check_catalog


def _chain_head(ctx: click.Context, param: click.Parameter, value: str | None) -> ChainHead | None:
    try:
        return None if value is None else ChainHead.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the figures and problems as JSON")
@click.option("--against", metavar="POSITION:HASH", callback=_chain_head,
              help="a head printed earlier by `visionledger log head`: prove nothing at or before it changed")
def check(as_json: bool, against: ChainHead | None) -> None:
    """Cross-check the log (every event's hash in the chain), its blobs, the read models (against a rebuild) and
    the lake mirror (each event once, with the same content). Exits 1 when anything is lost, doubled, altered
    or half-written, naming the first position where the chain breaks."""
    with open_catalog() as cat, progress_bar("hash chain, then blobs, read models and lake") as update:
        report = check_catalog(cat, against=against, progress=update)
    problems = report.problems()
    if as_json:
        out.print_json(json.dumps({"ok": report.ok, "head": report.head, "events": report.events,
                                   "chain_head": str(report.chain.head), "chain_broken_at": report.chain.broken_at,
                                   "lake_position": report.lake_position, "images": report.blobs.images,
                                   "blobs": report.blobs.blobs, "problems": problems}))
    else:
        out.print(f"{report.events:,} events up to position {report.head:,}; {report.blobs.images:,} images, "
                  f"{report.blobs.blobs:,} blobs; lake mirrored to {report.lake_position:,}")
        for line in problems:
            out.print(f"[red]{line}[/red]", soft_wrap=True)
        if report.ok:
            held = f"; the head held outside ({against}) is in it" if against else ""
            out.print(f"hash chain verified up to {report.chain.head}{held}", soft_wrap=True)
            out.print("consistent: nothing lost, doubled, altered or half-written")
    if not report.ok:
        raise SystemExit(1)
