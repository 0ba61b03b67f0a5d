"""Model quality as a user meets it, through the product's own path, at three supervision levels.

For each surface source (real photographs shipped in installed wheels, and the procedural textures) one
delivery is simulated: >= 2,000 images of 512 px over 10 days, 3 lines, ~5 % wrong labels (half of them
corrected), a dimming lamp, stuck pixels, a dusty lens. Then, for each level of labels delivered (image-level
only, with an ellipse region per defect, with a pixel mask per defect), in a fresh catalog:

ontology -> `ingest` -> labels and corrections -> the `inspection-all` dataset version cut at the cut day
-> `train_model` with the defaults -> ONNX export -> evaluation (operating threshold chosen on validation)
-> ONNX Runtime engine -> `replay` of the later days through the server's inspection path -> embeddings and
the review queue.

Drift is judged against a twin: the same delivery rendered again with lamps, sensors and lenses as installed
(same scenes, defects and sensor noise), so recall on a drifted camera-day is set beside recall on the very
same parts without the drift, rather than beside other lines' surfaces.

Everything is judged against the delivery's truth (`truth.csv`, which curators never see): average
precision and recall at precision >= 0.95 / 0.99 of the served defect scores, per-class recall, image
precision and recall at the threshold the server used, part recall and the share of good parts rejected
(the served rule set's decisions), training seconds, and how many of the labels still wrong after the
corrections reach the top 100 of the review queue. PR curves and a sheet of the worst false alarms and
misses are saved as PNGs in bench/figures/.

    python bench/bench_model_quality.py [--surfaces photo,procedural] [--levels image,region,mask]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import altair as alt
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import vl_convert as vlc
from common import OUT, console, progress_bar, report, temp_catalog

from catalog.blobs import sha256_of
from catalog.datasets import DatasetSpec, publish_dataset_version
from catalog.embeddings import EmbeddingStore
from catalog.lineage import CLASSIFIER
from ingestion.ingest import ingest
from ingestion.labels import import_corrections, import_labels
from ingestion.ontology_publish import publish_ontology
from ingestion.simulated_factory import DRIFT, NO_DRIFT, CameraRef, simulate_factory
from ingestion.simulator.photos import DEFAULT_SURFACES
from learning.evaluation import EvaluationConfig, evaluate
from learning.review import EmbeddingConfig, ReviewQueueConfig, build_review_queue, embed_catalog
from learning.training import default_params, export_model, train_model
from models import metrics
from serving.engines import build_engine, load_engine
from serving.replay import replay
from serving.tiling import combine, cut_tiles

DATASET_SPEC = Path(__file__).resolve().parents[1] / "assets" / "dataset_specs" / "inspection_all.yaml"
FIGURES = Path(__file__).parent / "figures"
START = date(2026, 3, 2)
LEVELS = ("image", "region", "mask")
REVIEW_TOP = 100


def labels_for_level(factory: Path, level: str, out: Path) -> Path:
    """The delivery's labels as they would arrive at `level`: image-level drops regions and masks, region
    drops the masks."""
    with (factory / "labels.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if level in ("image", "region"):
            row["mask_path"] = ""
        if level == "image":
            row["region"] = ""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def truth_by_sha(factory: Path) -> dict[str, dict[str, str]]:
    truth = {}
    with (factory / "truth.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            path = factory / row["path"]
            if path.exists() and path.stat().st_size:
                truth[sha256_of(path.read_bytes())] = row | {"file": str(path)}
    return truth


def drift_of(path: str) -> str | None:
    """Which of the simulator's drifts touches the image at `path` (<line>/<day>/<station>/<part>_<camera>.png);
    the schedule puts each on cameras of its own, so at most one does."""
    line, day, station, name = path.split("/")
    camera = CameraRef(line, station, name.rsplit("_", 1)[1].removesuffix(".png"))
    return next(iter(DRIFT.touching(camera, (date.fromisoformat(day) - START).days)), None)


def served_figures(rows: list[dict], truth: dict[str, dict[str, str]], threshold: float) -> dict[str, Any]:
    """What the replayed engine did, judged against the truth."""
    rows = [r for r in rows if r["sha256"] in truth]
    is_defect = np.array([truth[r["sha256"]]["true_label"] != "ok" for r in rows])
    scores = np.array([r["defect_score"] for r in rows])
    called = np.array([r["predicted_class"] != "ok" for r in rows])
    out: dict[str, Any] = {
        "images": len(rows), "defective_images": int(is_defect.sum()),
        "average_precision": metrics.average_precision(is_defect, scores),
        "recall_at_precision_0.95": metrics.recall_at_precision(is_defect, scores, 0.95).recall,
        "recall_at_precision_0.99": metrics.recall_at_precision(is_defect, scores, 0.99).recall,
        "served_threshold": threshold,
        "served_image_precision": float(is_defect[called].mean()) if called.any() else 1.0,
        "served_image_recall": float(called[is_defect].mean()),
    }
    for kind in sorted({t["true_label"] for t in truth.values()} - {"ok"}):
        of_kind = np.array([truth[r["sha256"]]["true_label"] == kind for r in rows])
        out[f"served_recall_{kind}"] = float(called[of_kind].mean()) if of_kind.any() else float("nan")
    # The model's robustness: its recall on the camera-days a drift touched against the clean ones.
    drifted = np.array([drift_of(truth[r["sha256"]]["path"]) is not None for r in rows])
    for name, keep in (("drifted", drifted), ("clean", ~drifted)):
        chosen = keep & is_defect
        out[f"served_recall_{name}_camera_days"] = float(called[chosen].mean()) if chosen.any() else float("nan")
    final: dict[str, str] = {}
    for r in rows:  # the replay's rows are in capture order: a part's last row holds its final decision
        final[r["part_id"]] = r["part_decision"]
    bad = {truth[r["sha256"]]["part_id"] for r in rows if truth[r["sha256"]]["part_label"] != "ok"}
    good = set(final) - bad
    out |= {
        "parts": len(final), "defective_parts": len(bad),
        "part_recall": sum(final[p] == "reject" for p in bad) / len(bad) if bad else float("nan"),
        "good_parts_rejected": sum(final[p] == "reject" for p in good) / len(good) if good else float("nan"),
        "parts_rejected": sum(d == "reject" for d in final.values()),
    }
    return out


def engine_scores(cat, engine_id: str, files: list[Path]) -> np.ndarray:
    """The defect score the server gives each image file: cut into the engine's tiles, run, combined."""
    engine = load_engine(cat, engine_id)
    try:
        scores = []
        for file in files:
            tiles = cut_tiles(cv2.imread(str(file), cv2.IMREAD_GRAYSCALE), engine.input_size)
            out = engine.infer(tiles.tiles)
            scores.append(combine(tiles, out.probabilities, out.defect_cells, cell_size=engine.cell_size,
                                  ok_index=engine.ok_index).defect_score)
        return np.array(scores)
    finally:
        engine.close()


