"""Projection rebuild rate: catch_up() of every read model from position zero, and rebuild --check."""

from __future__ import annotations

import argparse

from common import console, loaded_catalog, progress_bar, report, timed

import catalog
from catalog.projections.framework import read_page
from catalog.projections.runner import ProjectionRunner

TARGET = 30_000  # events/s


def catch_up_rate(runner: ProjectionRunner, head: int, page_size: int, label: str) -> tuple[float, float]:
    """(events/s, share of the wall time this process spent on its CPU) of a catch_up from zero."""
    runner.reset()
    with progress_bar(f"{label}, pages of {page_size:,}", head) as update:
        timing = timed(lambda: runner.catch_up(page_size=page_size, progress=update))
    assert timing.result == head, (timing.result, head)
    console.print(f"{label}, pages of {page_size:,}: {head / timing.seconds:,.0f} events/s ({timing.seconds:.1f} s)")
    return head / timing.seconds, timing.cpu / timing.seconds


def read_only_rate(cat: catalog.Catalog, head: int, page_size: int) -> float:
    """Events/s of reading and decoding the log up to ``head`` page by page, as catch_up does, with nothing
    applied: a ceiling."""
    def read_all() -> None:
        with cat.db.connect() as sa_conn:
            after = 0
            while page := read_page(sa_conn.connection.driver_connection, after, head, page_size):
                after = page.last
    return head / timed(read_all).seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="events in the log")
    parser.add_argument("--page-sizes", type=int, nargs="+", default=[5_000, 20_000, 50_000],
                        help="catch_up page sizes to try")
    args = parser.parse_args()

    rates: dict[int, float] = {}
    cpu: dict[int, float] = {}
    with loaded_catalog(args.events) as cat:
        head = cat.head()
        for page_size in args.page_sizes:
            rates[page_size], cpu[page_size] = catch_up_rate(cat.projections, head, page_size, "catch_up")
        best = max(rates, key=rates.__getitem__)
        read_rate = read_only_rate(cat, head, best)
        with progress_bar("rebuild_projections(check_only=True)", head) as update:
            check = timed(lambda: cat.rebuild_projections(check_only=True, progress=update))
        rebuilt = check.result

    figures = {
        "events": head, "projections": [p.name for p in cat.projections.projections],
        "catch_up_events_per_s": {str(k): v for k, v in rates.items()},
        "catch_up_client_cpu_share": {str(k): v for k, v in cpu.items()},
        "best_page_size": best, "best_events_per_s": rates[best], "target_events_per_s": TARGET,
        "read_page_only_events_per_s": read_rate,
        "rebuild_check_events_per_s": head / check.seconds, "rebuild_check_seconds": check.seconds,
        "rebuild_equal": rebuilt.equal, "rows": {t.table: t.rebuilt_rows for t in rebuilt.tables},
    }
    table = [(f"catch_up, pages of {k:,}", v, f"events/s, client CPU {cpu[k]:.0%} of wall") for k, v in rates.items()]
    table += [
        ("best catch_up", rates[best], f"events/s, target ≥ {TARGET:,}"),
        ("read_page alone", read_rate, "events/s: ceiling of catch_up"),
        ("rebuild --check", head / check.seconds, f"events/s, equal={rebuilt.equal}"),
    ]
    report("bench_projections", f"projections: {head:,} events, {len(cat.projections.projections)} read models",
           table, figures)
    if rates[best] < TARGET:
        console.print(f"[yellow]below the {TARGET:,} events/s target: see bench/README.md for where the time goes")


if __name__ == "__main__":
    main()
