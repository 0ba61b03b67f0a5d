"""The whole loop on a simulated factory, stage by stage: `visionledger demo` runs it.

History (the first days, with their labels) → dataset version → classifier → ONNX → evaluation → champion and
engine → the following days served through the HTTP API → their labels arrive, a reviewer corrects
disagreements, each day's drift report and breakdowns, a curator excludes the dim day → embeddings, a review
queue and its heatmaps → a new dataset version → a retrained candidate → regression replay against the
champion on history → promotion (and its engine) when the gate passes.

What an asset does, the demo does as a Dagster run of that asset (`Runs`), on the instance beside the catalog
that `make dagster` opens: the UI shows every asset the demo built, with its metadata. What no asset does
(delivering files, serving through the API, a reviewer's and a curator's decisions) it does itself.
"""

from __future__ import annotations

import csv
import json
import logging
import socket
import threading
import time as clock
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import uvicorn
import yaml

from assets.definitions import defs
from assets.learn_loop import learn_loop
from assets.resources import CatalogResource, LakeResource, LanceDBResource
from assets.sensors import DAY_REPORTS, day_reports
from catalog import Catalog
from catalog.blobs import sha256_of
from catalog.curation import set_excluded
from catalog.datasets import DatasetSpec
from catalog.factory_day import ingested_days
from catalog.lineage import CLASSIFIER, champion, was_promoted, was_replayed
from catalog.queries import (
    ImageFilter,
    count_images,
    images_corrected_by,
    labels_as_recorded,
    latest_prediction_id,
)
from catalog.review_queue import count_waiting_reviews, requested_reviews
from identity.stations import StationPrincipal, issue, load_view
from ingestion.factory_delivery import ProgressFactory, no_progress
from ingestion.ingest import ingest
from ingestion.labels import import_corrections, import_labels, record_correction
from ingestion.ontology_publish import publish_ontology
from ingestion.simulated_factory import DRIFT, simulate_factory
from learning.review import ReviewQueueConfig
from models.training import ClassifierParams
from serving.api import create_app
from serving.service import InspectionService, ServeConfig

DATASET_SPEC = Path(__file__).resolve().parents[1] / "assets" / "dataset_specs" / "inspection_all.yaml"
Say = Callable[[str], None]


@dataclass(frozen=True)
class LoopConfig:
    days: int = 6  # simulated production days
    history_days: int = 4  # delivered with their labels before the first model; the rest are served
    size: str = "small"
    seed: int = 0
    image_size: int = 512
    # Fewer than the classifier's default 150: the demo shows the loop in minutes, and its models are judged
    # (and refused by the quality floor) as any would be.
    epochs: int = 60
    samples_per_epoch: int = 0  # 0: one crop per training image and epoch
    corrections: int = 20  # disagreements a reviewer settles
    review_budget: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.history_days < self.days:
            raise ValueError(f"need 1 <= history_days < days, not {self.history_days} and {self.days}")