def drift_cost(cat, engine_id: str, rows: list[dict], truth: dict, twin: Path, threshold: float) -> dict[str, Any]:
    """Per drift, the served recall on the defective images it touched beside the recall on the same images
    rendered without it (the twin delivery), and likewise the share of its ok images called defective."""
    out: dict[str, Any] = {}
    touched = [truth[r["sha256"]] for r in rows if r["sha256"] in truth and drift_of(truth[r["sha256"]]["path"])]
    twin_scores = engine_scores(cat, engine_id, [twin / t["path"] for t in touched])
    served = {truth[r["sha256"]]["path"]: r["defect_score"] for r in rows if r["sha256"] in truth}
    for drift in ("dimming", "stuck pixels", "dust"):
        pick = [i for i, t in enumerate(touched) if drift_of(t["path"]) == drift]
        bad = np.array([touched[i]["true_label"] != "ok" for i in pick], bool)
        drifted = np.array([served[touched[i]["path"]] for i in pick]) >= threshold
        clean = twin_scores[pick] >= threshold
        key = drift.replace(" ", "_")
        out[f"drift_{key}_recall"] = float(drifted[bad].mean()) if bad.any() else float("nan")
        out[f"drift_{key}_twin_recall"] = float(clean[bad].mean()) if bad.any() else float("nan")
        out[f"drift_{key}_false_alarms"] = float(drifted[~bad].mean()) if (~bad).any() else float("nan")
        out[f"drift_{key}_twin_false_alarms"] = float(clean[~bad].mean()) if (~bad).any() else float("nan")
        out[f"drift_{key}_defective_images"] = int(bad.sum())
    return out


