"""Commands over labels: importing a labels CSV, and labels as of a past position or time. Also the CSV
import options and report that `corrections import` shares."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import click
from rich.table import Table

from apps.cli.common import open_catalog, out, parse_moment, progress_bar, sign_act, signer_options
from identity.roles import Action
from identity.signatures import Meaning
from ingestion.labels import ImportReport, import_labels
from ingestion.tables import parse_column_map

Importer = Callable[..., ImportReport]
SHOWN_PROBLEMS = 50


@click.group()
def labels() -> None:
    """Labels: importing them, and reading them as the catalog knew them at any time."""


@labels.command("as-of")
@click.option("--position", type=int, help="the catalog as of this event position")
@click.option("--at", "moment", help="the catalog as of this time (ISO 8601 with offset)")
@click.option("--json", "as_json", is_flag=True)
def labels_as_of(position: int | None, moment: str | None, as_json: bool) -> None:
    """Every image's current label as of a position or a time."""
    at = parse_moment(moment, option="--at")
    with open_catalog() as cat:
        rows = cat.labels_as_of(position=position, at=at)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table("sha256", "label", "annotator", "source", "position")
    for row in rows[:50]:
        table.add_row(row["sha256"][:16], row["label"], row["annotator"], row["source"], str(row["position"]))
    out.print(table)
    out.print(f"{len(rows)} labelled images" + (" (first 50 shown)" if len(rows) > 50 else ""))


def import_command(group: click.Group, importer: Importer, what: str, note: str = "", *,
                   signed: tuple[Meaning, Action] | None = None) -> None:
    """Add ``import FILE [--map CANONICAL=THEIRS ...] [--json]`` to ``group``: it records the file's rows with
    ``importer`` and exits with 1 when any row was rejected or in conflict. Who imports is ``--actor NAME``, or,
    for an import that is ``signed`` (its meaning and the action it is), ``--user NAME`` whose signature every
    event of the import carries."""
    who = signer_options if signed else click.option("--actor", help="who imports (recorded in each event's metadata)")
    signing = ("Every event is signed by --user, who re-enters their password. " if signed else "")

    @group.command("import", help=f"Record the rows of a {what} CSV FILE. {note}{signing}Rows already recorded are "
                   "skipped; refused rows are reported and the good ones still recorded. Exit status 1 when any row "
                   "was refused.")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--map", "mappings", multiple=True, metavar="CANONICAL=THEIRS",
                  help="read a canonical column from a column of another name (repeatable)")
    @who
    @click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
    def import_file(file: Path, mappings: Sequence[str], as_json: bool, actor: str | None = None,
                    signer: str | None = None, password_stdin: bool = False) -> None:
        column_map = parse_column_map(mappings)
        with open_catalog() as cat:
            extra = {}
            if signed:
                signature = sign_act(cat, signer, password_stdin, *signed)
                actor, extra = signature.actor, {"signed": signature.metadata()}
            with progress_bar(f"importing {file.name}") as update:
                report = importer(cat, file, column_map=column_map, actor=actor, progress=update, **extra)
        if as_json:
            out.print_json(report.to_json())
        else:
            _print_report(report)
        if report.problems:
            raise click.exceptions.Exit(1)


def _print_report(report: ImportReport) -> None:
    summary = Table(title=Path(report.file).name, show_header=False)
    for name, count in (("rows", report.rows), ("recorded", report.recorded),
                        ("already recorded", report.already_recorded), ("rejected", report.rejected),
                        ("conflicts", report.conflicts)):
        summary.add_row(name, f"{count:,}")
    out.print(summary)
    if report.problems:
        problems = Table("line", "id", "reason", "message", title="refused rows")
        for problem in report.problems[:SHOWN_PROBLEMS]:
            problems.add_row(str(problem.row), problem.id, problem.reason, problem.message)
        out.print(problems)
        if len(report.problems) > SHOWN_PROBLEMS:
            out.print(f"first {SHOWN_PROBLEMS} of {len(report.problems)} refused rows shown; --json lists them all")


import_command(labels, import_labels, "labels")
