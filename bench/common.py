"""Shared benchmark harness: a throwaway catalog, synthetic load, timing helpers and result output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import catalog
from catalog.database import make_engine
from catalog.embedded_postgres import EmbeddedPostgres
from catalog.store import NewEvent
from catalog.synthetic import FactoryShape, simulated_day

OUT = Path(__file__).parent / "out"
FIRST_DAY = date(2026, 3, 1)
console = Console()


@contextmanager
def temp_catalog() -> Iterator[catalog.Catalog]:
    """A fresh catalog on its own embedded PostgreSQL, stopped and deleted afterwards."""
    # A plain `kill` must still stop the server and delete its files: turn SIGTERM into SystemExit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    home = Path(tempfile.mkdtemp(prefix="vl-bench-"))
    os.chmod(home, 0o755)  # the server runs as `postgres`, which must traverse down to its data directory
    try:
        with console.status("starting PostgreSQL and migrating…"):
            cat = catalog.open(catalog.Settings(home=home))
        try:
            yield cat
        finally:
            cat.close()
    finally:
        EmbeddedPostgres(home).stop()
        shutil.rmtree(home, ignore_errors=True)


def analyze(cat: catalog.Catalog) -> None:
    """Fresh planner statistics after the bulk load, as autovacuum would gather them in time. Only the tables'
    owner may ANALYZE them: as the app role the statement skips every table with a warning."""
    owner = make_engine(cat.urls.owner, pool_size=1)
    try:
        with console.status("ANALYZE"), owner.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    finally:
        owner.dispose()


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields ``update(done, total)``, the signature the catalog's progress hooks use."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done, of: bar.update(task, completed=done, total=of)


def generate(n: int, *, seed: int = 0, parts_per_line: int = 200, first_day: date = FIRST_DAY) -> list[NewEvent]:
    """``n`` distinct synthetic events: whole simulated days from ``first_day`` on, cut at ``n``."""
    events: list[NewEvent] = []
    shape = FactoryShape(parts_per_line=parts_per_line)
    with progress_bar(f"generating {n:,} events", n) as update:
        day = first_day
        while len(events) < n:
            for event in simulated_day(day, seed=seed, shape=shape):
                events.append(event)
                if len(events) == n:
                    break
            update(len(events), n)
            day += timedelta(days=1)
    return events


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def load(cat: catalog.Catalog, events: Sequence[NewEvent], *, batch: int = 5_000) -> float:
    """Append ``events`` in batches without catching projections up; returns the seconds it took."""
    started = time.perf_counter()
    with progress_bar(f"appending {len(events):,} events", len(events)) as update:
        for done, chunk in enumerate(batches(events, batch), start=1):
            cat.append(chunk, catch_up=False)
            update(min(done * batch, len(events)), len(events))
    return time.perf_counter() - started


@contextmanager
def loaded_catalog(n: int, *, seed: int = 0, parts_per_line: int = 200) -> Iterator[catalog.Catalog]:
    """A temporary catalog holding ``n`` synthetic events, projections not caught up."""
    events = generate(n, seed=seed, parts_per_line=parts_per_line)
    with temp_catalog() as cat:
        seconds = load(cat, events)
        console.print(f"loaded {len(events):,} events in {seconds:.1f} s")
        yield cat


class Timing(NamedTuple):
    seconds: float  # wall clock
    cpu: float  # this process's CPU seconds: the rest of the wall time is the server's (or waiting)
    result: Any


def timed(fn: Callable[[], Any]) -> Timing:
    started, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return Timing(time.perf_counter() - started, time.process_time() - cpu, result)


class TimedIterator:
    """Iterates ``items``, keeping in ``seconds`` the time spent producing them (a generator's own work), apart
    from what the loop over them does."""

    def __init__(self, items: Iterator[Any]):
        self._items = items
        self.seconds = 0.0

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self) -> Any:
        started = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - started


def percentiles(samples: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": …}`` with the inclusive method, so p99 of 2,000 samples is among the measured values' range."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {f"p{q}": cuts[q - 1] for q in qs}


def report(name: str, title: str, rows: Sequence[tuple[str, Any, str]], figures: dict[str, Any]) -> Path:
    """Print ``rows`` (figure, value, target/note) as a table and write ``figures`` to ``bench/out/NAME.json``."""
    table = Table(title=title)
    for column in ("figure", "value", "target / note"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for label, value, note in rows:
        table.add_row(label, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int)
                      else str(value), note)
    console.print(table)
    # Benchmarks on a shared 2-core box are noisy: keep the load they ran under next to the figures.
    figures = figures | {"machine": {"cpus": os.cpu_count(), "loadavg_1_5_15": os.getloadavg()}}
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    console.print(f"figures written to {path}")
    return path


def small_served_classifier(cat: Any, factory: Path, width: int) -> str:
    """What the serving benchmarks serve: one tiny day of the simulated factory (512 px) simulated into
    ``factory`` and delivered, a dataset version of it, a classifier of ``width`` trained for one epoch and
    exported to ONNX; returns the model id. (Speed is what is measured, not quality.)"""
    from dataclasses import replace

    from catalog.datasets import DatasetSpec, publish_dataset_version
    from catalog.lineage import CLASSIFIER
    from ingestion.factory_delivery import deliver_factory
    from ingestion.simulated_factory import simulate_factory
    from learning.training import export_model, train_model
    from models.training import ClassifierParams

    spec = Path(__file__).resolve().parents[1] / "assets" / "dataset_specs" / "inspection_all.yaml"
    simulate_factory(factory, days=1, seed=5, size="tiny", image_size=512)
    deliver_factory(cat, factory, actor="bench")
    publish_dataset_version(cat, DatasetSpec.from_yaml(spec), actor="bench")
    trained = train_model(cat, CLASSIFIER, replace(ClassifierParams(), epochs=1, samples_per_epoch=32, width=width),
                          lambda _: None)
    export_model(cat, CLASSIFIER, trained.model_id, lambda _: None)
    return trained.model_id