@dataclass
class LoopReport:
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_loop(cat: Catalog, instance: dg.DagsterInstance, config: LoopConfig, say: Say, *,
             progress: ProgressFactory = no_progress) -> LoopReport:
    """Run every stage once, the assets' as Dagster runs on ``instance``; safe to run again on the same
    catalog (nothing is appended twice). `say` tells what happens; `progress(description)` gives a bar's
    update(done, total) for the long steps."""
    report = LoopReport()
    runs = Runs(cat, instance, _every_tenth_epoch(say, config.epochs or ClassifierParams().epochs))

    def stage(name: str, work: Callable[[], Any]) -> Any:
        say(f"— {name}")
        started = clock.perf_counter()
        result = work()
        report.seconds[name] = round(clock.perf_counter() - started, 1)
        return result

    factory = cat.settings.home / "factory" / (
        f"{config.size}-{config.days}d-seed{config.seed}-{config.image_size}px")
    if not (factory / "manifest.csv").exists():
        def simulate() -> None:
            with progress("simulating the factory") as update:
                simulate_factory(factory, days=config.days, seed=config.seed, size=config.size,
                                 image_size=config.image_size, progress=update)
        stage("simulate the factory", simulate)
    days = sorted({_day(r["path"]) for r in _rows(factory / "manifest.csv")})
    history, later = days[:config.history_days], days[config.history_days:]
    files = stage("split the deliveries by day", lambda: _split_by_day(factory, set(history)))
    f = report.figures
    f["history_days"], f["served_days"] = [str(d) for d in history], [str(d) for d in later]

    def deliver_history() -> None:
        before = cat.head()
        publish_ontology(cat, factory / "ontology.yaml", actor="demo")
        with progress("ingesting images") as update:
            f["history_images"] = ingest(cat, files["manifest"][0], root=factory, actor="demo",
                                         progress=update).ingested
        with progress("importing labels") as update:
            f["history_labels"] = import_labels(cat, files["labels"][0], actor="demo", progress=update).recorded
        import_corrections(cat, files["corrections"][0], actor="demo")
        _day_reports(cat, runs, after=before)
    stage("deliver the history with its labels, and each day's drift report and breakdowns", deliver_history)

    first = stage("train, export, evaluate and promote the first model",
                  lambda: _model_of_days(cat, runs, config, say, until=later[0]))
    f["first"] = first
    before_serving = cat.head()
    served = stage("serve the following days through the HTTP API", lambda: _serve(cat, factory, set(later), first["engine_in_service"], progress))
    f["served"] = served

    def review() -> None:
        f["later_labels"] = import_labels(cat, files["labels"][1], actor="demo").recorded
        import_corrections(cat, files["corrections"][1], actor="demo")
        f["reviewer_corrections"] = _settle_disagreements(cat, factory, served["predictions"], config.corrections)
        # The days' reports before the curator's decision: the Day page shows the dimming lamp that makes it.
        _day_reports(cat, runs, after=before_serving)
        f["excluded"] = _exclude_dim_day(cat, later)
        queue = ReviewQueueConfig(budget=config.review_budget)
        waiting = count_waiting_reviews(cat, queue=queue.queue)
        # One run: the embeddings, a new batch only once the reviewers are through the last one (a second run
        # of the demo finds it waiting), and the model's evidence for every image ever queued, so that Review
        # shows it beside each (the heatmaps take the queued images first).
        new_batch = 0 if waiting else queue.budget
        done = runs(["embeddings", *(["review_queue"] if new_batch else []), "heatmaps"], {
            **({"review_queue": {"budget": queue.budget, "queue": queue.queue}} if new_batch else {}),
            "heatmaps": {"queue": queue.queue, "limit": len(requested_reviews(cat, queue.queue)) + new_batch}})
        f["review_queue"] = waiting or done["review_queue"]["queued"]
    stage("labels arrive, a reviewer corrects disagreements, the days' drift reports and breakdowns, a curator "
          "excludes a dim day, the review queue and its heatmaps", review)

    f["candidate"] = stage("retrain on a new dataset version and regression-test the candidate",
                           lambda: _model_of_days(cat, runs, config, say, until=later[-1] + timedelta(days=1)))
    f["champion"] = champion(cat, CLASSIFIER)
    return report


class Runs:
    """Materializes assets of the code location (`assets.definitions`) as Dagster runs of its jobs on one
    instance, with the catalog's resources; the assets' own log lines go to `say`. Calling it with asset
    names, their run configs by name and, for the daily assets, a day, returns each asset's metadata."""

    def __init__(self, cat: Catalog, instance: dg.DagsterInstance, say: Say):
        settings = cat.settings
        self.instance = instance
        self.defs = dg.Definitions(
            assets=defs.assets, jobs=[learn_loop, day_reports],
            resources={"catalog": CatalogResource(home=str(settings.home), database_url=settings.database_url),
                       "lake": LakeResource(root=str(settings.lake_root)),
                       "lancedb": LanceDBResource(uri=str(settings.home / "lancedb"))},
            loggers={"say": _say_logger(say)})

    def __call__(self, assets: list[str], config: dict[str, dict] | None = None, *,
                 day: date | None = None) -> dict[str, dict[str, Any]]:
        job = self.defs.resolve_job_def((day_reports if day else learn_loop).name)
        result = job.execute_in_process(
            run_config={"ops": {name: {"config": c} for name, c in (config or {}).items()}, "loggers": {"say": {}}},
            instance=self.instance, partition_key=day.isoformat() if day else None,
            asset_selection=[dg.AssetKey(name) for name in assets], tags={"visionledger/source": "demo"})
        return {name: {k: v.value for k, v in result.asset_materializations_for_node(name)[0].metadata.items()}
                for name in assets}


