"""What the line may send and what a part's decision stands on (issue 16): capture times within the server's
window, printable fields of bounded length, pixel counts and request sizes checked before anything costly,
refusals quarantined; a part decided over all its images in the log, a reject overturned only by a person's
signed disposition. Each refusal leaves the catalog as it was, apart from quarantine events."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import catalog
from apps.reports.trace_report import trace_html
from catalog.audit import part_audit
from catalog.events import PartDispositioned
from catalog.lookups import PART_EVENTS_QUERY
from catalog.store import NewEvent
from imaging.intake import Limits, Rejected, check_image_bytes
from serving.api import create_app
from serving.decision import Finding, load_rules
from serving.engines import load_engine
from serving.engines.base import EngineOutput
from serving.inspection import Capture, Inspection, Inspector, PartMemory
from serving.service import InspectionService, ServeConfig
from tests.builders import FORM_CAPTURED_AT, bearer, inspect_form, png_bytes, station_token
from tests.reliability.stored import snapshot


@pytest.fixture
def serve(built_engine, tmp_path: Path):
    """A function starting the API over a new service of the engine's catalog (as a restarted server would),
    with a client that sends inspect_form's station's token."""
    cat, _ = built_engine
    token = station_token(cat)

    @contextmanager
    def start(**config) -> Iterator[TestClient]:
        service = InspectionService(cat, ServeConfig(spool=tmp_path / "spool", max_wait_ms=2, retry_seconds=0.2,
                                                     **config))
        with TestClient(create_app(service), headers=bearer(token)) as client:
            client.service = service
            yield client

    return start


def _events(cat: catalog.Catalog, kind: str, part_id: str) -> list:
    return [e for e in cat.store.read(0, limit=None) if e.type == kind and e.payload.get("part_id") == part_id]


# -- capture times -----------------------------------------------------------------------------------------------

def bad_times(now: datetime) -> dict[str, str]:
    """Capture times to refuse, the window's relative to ``now`` (the test's, not the suite's start)."""
    return {
        "year 1": "0001-01-01T00:00:00+00:00",
        "year 1 ahead of UTC": "0001-01-01T00:30:00+01:00",  # before year 1 in UTC
        "1970": "1970-01-01T00:00:00+00:00",
        "2099": "2099-06-01T00:00:00+00:00",
        "year 9999": "9999-12-31T23:59:59+00:00",
        "year 9999 behind UTC": "9999-12-31T23:59:59-01:00",  # past year 9999 in UTC: answered 500 before
        "a day and an hour ago": (now - timedelta(hours=25)).isoformat(),
        "ten minutes ahead": (now + timedelta(minutes=10)).isoformat(),
        "naive": now.replace(tzinfo=None).isoformat(),
        "garbage": "next tuesday",
        "empty": "",
    }


def test_a_capture_time_outside_the_window_or_the_calendar_is_refused_and_records_nothing(serve, built_engine):
    cat, _ = built_engine
    before = snapshot(cat)
    with serve() as client:
        for case, moment in bad_times(datetime.now(UTC)).items():
            single = client.post("/v1/inspect", files={"image": ("a.png", png_bytes(1))},
                                 data=inspect_form("T-1") | {"captured_at": moment})
            assert single.status_code == 422 and "captured_at" in single.text, (case, single.text)
            batch = client.post("/v1/inspect/batch", files=[("images", ("a.png", png_bytes(1))),
                                                            ("images", ("b.png", png_bytes(2)))],
                                data={"captures": json.dumps([inspect_form("T-1"),
                                                              inspect_form("T-1", "cam2") | {"captured_at": moment}])})
            assert batch.status_code == 422 and "captures[1]" in batch.text, (case, batch.text)
        snapshot(cat).assert_unchanged_since(before)
        assert client.post("/v1/inspect", files={"image": ("a.png", png_bytes(1))},
                           data=inspect_form("T-1")).status_code == 200  # the window's inside is served
    assert len(_events(cat, "ImageIngested", "T-1")) == 1


