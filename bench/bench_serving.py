"""The line's view of serving: 2048 x 2048 gray frames through the HTTP API (`visionledger serve`, a separate
process), frames/s and p50 / p99 latency, against the engine alone on the same frames' tiles in the same run,
so the API's overhead (decode, hashing, storing, events, HTTP) shows as a ratio. Target: >= 20 frames/s.

The engine is the default classifier architecture (its weights barely matter to speed: a one-epoch model is
trained to have a registered, exported model with full lineage), exported at 512 px, on ONNX Runtime (CPU),
in fp32 and then in int8 (learned convolutions quantised), each alone and through the API in the same run.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
from common import console, percentiles, report, small_served_classifier, temp_catalog

from identity.stations import issue
from models.training import ClassifierParams
from serving.engines import build_engine, load_engine

FRAME = 2048


def _frames(factory: Path, n: int) -> list[bytes]:
    """`n` distinct 2048 x 2048 PNG frames, each a 4 x 4 mosaic of the factory's 512 px images."""
    with (factory / "labels.csv").open(encoding="utf-8", newline="") as f:  # damaged files are never labelled
        paths = [factory / row["path"] for row in csv.DictReader(f)]
    tiles = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        pick = rng.choice(len(tiles), 16)
        mosaic = np.vstack([np.hstack([tiles[pick[4 * r + c]] for c in range(4)]) for r in range(4)])
        frames.append(cv2.imencode(".png", mosaic)[1].tobytes())
    return frames


def _engine_alone(engine, frames: list[bytes], repeats: int) -> tuple[float, float]:
    """(frames/s of the engine on 16 tiles per frame, ms to decode one PNG frame)."""
    decoded = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_GRAYSCALE) for f in frames[:4]]
    started = time.perf_counter()
    for f in frames[:4]:
        cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_GRAYSCALE)
    decode_ms = (time.perf_counter() - started) / 4 * 1000
    batches = [d.reshape(4, 512, 4, 512).transpose(0, 2, 1, 3).reshape(16, 512, 512).copy() for d in decoded]
    engine.infer(batches[0])  # warm-up
    started = time.perf_counter()
    for i in range(repeats):
        engine.infer(batches[i % len(batches)])
    return repeats / (time.perf_counter() - started), decode_ms


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _through_http(env: dict[str, str], token: str, frames: list[bytes], clients: int, args) -> dict:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "serve", "--port", str(port), "--max-batch", str(args.max_batch),
         "--max-wait-ms", str(args.max_wait_ms)], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {server.stderr.read()}") from None
                time.sleep(0.3)
        latencies: list[float] = []
        lock = threading.Lock()
        start_at = datetime.now(UTC) - timedelta(hours=6)  # inside the server's window of capture times
        counter = iter(range(10**9))

        def post(client: httpx.Client, i: int) -> None:
            sent = time.perf_counter()
            response = client.post(f"{url}/v1/inspect", files={"image": ("f.png", frames[i % len(frames)])}, data={
                "part_id": f"bench-{i // 2}", "station": "st1", "camera": f"cam{i % 2 + 1}",
                "captured_at": (start_at + timedelta(seconds=i)).isoformat()}, timeout=120)
            response.raise_for_status()
            with lock:
                latencies.append(time.perf_counter() - sent)

        def worker(count: int) -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
                for _ in range(count):
                    post(client, next(counter))

        worker(2)  # warm-up: the first requests load the engine's kernels
        latencies.clear()
        per_client = args.frames // clients
        threads = [threading.Thread(target=worker, args=(per_client,)) for _ in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        health = httpx.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {token}"}).json()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"frames": len(latencies), "fps": len(latencies) / elapsed,
            "latency_ms": {k: v * 1000 for k, v in percentiles(latencies).items()},
            "mean_tiles_per_run": health["batches"]["mean_tiles"], "recorded_in": health["catalog"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=120, help="frames sent through the API per client setting")
    parser.add_argument("--clients", default="1,4", help="concurrent clients to try, comma separated")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--width", type=int, default=ClassifierParams().width, help="classifier width")
    parser.add_argument("--precisions", default="fp32,int8", help="engine precisions to serve in turn; the "
                        "first is the baseline")
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    with temp_catalog() as cat, tempfile.TemporaryDirectory() as tmp:
        factory = Path(tmp) / "factory"
        with console.status("simulating, ingesting, training one epoch, exporting…"):
            model_id = small_served_classifier(cat, factory, args.width)
            frames = _frames(factory, 24)
        # The server process finds the embedded PostgreSQL of the same home already running, and serves the
        # newest engine (there is no champion): the one just built.
        env = {**os.environ, "VISIONLEDGER_HOME": str(cat.settings.home)}
        token = issue(cat, line="line1", station="st1", expires_at=datetime.now(UTC) + timedelta(days=1),
                      issued_by="bench").token
        for precision in args.precisions.split(","):
            with console.status(f"building the {precision} engine, then the engine alone…"):
                engine_id = build_engine(cat, model_id=model_id, precision=precision,
                                         actor="bench").record.engine_id
                engine = load_engine(cat, engine_id)
                engine_fps, decode_ms = _engine_alone(engine, frames, repeats=20)
                engine.close()
            http = {}
            for clients in (int(c) for c in args.clients.split(",")):
                with console.status(f"{precision}: {args.frames} frames through HTTP from {clients} client(s)…"):
                    http[clients] = _through_http(env, token, frames, clients, args)
            figures[precision] = {"engine_fps": engine_fps, "decode_ms": decode_ms, "http": http}
    baseline = next(iter(figures))
    rows = [("PNG decode of one 2048² frame (ms)", figures[baseline]["decode_ms"], "")]
    for precision, f in figures.items():
        versus = "baseline" if precision == baseline else \
            f"{f['engine_fps'] / figures[baseline]['engine_fps']:.2f} × the {baseline} engine"
        rows.append((f"{precision} engine alone: frames/s (16 tiles of 512 px each)", f["engine_fps"], versus))
        for clients, h in f["http"].items():
            rows += [(f"{precision}, HTTP, {clients} client(s): frames/s", h["fps"],
                      f"target ≥ 20; {h['fps'] / f['engine_fps']:.2f} × the engine alone"),
                     (f"{precision}, HTTP, {clients} client(s): p50 / p99 latency (ms)",
                      f"{h['latency_ms']['p50']:.0f} / {h['latency_ms']['p99']:.0f}",
                      f"{h['mean_tiles_per_run']} tiles per engine run")]
    report("bench_serving", f"serving 2048 × 2048 frames on {os.cpu_count()} CPU cores (ONNX Runtime)", rows,
           {"precisions": figures, "args": vars(args)})


if __name__ == "__main__":
    main()
