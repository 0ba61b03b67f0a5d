"""Append throughput (batched, as a ratio to a bare binary COPY, and with the hash chain against the append as it
was before it) and single-event append latency."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from common import console, generate, percentiles, progress_bar, report, temp_catalog, timed
from psycopg.types.json import Jsonb

import catalog
from catalog.database import libpq_dsn
from catalog.event_log import StoredIdentity, plan_append, prepare_events, streams_involved
from catalog.store import COPY_THRESHOLD, NewEvent, _as_json, _prepare

SCRATCH = "bench_scratch"
COLUMNS = "position, event_id, stream_id, version, type, schema_version, payload, metadata, occurred_at"
TYPES = ["int8", "uuid", "text", "int8", "text", "int4", "jsonb", "jsonb", "timestamptz"]
PLAIN_TABLE = f"""CREATE TABLE {SCRATCH}.plain (position bigint, event_id uuid, stream_id text, version bigint,
  type text, schema_version int, payload jsonb, metadata jsonb, occurred_at timestamptz)"""
# The event table's indexes and constraints, without the chain's hash column (the bare COPYs write none).
INDEXED_TABLES = [f"CREATE TABLE {SCRATCH}.indexed (LIKE catalog.events INCLUDING ALL)",
                  f"ALTER TABLE {SCRATCH}.indexed DROP COLUMN hash"]
# The append before the hash chain, for the chain's cost: the same checks, lock and COPY into a copy of the event
# table without its hash column, recorded_at by the column's default (catalog/store.py at commit 38ecc68).
# It runs as the store does, on one of the catalog's pooled connections (the app role, the same session settings).
UNCHAINED_TABLES = [f"CREATE TABLE {SCRATCH}.unchained (LIKE catalog.events INCLUDING ALL)",
                    f"ALTER TABLE {SCRATCH}.unchained DROP COLUMN hash",
                    f"GRANT USAGE ON SCHEMA {SCRATCH} TO visionledger_writer",
                    f"GRANT SELECT, INSERT ON {SCRATCH}.unchained TO visionledger_writer"]
UNCHAINED_LOCK = 0x756E636861696E  # its own advisory lock key, so that it never waits on the catalog's appends
UNCHAINED_PRE_CHECK = f"""
    SELECT
      (SELECT coalesce(max(position), 0) FROM {SCRATCH}.unchained),
      (SELECT coalesce(json_agg(json_build_array(event_id, position, stream_id, type, payload::text)), '[]')
         FROM {SCRATCH}.unchained WHERE event_id = ANY(%(ids)b)),
      (SELECT coalesce(json_object_agg(stream_id, v), '{{}}')
         FROM (SELECT stream_id, max(version) AS v FROM {SCRATCH}.unchained
                WHERE stream_id = ANY(%(streams)b) GROUP BY stream_id) s)
