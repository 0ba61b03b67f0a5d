"""The scale benchmark: a synthetic catalog of 1,000,000 images and 10,000,000 events (no pixels), and the
figures that matter at that size, each beside a baseline measured in the same run:

- append (batches of 5,000) against a bare binary COPY of the same events into an unconstrained table;
- the read models built from zero (catch-up) and rebuilt (`rebuild`: replay into a scratch schema, compare,
  swap) against reading the log alone;
- the curator query (line, 7-day window, class; first page of 100) p95 against the same query on a plain
  indexed table of the same rows;
- the trace of one part (the auditor's whole chain: images, events, decisions, engine → model → dataset
  version, training-label evidence) p95 against reading the part's event streams alone, and the first trace
  of each class in a fresh process (`--trace-only` measures the traces alone, without the other figures);
- one day's per-part breakdown (labels and each engine's predictions, as the Dagster asset computes it)
  against its two GROUP BYs alone;
- a dataset version over every labelled image: build and publish, against a bare COPY of its rows.

The catalog is the synthetic factory (`catalog/synthetic.py`: 2,400 images a day on 3 lines, 4 images a
part, labelled with ~5 % wrong labels half of them corrected, predicted, every part dispositioned), where
each image is also scored by the shadow engines tried over the year and ~20 % are queued for review: about
ten events an image. Results go to `bench/out/bench_scale.json` and, as a table, to `bench/RESULTS.md`
(rewritten up to its first `## ` heading; the notes from there on are kept).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from bench_append import PLAIN_TABLE, SCRATCH, copy_events
from bench_dataset_version import bare_read
from bench_projections import read_only_rate
from common import (
    FIRST_DAY,
    TimedIterator,
    analyze,
    console,
    percentiles,
    progress_bar,
    report,
    temp_catalog,
    timed,
)

import catalog
from catalog import events as ev
from catalog.audit import forget_versions, part_audit
from catalog.breakdowns import label_breakdown, prediction_breakdown
from catalog.database import libpq_dsn, make_engine
from catalog.datasets import DatasetSpec, build_dataset_version, publish_dataset_version
from catalog.lineage import CLASSIFIER
from catalog.projections import rebuild
from catalog.projections.read_models import ALL_PROJECTIONS
from catalog.queries import ImageFilter, query_images, trace_part
from catalog.store import NewEvent
from catalog.synthetic import CLASSES, ENGINE_ID, FactoryShape, ontology_event, simulated_day

RESULTS = Path(__file__).parent / "RESULTS.md"
ROOT = Path(__file__).resolve().parents[1]
IMAGES_PER_DAY = 2_400  # FactoryShape(): 3 lines x 200 parts x 2 stations x 2 cameras
SHADOW_ENGINES = tuple(f"shadow-engine-v{k}" for k in range(2, 9))
REVIEWED = 0.2  # share of images queued for review
ALL_LABELLED = DatasetSpec.parse({"name": "scale-all", "sampling": {"counts": dict.fromkeys(CLASSES, "all")}})
HASH = "0" * 64


# -- the catalog ------------------------------------------------------------------------------------------------


def factory(images: int, events_per_image: float, seed: int = 0) -> Iterator[NewEvent]:
    """The synthetic factory day after day up to its ``images``-th image, each image also scored by enough
    shadow engines (and ~20 % queued for review) to average ``events_per_image``. The extra events are built
    with model_construct: valid by construction, and validating them is not what is measured."""
    yield ontology_event(seed)
    base = 3.275 + REVIEWED  # ingested, label, prediction, 2.5 % corrections, a quarter of a part's decision
    shadows = max(0.0, events_per_image - base)
    whole, fraction = int(shadows), shadows - int(shadows)
    if whole + 1 > len(SHADOW_ENGINES):
        raise SystemExit(f"--events-per-image {events_per_image} needs more than {len(SHADOW_ENGINES)} shadow engines")
    rng = random.Random(seed)
    meta = {"actor": "bench", "source": "bench_scale"}
    seen, day = 0, FIRST_DAY
    while True:
        for event in simulated_day(day, seed=seed, shape=FactoryShape()):
            data = event.data
            if isinstance(data, ev.ImageIngested):
                if seen == images:
                    return
                seen += 1
            yield event
            if not isinstance(data, ev.PredictionRecorded):
                continue
            for engine_id in SHADOW_ENGINES[:whole + (rng.random() < fraction)]:
                predicted = data.predicted_class if rng.random() > 0.05 else rng.choice(CLASSES)
                scores = {c: (0.8 if c == predicted else 0.2 / (len(CLASSES) - 1)) for c in CLASSES}
                yield NewEvent(ev.PredictionRecorded.model_construct(
                    sha256=data.sha256, engine_id=engine_id, scores=scores, predicted_class=predicted,
                    part_id=data.part_id, heatmap_uri=None, defect_score=1 - scores["ok"], regions=[]),
                    event.occurred_at + timedelta(hours=1), metadata=meta)
            if rng.random() < REVIEWED:
                yield NewEvent(ev.ReviewRequested.model_construct(
                    sha256=data.sha256, queue="active-learning", strategy="uncertainty", score=rng.random(),
                    reason="bench"), event.occurred_at + timedelta(days=1), metadata=meta)
        day += timedelta(days=1)


def batched(events: Iterator[NewEvent], size: int) -> Iterator[list[NewEvent]]:
    batch: list[NewEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load(cat: catalog.Catalog, args: argparse.Namespace) -> dict[str, Any]:
    """Append the factory in batches. For the first ``--baseline-events`` each batch is also COPYed bare
    into an unconstrained table, batch by batch in turn with append, so that both see the same machine."""
    expected = int(args.images * args.events_per_image)
    with psycopg.connect(libpq_dsn(cat.urls.owner), options="-c timezone=UTC") as conn:
        conn.execute(f"CREATE SCHEMA {SCRATCH}")
        conn.execute(PLAIN_TABLE.replace(f"{SCRATCH}.plain", f"{SCRATCH}.plain_events"))
        conn.commit()
        sample = {"events": 0, "append_s": 0.0, "bare_s": 0.0}
        append_s = 0.0
        appended = 0
        with progress_bar(f"appending ~{expected:,} events ({args.images:,} images)", expected) as update:
            generator = TimedIterator(batched(factory(args.images, args.events_per_image), args.batch))
            for batch in generator:
                in_sample = sample["events"] < args.baseline_events
                if in_sample:
                    sample["bare_s"] += timed(lambda b=batch, first=sample["events"] + 1: copy_events(
                        conn, "plain_events", b, first)).seconds
                seconds = timed(lambda b=batch: cat.append(b, catch_up=False)).seconds
                append_s += seconds
                if in_sample:
                    sample["append_s"] += seconds
                    sample["events"] += len(batch)
                appended += len(batch)
                update(appended, max(expected, appended))
        conn.execute(f"DROP SCHEMA {SCRATCH} CASCADE")
        conn.commit()
    return {"events": appended, "append_s": append_s, "generate_s": generator.seconds, "sample": sample}


# -- measurements ---------------------------------------------------------------------------------------------


def samples_ms(n: int, description: str, fn: Callable[[int], Any]) -> list[float]:
    """Milliseconds of ``fn(i)`` for i in range(n), after two untimed warm-up calls."""
    fn(-1), fn(-2)
    out = []
    with progress_bar(description, n) as update:
        for i in range(n):
            started = time.perf_counter()
            fn(i)
            out.append((time.perf_counter() - started) * 1000)
            update(i + 1, n)
    return out


def curator_queries(cat: catalog.Catalog, days: int, n: int) -> dict[str, list[float]]:
    """The curator's query (line, 7-day window, class, first page of 100) through `query_images`, and the
    same rows from a plain table with one index made for exactly this query: the baseline."""
    owner = make_engine(cat.urls.owner, pool_size=1)  # the app role may not create tables
    with owner.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {SCRATCH}")
        conn.exec_driver_sql(
            f"CREATE TABLE {SCRATCH}.plain_images AS SELECT sha256, part_id, line, station, camera, captured_at, label"
            " FROM projections.images")
        conn.exec_driver_sql(f"CREATE INDEX ON {SCRATCH}.plain_images (line, label, captured_at)")
        conn.exec_driver_sql(f"ANALYZE {SCRATCH}.plain_images")

    def window(i: int) -> tuple[str, datetime, str]:
        rng = random.Random(i)
        start = datetime.combine(FIRST_DAY + timedelta(days=rng.randrange(max(1, days - 7))), datetime.min.time(), UTC)
        return f"line-{rng.randrange(3)}", start, rng.choice(CLASSES[1:])

    def catalog_query(i: int) -> None:
        line, start, label = window(i)
        rows = query_images(cat, ImageFilter(lines=(line,), captured_from=start,
                                                    captured_to=start + timedelta(days=7), labels=(label,)), limit=100)
        assert rows and all(r["label"] == label and r["line"] == line for r in rows), (line, start, label)

    def plain_query(i: int) -> None:
        line, start, label = window(i)
        with owner.connect() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT * FROM {SCRATCH}.plain_images WHERE line = %(l)s AND label = %(c)s AND captured_at >= %(s)s"
                " AND captured_at < %(e)s ORDER BY captured_at, sha256 LIMIT 100",
                {"l": line, "c": label, "s": start, "e": start + timedelta(days=7)}).fetchall()
        assert rows

    try:
        return {"catalog": samples_ms(n, "curator query", catalog_query),
                "plain": samples_ms(n, "the same query on a plain indexed table", plain_query)}
    finally:
        with owner.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {SCRATCH} CASCADE")
        owner.dispose()


def register_lineage(cat: catalog.Catalog, version_id: str, manifest_hash: str) -> None:
    """A model trained on the dataset version behind every engine that scored the images, each with its EngineBuilt,
    so that every trace walks real chains down to the published manifest."""
    at = datetime.now(UTC)
    events = []
    for k, engine_id in enumerate((ENGINE_ID, *SHADOW_ENGINES), start=1):
        model_id = f"{CLASSIFIER}-scale{k:04d}"
        events += [
            NewEvent(ev.ModelRegistered(model=CLASSIFIER, model_id=model_id, dataset_version_id=version_id,
                                        manifest_hash=manifest_hash, artifact_sha256=HASH,
                                        artifact_uri=f"models/{model_id}.pt"), at),
            NewEvent(ev.EngineBuilt(engine_id=engine_id, model=CLASSIFIER, model_id=model_id, onnx_sha256=HASH,
                                    dataset_version_id=version_id, manifest_hash=manifest_hash,
                                    backend="onnxruntime", precision="fp32", device="cpu", library_versions={},
                                    artifact_uri=f"engines/{engine_id}.bin"), at),
        ]
    cat.append(events)


def traces(cat: catalog.Catalog, n: int, first: int = 0) -> dict[str, list[float]]:
    """`part_audit` (what the Trace page and `visionledger trace part` show) of random parts, and reading
    those parts' event streams alone (`trace_part`): the baseline. With ``first``, also that many traces of
    parts whose engine predicted each class, each the first trace of a fresh process (`first_traces`)."""
    with cat.db.connect() as conn:
        parts = [r[0] for r in conn.exec_driver_sql(
            "SELECT part_id FROM projections.part_dispositions ORDER BY md5(part_id) LIMIT %(n)s", {"n": n + 2})]
    audits: list[int] = []

    def audit(i: int) -> None:
        result = part_audit(cat, parts[i])
        assert result.images and result.chains and all(c.manifest_verified for c in result.chains), parts[i]
        audits.append(len(result.timeline))

    out = {"audit": samples_ms(n, "trace of one part (part_audit)", audit),
           "streams": samples_ms(n, "the part's event streams alone", lambda i: trace_part(cat, parts[i]))}
    out["events_per_trace"] = [float(statistics.median(audits))]
    if first:
        firsts = parts_by_class(cat, first)
        out["first_of_class"] = samples_ms(len(firsts), "first traces of each class, the audit's memory cleared",
                                           lambda i: (forget_versions(), part_audit(cat, firsts[i])))
        out["first_in_process"] = first_traces(cat, firsts)
    return out


# The first trace in a process that has opened the catalog (connected: the login is not what is timed).
FIRST_TRACE = """import pathlib, sys, time
import catalog
from catalog.audit import forget_versions, part_audit
cat = catalog.open(catalog.Settings(home=pathlib.Path(sys.argv[1])))
cat.head()
started = time.perf_counter()
part_audit(cat, sys.argv[2])
print((time.perf_counter() - started) * 1000)"""


def parts_by_class(cat: catalog.Catalog, per_class: int) -> list[str]:
    """``per_class`` random parts for each class the main engine predicted."""
    with cat.db.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(
            "SELECT part_id FROM (SELECT part_id, predicted_class, row_number() OVER (PARTITION BY predicted_class"
            " ORDER BY md5(part_id)) AS k FROM projections.latest_predictions WHERE engine_id = %(e)s) p"
            " WHERE k <= %(n)s ORDER BY predicted_class, k", {"e": ENGINE_ID, "n": per_class})]


def first_traces(cat: catalog.Catalog, parts: list[str]) -> list[float]:
    """Milliseconds of the first trace of a process, one process for each of ``parts``: nothing of the version
    is in the process, and its connections to PostgreSQL are new (their catalog caches cold)."""
    out = []
    with progress_bar("first traces, each in a fresh process", len(parts)) as update:
        for k, part in enumerate(parts, start=1):
            done = subprocess.run([sys.executable, "-c", FIRST_TRACE, str(cat.settings.home), part], check=True,
                                  capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
            out.append(float(done.stdout.split()[-1]))
            update(k, len(parts))
    return out


def breakdowns(cat: catalog.Catalog, days: int, n: int) -> dict[str, list[float]]:
    """One day's per-part breakdown of labels and predictions as the `breakdowns` asset counts it, and the
    two GROUP BYs it is made of, alone: the baseline."""
    def day_of(i: int) -> tuple[date, datetime, datetime]:
        day = FIRST_DAY + timedelta(days=random.Random(i).randrange(days))
        start = datetime.combine(day, datetime.min.time(), UTC)
        return day, start, start + timedelta(days=1)

    def asset(i: int) -> None:  # per factory day of each line (the bare baseline: the UTC day)
        day, _, _ = day_of(i)
        assert label_breakdown(cat, day).num_rows and prediction_breakdown(cat, day).num_rows

    def bare(i: int) -> None:
        _, start, end = day_of(i)
        with cat.db.connect() as conn:
            conn.exec_driver_sql(
                "SELECT line, station, camera, part_id, label, label_ontology_version, excluded, count(*)"
                " FROM projections.images WHERE captured_at >= %(s)s AND captured_at < %(e)s GROUP BY 1, 2, 3, 4, 5, 6, 7",
                {"s": start, "e": end}).fetchall()
            conn.exec_driver_sql(
                "SELECT i.line, i.station, i.camera, i.part_id, p.engine_id, p.predicted_class, i.label,"
                " i.label_ontology_version, count(*) FROM projections.latest_predictions p"
                " JOIN projections.images i USING (sha256) WHERE i.captured_at >= %(s)s AND i.captured_at < %(e)s"
                " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8", {"s": start, "e": end}).fetchall()

    return {"asset": samples_ms(n, "one day's breakdown (the asset's code)", asset),
            "bare": samples_ms(n, "its two GROUP BYs alone", bare)}


def database_bytes(cat: catalog.Catalog) -> dict[str, int]:
    with cat.db.connect() as conn:
        return dict(conn.exec_driver_sql(
            "SELECT n.nspname, sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm')"
            " AND n.nspname IN ('catalog', 'projections') GROUP BY 1").fetchall())


# -- the run --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--events-per-image", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=5_000, help="events per append")
    parser.add_argument("--baseline-events", type=int, default=500_000,
                        help="events also COPYed bare for the append baseline")
    parser.add_argument("--samples", type=int, default=200, help="curator queries, traces and breakdowns timed")
    parser.add_argument("--no-rebuild", action="store_true", help="skip the rebuild (scratch replay, compare, swap)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown table's file")
    parser.add_argument("--trace-only", action="store_true",
                        help="load, catch up, publish the version and time the traces only (bench/out/bench_scale_trace.json)")
    parser.add_argument("--version-at", type=float, default=1.0,
                        help="where in the log the dataset version is cut, as a fraction (the labels after it count"
                             " as relabelled since)")
    parser.add_argument("--first-traces", type=int, default=5,
                        help="first traces in a fresh process, per class the main engine predicted")
    args = parser.parse_args()
    if args.trace_only:
        args.baseline_events = 0
    command = "python bench/bench_scale.py " + " ".join(sys.argv[1:])
    days = -(-args.images // IMAGES_PER_DAY)
    f: dict[str, Any] = {"images": args.images, "days": days, "started": datetime.now(UTC).isoformat()}

    with temp_catalog() as cat:
        f["load"] = load(cat, args)
        head = cat.head()
        console.print(f"appended {head:,} events in {f['load']['append_s']:.0f} s")
        # On two connections, as `visionledger projections catch-up` does a long catch-up.
        with progress_bar("read models from zero (catch-up, 2 connections)", head) as update:
            f["catch_up_s"] = timed(lambda: cat.projections.catch_up(progress=update, connections=2)).seconds
        if args.trace_only:
            f["analyze_s"] = timed(lambda: analyze(cat)).seconds
            version_and_traces(cat, f, args)
            f["events"] = cat.head()
            return trace_report(f, command)
        f["read_log_events"] = min(head, 2_000_000)  # the rate is flat along the log: a fifth of it will do
        f["read_log_s"] = f["read_log_events"] / read_only_rate(cat, f["read_log_events"], page_size=20_000)
        if not args.no_rebuild:
            with progress_bar("rebuild (scratch replay, compare, swap)", head) as update:
                rebuilt = timed(lambda: rebuild(cat.db, progress=update))
            f["rebuild_s"] = rebuilt.seconds
            assert rebuilt.result.equal, rebuilt.result.tables
        f["analyze_s"] = timed(lambda: analyze(cat)).seconds
        f["bytes"] = database_bytes(cat)

        f["curator_ms"] = curator_queries(cat, days, args.samples)
        f["bare_rows_s"] = timed(lambda: bare_read(cat)).seconds
        version_and_traces(cat, f, args)
        f["breakdown_ms"] = breakdowns(cat, days, args.samples)
        f["events"] = cat.head()
    f["finished"] = datetime.now(UTC).isoformat()
    rows = result_rows(f, command)
    report("bench_scale", f"a catalog of {args.images:,} images and {f['events']:,} events", [
        (r["figure"], r["value"], r["baseline"]) for r in rows], f)
    write_results(args.results, f, rows)


def version_and_traces(cat: catalog.Catalog, f: dict[str, Any], args: argparse.Namespace) -> None:
    """A dataset version over every image labelled at ``--version-at``, built then published (with what the
    trace keeps of it), the engines' lineage down to it, and the traces."""
    position = round(cat.head() * args.version_at)
    built = timed(lambda: build_dataset_version(cat.db, ALL_LABELLED, position=position))
    published = timed(lambda: publish_dataset_version(cat, ALL_LABELLED, position=position, actor="bench"))
    f["build_s"], f["publish_s"] = built.seconds, published.seconds
    f["dataset_images"], f["version_position"] = built.result.counts["images"], position
    register_lineage(cat, published.result.version_id, published.result.manifest_hash)
    f["trace_ms"] = traces(cat, args.samples, args.first_traces)


