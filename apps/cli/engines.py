"""Inference engines from the command line: build one from an exported classifier, list the recorded ones."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.table import Column, Table

from apps.cli.common import console, open_catalog, out
from serving.engines.base import BACKENDS, PRECISIONS, EngineError


@click.group()
def engines() -> None:
    """Inference engines, each recorded with the model, ONNX file and dataset version it came from."""


@engines.command("build")
@click.option("--model-id", help="the classifier (default: the champion, else the latest exported)")
@click.option("--backend", type=click.Choice(BACKENDS), default="onnxruntime", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda:N for a GPU")
@click.option("--actor", default="cli", show_default=True, help="who builds, for the event's metadata")
@click.option("--json", "as_json", is_flag=True, help="print the engine's record as JSON")
def engines_build(model_id: str | None, backend: str, precision: str, device: str, actor: str,
                  as_json: bool) -> None:
    """Build an engine, keep its artifact and record EngineBuilt. Building the same engine again records
    nothing new."""
    from serving.engines import build_engine, default_model_id

    with open_catalog() as cat:
        model_id = model_id or default_model_id(cat)
        with console.status(f"building a {backend} {precision} engine of {model_id} for {device}…"):
            try:
                built = build_engine(cat, model_id=model_id, backend=backend, precision=precision,
                                     device=device, actor=actor)
            except EngineError as exc:
                raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    record = built.record
    if as_json:
        out.print_json(json.dumps(asdict(record) | {"new": built.new}))
    else:
        out.print(f"{record.engine_id}{'' if built.new else ' (already recorded)'}: {record.backend} "
                  f"{record.precision} on {record.device}, model {record.model_id}, dataset version "
                  f"{record.dataset_version_id}")


@engines.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the records as JSON lines")
def engines_list(as_json: bool) -> None:
    """The recorded engines, newest first; the one in service is starred."""
    from serving.engines import engine_to_serve, list_engines

    with open_catalog() as cat:
        records = list_engines(cat)
        serving = engine_to_serve(cat) if records else None
    if as_json:
        for r in records:
            click.echo(json.dumps(asdict(r) | {"in_service": r.engine_id == serving}))
        return
    if not records:
        out.print("no engine is recorded: build one with `visionledger engines build`")
        return
    table = Table(Column("engine", no_wrap=True), "model", "backend", "precision", "device",
                  "dataset version")
    for r in records:
        table.add_row(("* " if r.engine_id == serving else "  ") + r.engine_id, r.model_id, r.backend,
                      r.precision, r.device, r.dataset_version_id)
    out.print(table)
