"""A dataset version over 1,000,000 labelled images (events, no pixels): build time at the head and at an
older position (10,000 images relabelled since, so they are read back through the label history), with
per-part and per-day caps, and publish + checks. Target: <= 30 s. Baseline measured in the same run:
reading the same rows out of PostgreSQL with a bare COPY, the floor of any build."""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
from bench_backfill import CLASSES, FIRST, backfilled
from common import analyze, report, temp_catalog

from catalog.datasets import DatasetSpec, build_dataset_version, check_manifest, publish_dataset_version
from catalog.events import CorrectionRecorded
from catalog.store import NewEvent

ALL = DatasetSpec.parse({"name": "bench-all", "sampling": {"counts": dict.fromkeys(CLASSES, "all")}})
BALANCED = DatasetSpec.parse({
    "name": "bench-balanced", "sampling": {"proportions": {"ok": 0.5, "scratch": 0.2, "spot": 0.15, "crack": 0.15}},
    "balance": {"max_per_part": 2, "max_per_day": 2000}, "seed": 7})


def timed(runs: int, fn) -> tuple[float, object]:
    """Median seconds of ``runs`` calls, and the last result."""
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def bare_read(cat) -> int:
    """The rows a build needs, read with a bare COPY and nothing done with them."""
    with cat.db.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        buffer = io.BytesIO()
        with conn.cursor().copy(
            "COPY (SELECT i.sha256, i.part_id, i.line, i.station, i.camera, i.captured_at, i.label,"
            " i.label_ontology_version, cl.mask_uri, cl.regions FROM projections.images i"
            " LEFT JOIN projections.current_labels cl USING (sha256)"
            " WHERE NOT i.excluded AND i.label IS NOT NULL) TO STDOUT (FORMAT csv)") as copy:
            for chunk in copy:
                buffer.write(chunk)
        sa_conn.rollback()
    return buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--relabelled", type=int, default=10_000, help="images corrected after the older position")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vl-dataset-version-") as folder, temp_catalog() as cat:
        records = Path(folder) / "records.parquet"
        backfilled(cat, records, args.images, args.days, "labelled images")
        written = pq.read_table(records, columns=["sha256", "label"])
        labels = dict(zip(written["sha256"].to_pylist(), written["label"].to_pylist(), strict=True))
        older = cat.head()
        rng = random.Random(3)
        corrections = [NewEvent(CorrectionRecorded(
            sha256=sha, correction_id=f"bench-{sha[:16]}", target="label", old_label=labels[sha],
            new_label=rng.choice([c for c in CLASSES if c != labels[sha]]), corrected_by="dana",
            ontology_version=1), FIRST + timedelta(days=args.days + 1))
            for sha in rng.sample(sorted(labels), args.relabelled)]
        cat.append(corrections)
        analyze(cat)

        read_s, _ = timed(args.runs, lambda: bare_read(cat))
        head_s, head = timed(args.runs, lambda: build_dataset_version(cat.db, ALL))
        older_s, at_older = timed(args.runs, lambda: build_dataset_version(cat.db, ALL, position=older))
        balanced_s, balanced = timed(args.runs, lambda: build_dataset_version(cat.db, BALANCED))
        publish_s, published = timed(1, lambda: publish_dataset_version(cat, ALL, actor="bench"))
        check_s, outcomes = timed(1, lambda: check_manifest(cat, published.version.manifest, ALL,
                                                            published.version.position))
        changed = sum(1 for a, b in zip(head.manifest["class"].to_pylist(), at_older.manifest["class"].to_pylist(),
                                        strict=True) if a != b)
        assert changed == args.relabelled and all(o.passed for o in outcomes)
    report("bench_dataset_version", f"a dataset version over {args.images:,} labelled images", [
        ("bare COPY of the rows (s, baseline)", read_s, "the floor of any build"),
        ("build at the head, all classes (s)", head_s,
         f"{head_s / read_s:.1f} × baseline; {head.counts['images']:,} images, {head.counts['parts']:,} parts"),
        ("build at an older position (s)", older_s, f"{args.relabelled:,} images read back through the history"),
        ("build with stratification + caps (s)", balanced_s, f"{balanced.counts['images']:,} images selected"),
        ("publish: build + manifest + event (s)", publish_s, "target ≤ 30"),
        ("the four checks (s)", check_s, ""),
    ], {"images": args.images, "read_s": read_s, "build_head_s": head_s, "build_older_s": older_s,
        "build_balanced_s": balanced_s, "publish_s": publish_s, "checks_s": check_s,
        "manifest_rows": head.counts["images"], "balanced_rows": balanced.counts["images"]})


if __name__ == "__main__":
    main()
