"""Drift, the day it starts: the daily drift report over the model-quality benchmark's delivery.

For each surface source (real photographs, and the procedural textures) the delivery of bench_model_quality
is simulated (10 days, 3 lines, ~17 images a camera-day, 512 px; line1's lamp dims 3 % a day from day 1,
line2/st1/cam1 grows stuck pixels from day 2, dust blurs line2/st1/cam2 from day 3), ingested into a fresh
catalog, and the drift report runs for every day in order, each day reading its reference day back from the
lake as the daily asset does. For each drift: the first day it is present against the first day a camera it
touches is flagged, and how many of its camera-days are flagged; then the false flags, camera-days flagged
that no drift touches. The method before issue 14 (assets/drift.py as committed in BASELINE_COMMIT, loaded
from the repository's history; the method now is learning/drift.py) runs on the same catalog in the same run, with its default configuration, as
the baseline.

    python bench/bench_drift.py [--surfaces photo,procedural] [--days 10] [--seed 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import types
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from common import console, progress_bar, report, temp_catalog, timed

from catalog import Catalog
from catalog.lake import Lake
from ingestion.ingest import ingest
from ingestion.ontology_publish import publish_ontology
from ingestion.simulated_factory import DRIFT, CameraRef, simulate_factory
from ingestion.simulator.photos import DEFAULT_SURFACES
from learning import drift as current

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "d2d9ad2c64845c7df10ae7d32c0a110a0bd601ad"  # the last commit before issue 14's drift work
START = date(2026, 3, 2)  # as bench_model_quality's delivery
DRIFTS = ("dimming", "stuck pixels", "dust")
METHODS = ("new", "old")

CameraDay = tuple[CameraRef, int]  # a camera and a day of the delivery (0 is its first)


def method_before_issue_14() -> types.ModuleType:
    """assets/drift.py as it was before issue 14, from the repository's history: the baseline is the old code
    itself, not a copy of it."""
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:assets/drift.py"],
                           capture_output=True, text=True, check=False)
    if shown.returncode:
        raise SystemExit(f"the baseline is read from the repository's history, which does not hold it here: "
                         f"{shown.stderr.strip()}; run the benchmark from a clone that has {BASELINE_COMMIT[:12]}")
    module = types.ModuleType("drift_before_issue_14")
    sys.modules[module.__name__] = module  # dataclasses look their module up while the class is made
    exec(compile(shown.stdout, f"{BASELINE_COMMIT[:12]}:assets/drift.py", "exec", dont_inherit=True), module.__dict__)
    return module


def run_reports(cat: Catalog, method: types.ModuleType, lake: Lake, days: list[date], label: str
                ) -> tuple[dict[CameraDay, list[str]], set[CameraRef], float]:
    """Every day's drift report by ``method``, in order, its files written to ``lake`` as the daily asset
    writes them (later days read their reference day back from there). Returns the statistics out of band
    per camera-day, the cameras seen and the seconds the reports took."""
    flagged: dict[CameraDay, list[str]] = {}
    cameras: set[CameraRef] = set()
    seconds = 0.0
    with progress_bar(f"drift reports ({label})", len(days)) as update:
        for k, day in enumerate(days):
            run = timed(lambda day=day: method.drift_for_day(cat, lake, day, method.DriftConfig()))
            seconds += run.seconds
            today, table = run.result
            lake.write_parquet(method.images_path(day), today.images)
            lake.write_parquet(method.cameras_path(day), table)
            for row in table.to_pylist():
                camera = CameraRef(row["line"], row["station"], row["camera"])
                cameras.add(camera)
                if row["in_band"] is False:
                    flagged.setdefault((camera, k), []).append(row["statistic"])
            update(k + 1, len(days))
    return flagged, cameras, seconds


def score(flagged: dict[CameraDay, list[str]], cameras: set[CameraRef], days: int) -> dict[str, Any]:
    """Per drift, the first day present and the first day flagged (on a camera-day it touches, by any
    statistic), its camera-days flagged; and the camera-days flagged that no drift touches, among those
    compared with a reference (day 0 is the reference itself)."""
    figures: dict[str, Any] = {}
    for name in DRIFTS:
        touched = sorted(((c, d) for c in cameras for d in range(days) if name in DRIFT.touching(c, d)),
                         key=lambda cd: (cd[1], cd[0].line, cd[0].station, cd[0].camera))
        hit = [(c, d) for c, d in touched if (c, d) in flagged]
        first = min((d for _, d in hit), default=None)
        figures[name] = {
            "first_day_present": min(d for _, d in touched),
            "first_day_flagged": first,
            "camera_days_touched": len(touched),
            "camera_days_flagged": len(hit),
            "statistics_first_flagged": sorted({s for c, d in hit if d == first for s in flagged[(c, d)]}),
        }
    clean = [(c, d) for c in cameras for d in range(1, days) if not DRIFT.touching(c, d)]
    figures["false_flags"] = [f"day {d} {c.line}/{c.station}/{c.camera}: {', '.join(flagged[(c, d)])}"
                              for c, d in clean if (c, d) in flagged]
    figures["clean_camera_days"] = len(clean)
    return figures


def run_source(source: str, args: argparse.Namespace, baseline: types.ModuleType, tmp: Path) -> dict[str, Any]:
    factory = tmp / source
    with progress_bar(f"simulating the {source} delivery", 0) as update:
        summary = simulate_factory(factory, days=args.days, seed=args.seed, size=args.size, start=START,
                                   surfaces=DEFAULT_SURFACES[:3] if source == "photo" else None, progress=update)
    console.print(f"{source}: {summary.images:,} images")
    days = [START + timedelta(days=k) for k in range(args.days)]
    results: dict[str, Any] = {}
    with temp_catalog() as cat:
        publish_ontology(cat, factory / "ontology.yaml", actor="bench")
        with progress_bar("ingesting", 0) as update:
            ingest(cat, factory / "manifest.csv", actor="bench", progress=update)
        # Each method keeps its own lake files: a day's cached measurement is only valid for the method that
        # wrote it.
        lakes = {"new": cat.lake, "old": Lake(tmp / f"{source}-old-lake")}
        for name, method in zip(METHODS, (current, baseline), strict=True):
            flagged, cameras, seconds = run_reports(cat, method, lakes[name], days, f"{source}, {name} method")
            results[name] = score(flagged, cameras, args.days) | {"seconds_per_day": seconds / args.days}
    for name in METHODS:
        figures = results[name]
        console.print(f"[bold]{source}, {name}[/]: " + "; ".join(
            f"{d} present day {figures[d]['first_day_present']}, flagged day {figures[d]['first_day_flagged']}"
            for d in DRIFTS) + f"; false flags {len(figures['false_flags'])}: {figures['false_flags']}")
    return results


def _day(value: int | None) -> str:
    return "never" if value is None else f"day {value}"


def rows_of(source: str, results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    new, old = results["new"], results["old"]
    rows = []
    for name in DRIFTS:
        n, o = new[name], old[name]
        rows.append((f"{source}: {name}, first day flagged (present)",
                     f"{_day(n['first_day_flagged'])} ({_day(n['first_day_present'])}), by "
                     f"{', '.join(n['statistics_first_flagged']) or '–'}",
                     f"old: {_day(o['first_day_flagged'])}, by {', '.join(o['statistics_first_flagged']) or '–'}; "
                     "target: the day present"))
        rows.append((f"{source}: {name}, camera-days flagged / touched",
                     f"{n['camera_days_flagged']} / {n['camera_days_touched']}",
                     f"old: {o['camera_days_flagged']} / {o['camera_days_touched']}"))
    rows.append((f"{source}: false flags (clean camera-days flagged)",
                 f"{len(new['false_flags'])} of {new['clean_camera_days']}",
                 f"old: {len(old['false_flags'])}; target 0"))
    rows.append((f"{source}: seconds per day's report", new["seconds_per_day"],
                 f"old: {old['seconds_per_day']:.2f} s (new / old {new['seconds_per_day'] / old['seconds_per_day']:.2f})"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surfaces", default="photo,procedural", help="photo and/or procedural")
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--size", default="bench")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    sources = [s for s in args.surfaces.split(",") if s]
    if unknown := set(sources) - {"photo", "procedural"}:
        parser.error(f"unknown surfaces {sorted(unknown)}; choose among photo, procedural")
    baseline = method_before_issue_14()
    results: dict[str, Any] = {}
    rows: list[tuple[str, Any, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in sources:
            results[source] = run_source(source, args, baseline, Path(tmp))
            rows += rows_of(source, results[source])
    report("bench_drift", "drift: first day flagged against first day present (new method; old beside it)", rows,
           {"sources": results, "baseline_commit": BASELINE_COMMIT, "args": vars(args)})


if __name__ == "__main__":
    main()
