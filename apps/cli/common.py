"""What every command shares: the consoles, a progress bar, and opening the catalog from the environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import catalog
from ingestion.tables import parse_aware_timestamp

console = Console(stderr=True)  # progress and remarks
out = Console()  # results, so that they can be piped


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields a callback ``update(done, total)``."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def open_catalog(**kwargs) -> catalog.Catalog:
    """The catalog the environment names (see catalog.settings)."""
    return catalog.open(**kwargs)


def parse_moment(value: str | None, *, option: str, end_of_day: bool = False) -> datetime | None:
    """A time given on the command line: a timestamp with its UTC offset, or a bare date read in UTC (with
    ``end_of_day``, the start of the next day, so that ``--to 2026-03-02`` includes that day)."""
    if value is None:
        return None
    if len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a date (2026-03-02)", param_hint=option) from None
        return datetime.combine(day, time(), UTC) + (timedelta(days=1) if end_of_day else timedelta())
    try:
        return parse_aware_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
