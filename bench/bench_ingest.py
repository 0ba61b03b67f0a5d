"""Ingestion images/s for 512x512 PNGs, as a ratio to a floor measured in the same run: decoding and hashing
the same files with the same number of processes, nothing else. Target: ratio >= 0.6."""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from common import console, progress_bar, report, temp_catalog

from ingestion.ingest import ingest
from ingestion.simulated_factory import simulate_factory


def decode_and_hash(path: str) -> str:
    """The floor's whole job per file: what any ingester must do at least (the delivery's few broken files
    included: decoding them fails, as it does for the ingester)."""
    data = Path(path).read_bytes()
    with contextlib.suppress(cv2.error):
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return hashlib.sha256(data).hexdigest()


def floor_rate(paths: list[str], workers: int) -> float:
    """Files per second through decode + SHA-256 on ``workers`` processes started the way ingest starts them."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ingestion.inspect_file"])
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        for _ in pool.map(decode_and_hash, paths, chunksize=8):
            pass
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="medium", help="simulated factory size preset")
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vl-bench-ingest-"))
    factory = work / "factory"
    with progress_bar("simulating the factory", 1) as update:
        summary = simulate_factory(factory, days=args.days, seed=7, size=args.size, image_size=512, progress=update)
    with open(factory / "manifest.csv") as f:
        paths = [str(factory / row["path"]) for row in csv.DictReader(f) if (factory / row["path"]).is_file()]
    floor_rate(paths, args.workers)  # warm the page cache and the forkserver: neither side pays for cold disks
    floors = [floor_rate(paths, args.workers)]
    with temp_catalog() as cat, progress_bar(f"ingesting {len(paths):,} images", len(paths)) as update:
        started = time.perf_counter()
        result = ingest(cat, factory / "manifest.csv", workers=args.workers, progress=update)
        seconds = time.perf_counter() - started
    floors.append(floor_rate(paths, args.workers))  # and once after, to see drift in the machine's load
    rows = result.ingested + result.duplicates + result.rejected
    rate, floor = rows / seconds, max(floors)
    console.print(f"{summary.images} images simulated; {result.ingested} new, {result.duplicates} duplicates, "
                  f"{result.rejected} rejected")
    report("bench_ingest", "ingestion of 512x512 PNGs", [
        ("manifest rows", rows, f"{args.size} factory, {args.days} days"),
        ("workers", args.workers, "the same for ingest and floor"),
        ("floor: decode + SHA-256 (images/s)", floor, f"best of {[round(f, 1) for f in floors]}"),
        ("ingest, end to end (images/s)", rate, "validate, hash, stage, thumbnail, append, promote, catch up"),
        ("ratio ingest / floor", rate / floor, "target >= 0.6"),
    ], {"rows": rows, "workers": args.workers, "floor_images_per_s": floors, "ingest_images_per_s": rate,
        "ratio": rate / floor, "ingest_seconds": seconds, "report": result.to_json()})


if __name__ == "__main__":
    main()