def review_catch(cat, model_id: str, truth: dict[str, dict[str, str]], home: Path) -> dict[str, Any]:
    """How many of the labels still wrong after the corrections the top of the review queue holds."""
    store = EmbeddingStore(home / "lancedb")
    embed_catalog(cat, store, model_id, near_duplicate_distance=EmbeddingConfig().near_duplicate_distance,
                  log=lambda _: None)
    default = ReviewQueueConfig()
    batch = build_review_queue(cat, store, model_id, budget=REVIEW_TOP, strategies=default.strategies,
                               weights=default.weights, queue="bench")
    audit = build_review_queue(cat, store, model_id, budget=REVIEW_TOP, strategies=["wrong_labels"],
                               queue="bench-label-audit")
    cat.catch_up()
    with cat.db.connect() as conn:
        labels = dict(conn.exec_driver_sql(
            "SELECT sha256, label FROM projections.images WHERE label IS NOT NULL AND NOT excluded").fetchall())
    wrong = {sha for sha, label in labels.items() if sha in truth and truth[sha]["true_label"] != label}
    queued, audited = {c.sha256 for c in batch}, {c.sha256 for c in audit}
    return {"labels_still_wrong": len(wrong), "still_wrong_in_top_100": len(wrong & queued),
            "review_catch_share": len(wrong & queued) / len(wrong) if wrong else float("nan"),
            "still_wrong_in_label_audit_100": len(wrong & audited)}


def run_level(factory: Path, twin: Path, truth: dict, level: str, args: argparse.Namespace, cut: date, last: date
              ) -> tuple[dict[str, Any], list[dict]]:
    say = console.print
    with temp_catalog() as cat:
        started = time.perf_counter()
        publish_ontology(cat, factory / "ontology.yaml", actor="bench")
        with progress_bar("ingesting", 0) as update:
            ingest(cat, factory / "manifest.csv", actor="bench", progress=update)
        # Beside the delivery's own: mask paths are relative to the labels file's folder.
        labels = import_labels(cat, labels_for_level(factory, level, factory / f"labels-{level}.csv"), actor="bench")
        if labels.problems:  # a refused label changes what is measured: say so
            say(f"[red]{len(labels.problems)} label rows refused[/], e.g. {labels.problems[0]}")
        import_corrections(cat, factory / "corrections.csv", actor="bench")
        delivered_s = time.perf_counter() - started
        spec = DatasetSpec.from_yaml(DATASET_SPEC)
        spec = spec.model_copy(update={"filters": spec.filters.model_copy(
            update={"captured_to": datetime.combine(cut, clock_time(), UTC)})})
        version = publish_dataset_version(cat, spec, actor="bench")
        params = default_params("classifier")
        if args.epochs:
            params = replace(params, epochs=args.epochs)
        with progress_bar(f"training ({level} labels)", 0) as update:
            trained = train_model(cat, CLASSIFIER, params, lambda text: None,
                                  dataset_version_id=version.version_id, progress=update, device=args.device)
        export_model(cat, CLASSIFIER, trained.model_id, lambda text: None)
        evaluated, _ = evaluate(cat, EvaluationConfig(model_id=trained.model_id), lambda text: None)
        engine = build_engine(cat, model_id=trained.model_id, precision=args.precision, actor="bench").record
        with progress_bar("replaying the later days", 0) as update:
            replayed = replay(cat, engine.engine_id, first_day=cut, last_day=last, progress=update)
        rows = pq.read_table(cat.lake.root / replayed.report_uri).to_pylist()
        threshold = engine.threshold if engine.threshold is not None else float("nan")
        figures = served_figures(rows, truth, threshold)
        figures |= drift_cost(cat, engine.engine_id, rows, truth, twin, threshold)
        figures |= review_catch(cat, trained.model_id, truth, cat.settings.home)
        m = evaluated.metrics
        figures |= {
            "training_seconds": trained.result.seconds, "epochs": params.epochs, "delivery_seconds": delivered_s,
            "train_images": version.version.counts.get("images"),
            "evaluation_test_precision_at_threshold": m.get("precision_at_threshold"),
            "evaluation_test_recall_at_threshold": m.get("recall_at_threshold"),
            "evaluation_validation_recall": m.get("validation_recall"),
            "evaluation_validation_good_parts_rejected": m.get("validation_good_parts_rejected"),
        }
        say(f"[bold]{level}[/]: AP {figures['average_precision']:.3f}, recall at P>=0.95 "
            f"{figures['recall_at_precision_0.95']:.3f}, parts rejected {figures['parts_rejected']} "
            f"(recall {figures['part_recall']:.3f}, good rejected {figures['good_parts_rejected']:.1%}), "
            f"training {figures['training_seconds']:.0f} s")
    return figures, rows