"""


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


def append_unchained(conn: psycopg.Connection, events: Sequence[NewEvent]) -> None:
    """``EventStore.append`` as it was before the hash chain (batches of at least COPY_THRESHOLD events): no head
    hash to read, no recorded_at to write, nothing hashed."""
    assert len(events) >= COPY_THRESHOLD
    prepared = prepare_events(events)
    cur = conn.cursor()
    with conn.transaction():
        with conn.pipeline():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [UNCHAINED_LOCK])
            cur.execute(UNCHAINED_PRE_CHECK, {"ids": [p.event_id for p in prepared],
                                              "streams": streams_involved(prepared, {})})
        head, existing, versions = cur.fetchone()
        plan = plan_append(prepared, {}, head=head, versions=versions, stored={
            uuid.UUID(eid): StoredIdentity(pos, stream, typ, payload) for eid, pos, stream, typ, payload in existing})
        with cur.copy(f"COPY {SCRATCH}.unchained ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(TYPES)
            for row in plan.rows:
                p = row.event
                copy.write_row((row.position, p.event_id, p.stream_id, row.version, p.type, p.schema_version,
                                _as_json(p.data.model_dump_json()), _as_json(p.metadata), p.occurred_at))


def batched_rates(cat: catalog.Catalog, conn: psycopg.Connection, events: Sequence[NewEvent],
                  rows: list[tuple[Any, ...]], batch: int) -> tuple[dict[str, float], dict[str, float]]:
    """Events/s of the bare COPY, the COPY into a table LIKE catalog.events, the append before the hash chain and
    EventStore.append, batch by batch in turn (in reverse order every other batch, so that none always follows
    the same one and pays for its writes), so that load from other processes on the machine weighs on all
    alike; and the µs of this process's CPU each spent per event (the client's share: with a core to spare it
    overlaps the server's)."""
    pooled = cat.db.raw_connection()  # as EventStore.append connects
    app: psycopg.Connection = pooled.driver_connection
    runs = {
        "append_unchained": lambda i: append_unchained(app, events[i:i + batch]),
        "append": lambda i: cat.store.append(events[i:i + batch]),
        "bare_copy_of_events": lambda i: copy_events(conn, "plain_events", events[i:i + batch], i + 1),
        "bare_copy": lambda i: copy_batch(conn, "plain", rows[i:i + batch]),
        "indexed_copy": lambda i: copy_batch(conn, "indexed", rows[i:i + batch]),
    }
    seconds, cpu = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0)
    with progress_bar("append unchained / append / COPY plain / COPY indexed, in turn", len(events)) as update:
        for n, i in enumerate(range(0, len(events), batch)):
            for name in list(runs)[::-1 if n % 2 else 1]:
                timing = timed(lambda run=runs[name], i=i: run(i))
                seconds[name] += timing.seconds
                cpu[name] += timing.cpu
            update(min(i + batch, len(events)), len(events))
    pooled.close()
    return ({name: len(events) / s for name, s in seconds.items()},
            {name: c / len(events) * 1e6 for name, c in cpu.items()})


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
        for statement in INDEXED_TABLES + UNCHAINED_TABLES:
            conn.execute(statement)
        conn.commit()
        # Latency first, on a settled server: after the bulk load, autovacuum and the checkpointer compete.
        one = latencies_ms(cat.store.append_one, singles, "append_one")
        rates, client_us = batched_rates(cat, conn, events, rows, args.batch)
        bare, indexed, store = rates["bare_copy_of_events"], rates["indexed_copy"], rates["append"]
        bare_rendered = rates["bare_copy"]
        unchained = rates["append_unchained"]
        # Verifying the whole chain (`visionledger check`'s share that grows with the log), in its own pages:
        verify = timed(lambda: cat.store.verify_chain())
        assert verify.result.ok, verify.result.problem
        verify_rate = verify.result.events / verify.seconds
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
    us = {name: 1e6 / rate for name, rate in {"append": store, "append_unchained": unchained,
                                              "prepare": validate_rate, "indexed_copy": indexed,
                                              "bare_copy": bare, "bare_copy_prerendered": bare_rendered}.items()}
    figures = {
        "events": len(events), "batch": args.batch,
        "append_events_per_s": store, "bare_copy_events_per_s": bare, "indexed_copy_events_per_s": indexed,
        "bare_copy_prerendered_events_per_s": bare_rendered, "ratio_to_prerendered_bare_copy": store / bare_rendered,
        "ratio_to_bare_copy": store / bare, "target_ratio": 0.5,
        "append_unchained_events_per_s": unchained, "chain_ratio": store / unchained, "target_chain_ratio": 0.9,
        "client_cpu_us_per_event": client_us, "verify_chain_events_per_s": verify_rate,
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
        ("append before the hash chain", unchained, "events/s: same checks, lock and COPY, nothing hashed"),
        ("append / append before the chain", store / unchained, "the chain's cost: target ≥ 0.9"),
        ("client CPU: append", client_us["append"], "µs/event in this process (the chain's hashing is here)"),
        ("client CPU: append before the chain", client_us["append_unchained"], "µs/event in this process"),
        ("verify the whole chain", verify_rate, "events/s, as `visionledger check` does"),
        ("append / pre-rendered COPY", store / bare_rendered, "stricter: serialisation not counted"),
        ("_prepare alone", validate_rate, "events/s (checks, before the lock)"),
        ("payload: dict + json.dumps", dict_dumps_s / len(events) * 1e6, "µs/event, what append does"),
        ("payload: model_dump_json", dump_json_s / len(events) * 1e6, "µs/event, the alternative"),
    ] + [(f"µs/event: {k}", v, "") for k, v in us.items()] + [
        (f"append_one {k}", v, "ms" + (", target ≤ 3" if k == "p50" else "")) for k, v in one_p.items()
    ] + [(f"bare INSERT+commit {k}", v, "ms: floor") for k, v in bare_p.items()]
    report("bench_append", f"append: {len(events):,} events", rows_out, figures)
    if store / bare < 0.5 or store / unchained < 0.9 or one_p["p50"] > 3.0:
        console.print("[yellow]a target is missed: see us_per_event and the README for where the time goes")


if __name__ == "__main__":
    main()
