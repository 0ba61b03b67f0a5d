"""Commands over the class ontology: publishing a version from its YAML file, and showing every version."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from apps.cli.common import open_catalog, out
from catalog.events import OntologyChange
from catalog.ontology import Ontology
from ingestion.ontology_publish import SPLIT_QUEUE, publish_ontology


@click.group()
def ontology() -> None:
    """The classes labels may use, version by version."""


@ontology.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--actor", help="who publishes (recorded in the event's metadata)")
def ontology_publish(file: Path, actor: str | None) -> None:
    """Publish the ontology version in a YAML FILE: {version: N, classes: [...], changes: [{op, sources,
    targets}]}, where op is create, rename, merge or split. Images whose class it splits are queued for review."""
    with open_catalog() as cat:
        report = publish_ontology(cat, file, actor=actor)
    verb = "is already published" if report.already_published else "published"
    out.print(f"ontology version {report.version} {verb}: {', '.join(report.classes)}")
    if report.queued_for_review:
        out.print(f"{report.queued_for_review:,} images queued for review in {SPLIT_QUEUE!r}: their class was split")


@ontology.command("show")
@click.option("--json", "as_json", is_flag=True)
def ontology_show(as_json: bool) -> None:
    """Every published version, its classes and the changes from the version before."""
    with open_catalog() as cat:
        versions = sorted(Ontology.load(cat).versions.values(), key=lambda v: v.version)
    if as_json:
        out.print_json(json.dumps([{"version": v.version, "classes": list(v.classes),
                                    "changes": [c.model_dump() for c in v.changes]} for v in versions]))
        return
    table = Table("version", "classes", "changes from the previous version")
    for v in versions:
        table.add_row(str(v.version), ", ".join(v.classes), "; ".join(_describe(c) for c in v.changes))
    out.print(table)


def _describe(change: OntologyChange) -> str:
    targets = ", ".join(change.targets)
    return f"create {targets}" if change.op == "create" else f"{change.op} {', '.join(change.sources)} → {targets}"
