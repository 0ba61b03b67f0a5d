"""The simulated factory writes the canonical import format, deterministically, with the planted drift and faults."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ingestion.simulated_factory import CLASSES, DRIFT, NO_DRIFT, SIZE_PRESETS, CameraRef, simulate_factory
from ingestion.simulator.defects import Ellipse

START = date(2026, 3, 2)
DAYS = 5  # covers the first day of every drift in DRIFT, plus one
SIZE = 128

MANIFEST_COLUMNS = ["path", "part_id", "line", "station", "camera", "captured_at"]
LABEL_COLUMNS = ["label_id", "path", "part_id", "label", "labeler", "labeled_at", "region", "mask_path"]
CORRECTION_COLUMNS = [
    "correction_id", "label_id", "path", "part_id", "old_label", "new_label", "corrected_by", "corrected_at",
    "reason",
]  # fmt: skip


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("factory")
    calls: list[tuple[int, int]] = []
    summary = simulate_factory(
        out, days=DAYS, seed=11, size="tiny", image_size=SIZE, progress=lambda d, t: calls.append((d, t))
    )
    return out, summary, calls


@pytest.fixture(scope="module")
def tables(run):
    out = run[0]
    return {
        name: read_csv(out / f"{name}.csv")[1]
        for name in ("manifest", "labels", "corrections", "truth", "bad_files")
    }


@pytest.fixture(scope="module")
def good_images(tables):
    """path -> (truth row, manifest row) for every image that arrived intact."""
    broken = {r["path"] for r in tables["bad_files"] if r["kind"] not in ("naive_timestamp", "duplicate")}
    manifest = {r["path"]: r for r in tables["manifest"]}
    return {r["path"]: (r, manifest[r["path"]]) for r in tables["truth"] if r["path"] not in broken}


def day_of(row: dict[str, str]) -> int:
    return (date.fromisoformat(row["captured_at"][:10]) - START).days


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path: Path) -> None:
    kwargs = {"days": 2, "size": "tiny", "image_size": 64}
    simulate_factory(tmp_path / "a", seed=3, **kwargs)
    simulate_factory(tmp_path / "b", seed=3, workers=2, **kwargs)  # the process pool changes nothing
    simulate_factory(tmp_path / "c", seed=4, **kwargs)
    a, b, c = (tree_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c


def test_a_day_does_not_depend_on_the_days_before(tmp_path: Path) -> None:
    simulate_factory(tmp_path / "short", days=2, seed=5, size="tiny", image_size=64)
    simulate_factory(tmp_path / "long", days=3, seed=5, size="tiny", image_size=64)
    short, long = tree_digest(tmp_path / "short"), tree_digest(tmp_path / "long")
    planted = {r["path"] for run in ("short", "long") for r in read_csv(tmp_path / run / "bad_files.csv")[1]}
    shared = [p for p in short if p.endswith(".png") and p not in planted]
    assert shared
    assert all(short[p] == long[p] for p in shared)


def test_files_and_columns(run) -> None:
    out, summary, _ = run
    assert read_csv(out / "manifest.csv")[0] == MANIFEST_COLUMNS
    assert read_csv(out / "labels.csv")[0] == LABEL_COLUMNS
    assert read_csv(out / "corrections.csv")[0] == CORRECTION_COLUMNS
    assert read_csv(out / "truth.csv")[0] == ["path", "part_id", "true_label", "defect_area_px", "part_label"]
    assert read_csv(out / "bad_files.csv")[0] == ["path", "kind"]
    assert yaml.safe_load((out / "ontology.yaml").read_text()) == {"version": 1, "classes": list(CLASSES)}
    assert summary.manifest_path == out / "manifest.csv"
    for path in (summary.labels_path, summary.corrections_path, summary.ontology_path, summary.truth_path):
        assert path.is_file()


def test_layout_and_summary(run, tables) -> None:
    out, summary, calls = run
    preset = SIZE_PRESETS["tiny"]
    assert summary.images == len(tables["truth"]) == summary.parts * preset.cameras
    assert len(tables["manifest"]) == summary.images + summary.duplicates
    assert sum(summary.per_class.values()) == summary.images
    assert summary.labels == len(tables["labels"])
    assert summary.corrections == len(tables["corrections"])
    assert calls[-1] == (summary.images, summary.images)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    for row in tables["manifest"]:
        line, day, station, name = row["path"].split("/")
        assert (line, station) == (row["line"], row["station"])
        assert row["part_id"].startswith(f"{line}-")
        assert name == f"{row['part_id']}_{row['camera']}.png"
        date.fromisoformat(day)
        img = cv2.imread(str(out / row["path"]), cv2.IMREAD_UNCHANGED)
        if img is not None:
            assert img.shape == (SIZE, SIZE) and img.dtype == np.uint8


def test_manifest_paths_exist_except_the_missing_one(run, tables) -> None:
    out = run[0]
    missing = {r["path"] for r in tables["bad_files"] if r["kind"] == "missing_file"}
    absent = {r["path"] for r in tables["manifest"] if not (out / r["path"]).is_file()}
    assert absent == missing and len(missing) >= 1


def test_timestamps_are_aware_except_the_naive_one(tables) -> None:
    naive = {r["path"] for r in tables["bad_files"] if r["kind"] == "naive_timestamp"}
    assert naive
    captured = {}
    for row in tables["manifest"]:
        ts = datetime.fromisoformat(row["captured_at"])
        assert (ts.tzinfo is None) == (row["path"] in naive), row
        captured[row["path"]] = ts
    for row in tables["labels"]:
        labeled = datetime.fromisoformat(row["labeled_at"])
        assert labeled.tzinfo is not None
        if row["path"] not in naive:
            assert labeled > captured[row["path"]]
    hours = {ts.hour for ts in captured.values()}
    assert min(hours) >= 6 and max(hours) < 22 and len(hours) > 4  # spread over the working day


def test_bad_files_are_planted_as_listed(run, tables) -> None:
    out = run[0]
    kinds = defaultdict(list)
    for row in tables["bad_files"]:
        kinds[row["kind"]].append(out / row["path"])
    expected = {"truncated_png", "zero_byte", "not_png", "missing_file", "naive_timestamp", "duplicate"}
    assert set(kinds) == expected
    assert all(p.stat().st_size == 0 for p in kinds["zero_byte"])
    assert all(not p.exists() for p in kinds["missing_file"])
    for p in kinds["truncated_png"]:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG") and b"IEND" not in data
    for p in kinds["not_png"]:
        assert not p.read_bytes().startswith(b"\x89PNG")
        p.read_bytes().decode("ascii")
    for p in kinds["truncated_png"] + kinds["not_png"] + kinds["zero_byte"]:
        assert cv2.imread(str(p)) is None
    # A duplicate is the same bytes as another manifest row, for the same part and camera.
    by_path = {r["path"]: r for r in tables["manifest"]}
    digests = defaultdict(list)
    for row in tables["manifest"]:
        if (out / row["path"]).is_file():
            digests[hashlib.sha256((out / row["path"]).read_bytes()).digest()].append(row["path"])
    for p in kinds["duplicate"]:
        rel = p.relative_to(out).as_posix()
        twins = digests[hashlib.sha256(p.read_bytes()).digest()]
        assert len(twins) == 2 and rel in twins
        other = next(t for t in twins if t != rel)
        assert {k: v for k, v in by_path[other].items() if k != "path"} == {
            k: v for k, v in by_path[rel].items() if k != "path"
        }
    # Broken files carry no label; everything else has exactly one.
    broken = {r["path"] for r in tables["bad_files"] if r["kind"] not in ("naive_timestamp", "duplicate")}
    labeled = Counter(r["path"] for r in tables["labels"])
    assert set(labeled) == {r["path"] for r in tables["truth"]} - broken
    assert set(labeled.values()) == {1}


def test_masks_exactly_for_defective_images_and_inside_the_region(run, tables, good_images) -> None:
    out = run[0]
    labels = {r["path"]: r for r in tables["labels"]}
    defective = 0
    for path, (truth, _) in good_images.items():
        mask_file = out / path.replace(".png", "_mask.png")
        if truth["true_label"] == "ok":
            assert not mask_file.exists() and truth["defect_area_px"] == "0"
            continue
        defective += 1
        mask = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(mask)) == {0, 255}
        assert np.count_nonzero(mask) == int(truth["defect_area_px"]) > 0
        label = labels[path]
        if label["label"] == "ok":  # a missed defect: no region, no mask
            assert label["region"] == label["mask_path"] == ""
            continue
        assert label["mask_path"] == mask_file.relative_to(out).as_posix()
        x0, y0, x1, y1 = Ellipse.from_json(label["region"]).bounding_box()
        ys, xs = np.nonzero(mask)
        tol = 3  # labelers click a pixel or two off
        assert x0 - tol <= xs.min() and xs.max() <= x1 + tol
        assert y0 - tol <= ys.min() and ys.max() <= y1 + tol
    assert defective > 0
    for label in tables["labels"]:
        assert (label["region"] == "") == (label["label"] == "ok")
        if label["region"]:
            assert set(json.loads(label["region"])) == {"cx", "cy", "rx", "ry", "angle"}
        if label["mask_path"]:
            assert (out / label["mask_path"]).is_file()


def test_wrong_labels_and_corrections_over_a_bigger_run(tmp_path: Path) -> None:
    summary = simulate_factory(tmp_path, days=6, seed=2, size="small", image_size=64)
    truth = {r["path"]: r["true_label"] for r in read_csv(summary.truth_path)[1]}
    labels = {r["label_id"]: r for r in read_csv(summary.labels_path)[1]}
    wrong = [r for r in labels.values() if r["label"] != truth[r["path"]]]
    assert len(wrong) == summary.wrong_labels
    assert 0.03 <= len(wrong) / len(labels) <= 0.075
    by_labeler = Counter(r["labeler"] for r in wrong)
    assert set(Counter(r["labeler"] for r in labels.values())) == {"ana", "ben", "chen"}
    assert by_labeler.most_common(1)[0][0] == "chen"
    assert summary.per_class["ok"] / summary.images > 0.8
    assert all(summary.per_class[c] > 0 for c in CLASSES)

    corrections = read_csv(summary.corrections_path)[1]
    assert 0.3 <= len(corrections) / len(wrong) <= 0.7
    assert len({c["correction_id"] for c in corrections}) == len(corrections)
    for c in corrections:
        label = labels[c["label_id"]]
        assert (c["path"], c["part_id"]) == (label["path"], label["part_id"])
        assert c["old_label"] == label["label"] != c["new_label"] == truth[c["path"]]
        assert c["corrected_by"] != label["labeler"]
        assert datetime.fromisoformat(c["corrected_at"]) > datetime.fromisoformat(label["labeled_at"])
        assert c["reason"]


def per_day(good_images, out: Path, camera: CameraRef | None, line: str, measure) -> dict[int, float]:
    values = defaultdict(list)
    for path, (truth, row) in good_images.items():
        if row["line"] != line or (
            camera and (row["station"], row["camera"]) != (camera.station, camera.camera)
        ):
            continue
        if truth["true_label"] == "ok":  # a defect would shift the statistics
            values[day_of(row)].append(measure(cv2.imread(str(out / path), cv2.IMREAD_GRAYSCALE)))
    return {day: float(np.mean(v)) for day, v in sorted(values.items())}


def test_dimming_line_gets_darker_day_by_day(run, good_images) -> None:
    out = run[0]
    dim = per_day(good_images, out, None, DRIFT.dimming_line, np.mean)
    other = per_day(good_images, out, None, "line2", np.mean)
    assert set(dim) == set(range(DAYS))
    first = DRIFT.dimming_from_day
    assert abs(dim[first - 1] / dim[0] - 1) < 0.02
    assert all(dim[d] < dim[d - 1] for d in range(first, DAYS))
    assert dim[DAYS - 1] / dim[0] < 1 - 0.8 * DRIFT.dimming_per_day * (DAYS - first)
    assert abs(other[DAYS - 1] / other[0] - 1) < 0.03


def test_stuck_pixels_appear_on_the_scheduled_camera_and_grow(run, good_images) -> None:
    out = run[0]
    cam = DRIFT.stuck_camera
    counts = defaultdict(list)
    for path, (_, row) in good_images.items():
        img = cv2.imread(str(out / path), cv2.IMREAD_GRAYSCALE)
        stuck = int(np.count_nonzero((img == 0) | (img == 255)))
        if CameraRef(row["line"], row["station"], row["camera"]) == cam:
            counts[day_of(row)].append(stuck)
        else:
            assert stuck == 0, path
    for day in range(DRIFT.stuck_from_day):
        assert set(counts[day]) == {0}
    grown = [np.median(counts[d]) for d in range(DRIFT.stuck_from_day, DAYS)]
    assert grown[0] > 0 and all(b > a for a, b in zip(grown, grown[1:], strict=False))


def test_dust_blurs_the_scheduled_camera_from_its_day(run, good_images) -> None:
    out = run[0]

    def sharpness(img: np.ndarray) -> float:
        # Leave out stuck pixels: the control camera has them, and they are as sharp as it gets.
        stuck = cv2.dilate(((img == 0) | (img == 255)).astype(np.uint8), np.ones((3, 3), np.uint8))
        return float(cv2.Laplacian(img, cv2.CV_64F)[stuck == 0].var())

    dusty = DRIFT.dust_camera
    control = CameraRef(dusty.line, dusty.station, "cam1" if dusty.camera != "cam1" else "cam2")
    for cam, should_drop in ((dusty, True), (control, False)):
        sharp = per_day(good_images, out, cam, cam.line, sharpness)
        before = np.mean([v for d, v in sharp.items() if d < DRIFT.dust_from_day])
        after = np.mean([v for d, v in sharp.items() if d >= DRIFT.dust_from_day])
        assert (after / before < 0.6) if should_drop else (after / before > 0.85), (cam, before, after)


def test_the_drift_free_twin_differs_only_where_drift_touched(tmp_path: Path) -> None:
    simulate_factory(tmp_path / "line", days=4, seed=5, size="tiny", image_size=64)
    simulate_factory(tmp_path / "twin", days=4, seed=5, size="tiny", image_size=64, drift=NO_DRIFT)
    line, twin = tree_digest(tmp_path / "line"), tree_digest(tmp_path / "twin")
    assert line.keys() == twin.keys()
    planted = {r["path"] for r in read_csv(tmp_path / "line" / "bad_files.csv")[1]}  # the same bytes in both
    for path in (p for p in line if p.endswith(".png") and not p.endswith("_mask.png") and p not in planted):
        line_name, day, station, name = path.split("/")
        camera = CameraRef(line_name, station, name.rsplit("_", 1)[1].removesuffix(".png"))
        drifted = bool(DRIFT.touching(camera, (date.fromisoformat(day) - START).days))
        assert (line[path] != twin[path]) == drifted, path
    masks = [p for p in line if p.endswith("_mask.png")]
    assert masks and all(line[p] == twin[p] for p in masks)  # the same defects, wherever drift fell


def test_rejects_a_used_output_dir_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "stale.txt").write_text("left over")
    with pytest.raises(FileExistsError):
        simulate_factory(tmp_path, days=1, seed=0, size="tiny", image_size=64)
    with pytest.raises(ValueError):
        simulate_factory(tmp_path / "x", days=1, seed=0, size="huge")
    with pytest.raises(ValueError):
        simulate_factory(tmp_path / "y", days=0, seed=0, size="tiny")
