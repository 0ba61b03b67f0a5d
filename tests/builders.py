"""Test data builders and helpers that more than one test module uses. Test modules import them from here and
never from one another (importing a test module runs its module-level setup and couples unrelated tests)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from catalog import Catalog, NewEvent, event_id_for
from catalog.events import EngineBuilt, ImageIngested, OntologyPublished
from identity.stations import issue
from serving.engines import EngineRecord

# -- processes -------------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str], check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`visionledger *args` as a user runs it, in a process of its own (given ``stdin``, e.g. a password);
    fails the test if ``check`` and it fails."""
    result = subprocess.run([sys.executable, "-m", "apps.cli", *args], env=env, capture_output=True, text=True,
                            timeout=300, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"visionledger {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def cli_env(cat: Catalog) -> dict[str, str]:
    """Environment for a `visionledger` process on ``cat`` (as the app role)."""
    return {**os.environ, "VISIONLEDGER_HOME": str(cat.settings.home),
            "VISIONLEDGER_DATABASE_URL": cat.settings.database_url,
            "VISIONLEDGER_ADMIN_DATABASE_URL": cat.settings.admin_database_url}


def free_port() -> int:
    """A local TCP port nothing listens on now, for a server the test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- deliveries: image files and their manifest ------------------------------------------------------------------

MANIFEST_COLUMNS = ["path", "part_id", "line", "station", "camera", "captured_at"]
MANIFEST_CAPTURED_AT = "2026-03-02T08:00:00+01:00"


def png(path: Path, pixels: np.ndarray) -> bytes:
    """Write ``pixels`` to ``path`` as a PNG file; returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", pixels)
    path.write_bytes(data.tobytes())
    return data.tobytes()


def texture(seed: int, shape=(64, 64), dtype=np.uint8) -> np.ndarray:
    """Uniform noise over the whole range of ``dtype``: each seed gives different image bytes."""
    top = 65535 if dtype == np.uint16 else 255
    return (np.random.default_rng(seed).random(shape) * top).astype(dtype)


def write_manifest(root: Path, rows: list[dict], extra: tuple[str, ...] = ()) -> Path:
    """``root``/manifest.csv with ``rows`` (a path each), the other columns filled with one part's values."""
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS + list(extra))
        writer.writeheader()
        for row in rows:
            writer.writerow({"part_id": "P-1", "line": "line-a", "station": "st-1", "camera": "cam-1",
                             "captured_at": MANIFEST_CAPTURED_AT, **row})
    return manifest


# -- inspection requests ---------------------------------------------------------------------------------------

# inspect_form's capture time at minute 0: a recent whole hour, inside the server's window of capture times
# (ServeConfig.max_capture_age) with an hour's room for minutes after it.
FORM_CAPTURED_AT = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def png_bytes(seed: int, shape: tuple[int, int] = (128, 128)) -> bytes:
    """A PNG of grey noise around mid-level, like a plain surface under the camera."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(128, 18, shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def inspect_form(part: str, camera: str = "cam1", minutes: int = 0, **extra: str) -> dict[str, str]:
    """The form fields of an inspection request, captured ``minutes`` after FORM_CAPTURED_AT."""
    return {"part_id": part, "station": "st1", "camera": camera,
            "captured_at": (FORM_CAPTURED_AT + timedelta(minutes=minutes)).isoformat(), **extra}


def station_token(cat: Catalog, *, line: str = "line1", station: str = "st1", cameras: list[str] | None = None,
                  expires_in: timedelta = timedelta(days=1)) -> str:
    """A newly issued token of a station (inspect_form's by default). A server reads the tokens when it starts,
    then every few seconds: issue before building the service."""
    return issue(cat, line=line, station=station, cameras=cameras, expires_at=datetime.now(UTC) + expires_in,
                 issued_by="test").token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- labels and corrections ------------------------------------------------------------------------------------

INGESTED_AT = datetime(2026, 3, 2, 8, tzinfo=UTC)  # when ingest_images' images were captured and ingested
IMAGE_PATHS = [f"line1/2026-03-02/st1/p{n}_cam1.png" for n in (1, 2, 3)]


def ingest_images(cat: Catalog, paths: list[str]) -> dict[str, str]:
    """ImageIngested events for made-up files at ``paths`` (the ingester is tested on its own); path -> sha256."""
    shas = {path: hashlib.sha256(path.encode()).hexdigest() for path in paths}
    cat.append([NewEvent(ImageIngested(
        sha256=sha, part_id=Path(path).stem.split("_")[0], line="line1", station="st1", camera="cam1",
        captured_at=INGESTED_AT, width=64, height=64, channels=1, bit_depth=8, byte_size=100,
        blob_uri="blob:" + sha, source_path=path), occurred_at=INGESTED_AT) for path, sha in shas.items()])
    return shas


def publish_v1(cat: Catalog) -> None:
    cat.record(OntologyPublished(version=1, classes=["ok", "scratch", "spot", "crack"]), occurred_at=INGESTED_AT)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def label_row(n: int, label: str, path: str = IMAGE_PATHS[0], **extra: str) -> dict[str, str]:
    """A row of a labels import file."""
    return {"label_id": f"lbl-{n}", "path": path, "part_id": f"p{n}", "label": label, "labeler": "ana",
            "labeled_at": "2026-03-02T10:00:00+01:00", "region": "", "mask_path": "", **extra}


def correction_row(n: int, old: str, new: str, path: str = IMAGE_PATHS[0], **extra: str) -> dict[str, str]:
    """A row of a corrections import file, correcting label lbl-1."""
    return {"correction_id": f"cor-{n}", "label_id": "lbl-1", "path": path, "part_id": "p1", "old_label": old,
            "new_label": new, "corrected_by": "ben", "corrected_at": f"2026-03-03T0{n}:00:00+01:00",
            "reason": "second look", **extra}


def query(cat: Catalog, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    with cat.db.connect() as conn:
        result = conn.exec_driver_sql(sql) if params is None else conn.exec_driver_sql(sql, params)
        return [tuple(row) for row in result.fetchall()]


def event_count(cat: Catalog) -> int:
    return query(cat, "SELECT count(*) FROM catalog.events")[0][0]


# -- engines ---------------------------------------------------------------------------------------------------


def record_engine(cat: Catalog, record: EngineRecord) -> None:
    """Append ``record`` as an EngineBuilt event (once per engine id), as if an engine had been built."""
    cat.append([NewEvent(EngineBuilt(**dataclasses.asdict(record)), datetime.now(UTC),
                         event_id=event_id_for("engine", record.engine_id))])


def crafted(record: EngineRecord, **changes) -> EngineRecord:
    """A record like ``record`` with ``changes``, under an engine id of its own."""
    engine_id = hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()
    return dataclasses.replace(record, engine_id=engine_id, artifact_uri=f"blob:{engine_id}", **changes)