def trace_report(f: dict[str, Any], command: str) -> None:
    """The traces alone: warm p50 / p95, the first of each class in a fresh process, beside the part's event
    streams alone."""
    t = f["trace_ms"]
    warm, first, fresh, streams = (percentiles(t[k], (50, 95))
                                   for k in ("audit", "first_of_class", "first_in_process", "streams"))
    f["finished"] = datetime.now(UTC).isoformat()
    report("bench_scale_trace", f"traces on a catalog of {f['images']:,} images and {f['events']:,} events "
           f"(a version of {f['dataset_images']:,} images at position {f['version_position']:,})", [
        ("trace of one part p50 / p95 (ms)", f"{warm['p50']:.1f} / {warm['p95']:.1f}",
         f"{len(t['audit'])} traces, median {t['events_per_trace'][0]:.0f} events; target p95 ≤ 50"),
        ("first trace of a class, what the process remembers of the version forgotten: p50 / p95 / max (ms)",
         f"{first['p50']:.1f} / {first['p95']:.1f} / {max(t['first_of_class']):.1f}",
         f"{len(t['first_of_class'])} traces; target ≤ 50"),
        ("first trace of a fresh process (new connections): p50 / p95 / max (ms)",
         f"{fresh['p50']:.1f} / {fresh['p95']:.1f} / {max(t['first_in_process']):.1f}",
         f"{len(t['first_in_process'])} processes"),
        ("baseline: the part's event streams alone p50 / p95 (ms)", f"{streams['p50']:.1f} / {streams['p95']:.1f}",
         f"trace p95 = {warm['p95'] / streams['p95']:.1f} × the streams"),
        ("publish (build + manifest + what the trace keeps + event) / build alone (s)",
         f"{f['publish_s']:.1f} / {f['build_s']:.1f}", ""),
    ], f | {"command": command})