def _say_logger(say: Say) -> dg.LoggerDefinition:
    """A Dagster logger that hands the assets' own lines at INFO and above (not Dagster's events) to `say`."""

    class ToSay(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            meta = getattr(record, "dagster_meta", None)
            if meta and meta["dagster_event"] is None:
                say(meta["orig_message"])

    def make(_context: dg.InitLoggerContext) -> logging.Logger:
        log = logging.Logger("visionledger.demo", logging.INFO)
        log.addHandler(ToSay())
        return log

    return dg.LoggerDefinition(make, description="the demo's console")


def _day_reports(cat: Catalog, runs: Runs, *, after: int) -> None:
    """Each factory day whose images arrived after log position ``after`` gets its drift report and
    breakdowns: what the sensor `images_arrived` asks for when Dagster's daemon runs it."""
    for day in sorted(ingested_days(cat, after, cat.head())):
        runs([key.to_user_string() for key in DAY_REPORTS], day=day)


def _model_of_days(cat: Catalog, runs: Runs, config: LoopConfig, say: Say, until: date) -> dict[str, Any]:
    """Publish the dataset version of the images captured before `until`, train and export a classifier on it,
    evaluate it, replay it against the champion (none the first time: it passes) and build the engine of
    whichever model serves; one Dagster run each for the version, model, export and evaluation, the replay
    and the engine, each asset reading what its upstream produced. The capture window, not the head, fixes
    the version: a second run of the demo finds the same version, the same model (training is
    deterministic), and appends nothing."""
    spec = DatasetSpec.from_yaml(DATASET_SPEC)
    spec = spec.model_copy(update={"filters": spec.filters.model_copy(
        update={"captured_to": datetime.combine(until, time(), UTC)})})
    built = runs(["dataset_inspection_all", "classifier_model", "classifier_onnx", "model_evaluation"], {
        "dataset_inspection_all": {"spec_yaml": yaml.safe_dump(spec.model_dump(mode="json"))},
        "classifier_model": {"epochs": config.epochs, "samples_per_epoch": config.samples_per_epoch}})
    version, model_id = built["dataset_inspection_all"], built["classifier_model"]["model_id"]
    m = built["model_evaluation"]["metrics"]
    gate, promoted = None, False
    if not was_replayed(cat, model_id):  # judged once: a second run of the demo does not judge it again
        replay = runs(["regression_replay"], {"regression_replay": {"min_images": 10}})["regression_replay"]
        gate, promoted = replay["verdict"], replay["promoted"]
    promoted = promoted or was_promoted(cat, model_id)
    # The engine that serves after this stage: this model's once it is promoted, else the champion's; with
    # no champion at all (no model passed the quality floor), the unfit candidate, named as such, so that the
    # loop can go on.
    serving_model = model_id if promoted else champion(cat, CLASSIFIER)
    unfit = serving_model is None
    if unfit:
        serving_model = model_id
        say(f"WARNING: no model passed the quality floor, so none is promoted; the demo serves the UNPROMOTED "
            f"{serving_model} to go on, and its decisions are not fit for a line")
    engine = runs(["classifier_engine"], {"classifier_engine": {"model_id": serving_model}})["classifier_engine"]
    threshold = engine.get("threshold")
    say(f"serving {serving_model} ({'promoted' if not unfit else 'unpromoted, unfit'}) at its operating "
        f"threshold {threshold if threshold is not None else float('nan'):.3f}: validation recall "
        f"{m.get('validation_recall', float('nan')):.2f}, {m.get('validation_good_parts_rejected', float('nan')):.1%}"
        " of good validation parts rejected")
    return {"dataset_version": version["version_id"], "images": version["images"],
            "model": model_id, "recall_at_p95": m.get("recall_at_min_precision"),
            "average_precision": m.get("average_precision"), "gate": gate,
            "promoted": promoted, "serving_model": serving_model, "serving_unfit": unfit,
            "threshold": threshold, "validation_recall": m.get("validation_recall"),
            "validation_good_parts_rejected": m.get("validation_good_parts_rejected"),
            "engine_in_service": engine["engine_id"]}


def _every_tenth_epoch(say: Say, epochs: int) -> Say:
    """Training's epoch lines, thinned to about ten, so the demo shows progress without a wall of text."""
    step = max(1, epochs // 10)

    def log(text: str) -> None:
        if not text.startswith("epoch ") or int(text.split()[1].split("/")[0]) % step == 0:
            say(text)

    return log


def _serve(cat: Catalog, factory: Path, days: set[date], engine_id: str, progress: ProgressFactory
           ) -> dict[str, Any]:
    """Start the API on a free port over `engine_id` and send it every image of `days`, as the line would;
    returns what it answered."""
    rows = [r for r in _rows(factory / "manifest.csv") if _day(r["path"]) in days]
    tokens = _station_tokens(cat, {(r["line"], r["station"]) for r in rows})  # before the server reads them
    # The simulated days are sent as the line would have sent them then: their capture times are not now.
    service = InspectionService(cat, ServeConfig(engine_id=engine_id, max_wait_ms=5, max_capture_age=None,
                                                 max_capture_lead=None))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    while not server.started:
        clock.sleep(0.05)
    predictions, decisions, latencies, refused = {}, {}, [], 0
    try:
        with httpx.Client(timeout=60) as client, progress("serving images through the API") as update:
            for i, row in enumerate(rows):
                if update:
                    update(i + 1, len(rows))
                image = factory / row["path"]
                if not image.exists():  # the simulator's lost files: nothing reaches the server
                    refused += 1
                    continue
                sent = clock.perf_counter()
                response = client.post(f"{url}/v1/inspect", files={"image": (row["path"], image.read_bytes())},
                                       data={k: row[k] for k in ("part_id", "line", "station", "camera",
                                                                 "captured_at")},
                                       headers={"Authorization": f"Bearer {tokens[row['line'], row['station']]}"})
                latencies.append(clock.perf_counter() - sent)
                if response.status_code != 200:
                    refused += 1  # the damaged files the simulator delivers: refused and quarantined by the server
                    continue
                body = response.json()
                predictions[row["path"]] = (body["sha256"], body["class"])
                decisions[row["part_id"]] = body["part"]["decision"]
    finally:
        server.should_exit = True
        thread.join()
    latencies.sort()
    # Judged against what is really there (the simulator's truth, which no stage above has seen).
    truly_bad = {r["part_id"] for r in _rows(factory / "truth.csv") if r["part_label"] != "ok"}
    bad, good = [p for p in decisions if p in truly_bad], [p for p in decisions if p not in truly_bad]
    return {"images": len(rows), "refused": refused, "parts": len(decisions),
            "rejected_parts": sum(d == "reject" for d in decisions.values()),
            "defective_parts": len(bad),
            "part_recall": sum(decisions[p] == "reject" for p in bad) / len(bad) if bad else None,
            "good_parts_rejected": sum(decisions[p] == "reject" for p in good) / len(good) if good else None,
            "p50_ms": round(1000 * latencies[len(latencies) // 2]) if latencies else None,
            # a part to trace: one the engine rejected, else any
            "example_part": next((p for p, d in decisions.items() if d == "reject"), next(iter(decisions), None)),
            "predictions": predictions}


def _station_tokens(cat: Catalog, stations: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A token for each (line, station) the demo serves, issued once and kept in the home (mode 0600) while it
    is valid: a second run of the demo issues none."""
    path = cat.settings.home / "demo-station-tokens.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    view = load_view(cat)
    tokens = {}
    for line, station in sorted(stations):
        token = kept.get(f"{line}/{station}")
        if token is None or not isinstance(view.verify(token), StationPrincipal):
            token = issue(cat, line=line, station=station, expires_at=datetime.now(UTC) + timedelta(days=90),
                          issued_by="demo").token
        tokens[line, station] = token
    path.touch(mode=0o600)
    path.write_text(json.dumps({f"{line}/{station}": t for (line, station), t in tokens.items()}))
    return tokens


def _settle_disagreements(cat: Catalog, factory: Path, predictions: dict[str, tuple[str, str]], limit: int) -> int:
    """A reviewer looks at images where the engine and the labeler disagree and records what is really there
    (the simulator's truth): a correction of the label when the labeler erred, else of the prediction. At most
    ``limit`` in all: a second run of the demo finds them settled and settles no more; returns how many are."""
    truth = {r["path"]: r["true_label"] for r in _rows(factory / "truth.csv")}
    labels, reviewed = labels_as_recorded(cat), images_corrected_by(cat, "demo-reviewer")
    settled = len({sha for sha, _ in predictions.values()} & reviewed)
    for path, (sha, predicted) in sorted(predictions.items()):
        label = labels.get(sha)
        if settled >= limit or label is None or label == predicted or sha in reviewed:
            continue
        wrong_label = truth[path] != label
        prediction = None if wrong_label else latest_prediction_id(cat, sha)
        record_correction(cat, sha256=sha, new_label=truth[path], corrected_by="demo-reviewer",
                          target="label" if wrong_label else "prediction", prediction_event_id=prediction,
                          reason="reviewed: the label was wrong" if wrong_label else "reviewed: the model was wrong",
                          actor="demo-reviewer")
        settled += 1
    return settled


def _exclude_dim_day(cat: Catalog, days: list[date]) -> dict[str, Any]:
    """A curator's day: the dimming lamp of the simulator's drift schedule spoiled one line's images; exclude
    that line's last served day with images, before the next dataset version is cut."""
    windows = [ImageFilter(lines=(DRIFT.dimming_line,), first_day=day, last_day=day) for day in days]
    spoiled = next((w for w in reversed(windows) if count_images(cat, w)), windows[-1])
    done = set_excluded(cat, spoiled, exclude=True, reason="lamp too dim: wrongly collected", actor="demo")
    return {"line": DRIFT.dimming_line, "day": spoiled.first_day.isoformat(), "newly": done.changed,
            "in_all": done.matched}


def _split_by_day(factory: Path, history: set[date]) -> dict[str, tuple[Path, Path]]:
    """Each delivery file split into (history, later) files beside it, by the capture day in each row's path.

    The later days' images reach the catalog through the server, not as files of a delivery, so their labels
    and corrections name them by content (`sha256`) instead of by path.
    """
    out = {}
    for name in ("manifest", "labels", "corrections"):
        rows = _rows(factory / f"{name}.csv")
        parts = []
        for which, keep in (("history", True), ("later", False)):
            chosen = [r for r in rows if (_day(r["path"]) in history) == keep]
            if name != "manifest" and which == "later":
                chosen = [{"sha256": sha256_of((factory / r.pop("path")).read_bytes())} | r
                          for r in chosen if (factory / r["path"]).exists()]
            path = factory / f"{name}-{which}.csv"
            with path.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.DictWriter(fh, list(chosen[0]) if chosen else list(rows[0]) if rows else [])
                writer.writeheader()
                writer.writerows(chosen)
            parts.append(path)
        out[name] = tuple(parts)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _day(path: str) -> date:
    # The simulator files images as <line>/<YYYY-MM-DD>/<station>/<file>.
    return date.fromisoformat(path.split("/")[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
