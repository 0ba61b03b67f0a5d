"""Dataset versions from the command line: build one from a spec, list the published ones."""

from __future__ import annotations

import json

import click
from rich.table import Column, Table

from apps.cli.common import console, open_catalog, out
from catalog.datasets import DatasetSpec, check_manifest, publish_dataset_version
from catalog.lineage import dataset_versions


@click.group()
def datasets() -> None:
    """Dataset versions: a spec applied to the catalog at a position (see assets/dataset_specs/)."""


@datasets.command("build")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--as-of", "as_of", type=int, help="catalog position to build at (default: the spec's, else the head)")
@click.option("--actor", default="cli", show_default=True, help="who publishes, for the event's metadata")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def datasets_build(spec_file: str, as_of: int | None, actor: str, as_json: bool) -> None:
    """Build SPEC_FILE, write its manifest to the lake, publish the version and run its checks. Building the
    same spec at the same position again publishes nothing new."""
    spec = DatasetSpec.from_yaml(spec_file)
    with open_catalog() as cat:
        with console.status(f"building {spec.name}…"):
            published = publish_dataset_version(cat, spec, position=as_of, actor=actor)
            outcomes = check_manifest(cat, published.version.manifest, spec, published.version.position)
        manifest = cat.lake.root / published.manifest_uri
    version = published.version
    if as_json:
        out.print_json(json.dumps({
            "version_id": published.version_id, "as_of_position": version.position,
            "manifest_hash": published.manifest_hash, "manifest": str(manifest), "counts": version.counts,
            "shortfall": version.shortfall, "left_out": version.left_out,
            "already_published": published.already_published,
            "checks": {o.name: {"passed": o.passed, "detail": o.detail} for o in outcomes}}))
    else:
        out.print(f"{published.version_id}{' (already published)' if published.already_published else ''}: "
                  f"{version.counts['images']:,} images of {version.counts['parts']:,} parts at position "
                  f"{version.position:,}\nmanifest {manifest}")
        table = Table("check", "result")
        for o in outcomes:
            table.add_row(o.name, ("[green]passed[/] " if o.passed else "[red]FAILED[/] ") + o.detail)
        out.print(table)
    if not all(o.passed for o in outcomes):
        raise SystemExit(1)


@datasets.command("list")
def datasets_list() -> None:
    """The published dataset versions, newest first."""
    with open_catalog() as cat:
        rows = dataset_versions(cat)
    table = Table(Column("version", no_wrap=True), "as of", "images", "train / validation / test", "published")
    for row in rows:
        counts = row["counts"]
        table.add_row(row["version_id"], f"{row['as_of_position']:,}", f"{counts['images']:,}",
                      f"{counts['train']:,} / {counts['validation']:,} / {counts['test']:,}",
                      f"{row['published_at']:%Y-%m-%d %H:%M}")
    out.print(table)