def result_rows(f: dict[str, Any], command: str) -> list[dict[str, str]]:
    """The table's rows: figure, value, baseline in the same run, ratio, command."""
    load, sample = f["load"], f["load"]["sample"]
    events = load["events"]
    append_rate, sample_append = events / load["append_s"], sample["events"] / sample["append_s"]
    bare_rate = sample["events"] / sample["bare_s"]
    read_rate = f["read_log_events"] / f["read_log_s"]
    p = {name: percentiles(f[key][which], (50, 95)) for name, key, which in (
        ("curator", "curator_ms", "catalog"), ("plain", "curator_ms", "plain"), ("audit", "trace_ms", "audit"),
        ("streams", "trace_ms", "streams"), ("first", "trace_ms", "first_of_class"),
        ("fresh", "trace_ms", "first_in_process"), ("breakdown", "breakdown_ms", "asset"), ("bare", "breakdown_ms", "bare"))}

    def row(figure: str, value: str, baseline: str, ratio: str) -> dict[str, str]:
        return {"figure": figure, "value": value, "baseline": baseline, "ratio": ratio, "command": command}

    rows = [
        row(f"append, batches of 5,000 ({events:,} events)", f"{append_rate:,.0f} events/s",
            f"bare binary COPY of the same events, no checks or indexes: {bare_rate:,.0f} events/s "
            f"(first {sample['events']:,} events, in turn with append's {sample_append:,.0f}/s)",
            f"{append_rate / bare_rate:.2f} × (first {sample['events']:,}: {sample_append / bare_rate:.2f} ×)"),
        row(f"read models from zero (catch-up of all {len(ALL_PROJECTIONS)}, two connections)", f"{events / f['catch_up_s']:,.0f} events/s "
            f"({f['catch_up_s'] / 60:.1f} min)", f"reading the log alone: {read_rate:,.0f} events/s",
            f"{events / f['catch_up_s'] / read_rate:.2f} ×"),
    ]
    if "rebuild_s" in f:
        rows.append(row("rebuild (scratch replay + compare + swap)", f"{f['rebuild_s'] / 60:.1f} min "
                        f"({events / f['rebuild_s']:,.0f} events/s)", f"reading the log alone: {read_rate:,.0f} events/s",
                        f"{events / f['rebuild_s'] / read_rate:.2f} ×"))
    rows += [
        row("curator query p95 (line, 7 days, class; page of 100)", f"{p['curator']['p95']:.1f} ms "
            f"(p50 {p['curator']['p50']:.1f})", f"a plain table with an index for this query: p95 "
            f"{p['plain']['p95']:.1f} ms (p50 {p['plain']['p50']:.1f})", f"{p['curator']['p95'] / p['plain']['p95']:.1f} ×"),
        row(f"trace of one part p95 (median {f['trace_ms']['events_per_trace'][0]:.0f} events, "
            f"{len(SHADOW_ENGINES) + 1} engine chains)", f"{p['audit']['p95']:.0f} ms (p50 {p['audit']['p50']:.0f}; "
            f"first of a class p95 {p['first']['p95']:.0f}, in a fresh process {p['fresh']['p95']:.0f})",
            f"the part's event streams alone: p95 {p['streams']['p95']:.1f} ms",
            f"{p['audit']['p95'] / p['streams']['p95']:.1f} ×"),
        row(f"one day's per-part breakdown p95 ({IMAGES_PER_DAY:,} images, labels + predictions)",
            f"{p['breakdown']['p95']:.0f} ms (p50 {p['breakdown']['p50']:.0f}; all {f['days']} days "
            f"≈ {p['breakdown']['p50'] * f['days'] / 1000:.0f} s)", f"its two GROUP BYs alone: p95 {p['bare']['p95']:.0f} ms",
            f"{p['breakdown']['p95'] / p['bare']['p95']:.1f} ×"),
        row(f"dataset version over every labelled image ({f['dataset_images']:,})",
            f"build {f['build_s']:.1f} s; publish (build + manifest + what the trace keeps + event) {f['publish_s']:.1f} s",
            f"bare COPY of its rows: {f['bare_rows_s']:.1f} s", f"{f['build_s'] / f['bare_rows_s']:.1f} ×"),
        row("size on disk", f"{sum(f['bytes'].values()) / 2**30:.1f} GiB "
            f"({f['bytes'].get('catalog', 0) / events:,.0f} bytes/event in the log, "
            f"{f['bytes'].get('projections', 0) / f['images']:,.0f} bytes/image in the read models)", "", ""),
    ]
    return rows


def write_results(path: Path, f: dict[str, Any], rows: list[dict[str, str]]) -> None:
    lines = [
        "# Scale benchmark results", "",
        f"A synthetic catalog of **{f['images']:,} images** and **{f['events']:,} events** over {f['days']} days "
        "(no pixels), on one machine: "
        f"{os.cpu_count()} cores, embedded PostgreSQL 15 with its default settings. Written by "
        "`bench/bench_scale.py` (its docstring says what each figure times); run "
        f"{f['started'][:16]}–{f['finished'][11:16]} UTC. Ratios are against a baseline measured in the same run.",
        "", "| figure | measured | baseline (same run) | ratio | command |", "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['figure']} | {r['value']} | {r['baseline']} | {r['ratio']} | `{r['command']}` |" for r in rows]
    # What people wrote under the table (from a "## " heading on) stays.
    kept = path.read_text().partition("\n## ") if path.exists() else ("", "", "")
    path.write_text("\n".join(lines) + "\n" + (f"\n## {kept[2]}" if kept[1] else ""))
    console.print(f"table written to {path}")


if __name__ == "__main__":
    main()
