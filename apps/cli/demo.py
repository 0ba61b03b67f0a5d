"""The README's main job: `visionledger demo`."""

from __future__ import annotations

from datetime import UTC, date, datetime

import click
from rich.table import Table

from apps.cli.common import console, open_catalog, out, progress_bar


@click.command()
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default=None, help="the simulated day (default today, UTC)")
@click.option("--parts-per-line", default=200, show_default=True)
def demo(day: datetime | None, parts_per_line: int) -> None:
    """The main job on the embedded defaults: start the catalog, append a simulated day, sync the lake,
    print a summary. Running it twice for the same day appends nothing new (event ids are deterministic)."""
    from catalog.synthetic import FactoryShape, ontology_event, simulated_day

    the_day: date = (day or datetime.now(UTC)).date()
    with open_catalog() as cat:
        console.rule(f"visionledger demo: a simulated production day, {the_day}")
        batch = [ontology_event(), *simulated_day(the_day, shape=FactoryShape(parts_per_line=parts_per_line))]
        appended = duplicates = 0
        with progress_bar("appending events") as update:
            for start in range(0, len(batch), 5_000):
                result = cat.append(batch[start:start + 5_000], catch_up=False)
                appended += result.appended
                duplicates += len(result.duplicates)
                update(start + len(batch[start:start + 5_000]), len(batch))
        with progress_bar("projections") as update:
            cat.projections.catch_up(progress=update)
        with progress_bar("lake sync") as update:
            report = cat.sync_lake(progress=update)
        con = cat.duckdb()
        by_type = con.execute(
            "SELECT type, count(*) FROM events WHERE day = ? GROUP BY type ORDER BY 2 DESC", [the_day]
        ).fetchall()
        with cat.engine.connect() as conn:
            decisions = dict(conn.exec_driver_sql(
                "SELECT decision, count(*) FROM projections.part_dispositions GROUP BY decision").fetchall())
            images, excluded = conn.exec_driver_sql(
                "SELECT count(*), count(*) FILTER (WHERE excluded) FROM projections.images").fetchone()
            corrected = conn.exec_driver_sql(
                "SELECT count(*) FROM projections.current_labels WHERE source = 'correction'").scalar()
        summary = Table(title="summary", show_header=False)
        summary.add_row("events appended now / already stored", f"{appended:,} / {duplicates:,}")
        summary.add_row("catalog head position", f"{cat.head():,}")
        summary.add_row("images in the catalog", f"{images:,} ({excluded} excluded)")
        summary.add_row("parts accepted / rejected", f"{decisions.get('accept', 0):,} / {decisions.get('reject', 0):,}")
        summary.add_row("labels corrected by a second review", f"{corrected:,}")
        summary.add_row("lake", f"{report.events:,} new events mirrored to {cat.lake.events_dir}")
        out.print(summary)
        by_day = Table("event type", "count", title=f"the lake, through DuckDB, for {the_day}")
        for event_type, count in by_type:
            by_day.add_row(event_type, f"{count:,}")
        out.print(by_day)
        out.print("psql: psql \"$(visionledger db url)\"    DuckDB: visionledger lake sql \"SELECT ...\"")
