"""A catalog of 1,000,000 images (events, no pixels): bulk metadata import images/s through `images backfill`
(bench_backfill's records; target >= 30,000; FiftyOne about 2,000 on this machine) and the curator query `line = X, a 7-day window, label = crack`: warm median
(target <= 10 ms) and cold p95 (target <= 100 ms; a plain indexed table answers in about 5 ms)."""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench_backfill import FIRST, LINES, backfilled
from common import analyze, percentiles, progress_bar, report, temp_catalog

from catalog.embedded_postgres import EmbeddedPostgres
from catalog.queries import ImageFilter, query_images


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
    with tempfile.TemporaryDirectory(prefix="vl-catalog-scale-") as folder, temp_catalog() as cat:
        imported = backfilled(cat, Path(folder) / "records.parquet", args.images, args.days, "images (2 events each)")
        assert imported.images == args.images, imported.to_json()
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
    append_s, project_s = imported.append_seconds, imported.catch_up_seconds
    import_rate = args.images / imported.seconds
    warm_p, cold_p = percentiles(warm), percentiles(cold, (50, 95))
    report("bench_catalog_scale", f"a catalog of {args.images:,} images", [
        ("append (images/s, 2 events each)", args.images / append_s, f"{2 * args.images / append_s:,.0f} events/s"),
        ("projections catch-up (images/s)", args.images / project_s, f"{2 * args.images / project_s:,.0f} events/s"),
        ("bulk import, end to end (images/s): `images backfill`", import_rate, "target ≥ 30,000 (FiftyOne ≈ 2,000)"),
        ("curator query warm median (ms)", statistics.median(warm), "target ≤ 10"),
        ("curator query warm p95 (ms)", warm_p["p95"], ""),
        ("curator query cold p95 (ms)", cold_p["p95"], f"target ≤ 100, {args.cold} restarts"),
    ], {"images": args.images, "days": args.days, "backfill": imported.to_json(), "append_seconds": append_s,
        "projection_seconds": project_s, "import_images_per_s": import_rate, "warm_ms": warm_p,
        "warm_median_ms": statistics.median(warm), "cold_ms": cold_p, "cold_samples_ms": cold})


if __name__ == "__main__":
    main()
