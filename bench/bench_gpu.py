"""The classifier on a GPU, in one self-contained run (< 10 min on one NVIDIA GPU): tiles/s at fp32 and fp16
for batches 1 to 256, the latency of one 2048 x 2048 frame (16 tiles of 512 px in one batch), and the
training seconds of the model-quality benchmark's training set (a simulated real-surface delivery, masks).
Writes its figures to a JSON file (default bench/out/bench_gpu.json).

The anchor: NVIDIA's UNet_Industrial, 823 images/s at 512 px, batch 16, on an A100 (fp32, TF32 on).

    python bench/bench_gpu.py [--device cuda:0] [--out FILE] [--quick]

`--quick --device cpu` runs every step at a toy size, to check the script where no GPU is at hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ingestion.simulated_factory import simulate_factory
from ingestion.simulator.photos import DEFAULT_SURFACES
from models.classifier import DefectClassifier
from models.data import Sample, SampleSet, to_input
from models.training import ClassifierParams, train_classifier

CLASSES = ("ok", "crack", "scratch", "spot")
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def tiles_per_second(model: DefectClassifier, device: torch.device, dtype: torch.dtype, batch: int, size: int,
                     seconds: float) -> float:
    x = to_input(np.random.default_rng(0).integers(0, 256, (batch, size, size), dtype=np.uint8))
    x = x.to(device, dtype)
    for _ in range(3):  # warm-up: kernels chosen, memory pooled
        model(x)
    _sync(device)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model(x)
        runs += 1
    _sync(device)
    return runs * batch / (time.perf_counter() - started)


@torch.no_grad()
def frame_latency_ms(model: DefectClassifier, device: torch.device, dtype: torch.dtype, size: int,
                     repeats: int) -> dict[str, float]:
    frame = np.random.default_rng(1).integers(0, 256, (4 * size, 4 * size), dtype=np.uint8)
    times = []
    for i in range(repeats + 3):
        started = time.perf_counter()
        tiles = frame.reshape(4, size, 4, size).transpose(0, 2, 1, 3).reshape(16, size, size)
        probabilities, _ = model(to_input(tiles).to(device, dtype))
        probabilities.float().cpu()
        _sync(device)
        if i >= 3:
            times.append((time.perf_counter() - started) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def training_seconds(device: torch.device, quick: bool) -> dict[str, float]:
    """Train the default classifier on a simulated real-surface delivery with masks, as the benchmark does."""
    with tempfile.TemporaryDirectory() as tmp:
        factory = Path(tmp) / "factory"
        summary = simulate_factory(factory, days=2 if quick else 7, seed=5, size="tiny" if quick else "bench",
                                   image_size=128 if quick else 512, surfaces=DEFAULT_SURFACES[:3])
        with summary.labels_path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        samples = [Sample(sha256=r["path"], label=r["label"], split="train",
                          mask_uri=r["mask_path"] or None) for r in rows]
        train = SampleSet(samples, lambda p: cv2.imread(str(factory / p), cv2.IMREAD_GRAYSCALE),
                          lambda p: cv2.imread(str(factory / p), cv2.IMREAD_GRAYSCALE))
        params = ClassifierParams(epochs=1 if quick else ClassifierParams().epochs)
        result = train_classifier(train, params, classes=CLASSES, device=device)
    return {"images": len(samples), "epochs": params.epochs, "seconds": result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bench_gpu.json")
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per throughput point")
    parser.add_argument("--quick", action="store_true", help="toy sizes, to check the script")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs an NVIDIA GPU (or --quick --device cpu to check it)")
    size = 128 if args.quick else 512
    batches = BATCHES[:3] if args.quick else BATCHES
    seconds = 0.2 if args.quick else args.seconds
    torch.backends.cudnn.benchmark = True
    figures: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                     "torch": torch.__version__, "tile": size, "throughput": {}, "frame_ms": {}}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        if dtype == torch.float16 and device.type != "cuda":
            continue
        model = DefectClassifier(CLASSES).to(device, dtype).eval()
        figures["throughput"][name] = {b: tiles_per_second(model, device, dtype, b, size, seconds) for b in batches}
        figures["frame_ms"][name] = frame_latency_ms(model, device, dtype, size, 5 if args.quick else 50)
        print(name, {b: round(v) for b, v in figures["throughput"][name].items()}, figures["frame_ms"][name],
              flush=True)
    figures["training"] = training_seconds(device, args.quick)
    figures["anchor"] = "UNet_Industrial: 823 images/s at 512 px, batch 16, A100"
    print(figures["training"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
