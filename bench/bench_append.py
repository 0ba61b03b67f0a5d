"""Append throughput (batched, one call at a time and in turn, as a ratio to a bare binary COPY of the same
events), single-event append latency (as a ratio to a bare INSERT + commit in the same run), and the hash
chain's share of an append."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from common import console, generate, percentiles, progress_bar, report, temp_catalog, timed
from psycopg.types.json import Jsonb

import catalog
from catalog.chain import canonical_text, content_digest
from catalog.database import libpq_dsn
from catalog.event_log import prepare_events
from catalog.partitions import PARTITIONS_AHEAD, ensure_partitions_at, partition_name
from catalog.store import NewEvent, _as_json

SCRATCH = "bench_scratch"
COLUMNS = "position, event_id, stream_id, version, type, schema_version, payload, metadata, occurred_at"
TYPES = ["int8", "uuid", "text", "int8", "text", "int4", "jsonb", "jsonb", "timestamptz"]
PLAIN_TABLE = f"""CREATE TABLE {SCRATCH}.plain (position bigint, event_id uuid, stream_id text, version bigint,
  type text, schema_version int, payload jsonb, metadata jsonb, occurred_at timestamptz)"""
# The event table's indexes and constraints, without the chain's hash column (the bare COPYs write none). They are
# copied from a partition: the unique indexes on event_id and (stream_id, version) are declared on each
# partition, as a partitioned table's unique index must hold its partition key (position).
INDEXED_TABLES = [f"CREATE TABLE {SCRATCH}.indexed (LIKE catalog.{partition_name(1)} INCLUDING ALL)",
                  f"ALTER TABLE {SCRATCH}.indexed DROP COLUMN hash"]
# The links of the chain alone, as catalog.append_events computes them under the lock (one catalog.chain_link a
# new event, each on its predecessor's), for the chain's share on the server.
LINKS_ALONE = """
    CREATE FUNCTION pg_temp.links(previous bytea, digests bytea[]) RETURNS bytea LANGUAGE plpgsql AS $$
    DECLARE digest bytea; i integer := 0;
    BEGIN
      FOREACH digest IN ARRAY digests LOOP
        i := i + 1;
        previous := catalog.chain_link(previous, i, 1, 1, digest);
      END LOOP;
      RETURN previous;
    END $$
"""


def prepared_rows(events: Sequence[NewEvent]) -> list[tuple[Any, ...]]:
    """The rows a bare writer would store, JSON already rendered, so that the baseline times only the database."""
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
                  rows: list[tuple[Any, ...]], batch: int) -> tuple[dict[str, float], dict[str, float]]:
    """Events/s of EventStore.append, the bare COPY of the same events, the bare COPY of pre-rendered rows and
    the COPY into a table LIKE catalog.events, batch by batch in turn (in reverse order every other batch, so
    that none always follows the same one and pays for its writes), so that load from other processes on the
    machine weighs on all alike; and the µs of this process's CPU each spent per event (the client's share: with
    a core to spare it overlaps the server's)."""
    runs = {
        "append": lambda i: cat.store.append(events[i:i + batch]),
        "bare_copy_of_events": lambda i: copy_events(conn, "plain_events", events[i:i + batch], i + 1),
        "bare_copy": lambda i: copy_batch(conn, "plain", rows[i:i + batch]),
        "indexed_copy": lambda i: copy_batch(conn, "indexed", rows[i:i + batch]),
    }
    seconds, cpu = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0)
    with progress_bar("append / COPY of the events / COPY pre-rendered / COPY indexed, in turn", len(events)) as update:
        for n, i in enumerate(range(0, len(events), batch)):
            for name in list(runs)[::-1 if n % 2 else 1]:
                timing = timed(lambda run=runs[name], i=i: run(i))
                seconds[name] += timing.seconds
                cpu[name] += timing.cpu
            update(min(i + batch, len(events)), len(events))
    return ({name: len(events) / s for name, s in seconds.items()},
            {name: c / len(events) * 1e6 for name, c in cpu.items()})


def in_turn_rates(cat: catalog.Catalog, conn: psycopg.Connection, events: Sequence[NewEvent], batch: int,
                  chunk: int = 8) -> tuple[float, float]:
    """Events/s of EventStore.append_batches (the next batch staged while the server stores this one: a bulk
    load's way) and of the bare COPY of the same events, ``chunk`` batches of each in turn."""
    seconds = {"append_batches": 0.0, "bare_copy": 0.0}
    step = batch * chunk
    with progress_bar("append_batches / COPY of the events, in turn", len(events)) as update:
        for i in range(0, len(events), step):
            part = events[i:i + step]
            seconds["append_batches"] += timed(
                lambda part=part: list(cat.store.append_batches(part[j:j + batch] for j in range(0, len(part), batch)))
            ).seconds
            seconds["bare_copy"] += timed(lambda part=part, i=i: [
                copy_events(conn, "plain_events", part[j:j + batch], i + j + 1) for j in range(0, len(part), batch)]
            ).seconds
            update(min(i + step, len(events)), len(events))
    return len(events) / seconds["append_batches"], len(events) / seconds["bare_copy"]


