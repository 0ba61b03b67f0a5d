"""`visionledger images query|backfill`, `visionledger curate exclude|include` and `visionledger trace part`: the
curator's and the auditor's view of the catalog, and the backfill of image records whose pixels are elsewhere."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime
from pathlib import Path

import click
from rich.table import Table
from rich.tree import Tree

from apps.cli.common import (
    console,
    open_catalog,
    out,
    parse_day_or_moment,
    parse_moment,
    print_quarantine,
    progress_bar,
    sign_act,
    signer_options,
)
from catalog.curation import set_excluded
from catalog.queries import RESULT_COLUMNS, ImageFilter, count_images, query_images, trace_part
from identity.roles import Action
from identity.signatures import Meaning, signature_of


def filter_options(command):
    """The selection options shared by `images query` and `curate`."""
    options = [
        click.option("--line", "lines", multiple=True, help="repeat for several"),
        click.option("--station", "stations", multiple=True),
        click.option("--camera", "cameras", multiple=True),
        click.option("--part", "parts", multiple=True),
        click.option("--from", "captured_from",
                     help="captured on or after this factory day (each line's own), or at or after a timestamp with offset"),
        click.option("--to", "captured_to",
                     help="captured on or before this factory day (each line's own), or before a timestamp with offset"),
        click.option("--label", "labels", multiple=True, help="current class, or 'unlabelled'"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _filter(lines, stations, cameras, parts, captured_from, captured_to, labels, excluded=None) -> ImageFilter:
    start = parse_day_or_moment(captured_from, option="--from")
    end = parse_day_or_moment(captured_to, option="--to")
    # A bare date is a factory day; a timestamp (a datetime, which is a date too) one instant.
    days = {"first_day": start if type(start) is date else None, "last_day": end if type(end) is date else None}
    return ImageFilter(lines=lines, stations=stations, cameras=cameras, parts=parts,
                       captured_from=start if isinstance(start, datetime) else None,
                       captured_to=end if isinstance(end, datetime) else None,
                       labels=labels, excluded=excluded, **days)


@click.group()
def images() -> None:
    """Find images."""


@images.command("backfill")
@click.argument("records", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--actor", help="who backfills (recorded in each event's metadata)")
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable report")
def images_backfill(records: Path, actor: str | None, as_json: bool) -> None:
    """Append the image records of a Parquet file whose pixels are kept elsewhere (columns: sha256, blob_uri,
    part_id, line, station, camera, captured_at, width, height, byte_size; optional: channels, bit_depth,
    format, source_path, and a label with its labeler, labeled_at, label_id), then bring the read models up.

    Bad rows are quarantined with their reason and the run goes on; running the same file again appends
    nothing. Exit status 1 when any row was rejected."""
    from ingestion.backfill import backfill  # noqa: PLC0415 - only this command needs it

    with open_catalog() as cat, progress_bar("backfilling") as update:
        report = backfill(cat, records, actor=actor, progress=update)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        summary = Table("", "rows", title=f"backfilled {records} in {report.seconds:.1f} s "
                        f"({report.rows / report.seconds:,.0f} rows/s)", show_header=False)
        summary.add_row("images appended", f"{report.images:,}")
        summary.add_row("labels appended", f"{report.labels:,}")
        summary.add_row("events already recorded (nothing appended)", f"{report.already_recorded:,}")
        for reason, count in report.rejected_by_reason().items():
            summary.add_row(f"rejected: {reason}", f"{count:,}", style="red")
        out.print(summary)
        print_quarantine(report.rejected_rows, path="uri")
    if report.rejected:
        raise SystemExit(1)


@images.command("query")
@filter_options
@click.option("--excluded/--included", default=None, help="only excluded, or only included, images")
@click.option("--as-of", "as_of", help="the catalog as of a position (number) or a time (ISO 8601 with offset)")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
def images_query(lines, stations, cameras, parts, captured_from, captured_to, labels, excluded, as_of, limit, offset,
                 as_json, as_csv) -> None:
    """Images matching the filters, by capture time."""
    where = _filter(lines, stations, cameras, parts, captured_from, captured_to, labels, excluded)
    with open_catalog() as cat:
        position = None
        if as_of is not None:
            position = int(as_of) if as_of.isdigit() else cat.position_at(parse_moment(as_of, option="--as-of"))
        rows = query_images(cat, where, as_of=position, limit=limit, offset=offset)
        total = count_images(cat, where, as_of=position)
    if as_json:
        out.print_json(json.dumps({"total": total, "offset": offset, "images": rows}, default=str))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table("captured_at", "line", "station", "camera", "part", "label", "excluded", "sha256")
        for r in rows:
            table.add_row(r["captured_at"].isoformat(timespec="seconds"), r["line"], r["station"], r["camera"],
                          r["part_id"], r["label"] or "", r["exclusion_reason"] or "", r["sha256"][:12])
        out.print(table)
        out.print(f"{offset + 1 if rows else 0}–{offset + len(rows)} of {total} images"
                  + (f" (as of position {position})" if position is not None else ""))


@click.group()
def curate() -> None:
    """Exclude images from every derived dataset (they stay in the catalog), or include them back; each is an act
    its curator signs (meaning: approved)."""


def _curate_command(exclude: bool):
    verb = "exclude" if exclude else "include"

    @curate.command(verb)
    @filter_options
    @click.option("--reason", required=True, help="why (recorded with every event)")
    @signer_options
    def command(lines, stations, cameras, parts, captured_from, captured_to, labels, reason, signer,
                password_stdin) -> None:
        where = _filter(lines, stations, cameras, parts, captured_from, captured_to, labels)
        if where == ImageFilter():
            raise click.UsageError(f"give at least one filter: {verb} every image is never what you meant")
        with open_catalog() as cat:
            signature = sign_act(cat, signer, password_stdin, Meaning.APPROVED, Action.EXCLUDE)
            report = set_excluded(cat, where, exclude=exclude, reason=reason, actor=signature.actor,
                                  signed=signature.metadata())
        out.print(f"{verb}d {report.changed} of {report.matched} matching images "
                  f"({report.matched - report.changed} already were), signed by {signer} ({signature.meaning})")

    command.__doc__ = (f"{verb.capitalize()} every image the filters select, with a mandatory reason, signed by "
                       "--user with their password.")
    return command


_curate_command(exclude=True)
_curate_command(exclude=False)


@click.group()
def trace() -> None:
    """Follow one thing through the catalog."""


@trace.command("part")
@click.argument("part_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the auditor's report: REPORT.html (self-contained) or REPORT.json, with the "
                   "decision, images and the chain engine → model → dataset version → training labels")
def trace_part_command(part_id: str, as_json: bool, report: Path | None) -> None:
    """Every image of a part with its full event history, and the part's own events."""
    with open_catalog() as cat:
        found = trace_part(cat, part_id)
        if report is not None:
            _write_report(cat, part_id, report)

    def event_json(e):
        return {"position": e.position, "type": e.type, "occurred_at": e.occurred_at.isoformat(),
                "recorded_at": e.recorded_at.isoformat(), "payload": e.payload, "metadata": e.metadata}

    if as_json:
        out.print_json(json.dumps({
            "part_id": part_id,
            "images": [{"sha256": i["sha256"], "sightings": i["sightings"], "events": [event_json(e) for e in i["events"]]}
                       for i in found.images],
            "part_events": [event_json(e) for e in found.part_events],
        }, default=str))
        return
    tree = Tree(f"part {part_id}")
    for image in found.images:
        branch = tree.add(f"image {image['sha256'][:16]} ({len(image['sightings'])} sighting(s))")
        for e in image["events"]:
            branch.add(_line(e))
    for e in found.part_events:
        tree.add(_line(e))
    out.print(tree)


def _line(e) -> str:
    """One event of the trace, with its signature when a person signed it."""
    signature = signature_of(e.metadata)
    signed = (f" — signed by {signature.signer} ({signature.meaning}) at {signature.signed_at.isoformat()}"
              if signature else "")
    return f"#{e.position} {e.occurred_at:%Y-%m-%d %H:%M:%S%z} {e.type} {_summary(e.payload)}{signed}"


def _write_report(cat, part_id: str, path: Path) -> None:
    from apps.reports.trace_report import trace_html, trace_json
    from catalog.audit import part_audit

    if path.suffix not in (".html", ".json"):
        raise click.BadParameter(f"{path} must end in .html or .json", param_hint="--report")
    audit = part_audit(cat, part_id)
    data = trace_html(audit, cat.blobs.read).encode() if path.suffix == ".html" else trace_json(audit)
    path.write_bytes(data)
    console.print(f"report written to {path}")


def _summary(payload: dict) -> str:
    keys = ("label", "new_label", "predicted_class", "decision", "rule", "reason", "source_path", "annotator",
            "corrected_by")
    return " ".join(f"{k}={payload[k]}" for k in keys if payload.get(k))
