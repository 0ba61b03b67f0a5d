"""A catalog of 1,000,000 images (events, no pixels): bulk metadata import images/s (target >= 30,000; FiftyOne
about 2,000 on this machine) and the curator query `line = X, a 7-day window, label = crack`: warm median
(target <= 10 ms) and cold p95 (target <= 100 ms; a plain indexed table answers in about 5 ms)."""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from common import TimedIterator, analyze, percentiles, progress_bar, report, temp_catalog, timed

from catalog.embedded_postgres import EmbeddedPostgres
from catalog.events import ImageIngested, LabelRecorded, OntologyPublished
from catalog.queries import ImageFilter, query_images
from catalog.store import NewEvent

CLASSES = ("ok", "scratch", "spot", "crack")
WEIGHTS = (0.85, 0.06, 0.05, 0.04)
LINES = ("line-a", "line-b", "line-c")
FIRST = datetime(2026, 1, 5, tzinfo=UTC)


def images(n: int, days: int, seed: int = 0) -> Iterator[list[NewEvent]]:
    """Batches of ImageIngested + LabelRecorded for ``n`` images spread over ``days``. Models are built with
    model_construct: the values are valid by construction, and validating them is not what is measured."""
    rng = random.Random(seed)
    meta = {"actor": "bench", "source": "bench_catalog_scale"}
    batch: list[NewEvent] = []
    for i in range(n):
        sha = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
        line = LINES[i % len(LINES)]
        at = FIRST + timedelta(seconds=rng.randrange(days * 86_400))
        part = f"{line}-{i // 4:07d}"
        batch.append(NewEvent(ImageIngested.model_construct(
            sha256=sha, part_id=part, line=line, station=f"st-{i % 2}", camera=f"cam-{i % 4}", captured_at=at,
            width=512, height=512, channels=1, bit_depth=8, byte_size=200_000, format="png", blob_uri=f"blob:{sha}",
            thumbnail_uri=None, source_path=f"{line}/{at:%Y-%m-%d}/{part}_{i % 4}.png", metadata={}), at, metadata=meta))
        batch.append(NewEvent(LabelRecorded.model_construct(
            sha256=sha, label_id=f"L{i}", label=rng.choices(CLASSES, WEIGHTS)[0], annotator="ana", ontology_version=1,
            part_id=part, regions=[], mask_uri=None), at + timedelta(hours=1), metadata=meta))
        if len(batch) >= 20_000:
            yield batch
            batch = []
    if batch:
        yield batch


def curator_query(cat, rng: random.Random, days: int) -> float:
    """Milliseconds for one curator query at a random line and 7-day window: the first page of results."""
    start = FIRST + timedelta(days=rng.randrange(days - 7))
    where = ImageFilter(lines=(rng.choice(LINES),), captured_from=start, captured_to=start + timedelta(days=7),
                        labels=("crack",))
    started = time.perf_counter()
    rows = query_images(cat, where, limit=100)
    elapsed = (time.perf_counter() - started) * 1000
    assert rows and all(r["label"] == "crack" for r in rows)
    return elapsed


def drop_caches(cat) -> None:
    """Cold data: restart PostgreSQL (empty shared buffers) and drop the kernel's page cache where allowed.
    The connection itself is opened before timing: cold means the data, not the login handshake."""
    cat.db.dispose()
    server = EmbeddedPostgres(cat.settings.home)
    server.stop()
    subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=False, capture_output=True)
    server.start()
    with cat.db.connect() as conn:
        conn.exec_driver_sql("SELECT 1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--warm", type=int, default=200, help="warm queries")
    parser.add_argument("--cold", type=int, default=15, help="cold queries, each after a restart")
    args = parser.parse_args()
    with temp_catalog() as cat:
        cat.append([NewEvent(OntologyPublished(version=1, classes=list(CLASSES)), FIRST)])
        append_s = 0.0
        with progress_bar(f"appending {args.images:,} images (2 events each)", args.images) as update:
            done = 0
            generator = TimedIterator(images(args.images, args.days))
            for batch in generator:
                append_s += timed(lambda b=batch: cat.append(b, catch_up=False)).seconds
                done += len(batch) // 2
                update(done, args.images)
        generate_s = generator.seconds
        with progress_bar("projections", cat.head()) as update:
            started = time.perf_counter()
            cat.projections.catch_up(progress=update)
            project_s = time.perf_counter() - started
        analyze(cat)
        rng = random.Random(1)
        for _ in range(20):
            curator_query(cat, rng, args.days)  # warm up shared buffers and plans
        warm = [curator_query(cat, rng, args.days) for _ in range(args.warm)]
        cold = []
        with progress_bar("cold queries (restart each)", args.cold) as update:
            for i in range(args.cold):
                drop_caches(cat)
                cold.append(curator_query(cat, rng, args.days))
                update(i + 1, args.cold)
    import_rate = args.images / (append_s + project_s)
    warm_p, cold_p = percentiles(warm), percentiles(cold, (50, 95))
    report("bench_catalog_scale", f"a catalog of {args.images:,} images", [
        ("append (images/s, 2 events each)", args.images / append_s, f"{2 * args.images / append_s:,.0f} events/s"),
        ("projections catch-up (images/s)", args.images / project_s, f"{2 * args.images / project_s:,.0f} events/s"),
        ("bulk import, end to end (images/s)", import_rate, "target ≥ 30,000 (FiftyOne ≈ 2,000)"),
        ("curator query warm median (ms)", statistics.median(warm), "target ≤ 10"),
        ("curator query warm p95 (ms)", warm_p["p95"], ""),
        ("curator query cold p95 (ms)", cold_p["p95"], f"target ≤ 100, {args.cold} restarts"),
    ], {"images": args.images, "days": args.days, "generate_seconds": generate_s, "append_seconds": append_s,
        "projection_seconds": project_s, "import_images_per_s": import_rate, "warm_ms": warm_p,
        "warm_median_ms": statistics.median(warm), "cold_ms": cold_p, "cold_samples_ms": cold})


if __name__ == "__main__":
    main()