def pr_chart(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    points = [{"level": name, "recall": float(r), "precision": float(p)}
              for name, (r, p) in curves.items() for r, p in zip(r, p, strict=True)]
    chart = alt.Chart(alt.Data(values=points)).mark_line(interpolate="step-after").encode(
        x=alt.X("recall:Q", scale=alt.Scale(domain=[0, 1])), y=alt.Y("precision:Q", scale=alt.Scale(domain=[0, 1])),
        color="level:N").properties(title=title, width=360, height=300)
    return vlc.vegalite_to_png(chart.to_json(), scale=2)


def worst_sheet(rows: list[dict], truth: dict, n: int = 6) -> np.ndarray:
    """Top row: the ok images the engine scored highest (false alarms); bottom row: the defective images it
    scored lowest (misses), each at half size with its score."""
    rows = [r for r in rows if r["sha256"] in truth]
    ok = sorted((r for r in rows if truth[r["sha256"]]["true_label"] == "ok"), key=lambda r: -r["defect_score"])
    bad = sorted((r for r in rows if truth[r["sha256"]]["true_label"] != "ok"), key=lambda r: r["defect_score"])
    lines = []
    for chosen, what in ((ok[:n], "false alarm"), (bad[:n], "miss")):
        tiles = []
        for r in chosen:
            t = truth[r["sha256"]]
            image = cv2.resize(cv2.imread(t["file"], cv2.IMREAD_GRAYSCALE), (256, 256), interpolation=cv2.INTER_AREA)
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            cv2.putText(image, f"{what} {t['true_label']} {r['defect_score']:.2f}", (4, 14),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 255, 255), 1, cv2.LINE_AA)
            tiles.append(image)
        tiles += [np.zeros((256, 256, 3), np.uint8)] * (n - len(tiles))
        lines.append(np.hstack(tiles))
    return np.vstack(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surfaces", default="photo,procedural", help="photo and/or procedural")
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--cut-day", type=int, default=7, help="the dataset version holds the days before it")
    parser.add_argument("--size", default="bench")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=0, help="0: the classifier's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="the served engine's (ONNX Runtime: fp32 or int8)")
    args = parser.parse_args()
    levels = [lv for lv in args.levels.split(",") if lv]
    if unknown := set(levels) - set(LEVELS):
        parser.error(f"unknown levels {sorted(unknown)}; choose among {LEVELS}")
    cut, last = START + timedelta(days=args.cut_day), START + timedelta(days=args.days - 1)
    FIGURES.mkdir(exist_ok=True)
    OUT.mkdir(exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    rows_table = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in [s for s in args.surfaces.split(",") if s]:
            factory = Path(tmp) / source
            with progress_bar(f"simulating the {source} delivery", 0) as update:
                summary = simulate_factory(factory, days=args.days, seed=args.seed, size=args.size, start=START,
                                           surfaces=DEFAULT_SURFACES[:3] if source == "photo" else None,
                                           progress=update)
            console.print(f"{source}: {summary.images:,} images, {summary.per_class}, {summary.wrong_labels} "
                          f"wrong labels, {summary.corrections} corrected")
            twin = Path(tmp) / f"{source}-without-drift"
            with progress_bar("simulating its twin without drift", 0) as update:
                simulate_factory(twin, days=args.days, seed=args.seed, size=args.size, start=START,
                                 surfaces=DEFAULT_SURFACES[:3] if source == "photo" else None, drift=NO_DRIFT,
                                 progress=update)
            truth = truth_by_sha(factory)
            curves = {}
            for level in levels:
                figures, rows = run_level(factory, twin, truth, level, args, cut, last)
                pq.write_table(pa.Table.from_pylist(rows), OUT / f"model_quality_replay_{source}_{level}.parquet")
                results[f"{source}/{level}"] = figures
                scored = [r for r in rows if r["sha256"] in truth]
                curve = metrics.pr_curve([truth[r["sha256"]]["true_label"] != "ok" for r in scored],
                                         [r["defect_score"] for r in scored])
                curves[level] = (curve.recall, curve.precision)
                cv2.imwrite(str(FIGURES / f"model_quality_worst_{source}_{level}.png"), worst_sheet(rows, truth))
                rows_table += _rows(f"{source}, {level} labels", figures)
            (FIGURES / f"model_quality_pr_{source}.png").write_bytes(
                pr_chart(curves, f"served defect scores, days {args.cut_day}-{args.days - 1} ({source} surfaces)"))
    report("bench_model_quality", "model quality through the product's path, judged against the truth",
           rows_table, {"levels": results, "args": vars(args)})


def _rows(name: str, f: dict[str, Any]) -> list[tuple[str, Any, str]]:
    targets = {"image": "≥ 0.95", "region": "≥ 0.98", "mask": "≥ 0.99"}
    level = name.split(", ")[1].split()[0]
    classes = ", ".join(f"{k.removeprefix('served_recall_')} {v:.2f}" for k, v in f.items()
                        if k.startswith("served_recall_"))
    return [
        (f"{name}: average precision", f["average_precision"], ""),
        (f"{name}: recall at precision ≥ 0.95 / 0.99",
         f"{f['recall_at_precision_0.95']:.3f} / {f['recall_at_precision_0.99']:.3f}", f"target {targets[level]}"),
        (f"{name}: served threshold, image precision / recall",
         f"{f['served_threshold']:.3f}: {f['served_image_precision']:.3f} / {f['served_image_recall']:.3f}",
         f"evaluation on test: {_f(f['evaluation_test_precision_at_threshold'])} / "
         f"{_f(f['evaluation_test_recall_at_threshold'])}"),
        (f"{name}: served recall per class", classes, ""),
        (f"{name}: part recall, good parts rejected",
         f"{f['part_recall']:.3f}, {f['good_parts_rejected']:.1%} ({f['parts_rejected']} of {f['parts']} rejected, "
         f"{f['defective_parts']} defective)", "target ≥ 0.99, ≤ 3 %"),
        (f"{name}: served recall on drifted / clean camera-days",
         f"{f['served_recall_drifted_camera_days']:.3f} / {f['served_recall_clean_camera_days']:.3f}",
         "target: within 0.02"),
        *[(f"{name}: {drift}: served recall drifted / same parts without drift; false alarms drifted / without",
           f"{f[f'drift_{key}_recall']:.3f} / {f[f'drift_{key}_twin_recall']:.3f}; "
           f"{f[f'drift_{key}_false_alarms']:.3f} / {f[f'drift_{key}_twin_false_alarms']:.3f}",
           f"{f[f'drift_{key}_defective_images']} defective images; target: recall within 0.02")
          for drift, key in (("dimming", "dimming"), ("stuck pixels", "stuck_pixels"), ("dust", "dust"))],
        (f"{name}: training seconds", f["training_seconds"], f"{f['epochs']} epochs, target ≤ 600"),
        (f"{name}: still-wrong labels in the review queue's top 100",
         f"{f['still_wrong_in_top_100']} of {f['labels_still_wrong']}", "target ≥ 80 %"),
        (f"{name}: still-wrong labels in the top 100 of a label audit (wrong_labels alone)",
         f"{f['still_wrong_in_label_audit_100']} of {f['labels_still_wrong']}", "target ≥ 80 %"),
    ]


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
