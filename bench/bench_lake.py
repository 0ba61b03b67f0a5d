"""Lake sync rate (events mirrored to Parquet per second) and a DuckDB count by type and day over the lake."""

from __future__ import annotations

import argparse
import statistics

from common import console, loaded_catalog, progress_bar, report, timed

QUERY = "SELECT type, day, count(*) AS events FROM events GROUP BY type, day ORDER BY type, day"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="events in the log")
    parser.add_argument("--chunk", type=int, default=100_000, help="positions per sync range (Lake.sync chunk)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the DuckDB query")
    args = parser.parse_args()

    with loaded_catalog(args.events) as cat:
        head = cat.head()
        with progress_bar("lake sync", head) as update:
            seconds, cpu, sync = timed(lambda: cat.lake.sync(cat.db, chunk=args.chunk, progress=update))
        files = len(cat.lake.files())
        size = sum(f.stat().st_size for f in cat.lake.files())
        con = cat.duckdb()
        runs = [timed(lambda: con.execute(QUERY).fetchall()) for _ in range(args.repeats)]
        groups = runs[0].result
        con.close()

    query_ms = [run.seconds * 1000 for run in runs]
    counted = sum(n for _, _, n in groups)
    assert sync.events == head == counted, (sync.events, head, counted)
    figures = {
        "events": head, "chunk": args.chunk, "sync_seconds": seconds, "sync_events_per_s": head / seconds,
        "sync_client_cpu_share": cpu / seconds,
        "files": files, "lake_bytes": size, "bytes_per_event": size / head,
        "query": QUERY, "query_groups": len(groups), "query_first_ms": query_ms[0],
        "query_median_ms": statistics.median(query_ms), "query_runs_ms": query_ms,
    }
    report("bench_lake", f"lake: {head:,} events", [
        ("sync", head / seconds, f"events/s ({seconds:.1f} s, client CPU {cpu / seconds:.0%})"),
        ("parquet files", files, f"{size / 2**20:,.1f} MiB, {size / head:,.0f} B/event"),
        ("DuckDB count by type, day", query_ms[0], f"ms, first run ({len(groups)} groups)"),
        ("  … median", statistics.median(query_ms), f"ms over {args.repeats} runs"),
    ], figures)
    console.print("count by type:", {t: sum(n for tt, _, n in groups if tt == t) for t in sorted({g[0] for g in groups})})


if __name__ == "__main__":
    main()