def test_without_a_window_any_calendar_time_is_served_but_none_answers_500(serve, built_engine):
    with serve(max_capture_age=None, max_capture_lead=None) as client:  # the demo's simulated past
        for moment, status in [("1970-01-01T00:00:00+00:00", 200), ("9999-12-31T23:59:59-01:00", 422),
                               ("0001-01-01T00:30:00+01:00", 422)]:
            reply = client.post("/v1/inspect", files={"image": ("a.png", png_bytes(1))},
                                data=inspect_form("T-2") | {"captured_at": moment})
            assert reply.status_code == status, (moment, reply.text)


# -- fields --------------------------------------------------------------------------------------------------------

BAD_VALUES = ["P\x00-1", "two\nlines", "\x1b[2Jcleared", "\u202eright-to-left", "x" * 201]


@pytest.mark.parametrize("field", ["part_id", "station", "camera", "line"])
def test_control_characters_and_over_long_fields_are_refused_naming_the_field(serve, built_engine, field: str):
    cat, _ = built_engine
    before = snapshot(cat)
    with serve() as client:
        for value in BAD_VALUES:
            single = client.post("/v1/inspect", files={"image": ("a.png", png_bytes(1))},
                                 data=inspect_form("F-1") | {field: value})
            assert single.status_code == 422 and field in single.text, (value, single.text)
            batch = client.post("/v1/inspect/batch", files=[("images", ("a.png", png_bytes(1)))],
                                data={"captures": json.dumps([inspect_form("F-1") | {field: value}])})
            assert batch.status_code == 422 and f"captures[0]: {field}" in batch.text, (value, batch.text)
    snapshot(cat).assert_unchanged_since(before)


# -- pixels and bytes ------------------------------------------------------------------------------------------------


def _tiff_bomb(side: int = 20_000) -> bytes:
    """A valid deflate-compressed TIFF of side x side black pixels (400 MB decoded at 20000) in a few hundred KB."""
    compressor, zeros = zlib.compressobj(9), bytes(side * 100)
    strip = b"".join(compressor.compress(zeros) for _ in range(side // 100)) + compressor.flush()
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, len(strip))]
    ifd_size = 2 + 12 * len(entries) + 4
    entries[5] = (273, 4, 1, 8 + ifd_size)  # the strip follows the directory
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, count, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + strip


def _bmp_header(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0,
                                                                     0, 0, 0, 0)


