"""What stations' authentication costs the line: /v1/inspect p50 with a token (verified on every request, the
rate limit counted) against the same app with authentication and the rate limit switched off, in the same run.

Both apps serve one engine in this process, each on its own local port, and the requests alternate between
them, so that load on the machine falls on both alike; each sends its own half of the images. The frames are small (the factory's 512 px images) and
the classifier narrow, so that the request's fixed costs, authentication among them, weigh the most they can.
Target: with tokens ≤ 10 % slower.
"""

from __future__ import annotations

import argparse
import csv
import socket
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from common import console, percentiles, report, small_served_classifier, temp_catalog

from identity.stations import issue
from serving.api import create_app
from serving.engines import build_engine
from serving.service import InspectionService, ServeConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(service: InspectionService, *, authenticate: bool) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service, authenticate=authenticate), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="requests to each app")
    parser.add_argument("--width", type=int, default=8, help="classifier width")
    args = parser.parse_args()
    with temp_catalog() as cat, tempfile.TemporaryDirectory() as tmp:
        factory = Path(tmp) / "factory"
        with console.status("simulating, ingesting, training one epoch, exporting, building the engine…"):
            model_id = small_served_classifier(cat, factory, args.width)
            engine_id = build_engine(cat, model_id=model_id, actor="bench").record.engine_id
        with (factory / "labels.csv").open(encoding="utf-8", newline="") as f:  # damaged files are never labelled
            images = [(factory / row["path"]).read_bytes() for row in csv.DictReader(f)]
        token = issue(cat, line="line1", station="st1", expires_at=datetime.now(UTC) + timedelta(days=1),
                      issued_by="bench").token
        config = ServeConfig(engine_id=engine_id, max_wait_ms=0, spool=Path(tmp) / "spool-on")
        apps = {
            "with tokens": (InspectionService(cat, config), True, {"Authorization": f"Bearer {token}"}),
            "without": (InspectionService(cat, replace(config, rate_limit=None, spool=Path(tmp) / "spool-off")),
                        False, {}),
        }
        started = {name: _start(service, authenticate=auth) for name, (service, auth, _) in apps.items()}
        latencies: dict[str, list[float]] = {name: [] for name in apps}
        first = datetime(2026, 3, 20, 8, tzinfo=UTC)
        try:
            with httpx.Client(timeout=60) as client, console.status(f"{args.requests} requests to each app…"):
                for i in range(-20, args.requests):  # the first 20 warm both up and are not counted
                    for k, (name, (_, _, headers)) in enumerate(apps.items()):
                        n = i + 20
                        # Each app its own half of the images: the first to send an image stores its bytes.
                        image = images[(2 * n + k) % len(images)]
                        sent = time.perf_counter()
                        response = client.post(f"{started[name][2]}/v1/inspect", headers=headers, data={
                            "part_id": f"{name}-{n}", "line": "line1", "station": "st1", "camera": "cam1",
                            "captured_at": (first + timedelta(seconds=n)).isoformat()},
                            files={"image": ("f.png", image)})
                        response.raise_for_status()
                        if i >= 0:
                            latencies[name].append(time.perf_counter() - sent)
        finally:
            for server, thread, _ in started.values():
                server.should_exit = True
                thread.join()
    p50 = {name: percentiles(samples)["p50"] * 1000 for name, samples in latencies.items()}
    ratio = p50["with tokens"] / p50["without"]
    rows = [(f"/v1/inspect p50, {name} (ms)", value, "") for name, value in p50.items()]
    rows.append(("with tokens / without", ratio, "target ≤ 1.10"))
    report("bench_auth", "the cost of stations' tokens on /v1/inspect (512 px images, one client)", rows,
           {"p50_ms": p50, "p95_ms": {n: percentiles(s)["p95"] * 1000 for n, s in latencies.items()},
            "ratio": ratio, "args": vars(args)})


if __name__ == "__main__":
    main()
