"""Append throughput (batched, as a ratio to a bare binary COPY) and single-event append latency."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from common import console, generate, percentiles, progress_bar, report, temp_catalog, timed
from psycopg.types.json import Jsonb

import catalog
from catalog.database import libpq_dsn
from catalog.store import NewEvent, _as_json, _prepare

SCRATCH = "bench_scratch"
COLUMNS = "position, event_id, stream_id, version, type, schema_version, payload, metadata, occurred_at"
TYPES = ["int8", "uuid", "text", "int8", "text", "int4", "jsonb", "jsonb", "timestamptz"]
PLAIN_TABLE = f"""CREATE TABLE {SCRATCH}.plain (position bigint, event_id uuid, stream_id text, version bigint,
  type text, schema_version int, payload jsonb, metadata jsonb, occurred_at timestamptz)"""
INDEXED_TABLE = f"CREATE TABLE {SCRATCH}.indexed (LIKE catalog.events INCLUDING ALL)"


def prepared_rows(events: Sequence[NewEvent]) -> list[tuple[Any, ...]]:
    """The rows ``EventStore.append`` writes, JSON already rendered, so that the baseline times only the database."""
    versions: dict[str, int] = {}
    rows = []
    for position, event in enumerate(events, start=1):
        versions[event.stream_id] = versions.get(event.stream_id, 0) + 1
        rows.append((position, event.event_id, event.stream_id, versions[event.stream_id], event.type,
                     type(event.data).schema_version, _as_json(event.data.model_dump_json()),
                     Jsonb(dict(event.metadata)), event.occurred_at))
    return rows


def copy_batch(conn: psycopg.Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``COPY … FROM STDIN (FORMAT BINARY)`` of ``rows`` into ``table``, committed (as append commits)."""
    with conn.transaction(), conn.cursor().copy(f"COPY {SCRATCH}.{table} ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(TYPES)
        for row in rows:
            copy.write_row(row)


def copy_events(conn: psycopg.Connection, table: str, events: Sequence[NewEvent], first: int) -> None:
    """A bare writer given the same events as append: serialise each as it streams, COPY, commit; no checks."""
    with conn.transaction(), conn.cursor().copy(f"COPY {SCRATCH}.{table} ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(TYPES)
        for position, event in enumerate(events, start=first):
            copy.write_row((position, event.event_id, event.stream_id, 1, event.type, type(event.data).schema_version,
                            _as_json(event.data.model_dump_json()), Jsonb(dict(event.metadata)), event.occurred_at))


def batched_rates(cat: catalog.Catalog, conn: psycopg.Connection, events: Sequence[NewEvent],
                  rows: list[tuple[Any, ...]], batch: int) -> dict[str, float]:
    """Events/s of the bare COPY, the COPY into a table LIKE catalog.events and EventStore.append, batch by
    batch in turn, so that load from other processes on the machine weighs on all three alike."""
    runs = {
        "bare_copy_of_events": lambda i: copy_events(conn, "plain_events", events[i:i + batch], i + 1),
        "bare_copy": lambda i: copy_batch(conn, "plain", rows[i:i + batch]),
        "indexed_copy": lambda i: copy_batch(conn, "indexed", rows[i:i + batch]),
        "append": lambda i: cat.store.append(events[i:i + batch]),
    }
    seconds = dict.fromkeys(runs, 0.0)
    with progress_bar("COPY plain / COPY indexed / append, in turn", len(events)) as update:
        for i in range(0, len(events), batch):
            for name, run in runs.items():
                seconds[name] += timed(lambda run=run, i=i: run(i)).seconds
            update(min(i + batch, len(events)), len(events))
    return {name: len(events) / s for name, s in seconds.items()}


def latencies_ms(call, items: Sequence[Any], description: str) -> list[float]:
    samples = []
    with progress_bar(description, len(items)) as update:
        for i, item in enumerate(items, start=1):
            started = time.perf_counter()
            call(item)
            samples.append((time.perf_counter() - started) * 1000)
            update(i, len(items))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events appended in batches")
    parser.add_argument("--batch", type=int, default=5_000, help="events per append / COPY transaction")
    parser.add_argument("--singles", type=int, default=2_000, help="append_one calls timed one by one")
    args = parser.parse_args()

    events = generate(args.events)
    singles = generate(args.singles, seed=1)
    rows = prepared_rows(events)
    validate_s = timed(lambda: _prepare(events)).seconds
    # What append could save by serialising payloads in pydantic's Rust core instead of dict + json.dumps:
    dict_dumps_s = timed(lambda: [json.dumps(e.data.model_dump(mode="json")) for e in events]).seconds
    dump_json_s = timed(lambda: [e.data.model_dump_json() for e in events]).seconds
    with temp_catalog() as cat, psycopg.connect(libpq_dsn(cat.urls.owner), options="-c timezone=UTC") as conn:
        conn.execute(f"CREATE SCHEMA {SCRATCH}")
        conn.execute(PLAIN_TABLE)
        conn.execute(f"CREATE TABLE {SCRATCH}.plain_events (LIKE {SCRATCH}.plain)")
        conn.execute(INDEXED_TABLE)
        conn.commit()
        # Latency first, on a settled server: after the bulk load, autovacuum and the checkpointer compete.
        one = latencies_ms(cat.store.append_one, singles, "append_one")
        rates = batched_rates(cat, conn, events, rows, args.batch)
        bare, indexed, store = rates["bare_copy_of_events"], rates["indexed_copy"], rates["append"]
        bare_rendered = rates["bare_copy"]
        single_rows = [(len(events) + i, *row[1:]) for i, row in enumerate(prepared_rows(singles), start=1)]
        bare_one = latencies_ms(
            lambda row: (conn.execute(f"INSERT INTO {SCRATCH}.plain ({COLUMNS}) VALUES ({', '.join(['%s'] * 9)})",
                                      row), conn.commit()),
            single_rows, "bare INSERT + commit",
        )

    validate_rate = len(events) / validate_s
    one_p, bare_p = percentiles(one), percentiles(bare_one)
    # Per event, for reading the ratio: the indexed COPY is append's floor (same indexes, no checks, no lock);
    # serialisation overlaps the server's work, so these do not add up.
    us = {name: 1e6 / rate for name, rate in {"append": store, "prepare": validate_rate, "indexed_copy": indexed,
                                              "bare_copy": bare, "bare_copy_prerendered": bare_rendered}.items()}
    figures = {
        "events": len(events), "batch": args.batch,
        "append_events_per_s": store, "bare_copy_events_per_s": bare, "indexed_copy_events_per_s": indexed,
        "bare_copy_prerendered_events_per_s": bare_rendered, "ratio_to_prerendered_bare_copy": store / bare_rendered,
        "ratio_to_bare_copy": store / bare, "target_ratio": 0.5,
        "validate_events_per_s": validate_rate,
        "payload_us_model_dump_plus_json_dumps": dict_dumps_s / len(events) * 1e6,
        "payload_us_model_dump_json": dump_json_s / len(events) * 1e6, "us_per_event": us,
        "append_one_ms": one_p | {"mean": sum(one) / len(one), "n": len(one)}, "target_p50_ms": 3.0,
        "bare_insert_commit_ms": bare_p,
    }
    rows_out = [
        ("EventStore.append", store, f"events/s, batches of {args.batch:,}"),
        ("bare COPY of the same events", bare, "events/s: baseline (serialise + COPY, no checks)"),
        ("bare COPY, JSON pre-rendered", bare_rendered, "events/s: the database's share alone"),
        ("COPY LIKE catalog.events", indexed, "events/s, same indexes"),
        ("append / bare COPY", store / bare, "target ≥ 0.5"),
        ("append / pre-rendered COPY", store / bare_rendered, "stricter: serialisation not counted"),
        ("_prepare alone", validate_rate, "events/s (checks, before the lock)"),
        ("payload: dict + json.dumps", dict_dumps_s / len(events) * 1e6, "µs/event, what append does"),
        ("payload: model_dump_json", dump_json_s / len(events) * 1e6, "µs/event, the alternative"),
    ] + [(f"µs/event: {k}", v, "") for k, v in us.items()] + [
        (f"append_one {k}", v, "ms" + (", target ≤ 3" if k == "p50" else "")) for k, v in one_p.items()
    ] + [(f"bare INSERT+commit {k}", v, "ms: floor") for k, v in bare_p.items()]
    report("bench_append", f"append: {len(events):,} events", rows_out, figures)
    if store / bare < 0.5 or one_p["p50"] > 3.0:
        console.print("[yellow]a target is missed: see us_per_event and the README for where the time goes")


if __name__ == "__main__":
    main()