def test_every_format_is_refused_by_its_header_before_decoding(tmp_path: Path):
    for bomb in (_tiff_bomb(), _bmp_header(20_000, -20_000)):
        refused = check_image_bytes(bomb, Limits())
        assert isinstance(refused, Rejected) and refused.reason.value == "too_large", refused
        assert "20000x20000" in refused.detail
    # The bomb decoded would take 400 MB: refused, the checking process grows by no more than a few MB.
    bomb = tmp_path / "bomb.tif"
    bomb.write_bytes(_tiff_bomb())
    measured = subprocess.run([sys.executable, "-c", (
        "import resource, sys; from imaging.intake import Limits, check_image_bytes;"
        "data = open(sys.argv[1], 'rb').read(); check_image_bytes(b'', Limits());"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "print(check_image_bytes(data, Limits()).reason.value,"
        " (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)"), str(bomb)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    reason, grown_mb = measured.stdout.split()
    assert reason == "too_large" and int(grown_mb) < 50, measured.stdout
    # Images the line really sends still pass, whatever their format.
    import cv2
    image = np.full((64, 96), 120, np.uint8)
    for ext in (".tif", ".bmp", ".png", ".jpg"):
        checked = check_image_bytes(cv2.imencode(ext, image)[1].tobytes(), Limits())
        assert not isinstance(checked, Rejected) and checked[2].shape[:2] == (64, 96), (ext, checked)


def test_a_tiff_bomb_sent_to_the_api_is_refused_and_quarantined_only(serve, built_engine):
    cat, _ = built_engine
    before = snapshot(cat)
    with serve() as client:
        reply = client.post("/v1/inspect", files={"image": ("bomb.tif", _tiff_bomb())}, data=inspect_form("B-1"))
    assert reply.status_code == 413 and "20000x20000" in reply.text, reply.text
    snapshot(cat).assert_unchanged_since(before, quarantined=1)


def test_an_upload_above_the_image_limit_is_refused_and_quarantined_with_its_fields(serve, built_engine):
    cat, _ = built_engine
    before = snapshot(cat)
    huge = b"\x89PNG\r\n\x1a\n" + bytes(70 * 1024 * 1024)
    with serve() as client:  # the default limits: 64 MiB an image, 128 MiB a request
        reply = client.post("/v1/inspect", files={"image": ("huge.png", huge)}, data=inspect_form("L-1"))
    assert reply.status_code == 413 and reply.json()["detail"]["reason"] == "too_large", reply.text
    snapshot(cat).assert_unchanged_since(before, quarantined=1)  # no blob, no other event
    (quarantined,) = [e for e in cat.store.read(0, limit=None)
                      if e.type == "ImageRejected" and e.payload["row"].get("part_id") == "L-1"]
    assert quarantined.payload["reason"] == "too_large" and quarantined.payload["sha256"] is None
    assert {k: quarantined.payload["row"][k] for k in ("part_id", "station", "camera")} == {
        "part_id": "L-1", "station": "st1", "camera": "cam1"}


def test_a_request_body_above_its_limit_is_refused_early_and_quarantined(serve, built_engine):
    cat, _ = built_engine
    before = snapshot(cat)
    body = png_bytes(1, (1200, 1200))
    assert len(body) > 1_000_000
    with serve(max_request_bytes=1_000_000) as client:
        declared = client.post("/v1/inspect", files={"image": ("big.png", body)}, data=inspect_form("L-2"))
        assert declared.status_code == 413, declared.text
        # Without a Content-Length the bytes are counted as they stream in.
        streamed = client.post("/v1/inspect", content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                               headers={"content-type": "multipart/form-data; boundary=x"})
        assert streamed.status_code == 413, streamed.text
    snapshot(cat).assert_unchanged_since(before, quarantined=2)


# -- part decisions ----------------------------------------------------------------------------------------------------


def _verdict(inspector: Inspector, tiles: int, predicted: str) -> EngineOutput:
    """What the engine would answer for `tiles` tiles that all show `predicted` (a class of the engine)."""
    engine = inspector.engine
    probabilities = np.full((tiles, len(engine.classes)), 1e-4, np.float32)
    probabilities[:, engine.classes.index(predicted)] = 1 - 1e-4 * (len(engine.classes) - 1)
    cells = engine.input_size[0] // engine.cell_size, engine.input_size[1] // engine.cell_size
    hot = 0.0 if predicted == engine.ok_class else 0.95
    return EngineOutput(probabilities, np.full((tiles, *cells), hot, np.float32))


def _judge(service_or_inspector, seed: int, part_id: str, predicted: str, camera: str = "cam1") -> Inspection:
    inspector = getattr(service_or_inspector, "inspector", service_or_inspector)
    capture = Capture(part_id=part_id, line="line1", station="st1", camera=camera,
                      captured_at=FORM_CAPTURED_AT + timedelta(minutes=seed))
    prepared = inspector.prepare(png_bytes(seed), capture)
    recorded = service_or_inspector.part_record(part_id) if hasattr(service_or_inspector, "part_record") else None
    return inspector.judge(prepared, _verdict(inspector, len(prepared.tiles.tiles), predicted), recorded=recorded)


def _rejected_for_a_crack(cat: catalog.Catalog, engine_id: str, part_id: str) -> None:
    """A server that has since stopped judged a crack on the part and recorded it."""
    earlier = Inspector(cat, load_engine(cat, engine_id), load_rules())
    inspection = _judge(earlier, 1, part_id, "crack")
    assert (inspection.part.decision, inspection.part.rule) == ("reject", "crack")
    cat.append(inspection.events)


def _human(cat: catalog.Catalog, part_id: str, *, signed: bool) -> None:
    signature = {"signer": "ana", "signed_at": datetime.now(UTC).isoformat(), "meaning": "approved"}
    cat.append([NewEvent(
        data=PartDispositioned(part_id=part_id, decision="accept", decided_by="ana", decider="human",
                               rule="review", reason="a reflection, not a crack"),
        occurred_at=datetime.now(UTC), metadata={"actor": "user:ana"} | (signature if signed else {}))])


def test_a_clean_image_after_a_crack_reject_keeps_the_part_rejected_across_a_restart(serve, built_engine):
    cat, engine_id = built_engine
    _rejected_for_a_crack(cat, engine_id, "K-1")
    with serve() as client:  # a new server: nothing of the part in its memory
        clean = _judge(client.service, 2, "K-1", "ok", "cam2")
        assert clean.predicted_class == "ok"
        assert (clean.part.decision, clean.part.rule) == ("reject", "crack") and len(clean.part.image_sha256s) == 2
        assert not [e for e in clean.events if isinstance(e.data, PartDispositioned)]  # nothing changed
        reply = client.post("/v1/inspect", files={"image": ("c.png", png_bytes(3))}, data=inspect_form("K-1", "cam3"))
        assert reply.status_code == 200 and reply.json()["part"]["decision"] == "reject", reply.text
        assert reply.json()["part"]["images"] == 3  # the crack from the log, the clean one judged here, this one
    assert {e.payload["decision"] for e in _events(cat, "PartDispositioned", "K-1")} == {"reject"}


def test_a_reject_stands_in_this_process_memory_and_the_spool_while_the_catalog_is_away(built_engine):
    cat, engine_id = built_engine
    rules = load_rules()
    inspector = Inspector(cat, load_engine(cat, engine_id), rules)
    crack = _judge(inspector, 1, "S-1", "crack")
    memory = PartMemory()  # a restarted server, its spool holding the crack's events
    memory.remember(crack.events, engine_id)
    clean = Finding(sha256="0" * 64, camera="cam2", predicted_class="ok", scores={"ok": 1.0}, defect_score=0.0)
    decision, new_event = memory.add("S-1", clean, inspector.rules, engine_id, recorded=None)
    assert (decision.decision, decision.rule, new_event) == ("reject", "crack", None)


def test_a_signed_human_accept_overturns_a_reject_and_the_trace_shows_its_signature(serve, built_engine):
    cat, engine_id = built_engine
    _rejected_for_a_crack(cat, engine_id, "K-2")
    _human(cat, "K-2", signed=True)
    with serve() as client:
        again = _judge(client.service, 2, "K-2", "crack", "cam2")  # a person's signed decision stands
        assert (again.part.decision, again.part.rule) == ("accept", "human")
        assert "ana" in again.part.reason and "approved" in again.part.reason
        assert not [e for e in again.events if isinstance(e.data, PartDispositioned)]
        reply = client.post("/v1/inspect", files={"image": ("c.png", png_bytes(3))}, data=inspect_form("K-2", "cam3"))
        assert reply.json()["part"]["decision"] == "accept" and reply.json()["part"]["rule"] == "human", reply.text
    audit = part_audit(cat, "K-2")
    assert audit.decision.decider == "human" and audit.decision.decision == "accept"
    assert audit.decision.signed.signer == "ana" and audit.decision.signed.meaning == "approved"
    page = trace_html(audit, cat.blobs.read)
    assert "<b>signed by ana (approved) at" in page


def test_an_unsigned_human_accept_does_not_overturn_a_reject(serve, built_engine):
    cat, engine_id = built_engine
    _rejected_for_a_crack(cat, engine_id, "K-3")
    _human(cat, "K-3", signed=False)
    with serve() as client:
        clean = _judge(client.service, 2, "K-3", "ok", "cam2")
        assert (clean.part.decision, clean.part.rule) == ("reject", "crack")
    audit = part_audit(cat, "K-3")
    assert audit.decision.decider == "engine" and audit.decision.decision == "reject"
    assert "unsigned: decides nothing" in trace_html(audit, cat.blobs.read)


def test_the_part_lookup_is_one_indexed_query(built_engine):
    cat, _ = built_engine
    with cat.db.connect() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # the test's log is too small to need an index
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {PART_EVENTS_QUERY}", {"p": "x"}))
        partitions = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'catalog.events'::regclass").scalar()
        conn.rollback()
    # Each partition's copy of the index events_part (0013, kept by 0017) answers for its range of positions.
    assert "Seq Scan" not in plan, plan
    assert plan.count("Index Cond: ((payload ->> 'part_id'::text) = 'x'::text)") == partitions, plan
