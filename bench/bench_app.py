"""Every page of the Streamlit app rendered on a catalog of 100,000 images (events, no pixels): seconds per
server-side render (AppTest `.run()`), uncached (the page's reads cleared first: a visitor after the cache's
lifetime) and cached (the same page again within it). Target: ≤ 1 s a page.

The catalog is the synthetic factory (`catalog/synthetic.py`: 2,400 images a day, each labelled, ~2.5 %
corrected, predicted; every part decided) cut at exactly ``--images``, plus one dataset version → model →
engine chain for the synthetic engine with its promotion, a review queue, and a drift report for every day.
The pages that show pictures (Curate, Review, Trace) need bytes: every image's blob is a symbolic link to one
512 x 512 PNG and every image shares one thumbnail, so they decode real pixels at no disk cost.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from common import FIRST_DAY, analyze, console, load, progress_bar, report, temp_catalog

import catalog
from apps.ui.roles import DEV_VIEWER
from catalog import events as ev
from catalog.blobs import uri_of
from catalog.drift import DRIFT_SCHEMA, STATISTICS, cameras_path
from catalog.lineage import CLASSIFIER, DEFAULT_DATASET
from catalog.store import NewEvent
from catalog.synthetic import ENGINE_ID, FactoryShape, ontology_event, simulated_day

APP = Path(__file__).resolve().parents[1] / "apps" / "ui" / "app.py"
PAGES = Path(__file__).resolve().parents[1] / "apps" / "ui" / "views"
IMAGES_PER_DAY = 2_400  # FactoryShape(): 3 lines x 200 parts x 2 stations x 2 cameras
# Who opens each page: the role that sees all of it (its actions too); everything else as the read-only analyst.
ROLE_OF = {"curate": "curator", "review": "annotator"}
HASH = "0" * 64
THUMBNAIL = "thumbnails/synthetic.png"  # relative to the catalog's home, as ingestion records it


def factory(images: int, first_day: date = FIRST_DAY) -> Iterator[NewEvent]:
    """The synthetic factory's events, day after day, up to and including the ``images``-th image's own
    label, correction and prediction (a part cut short has no decision). Images name their blob as ingestion
    does (``blob:<sha256>``) and share one thumbnail."""
    yield ontology_event()
    seen, day = 0, first_day
    while True:
        for event in simulated_day(day, shape=FactoryShape()):
            if isinstance(event.data, ev.ImageIngested):
                if seen == images:
                    return
                seen += 1
                event = replace(event, data=event.data.model_copy(update={
                    "blob_uri": uri_of(event.data.sha256), "thumbnail_uri": THUMBNAIL}))
            yield event
        day += timedelta(days=1)


def pixels(cat: catalog.Catalog, shas: list[str]) -> None:
    """One 512 x 512 texture as every image's blob (symbolic links) and one 128 px thumbnail for all."""
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.normal(128, 40, (512, 512)), (0, 0), 2).clip(0, 255).astype(np.uint8)
    source = cat.blobs.put(cv2.imencode(".png", texture)[1].tobytes())
    thumbnail = cat.settings.home / THUMBNAIL
    thumbnail.parent.mkdir(parents=True, exist_ok=True)
    thumbnail.write_bytes(cv2.imencode(".png", cv2.resize(texture, (128, 128)))[1].tobytes())
    with progress_bar("linking blobs", len(shas)) as update:
        for k, sha in enumerate(shas, start=1):
            path = cat.blobs.path(sha)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(cat.blobs.path(source.sha256), path)  # hard links stop at 65,000
            if k % 10_000 == 0:
                update(k, len(shas))


