"""A year of one line at 1/100 scale, with its first months archived (issue 17: partitions and archive).

One line of the synthetic factory (`catalog/synthetic.py`, no pixels: 200 parts a day of 4 images, each
ingested, labelled, predicted, every part dispositioned, about 2,600 events a day) for 365 days, in partitions
of about a month of positions. Then the first months are archived to the lake (`visionledger log archive`'s
code: written, verified, recorded, dropped) and the figures that matter are taken, each beside its baseline in
the same run: the trace of a part from month one (the auditor's whole chain, `catalog.audit.part_audit`) from
the archive against the trace of a part of the last month from the table; the part's trace before the
archive; `visionledger check` over the whole history; the table's size before and after, and the archive's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

import psycopg
from common import FIRST_DAY, analyze, console, progress_bar, report, temp_catalog, timed

from catalog.archive import archive_log
from catalog.audit import part_audit
from catalog.consistency import check_catalog
from catalog.database import libpq_dsn
from catalog.partitions import ensure_partitions_at, partitions
from catalog.synthetic import FactoryShape, ontology_event, simulated_day

TABLE_BYTES = ("SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint FROM pg_inherits"
               " WHERE inhparent = 'catalog.events'::regclass")


def median_seconds(fn, runs: int) -> float:
    return statistics.median(timed(fn).seconds for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--parts-per-line", type=int, default=200)
    parser.add_argument("--partition-size", type=int, default=80_000, help="positions per partition (~a month)")
    parser.add_argument("--archive-months", type=int, default=3, help="partitions to archive")
    parser.add_argument("--runs", type=int, default=5, help="timed traces of each part (median)")
    args = parser.parse_args()
    shape = FactoryShape(lines=1, parts_per_line=args.parts_per_line)
    first_part = f"L0-{FIRST_DAY:%Y%m%d}-00007"
    last_day = FIRST_DAY + timedelta(days=args.days - 1)
    last_part = f"L0-{last_day:%Y%m%d}-00007"

    with temp_catalog() as cat:
        owner = libpq_dsn(cat.urls.owner)
        ensure_partitions_at(owner, size=args.partition_size)
        started = time.perf_counter()
        cat.store.append([ontology_event()])
        with progress_bar(f"appending {args.days} days", args.days) as update:
            for n in range(args.days):
                cat.store.append(list(simulated_day(FIRST_DAY + timedelta(days=n), shape=shape)))
                ensure_partitions_at(owner)  # the maintenance a schedule runs, here once a day
                update(n + 1, args.days)
        append_s = time.perf_counter() - started
        events = cat.head()
        with progress_bar("read models", events) as update:
            catch_up_s = timed(lambda: cat.projections.catch_up(progress=update)).seconds
        analyze(cat)
        with psycopg.connect(owner) as conn:
            table_before = conn.execute(TABLE_BYTES).fetchone()[0]
            split = partitions(conn)[args.archive_months].first
        trace_before_s = median_seconds(lambda: part_audit(cat, first_part), args.runs)
        lake_s = timed(cat.sync_lake).seconds

        archiving = timed(lambda: archive_log(cat, before=split, actor="bench:year"))
        archived = archiving.result
        archive_bytes = sum(f.bytes for a in archived for f in a.files)
        archived_events = sum(a.events for a in archived)
        with psycopg.connect(owner) as conn:
            table_after = conn.execute(TABLE_BYTES).fetchone()[0]
            live_partitions = len(partitions(conn))

        trace_archived_s = median_seconds(lambda: part_audit(cat, first_part), args.runs)
        trace_live_s = median_seconds(lambda: part_audit(cat, last_part), args.runs)
        archived_audit, live_audit = part_audit(cat, first_part), part_audit(cat, last_part)
        with console.status("check (chain from position 1, archive records, read models rebuilt, lake)"):
            checking = timed(lambda: check_catalog(cat))
        problems = [p for p in checking.result.problems() if not p.startswith("events without their blob")]

    days_archived = (archived[-1].last if archived else 0) * args.days // events
    rows = [
        ("events (one line, a year)", events, f"{args.days} days × {args.parts_per_line} parts × 4 images"),
        ("append, events/s", events / append_s, f"{append_s:.0f} s, partitions of {args.partition_size:,}"),
        ("read models from zero, events/s", events / catch_up_s, f"{catch_up_s:.0f} s"),
        ("lake sync, s", lake_s, "the archive needs the range mirrored first"),
        ("archived events", archived_events, f"{len(archived)} partitions, ~{days_archived} days"),
        ("archive: write + verify + record + drop, s", archiving.seconds,
         f"{archived_events / archiving.seconds:,.0f} events/s"),
        ("archive files, MB", archive_bytes / 1e6, f"{archive_bytes / max(archived_events, 1):.0f} bytes/event"),
        ("table before, MB", table_before / 1e6, "heap + indexes, all partitions"),
        ("table after, MB", table_after / 1e6, f"{live_partitions} partitions left"),
        ("trace, month-one part, live (before), ms", trace_before_s * 1e3, "median"),
        ("trace, month-one part, from the archive, ms", trace_archived_s * 1e3,
         f"{len(archived_audit.timeline)} events in its timeline"),
        ("trace, last-month part, live, ms", trace_live_s * 1e3, f"{len(live_audit.timeline)} events; baseline"),
        ("check, whole history, s", checking.seconds, "ok" if not problems else f"PROBLEMS: {problems}"),
    ]
    report("bench_year", "a year of one line at 1/100 scale, first months archived", rows, {
        "days": args.days, "parts_per_line": args.parts_per_line, "partition_size": args.partition_size,
        "events": events, "append_s": append_s, "catch_up_s": catch_up_s, "lake_sync_s": lake_s,
        "archived": [{"first": a.first, "last": a.last, "events": a.events, "bytes": sum(f.bytes for f in a.files)}
                     for a in archived],
        "archive_s": archiving.seconds, "table_bytes_before": table_before, "table_bytes_after": table_after,
        "trace_month_one_live_s": trace_before_s, "trace_month_one_archived_s": trace_archived_s,
        "trace_last_month_live_s": trace_live_s, "check_s": checking.seconds, "check_problems": problems,
        "chain_head": str(checking.result.chain.head),
    })


if __name__ == "__main__":
    main()
