"""Projection rebuild rate: catch_up() of every read model from position zero, per page size, beside reading the
log alone at that page size; on two connections at the best page size; the Python folds alone (the path before
set-based SQL) at one page size; rebuild (replay on two connections, compare, swap)."""

from __future__ import annotations

import argparse

from common import console, loaded_catalog, progress_bar, report, timed

import catalog
from catalog.projections.framework import read_page
from catalog.projections.runner import ProjectionRunner, rebuild

TARGET = 50_000  # events/s of catch-up from zero
REBUILD_TARGET_S = 8 * 60  # at 10M events
AT_SCALE = 10_000_000


def catch_up_rate(runner: ProjectionRunner, head: int, page_size: int, label: str,
                  connections: int = 1) -> tuple[float, float]:
    """(events/s, share of the wall time this process spent on its CPU) of a catch_up from zero."""
    runner.reset()
    with progress_bar(f"{label}, pages of {page_size:,}", head) as update:
        timing = timed(lambda: runner.catch_up(page_size=page_size, progress=update, connections=connections))
    assert timing.result == head, (timing.result, head)
    console.print(f"{label}, pages of {page_size:,}: {head / timing.seconds:,.0f} events/s ({timing.seconds:.1f} s)")
    return head / timing.seconds, timing.cpu / timing.seconds


def read_only_rate(cat: catalog.Catalog, head: int, page_size: int) -> float:
    """Events/s of reading and decoding the log up to ``head`` page by page, as the Python folds do, with
    nothing applied."""
    def read_all() -> None:
        with cat.db.connect() as sa_conn:
            after = 0
            while page := read_page(sa_conn.connection.driver_connection, after, head, page_size):
                after = page.last
    return head / timed(read_all).seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="events in the log (e.g. 1000000)")
    parser.add_argument("--page-sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000],
                        help="catch_up page sizes to try")
    parser.add_argument("--python-page-size", type=int, default=20_000,
                        help="page size of the Python folds' catch-up (0: skip it)")
    args = parser.parse_args()

    rates: dict[int, float] = {}
    cpu: dict[int, float] = {}
    reads: dict[int, float] = {}
    with loaded_catalog(args.events) as cat:
        head = cat.head()
        # The first pass over freshly appended rows sets their hint bits, a cost no later catch-up pays: not timed.
        read_only_rate(cat, head, max(args.page_sizes))
        for page_size in args.page_sizes:
            rates[page_size], cpu[page_size] = catch_up_rate(cat.projections, head, page_size, "catch_up")
            reads[page_size] = read_only_rate(cat, head, page_size)
            console.print(f"reading the log alone, pages of {page_size:,}: {reads[page_size]:,.0f} events/s")
        best = max(rates, key=rates.__getitem__)
        two_rate, _ = catch_up_rate(cat.projections, head, best, "catch_up on 2 connections", connections=2)
        python_rate = python_cpu = None
        if args.python_page_size:
            spec = ProjectionRunner(cat.db, use_sql=False)
            python_rate, python_cpu = catch_up_rate(spec, head, args.python_page_size, "Python folds")
        with progress_bar(f"rebuild, pages of {best:,}", head) as update:
            rebuilt = timed(lambda: rebuild(cat.db, page_size=best, progress=update))
        assert rebuilt.result.equal, [t for t in rebuilt.result.tables if not t.equal]

    estimate_catch_up_s = AT_SCALE / max(rates[best], two_rate)
    estimate_rebuild_s = rebuilt.seconds * AT_SCALE / head
    figures = {
        "events": head, "projections": [p.name for p in cat.projections.projections],
        "catch_up_events_per_s": {str(k): v for k, v in rates.items()},
        "catch_up_client_cpu_share": {str(k): v for k, v in cpu.items()},
        "read_page_only_events_per_s": {str(k): v for k, v in reads.items()},
        "python_folds_events_per_s": python_rate, "python_folds_page_size": args.python_page_size,
        "python_folds_client_cpu_share": python_cpu,
        "best_page_size": best, "best_events_per_s": rates[best], "target_events_per_s": TARGET,
        "catch_up_2_connections_events_per_s": two_rate,
        "rebuild_seconds": rebuilt.seconds, "rebuild_events_per_s": head / rebuilt.seconds,
        "rebuild_equal": rebuilt.result.equal, "rows": {t.table: t.rebuilt_rows for t in rebuilt.result.tables},
        "estimate_at_10m": {"catch_up_s": estimate_catch_up_s, "rebuild_s": estimate_rebuild_s,
                            "how": "linear extrapolation from this run's rates: an estimate, not a measurement"},
    }
    table = [(f"catch_up, pages of {k:,}", v,
              f"events/s = {v / reads[k]:.2f} × reading the log alone ({reads[k]:,.0f}/s); client CPU {cpu[k]:.0%}")
             for k, v in rates.items()]
    if python_rate is not None:
        table.append((f"Python folds alone, pages of {args.python_page_size:,}", python_rate,
                      f"events/s, client CPU {python_cpu:.0%} (the path before set-based SQL)"))
    table += [
        ("best catch_up, one connection", rates[best], f"events/s, target ≥ {TARGET:,}"),
        (f"catch_up on 2 connections, pages of {best:,}", two_rate,
         f"events/s = {two_rate / reads[best]:.2f} × reading the log alone; target ≥ {TARGET:,}"),
        ("rebuild (replay + compare + swap)", rebuilt.seconds, f"s = {head / rebuilt.seconds:,.0f} events/s"),
        ("estimate at 10M events: catch_up", estimate_catch_up_s / 60,
         "min, extrapolated from this run (not measured)"),
        ("estimate at 10M events: rebuild", estimate_rebuild_s / 60,
         f"min, extrapolated from this run (not measured); target ≤ {REBUILD_TARGET_S // 60}"),
    ]
    report("bench_projections", f"projections: {head:,} events, {len(cat.projections.projections)} read models",
           table, figures)
    if max(rates[best], two_rate) < TARGET:
        console.print(f"[yellow]below the {TARGET:,} events/s target: see bench/README.md for where the time goes")


if __name__ == "__main__":
    main()