def lineage(first_day: date) -> list[NewEvent]:
    """A dataset version, the classifier trained on it, its promotion, and the synthetic engine built from it."""
    at = datetime.combine(first_day, datetime.min.time(), UTC) + timedelta(hours=5)
    version, model = f"{DEFAULT_DATASET}-synthetic0001", f"{CLASSIFIER}-synthetic0001"
    replay = uuid.uuid4()
    data = [
        ev.DatasetVersionPublished(dataset=DEFAULT_DATASET, version_id=version, spec={}, as_of_position=1,
                                   counts={"ok": 1}, manifest_hash=HASH, manifest_uri="datasets/synthetic.parquet"),
        ev.ModelRegistered(model=CLASSIFIER, model_id=model, dataset_version_id=version, manifest_hash=HASH,
                           artifact_sha256=HASH, artifact_uri="models/synthetic.pt"),
        ev.RegressionReplayed(model=CLASSIFIER, candidate_model_id=model, passed=True, images=0, summary={},
                              report_uri="replays/synthetic.parquet"),
        ev.ModelPromoted(model=CLASSIFIER, model_id=model, replay_event_id=replay, reason="first model"),
        ev.EngineBuilt(engine_id=ENGINE_ID, model=CLASSIFIER, model_id=model, onnx_sha256=HASH,
                       dataset_version_id=version, manifest_hash=HASH, backend="onnxruntime", precision="fp32",
                       device="cpu", library_versions={}, artifact_uri="engines/synthetic.bin"),
    ]
    return [NewEvent(d, at + timedelta(minutes=k)) for k, d in enumerate(data)]


def review_queue(cat: catalog.Catalog, size: int) -> list[NewEvent]:
    """The ``size`` most recent images queued for active-learning review."""
    with cat.db.connect() as conn:
        shas = [r[0] for r in conn.exec_driver_sql(
            "SELECT sha256 FROM projections.images ORDER BY captured_at DESC LIMIT %(n)s", {"n": size})]
    at = datetime.now(UTC)
    return [NewEvent(ev.ReviewRequested(sha256=sha, queue="active-learning", strategy="uncertainty",
                                        score=1 - k / size, reason="bench"), at) for k, sha in enumerate(shas)]


def drift_reports(cat: catalog.Catalog) -> int:
    """A drift table per day in the lake, as the drift_report asset writes them (about 1 % out of band)."""
    with cat.db.connect() as conn:
        cameras = conn.exec_driver_sql(
            "SELECT (captured_at AT TIME ZONE 'UTC')::date AS day, line, station, camera, count(*)"
            " FROM projections.images GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4").fetchall()
    rng = random.Random(0)
    by_day: dict[date, list[dict]] = {}
    for day, line, station, camera, n in cameras:
        for statistic in STATISTICS:
            value = 100 * (1.2 if rng.random() < 0.01 else 1 + rng.uniform(-0.04, 0.04))
            by_day.setdefault(day, []).append({
                "day": day, "line": line, "station": station, "camera": camera, "images": n,
                "statistic": statistic, "value": value, "reference": 100.0, "low": 95.0, "high": 105.0,
                "in_band": 95 <= value <= 105, "reference_days": FIRST_DAY.isoformat(), "reference_images": n})
    for day, rows in by_day.items():
        cat.lake.write_parquet(cameras_path(day), pa.Table.from_pylist(rows, schema=DRIFT_SCHEMA))
    return len(by_day)


def a_rejected_part(cat: catalog.Catalog) -> str:
    with cat.db.connect() as conn:
        return conn.exec_driver_sql("SELECT part_id FROM projections.part_dispositions WHERE decision = 'reject'"
                                    " ORDER BY decided_at DESC LIMIT 1").scalar()