def single_latencies_ms(cat: catalog.Catalog, conn: psycopg.Connection, singles: Sequence[NewEvent],
                        first: int) -> tuple[list[float], list[float], list[float]]:
    """append_one of each event, a bare one-row INSERT + commit of the same event, and the same INSERT into a
    table with the log's indexes (what an insert's index entries and their WAL cost alone), one after the
    other, so that all meet the same load."""
    def insert(table: str) -> str:
        return f"INSERT INTO {SCRATCH}.{table} ({COLUMNS}) VALUES ({', '.join(['%s'] * len(TYPES))})"

    appended, inserted, indexed = [], [], []
    with progress_bar("append_one / bare INSERT + commit / the same, indexed, in turn", len(singles)) as update:
        for i, (event, row) in enumerate(zip(singles, prepared_rows(singles), strict=True), start=1):
            started = time.perf_counter()
            cat.store.append_one(event)
            appended.append((time.perf_counter() - started) * 1000)
            for table, samples in (("plain", inserted), ("indexed_one", indexed)):
                started = time.perf_counter()
                conn.execute(insert(table), (first + i, *row[1:]))
                conn.commit()
                samples.append((time.perf_counter() - started) * 1000)
            update(i, len(singles))
    return appended, inserted, indexed


def partition_cost(cat: catalog.Catalog, conn: psycopg.Connection, singles: Sequence[NewEvent],
                   batch: Sequence[NewEvent], more: int) -> dict[str, float]:
    """append_one p50 (ms, against the bare INSERT + commit in turn) and a batch's µs an event, before and after
    ``more`` partitions are added: the append's lookups by id and by stream probe every live partition (a
    partitioned table's unique indexes hold per partition). The added partitions are empty, so their cost is a
    lower bound for full ones."""
    half = len(singles) // 2
    figures = {}
    for stage, (ones, events) in enumerate(((singles[:half], batch[:len(batch) // 2]),
                                            (singles[half:], batch[len(batch) // 2:]))):
        if stage:
            ensure_partitions_at(libpq_dsn(cat.urls.owner), ahead=PARTITIONS_AHEAD + more)
        count = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'catalog.events'::regclass").fetchone()[0]
        conn.execute(f"TRUNCATE {SCRATCH}.plain, {SCRATCH}.indexed_one")  # the baseline's rows start afresh
        conn.commit()
        one, bare, _ = single_latencies_ms(cat, conn, ones, first=0)
        batched = timed(lambda events=events: cat.store.append(events))
        figures |= {f"partitions_{stage}": count, f"append_one_p50_ms_{stage}": percentiles(one)["p50"],
                    f"bare_p50_ms_{stage}": percentiles(bare)["p50"],
                    f"batch_us_per_event_{stage}": batched.seconds / len(events) * 1e6}
    return figures


def chain_share_us(cat: catalog.Catalog, events: Sequence[NewEvent]) -> dict[str, float]:
    """µs per event of the chain's parts: on the client, the canonical form's re-serialisation (beyond pydantic's
    own JSON) and the content digest; on the server, the links (catalog.chain_link, one after the other)."""
    texts = [e.data.model_dump_json() for e in events]
    canonical = timed(lambda: [canonical_text(t) for t in texts])
    prepared = prepare_events(events)
    digests = timed(lambda: [content_digest(p.event_id, p.stream_id, p.type, p.schema_version, p.payload,
                                            p.metadata, p.occurred_at) for p in prepared])
    with cat.db.connect() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        conn.execute(LINKS_ALONE)
        links = timed(lambda: conn.execute("SELECT pg_temp.links(%b, %b)",
                                           [bytes(32), [p.digest for p in prepared]]).fetchone())
        sa_conn.rollback()
    return {name: t.seconds / len(events) * 1e6 for name, t in
            {"canonical_form": canonical, "content_digest": digests, "links_in_sql": links}.items()}


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
    prepare_s = timed(lambda: prepare_events(events)).seconds
    with temp_catalog() as cat, psycopg.connect(libpq_dsn(cat.urls.owner), options="-c timezone=UTC") as conn:
        conn.execute(f"CREATE SCHEMA {SCRATCH}")
        conn.execute(PLAIN_TABLE)
        conn.execute(f"CREATE TABLE {SCRATCH}.plain_events (LIKE {SCRATCH}.plain)")
        for statement in INDEXED_TABLES:
            conn.execute(statement)
        conn.execute(f"CREATE TABLE {SCRATCH}.indexed_one (LIKE {SCRATCH}.indexed INCLUDING ALL)")
        conn.commit()
        # Latency first, on a settled server: after the bulk load, autovacuum and the checkpointer compete.
        one, bare_one, indexed_one = single_latencies_ms(cat, conn, singles, first=len(events))
        rates, client_us = batched_rates(cat, conn, events, rows, args.batch)
        in_turn, in_turn_bare = in_turn_rates(cat, conn, generate(args.events, seed=2), args.batch)
        chain_us = chain_share_us(cat, events[:args.batch])
        partitions = partition_cost(cat, conn, generate(args.singles, seed=3), generate(2 * args.batch, seed=4),
                                    more=30)
        # Verifying the whole chain (`visionledger check`'s share that grows with the log), in its own pages:
        verify = timed(lambda: cat.store.verify_chain())
        assert verify.result.ok, verify.result.problem
        verify_rate = verify.result.events / verify.seconds

    store, bare, indexed = rates["append"], rates["bare_copy_of_events"], rates["indexed_copy"]
    bare_rendered = rates["bare_copy"]
    one_p, bare_p, indexed_p = percentiles(one), percentiles(bare_one), percentiles(indexed_one)
    append_us = 1e6 / store
    chain_share = sum(chain_us.values()) / append_us
    figures = {
        "events": len(events), "batch": args.batch,
        "append_events_per_s": store, "bare_copy_events_per_s": bare, "indexed_copy_events_per_s": indexed,
        "bare_copy_prerendered_events_per_s": bare_rendered, "ratio_to_bare_copy": store / bare,
        "append_batches_events_per_s": in_turn, "bare_copy_in_turn_events_per_s": in_turn_bare,
        "append_batches_ratio_to_bare_copy": in_turn / in_turn_bare,
        "target_ratio": 0.6, "ratio_to_prerendered_bare_copy": store / bare_rendered,
        "client_cpu_us_per_event": client_us, "prepare_us_per_event": prepare_s / len(events) * 1e6,
        "chain_us_per_event": chain_us, "chain_share_of_append": chain_share,
        "verify_chain_events_per_s": verify_rate,
        "append_one_ms": one_p | {"mean": sum(one) / len(one), "n": len(one)},
        "bare_insert_commit_ms": bare_p, "append_one_p50_ratio": one_p["p50"] / bare_p["p50"],
        "indexed_insert_commit_ms": indexed_p, "append_one_p50_ratio_to_indexed": one_p["p50"] / indexed_p["p50"],
        "target_append_one_p50_ratio": 1.5, "partition_cost": partitions,
    }
    rows_out = [
        ("EventStore.append", store, f"events/s, batches of {args.batch:,}"),
        ("bare COPY of the same events", bare, "events/s: baseline (serialise + COPY, no checks)"),
        ("append / bare COPY", store / bare, "target ≥ 0.6"),
        ("EventStore.append_batches", in_turn, "events/s, the next batch staged while one is stored"),
        ("bare COPY, in turn with it", in_turn_bare, "events/s"),
        ("append_batches / bare COPY", in_turn / in_turn_bare, "target ≥ 0.6 (a bulk load's way)"),
        ("COPY with the log's indexes", indexed, "events/s, into a table LIKE a partition, pre-rendered"),
        ("bare COPY, JSON pre-rendered", bare_rendered, "events/s: the database's share alone"),
        ("client CPU: append", client_us["append"], "µs/event in this process"),
        ("client CPU: bare COPY", client_us["bare_copy_of_events"], "µs/event in this process"),
        ("prepare_events alone", prepare_s / len(events) * 1e6, "µs/event: checks, canonical JSON, digests"),
    ] + [(f"chain: {k}", v, "µs/event") for k, v in chain_us.items()] + [
        ("chain's share of an append", chain_share, "its three parts / append's µs per event"),
        ("verify the whole chain", verify_rate, "events/s, as `visionledger check` does"),
    ] + [(f"append_one {k}", v, "ms") for k, v in one_p.items()] + [
        (f"bare INSERT+commit {k}", v, "ms, in turn with append_one") for k, v in bare_p.items()
    ] + [(f"indexed INSERT+commit {k}", v, "ms, into a table with the log's indexes") for k, v in indexed_p.items()
    ] + [("append_one p50 / bare p50", one_p["p50"] / bare_p["p50"], "target ≤ 1.5"),
         ("append_one p50 / indexed p50", one_p["p50"] / indexed_p["p50"], "the function's share")] + [
        (f"{partitions[f'partitions_{n}']} partitions: append_one p50", partitions[f"append_one_p50_ms_{n}"],
         f"ms (bare INSERT+commit {partitions[f'bare_p50_ms_{n}']:.3f})") for n in (0, 1)] + [
        (f"{partitions[f'partitions_{n}']} partitions: batch", partitions[f"batch_us_per_event_{n}"],
         "µs/event, one batch") for n in (0, 1)]
    report("bench_append", f"append: {len(events):,} events", rows_out, figures)
    if store / bare < 0.6 or one_p["p50"] / bare_p["p50"] > 1.5:
        console.print("[yellow]a target is missed: see the README for where the time goes")


if __name__ == "__main__":
    main()
