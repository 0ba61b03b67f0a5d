"""The root `visionledger` command, which gathers the command groups."""

from __future__ import annotations

import importlib

import click

import catalog
from catalog.embedded_postgres import EmbeddedPostgresError
from identity.people import LoginRefused
from serving.decision import RulesError
from serving.engines import EngineError

# Each command's module is imported only when that command runs: between them they pull in torch, Dagster,
# LanceDB and Streamlit, and a command that needs none of them should not wait seconds for all of them.
COMMANDS = {
    "db": "db:db", "events": "events:events", "projections": "projections:projections", "labels": "labels:labels",
    "corrections": "corrections:corrections", "ontology": "ontology:ontology", "lake": "lake:lake",
    "datasets": "datasets:datasets", "engines": "engines:engines", "demo": "demo:demo", "ingest": "ingest:ingest",
    "simulate": "simulate:simulate", "images": "images:images", "curate": "images:curate", "trace": "images:trace",
    "check": "check:check", "log": "log:log", "lines": "lines:lines", "models": "models:models", "serve": "serve:serve",
    "spool": "serve:spool", "replay": "serve:replay", "app": "app:app", "users": "users:users", "parts": "parts:parts",
    "rules": "rules:rules", "tokens": "tokens:tokens",
}


class _Cli(click.Group):
    """Loads commands on demand, and turns the catalog's and the server's own errors into one clear line and
    exit status 1, without a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        command = getattr(importlib.import_module(f"apps.cli.{module}"), attribute)
        assert command.name == name, (name, command.name)
        return command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (catalog.CatalogError, EmbeddedPostgresError, EngineError, RulesError, LoginRefused) as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@click.group(cls=_Cli)
def cli() -> None:
    """visionledger: the system of record for industrial visual inspection."""


def main() -> None:
    cli()
