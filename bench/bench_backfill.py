"""`visionledger images backfill` end to end: a Parquet file of image records without pixels (each labelled) read,
every row validated, ImageIngested + LabelRecorded appended in batches, the read models caught up. Images/s
(target >= 20,000), beside a baseline in the same run: a bare binary COPY of the same events into an
unconstrained table (bench_append's), with how long making and checking those events took apart; and a second
run of the same file, which appends nothing. Figures to bench/out/backfill.json.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from bench_append import PLAIN_TABLE, SCRATCH, copy_events
from common import console, progress_bar, report, temp_catalog, timed

import catalog
from catalog.database import libpq_dsn
from catalog.events import OntologyPublished
from catalog.ontology import Ontology
from catalog.store import NewEvent
from ingestion.backfill import BackfillReport, backfill, record_batches, record_events

CLASSES = ("ok", "scratch", "spot", "crack")
WEIGHTS = (0.85, 0.06, 0.05, 0.04)
LINES = ("line-a", "line-b", "line-c")
FIRST = datetime(2026, 1, 5, tzinfo=UTC)


def write_records(path: Path, n: int, days: int, seed: int = 0, chunk: int = 100_000) -> Path:
    """``n`` image records spread over ``days`` on three lines, 4 images a part, each with a label, written to
    the Parquet file ``path`` a chunk at a time."""
    rng = random.Random(seed)
    writer = None
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            sha = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
            line = LINES[i % len(LINES)]
            at = FIRST + timedelta(seconds=rng.randrange(days * 86_400))
            part = f"{line}-{i // 4:07d}"
            rows.append({"sha256": sha, "blob_uri": f"s3://line-archive/{sha}.png", "part_id": part, "line": line,
                         "station": f"st-{i % 2}", "camera": f"cam-{i % 4}", "captured_at": at, "width": 512,
                         "height": 512, "byte_size": 200_000,
                         "source_path": f"{line}/{at:%Y-%m-%d}/{part}_{i % 4}.png",
                         "label": rng.choices(CLASSES, WEIGHTS)[0], "labeler": "ana",
                         "labeled_at": at + timedelta(hours=1)})
        table = pa.Table.from_pylist(rows)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer:
        writer.close()
    return path


def publish_ontology(cat: catalog.Catalog) -> None:
    """The ontology the records' labels name."""
    cat.append([NewEvent(OntologyPublished(version=1, classes=list(CLASSES)), FIRST)])


def backfilled(cat: catalog.Catalog, path: Path, images: int, days: int, what: str) -> BackfillReport:
    """A catalog loaded as the catalog benchmarks load theirs: ``images`` records written to ``path``, their
    ontology published, and backfilled through the product's command, with progress shown."""
    with console.status(f"writing {images:,} records"):
        write_records(path, images, days)
    publish_ontology(cat)
    with progress_bar(f"backfilling {images:,} {what}", images) as update:
        return backfill(cat, path, actor="bench", progress=update)


def bare_copy(cat, path: Path) -> tuple[float, float, int]:
    """Seconds to make and check the file's events (record_events) and seconds to COPY them bare; events."""
    with cat.read() as conn:
        ontology = Ontology.read(conn.connection.driver_connection).current
    _, batches = record_batches(path)
    made = timed(lambda: [e for rows in batches for e in record_events(rows, ontology, {"actor": "bench"})[0]])
    events: list[NewEvent] = made.result
    with psycopg.connect(libpq_dsn(cat.urls.owner), options="-c timezone=UTC") as conn:
        conn.execute(f"CREATE SCHEMA {SCRATCH}")
        conn.execute(PLAIN_TABLE)
        conn.commit()
        copied = timed(lambda: [copy_events(conn, "plain", events[k:k + 20_000], k + 1)
                                for k in range(0, len(events), 20_000)])
        conn.execute(f"DROP SCHEMA {SCRATCH} CASCADE")
        conn.commit()
    return made.seconds, copied.seconds, len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vl-backfill-") as folder, temp_catalog() as cat:
        path = Path(folder) / "records.parquet"
        with console.status(f"writing {args.images:,} records"):
            write_records(path, args.images, args.days)
        publish_ontology(cat)
        make_s, copy_s, events = bare_copy(cat, path)
        with progress_bar(f"backfilling {args.images:,} records", args.images) as update:
            first = timed(lambda: backfill(cat, path, actor="bench", progress=update)).result
        with progress_bar("the same file again", args.images) as update:
            again = timed(lambda: backfill(cat, path, actor="bench", progress=update)).result
    assert first.images == args.images and first.rejected == 0 and again.images == 0
    rate = args.images / first.seconds
    report("backfill", f"backfill of {args.images:,} image records ({events:,} events)", [
        ("backfill end to end (images/s)", rate, "target ≥ 20,000"),
        ("  reading, checking and appending (they overlap) (images/s)", args.images / first.append_seconds,
         f"{first.append_seconds:.1f} s"),
        ("  read models caught up (images/s)", args.images / first.catch_up_seconds, f"{first.catch_up_seconds:.1f} s"),
        ("baseline: bare COPY of the same events (images/s)", args.images / copy_s,
         f"{copy_s:.1f} s; backfill = {rate / (args.images / copy_s):.2f} × the bare COPY"),
        ("making and validating those events alone (images/s)", args.images / make_s, f"{make_s:.1f} s"),
        ("the same file again, appending nothing (images/s)", args.images / again.seconds, f"{again.seconds:.1f} s"),
    ], {"images": args.images, "events": events, "backfill": first.to_json(), "again": again.to_json(),
        "bare_copy_s": copy_s, "make_events_s": make_s, "images_per_s": rate})


if __name__ == "__main__":
    main()
