"""The root `visionledger` command, which gathers the command groups."""

from __future__ import annotations

import click

import catalog
from apps.cli import (
    app,
    corrections,
    datasets,
    db,
    demo,
    engines,
    events,
    images,
    ingest,
    labels,
    lake,
    ontology,
    projections,
    serve,
    simulate,
)
from catalog.embedded_postgres import EmbeddedPostgresError
from serving.decision import RulesError
from serving.engines import EngineError


class _Cli(click.Group):
    """Turns the catalog's and the server's own errors into one clear line and exit status 1, without a
    traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (catalog.CatalogError, EmbeddedPostgresError, EngineError, RulesError) as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@click.group(cls=_Cli)
def cli() -> None:
    """visionledger: the system of record for industrial visual inspection."""


cli.add_command(db.db)
cli.add_command(events.events)
cli.add_command(projections.projections)
cli.add_command(labels.labels)
cli.add_command(corrections.corrections)
cli.add_command(ontology.ontology)
cli.add_command(lake.lake)
cli.add_command(datasets.datasets)
cli.add_command(engines.engines)
cli.add_command(demo.demo)
cli.add_command(ingest.ingest)
cli.add_command(simulate.simulate)
cli.add_command(images.images)
cli.add_command(images.curate)
cli.add_command(images.trace)
cli.add_command(serve.serve)
cli.add_command(serve.spool)
cli.add_command(serve.replay)
cli.add_command(app.app)


def main() -> None:
    cli()
