"""Serving from the command line: run the inspection API, look at and sync the edge spool, replay an engine."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import click

from apps.cli.common import console, open_catalog, out, parse_day, progress_bar
from serving import DEFAULT_RATE_LIMIT


def _rate_limit(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a rate such as 100/second or 5000/minute") from None
    return value


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--engine", "engine_id", help="engine id (default: the engine in service)")
@click.option("--rules", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="part decision rules (YAML; default: the rule set published for --rules-line, else the "
                   "packaged rules)")
@click.option("--rules-line", default=None,
              help="decide by the rule set published for this line (default: the plant-wide one)")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1), help="tiles per engine run")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(0),
              help="how long a tile waits for others to batch with")
@click.option("--threads", type=click.IntRange(1), help="engine threads (default: the backend's choice)")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path),
              help="spool folder for events while the catalog is unreachable (default: <home>/spool)")
@click.option("--max-capture-age-hours", default=24.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="refuse (422) an image captured longer than this before the server received it")
@click.option("--max-capture-lead-minutes", default=5.0, show_default=True, type=click.FloatRange(0),
              help="refuse (422) an image captured more than this after the server received it (clock drift)")
@click.option("--rate-limit", default=DEFAULT_RATE_LIMIT, show_default=True, callback=_rate_limit,
              help="requests per client address, e.g. 100/second, 5000/minute (a moving window)")
@click.option("--docs", is_flag=True, help="serve the OpenAPI page (/docs) and schema (/openapi.json)")
def serve(host: str, port: int, engine_id: str | None, rules: Path | None, rules_line: str | None, max_batch: int,
          max_wait_ms: float, threads: int | None, spool: Path | None, max_capture_age_hours: float,
          max_capture_lead_minutes: float, rate_limit: str, docs: bool) -> None:
    """Run the inspection HTTP API. Stations send their token (`visionledger tokens issue`); the engine's
    lineage is verified before it serves."""
    import uvicorn

    from serving.api import create_app
    from serving.service import InspectionService, ServeConfig

    config = ServeConfig(engine_id=engine_id, rules=rules, rules_line=rules_line, max_batch=max_batch,
                         max_wait_ms=max_wait_ms, threads=threads, spool=spool, rate_limit=rate_limit,
                         max_capture_age=timedelta(hours=max_capture_age_hours),
                         max_capture_lead=timedelta(minutes=max_capture_lead_minutes))
    cat = open_catalog()
    service = InspectionService(cat, config)
    console.print(f"serving engine {service.engine.engine_id[:12]} ({service.engine.record.backend}, "
                  f"{service.engine.record.precision}) of model {service.engine.record.model_id}, "
                  f"rules {service.rules.rules_version}, on http://{host}:{port}")
    try:
        uvicorn.run(create_app(service, docs=docs), host=host, port=port, log_level="warning")
    finally:
        cat.close()


@click.group()
def spool() -> None:
    """The edge spool: events the server kept on local disk while the catalog was unreachable."""


def _spool(folder: Path | None):
    from catalog.settings import Settings
    from serving.spool import Spool

    return Spool(folder or Settings.from_env().home / "spool")


@spool.command("status")
@click.option("--spool", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="spool folder (default: <home>/spool)")
def spool_status(folder: Path | None) -> None:
    """How many events wait in the spool, the oldest of them, and the events set aside because the catalog
    refused them as bad data, with the reason. Reads only the spool: works while the catalog is away."""
    s = _spool(folder)
    try:
        pending = s.pending()
        oldest = s.oldest()
        set_aside = s.set_aside()
    finally:
        s.close()
    out.print_json(json.dumps({
        "spooled_events": pending, "folder": str(s.folder),
        "oldest": {"type": oldest[0], "occurred_at": oldest[1]} if oldest else None,
        "set_aside_events": len(set_aside),
        "set_aside": [{"event_id": e.event_id, "type": e.type, "occurred_at": e.occurred_at,
                       "set_aside_at": e.set_aside_at, "reason": e.error, "payload": json.loads(e.payload)}
                      for e in set_aside],
    }))


@spool.command("sync")
@click.option("--spool", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="spool folder (default: <home>/spool)")
def spool_sync(folder: Path | None) -> None:
    """Append the spooled events to the catalog, oldest first, with their original ids and times; events
    already there are not appended again, events the catalog refuses as bad data are set aside."""
    s = _spool(folder)
    try:
        with open_catalog() as cat, console.status(f"syncing {s.pending():,} spooled events…"):
            report = s.sync(lambda events: cat.append(events, catch_up=False))
            cat.catch_up()
        left = s.pending()
    finally:
        s.close()
    out.print_json(json.dumps({"appended": report.appended, "already_in_catalog": report.duplicates,
                               "set_aside": report.set_aside, "left_in_spool": left}))


@click.command()
@click.option("--engine", "engine_id", required=True, help="engine id to replay")
@click.option("--from", "first", help="first factory day (YYYY-MM-DD) of capture; default: the beginning")
@click.option("--to", "last", help="last factory day (YYYY-MM-DD), included; default: the end")
@click.option("--rules", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="part decision rules (default: the packaged rules)")
@click.option("--no-record", is_flag=True, help="do not record the predictions (report only)")
def replay(engine_id: str, first: str | None, last: str | None, rules: Path | None, no_record: bool) -> None:
    """Run an engine over historical images through the server's inspection path; records its predictions
    and writes a per-image report (engine against human verdicts) to the lake."""
    from serving.decision import load_rules
    from serving.replay import replay as run_replay

    first_day, last_day = parse_day(first, option="--from"), parse_day(last, option="--to")
    with open_catalog() as cat, progress_bar("replaying") as update:
        report = run_replay(cat, engine_id, first_day=first_day, last_day=last_day, rules=load_rules(rules),
                            record=not no_record, progress=update)
        report_path = cat.lake.root / report.report_uri
    out.print_json(json.dumps({
        "engine_id": report.engine_id, "images": report.images, "predictions_recorded": report.recorded,
        "agreement_with_humans": report.agreement, "images_with_verdict": report.verdicts,
        "parts": report.parts, "rejected_parts": report.rejected_parts, "report": str(report_path)}))
