"""Full-size quality run: train both networks on a simulated factory and measure them on held-out parts.

A development check of the models package, not a test (it takes minutes): `python -m models.quality`.
Training uses the labels as curators receive them (wrong ones included, corrections applied); the held-out
parts are judged against the simulator's truth. It imports the simulator only inside `simulated_manifest`,
so nothing else in this package depends on `ingestion`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from models.checkpoint import save_model
from models.classifier import classify
from models.data import SampleSet
from models.evaluation import evaluate_classifier, evaluate_segmenter
from models.export import export_classifier, export_segmenter
from models.training import ClassifierParams, SegmenterParams, train_classifier, train_segmenter

MASK_URI_PREFIX = "blob:"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _split_of(part_id: str, validation: float, test: float) -> str:
    # By part, from a hash of its id: both cameras of a part land in one split, whatever the row order.
    u = int(hashlib.sha256(part_id.encode()).hexdigest()[:8], 16) / 2**32
    return "test" if u < test else "validation" if u < test + validation else "train"


def simulated_manifest(
    factory: Path, *, validation: float = 0.1, test: float = 0.3
) -> tuple[pa.Table, dict[str, Path], dict[str, str]]:
    """A manifest in the dataset-version layout built from a simulator run's files, the blob paths by hash
    (images and masks), and the true class of every image by hash."""
    truth = {r["path"]: r["true_label"] for r in _read_csv(factory / "truth.csv")}
    captured = {r["path"]: r for r in _read_csv(factory / "manifest.csv")}
    corrected = {r["label_id"]: r["new_label"] for r in _read_csv(factory / "corrections.csv")}
    blobs: dict[str, Path] = {}
    true_class: dict[str, str] = {}

    def blob(relative: str) -> str:
        path = factory / relative
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        blobs[sha] = path
        return sha

    rows = []
    for label in _read_csv(factory / "labels.csv"):  # broken files were never labelled
        sha = blob(label["path"])
        true_class[sha] = truth[label["path"]]
        where = captured[label["path"]]
        at = datetime.fromisoformat(where["captured_at"])
        rows.append(
            {
                "sha256": sha,
                "class": corrected.get(label["label_id"], label["label"]),
                "split": _split_of(label["part_id"], validation, test),
                "part_id": label["part_id"],
                "day": at.date(),
                "line": where["line"],
                "station": where["station"],
                "camera": where["camera"],
                "captured_at": at,
                "mask_uri": MASK_URI_PREFIX + blob(label["mask_path"]) if label["mask_path"] else None,
                "regions": json.dumps([{"shape": "ellipse", **json.loads(label["region"])}])
                if label["region"]
                else None,
            }
        )
    counts = Counter(r["class"] for r in rows)
    for r in rows:  # class-balancing weight: each class weighs as much as any other in all
        r["weight"] = len(rows) / (len(counts) * counts[r["class"]])
    return pa.Table.from_pylist(rows), blobs, true_class


def _read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"cannot read {path}")
    return image


def run_quality(
    out: Path,
    *,
    days: int = 10,
    seed: int = 7,
    size: str = "small",
    image_size: int = 512,
    classifier: ClassifierParams | None = None,
    segmenter: SegmenterParams | None = None,
    min_precision: float = 0.95,
    device: str = "cpu",
) -> dict[str, Any]:
    """Simulate, train, evaluate on the test split against the truth, export ONNX; returns the figures and
    writes them to `out/quality.json`."""
    from ingestion.simulated_factory import CLASSES, simulate_factory

    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "days": days,
        "seed": seed,
        "size": size,
        "image_size": image_size,
        "device": device,
        "classifier_params": (classifier or ClassifierParams()).to_dict(),
        "segmenter_params": (segmenter or SegmenterParams()).to_dict(),
    }
    started = time.perf_counter()
    simulate_factory(out / "factory", days=days, seed=seed, size=size, image_size=image_size)
    manifest, blobs, true_class = simulated_manifest(out / "factory")
    report["simulate_seconds"] = round(time.perf_counter() - started, 1)

    def load_image(sha: str) -> np.ndarray:
        return _read_png(blobs[sha])

    def load_mask(uri: str) -> np.ndarray:
        return _read_png(blobs[uri.removeprefix(MASK_URI_PREFIX)])

    samples = SampleSet.from_manifest(manifest, load_image, load_mask)
    train, validation = samples.split("train"), samples.split("validation")
    # Held-out parts judged against what is really there, not what a labeler said; masks exist exactly for
    # the truly defective images (the simulator writes one per drawn defect).
    test_truth = SampleSet(
        [replace(s, label=true_class[s.sha256]) for s in samples.split("test")], load_image, load_mask
    )
    report["images"] = {
        name: dict(Counter(part.labels)) for name, part in (("train", train), ("validation", validation))
    }
    report["images"]["test_truth"] = dict(Counter(test_truth.labels))
    _say(f"simulated in {report['simulate_seconds']} s: {report['images']}")

    result = train_classifier(
        train,
        classifier,
        validation=validation,
        classes=CLASSES,
        progress=_progress("classifier"),
        device=device,
    )
    report["classifier_train_seconds"] = round(result.seconds, 1)
    report["classifier_history"] = {k: v for k, v in result.history.items() if k != "validation"}
    report["classifier_validation"] = result.metrics
    t = time.perf_counter()
    images = [test_truth.image(i) for i in range(len(test_truth))]
    classification = classify(result.model, images)
    report["classifier_ms_per_image"] = round(1000 * (time.perf_counter() - t) / len(images), 1)
    report["classifier_test"] = evaluate_classifier(
        result.model, test_truth, min_precision=min_precision, classification=classification
    )
    report["classifier_sha256"] = save_model(out / "classifier.vlmodel", result.model, result.params)
    _say(f"classifier: {_brief(report['classifier_test'])}")

    seg = train_segmenter(
        train, segmenter, validation=validation, progress=_progress("segmenter"), device=device
    )
    report["segmenter_train_seconds"] = round(seg.seconds, 1)
    report["segmenter_history"] = {k: v for k, v in seg.history.items() if k != "validation"}
    report["segmenter_validation"] = seg.metrics
    report["segmenter_test"] = evaluate_segmenter(seg.model, test_truth)
    report["segmenter_sha256"] = save_model(out / "segmenter.vlmodel", seg.model, seg.params)
    _say(f"segmenter: {report['segmenter_test']}")
    _write_report(out, report)  # the figures survive an export that fails its parity check

    check = np.stack(images[:3])
    exported = export_classifier(
        result.model, out / "classifier.onnx", input_size=check.shape[1:], check_images=check
    )
    report["classifier_onnx_max_diff"] = exported.max_abs_diff
    exported = export_segmenter(
        seg.model, out / "segmenter.onnx", input_size=check.shape[1:], check_images=check
    )
    report["segmenter_onnx_max_diff"] = exported.max_abs_diff
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    _write_report(out, report)
    return report


def _write_report(out: Path, report: dict[str, Any]) -> None:
    (out / "quality.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


def _brief(figures: dict[str, Any]) -> str:
    keys = (
        "accuracy",
        "average_precision",
        "recall_at_min_precision",
        "cost_false_accepts",
        "cost_false_rejects",
    )
    return ", ".join(f"{k}={figures.get(k)}" for k in keys)


def _say(text: str) -> None:
    print(text, flush=True)


def _progress(name: str) -> Callable[[int, int], None]:
    started = time.perf_counter()
    shown = [-1]

    def report(done: int, total: int) -> None:
        tenth = 10 * done // total
        if tenth != shown[0]:
            shown[0] = tenth
            _say(f"{name}: {done}/{total} steps, {time.perf_counter() - started:.0f} s")

    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="empty or absent directory for the factory, models and report")
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", default="small")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, help="override both networks' epochs")
    parser.add_argument("--samples-per-epoch", type=int, help="override both networks' crops per epoch")
    parser.add_argument("--width", type=int, help="override both networks' width")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda")
    args = parser.parse_args(argv)
    overrides = {
        name: value
        for name, value in (
            ("epochs", args.epochs),
            ("samples_per_epoch", args.samples_per_epoch),
            ("width", args.width),
        )
        if value
    }
    cls_params = replace(ClassifierParams(), **overrides)
    seg_params = replace(SegmenterParams(), **overrides)
    report = run_quality(
        args.out,
        days=args.days,
        seed=args.seed,
        size=args.size,
        image_size=args.image_size,
        classifier=cls_params,
        segmenter=seg_params,
        device=args.device,
    )
    test, seg = report["classifier_test"], report["segmenter_test"]
    _say(
        f"recall at precision >= {test.get('min_precision')}: {test.get('recall_at_min_precision')}, "
        f"AP {test.get('average_precision')}, dice {seg.get('dice')}, "
        f"train {report['classifier_train_seconds']} s + {report['segmenter_train_seconds']} s, "
        f"ONNX diff {report['classifier_onnx_max_diff']} {report['segmenter_onnx_max_diff']}"
    )


if __name__ == "__main__":
    main()