def render(page: str, *, part: str, runs: int) -> dict:
    """Seconds per `.run()` of ``page``: a warm-up (imports, connections), then ``runs`` uncached runs (every
    st.cache_data entry cleared first) and ``runs`` cached ones. A page that raises is reported, not fatal."""
    import streamlit as st  # noqa: PLC0415 - after the environment names the catalog
    from streamlit.logger import set_log_level  # noqa: PLC0415
    from streamlit.testing.v1 import AppTest  # noqa: PLC0415

    set_log_level("error")  # AppTest, outside a server, warns on every run that it has none

    # Development mode (no login): this measures a page's rendering, and a login would add a password hash to
    # the first run.
    os.environ[DEV_VIEWER] = f"{ROLE_OF.get(page, 'analyst')}:bench"
    try:
        at = AppTest.from_file(str(APP), default_timeout=600)
        at.run()
        at.switch_page(f"views/{page}.py")
        if page == "trace":
            at.query_params["part"] = part
        started = time.perf_counter()
        at.run()
        first = time.perf_counter() - started
        if at.exception:
            return {"error": at.exception[0].message, "first_s": first}
        uncached, cached = [], []
        for _ in range(runs):
            st.cache_data.clear()
            started = time.perf_counter()
            at.run()
            uncached.append(time.perf_counter() - started)
        for _ in range(runs):
            started = time.perf_counter()
            at.run()
            cached.append(time.perf_counter() - started)
        if at.exception:
            return {"error": at.exception[0].message, "first_s": first}
        return {"first_s": first, "uncached_s": uncached, "cached_s": cached, "role": ROLE_OF.get(page, "analyst"),
                "uncached_median_s": statistics.median(uncached), "cached_median_s": statistics.median(cached)}
    except Exception as exc:  # noqa: BLE001 - a page not finished yet is a figure to report, not a crash
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per page, uncached and cached each")
    parser.add_argument("--review", type=int, default=1_000, help="images in the review queue")
    parser.add_argument("--pages", default=",".join(sorted(p.stem for p in PAGES.glob("*.py"))),
                        help="comma-separated page names (default: every page in apps/ui/views)")
    args = parser.parse_args()
    pages = args.pages.split(",")

    with progress_bar(f"generating the factory up to {args.images:,} images", args.images) as update:
        events, images = [], 0
        for event in factory(args.images):
            events.append(event)
            if isinstance(event.data, ev.ImageIngested):
                images += 1
                if images % 10_000 == 0:
                    update(images, args.images)
    events += lineage(FIRST_DAY)
    with temp_catalog() as cat:
        pixels(cat, [e.data.sha256 for e in events if isinstance(e.data, ev.ImageIngested)])
        append_s = load(cat, events)
        with progress_bar("projections", cat.head()) as update:
            started = time.perf_counter()
            cat.projections.catch_up(progress=update)
            project_s = time.perf_counter() - started
        cat.append(review_queue(cat, args.review))
        days = drift_reports(cat)
        analyze(cat)
        console.print(f"catalog: {images:,} images over {days} days, {cat.head():,} events "
                      f"(appended in {append_s:.0f} s, projected in {project_s:.0f} s)")
        # The app opens the catalog from the environment, as `visionledger app` does: the same embedded server.
        os.environ["VISIONLEDGER_HOME"] = str(cat.settings.home)
        for name in ("VISIONLEDGER_DATABASE_URL", "VISIONLEDGER_ADMIN_DATABASE_URL"):
            os.environ.pop(name, None)
        part = a_rejected_part(cat)
        results = {}
        for page in pages:
            console.print(f"rendering {page} ({ROLE_OF.get(page, 'analyst')})…")
            results[page] = result = render(page, part=part, runs=args.runs)
            if "error" in result:
                console.print(f"  [red]{page}: {result['error'].splitlines()[0][:200]}[/red]")
            else:
                console.print(f"  first {result['first_s']:.2f} s, uncached median {result['uncached_median_s']:.3f} s,"
                              f" cached median {result['cached_median_s']:.3f} s")
        from apps.ui.common import _catalog  # noqa: PLC0415

        _catalog.clear()  # the app's connection pools, before the server stops
    rows = []
    for page, result in results.items():
        if "error" in result:
            rows.append((f"{page}", "error", result["error"].splitlines()[0][:90]))
            continue
        verdict = "met" if result["uncached_median_s"] <= 1.0 else "MISSED"
        rows.append((f"{page}: uncached median (s)", result["uncached_median_s"], f"target ≤ 1: {verdict}"))
        rows.append((f"{page}: cached median (s)", result["cached_median_s"], f"first render {result['first_s']:.2f} s"))
    report("bench_app", f"app pages on a catalog of {images:,} images (server-side render, AppTest)", rows,
           {"images": images, "days": days, "events": len(events), "append_seconds": append_s,
            "projection_seconds": project_s, "runs": args.runs, "pages": results})


if __name__ == "__main__":
    main()
