"""`visionledger log`: the event log's hash chain, seen from outside the database."""

from __future__ import annotations

import click

from apps.cli.common import open_catalog, out


@click.group()
def log() -> None:
    """The event log's hash chain (`visionledger check` verifies it)."""


@log.command("head")
def log_head() -> None:
    """Print the head position and its event's hash as POSITION:HASH. Keep the line outside the database
    (print it, mail it, sign it): `visionledger check --against POSITION:HASH` later proves that nothing at or
    before that position changed."""
    with open_catalog(migrate=False) as cat:
        out.print(str(cat.store.chain_head()), soft_wrap=True, highlight=False)
