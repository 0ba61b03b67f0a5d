"""What every command shares: the consoles, a progress bar, and opening the catalog from the environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import catalog

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
