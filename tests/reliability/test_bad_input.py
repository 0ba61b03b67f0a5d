"""Every kind of bad input against a catalog holding the tiny factory: each is refused with a specific reason,
and nothing stored changes (a rejected delivery row leaves only its quarantine event)."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

import catalog
from catalog.datasets.publish import load_manifest
from catalog.errors import CatalogError
from catalog.ontology import OntologyError
from catalog.queries import ImageFilter, count_images, query_images
from identity.people import add_user
from imaging.intake import Limits
from ingestion.ingest import ingest
from ingestion.labels import import_corrections, import_labels
from serving.api import create_app
from serving.service import InspectionService, ServeConfig
from tests.builders import (
    FORM_CAPTURED_AT,
    bearer,
    cli_env,
    png,
    png_bytes,
    run_cli,
    station_token,
    texture,
    write_manifest,
)
from tests.reliability.stored import factory_catalog, snapshot

INJECTIONS = [
    "x' OR '1'='1",
    "'; DROP TABLE catalog.events; --",
    "line1'; DELETE FROM projections.images; --",
    "%(limit)s",
    "%s",
    "line1\u2019 OR \u20181\u2019=\u20181",  # typographic quotes some keyboards and pastes produce
    "line1\" OR \"\"=\"",
    "line1\\",
]


# Someone who may sign curations and corrections (the `stored` catalog has them): a signature records nothing
# of its own, so an act refused for its input still leaves the catalog as it was.
PASSWORD = "correct horse battery"
SIGNER = ("--user", "mallory", "--password-stdin")


@pytest.fixture(scope="module")
def stored(pg_server, factory_dir) -> Iterator[catalog.Catalog]:
    # One catalog for the module: every test leaves it as it was, which is what each one asserts.
    with factory_catalog(pg_server, factory_dir) as cat:
        add_user(cat, "mallory", "Mallory", PASSWORD, ["curator", "annotator"], actor="test")
        yield cat


# -- deliveries: every reject reason of the ingester ---------------------------------------------------------


def _png_bomb() -> bytes:
    """A valid little PNG whose header claims 100,000 x 100,000 pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def _good(folder: Path) -> bytes:
    return png(folder / "good.png", texture(91))


def _file(delivery: Path, data: bytes) -> dict[str, str]:
    (delivery / "f.png").write_bytes(data)
    return {"path": "f.png"}


def _corrupt(outside: Path) -> bytes:
    good = _good(outside)
    return good[:40] + bytes(len(good) - 52) + good[-12:]  # signature and end marker intact, the pixels not


def _symlink_out(delivery: Path, outside: Path) -> dict[str, str]:
    _good(outside)
    (delivery / "f.png").symlink_to(outside / "good.png")
    return {"path": "f.png"}


def _with_good(delivery: Path, **row: str) -> dict[str, str]:
    _good(delivery)
    return {"path": "good.png", **row}


Delivery = Callable[[Path, Path], dict[str, str]]  # (delivery folder, a folder outside it) -> manifest row
DELIVERIES: dict[str, tuple[Delivery, str]] = {
    "empty file": (lambda d, o: _file(d, b""), "empty"),
    "text named .png": (lambda d, o: _file(d, b"GET / HTTP/1.1\r\n"), "not_an_image"),
    "truncated png": (lambda d, o: _file(d, _good(o)[:200]), "truncated"),
    "corrupt png": (lambda d, o: _file(d, _corrupt(o)), "unreadable"),
    "a folder": (lambda d, o: (d / "f.png").mkdir() or {"path": "f.png"}, "unreadable"),
    "too many pixels": (lambda d, o: _file(d, png(o / "big.png", texture(92, (300, 300)))), "too_large"),
    "png bomb header": (lambda d, o: _file(d, _png_bomb()), "too_large"),
    "missing file": (lambda d, o: {"path": "nowhere.png"}, "missing_file"),
    "dot-dot traversal": (lambda d, o: _good(o) and {"path": "../outside/good.png"}, "outside_root"),
    "deep traversal": (lambda d, o: {"path": "a/../../../../../../etc/passwd"}, "outside_root"),
    "absolute path": (lambda d, o: _good(o) and {"path": str(o / "good.png")}, "outside_root"),
    "symlink out": (_symlink_out, "outside_root"),
    "naive timestamp": (lambda d, o: _with_good(d, captured_at="2026-03-02T08:00:00"), "bad_timestamp"),
    "nonsense timestamp": (lambda d, o: _with_good(d, captured_at="'; DROP TABLE x; --"), "bad_timestamp"),
    "empty part": (lambda d, o: _with_good(d, part_id=""), "missing_field"),
    "empty path": (lambda d, o: {"path": ""}, "missing_field"),
    "NUL in the part id": (lambda d, o: _with_good(d, part_id="P-\x00"), "bad_field"),  # jsonb cannot store it
    "escape sequence in the camera": (lambda d, o: _with_good(d, camera="cam\x1b[2J"), "bad_field"),
    "over-long station": (lambda d, o: _with_good(d, station="s" * 201), "bad_field"),
    "NUL in the path": (lambda d, o: {"path": "good.png\x00.txt"}, "bad_field"),
}


@pytest.mark.parametrize("case", DELIVERIES)
def test_a_bad_delivery_row_is_quarantined_and_nothing_else_changes(stored, tmp_path: Path, case: str):
    make, reason = DELIVERIES[case]
    delivery, outside = tmp_path / "delivery", tmp_path / "outside"
    delivery.mkdir()
    outside.mkdir()
    row = make(delivery, outside)
    manifest = write_manifest(delivery, [{"part_id": f"P-{case}", **row}])
    before = snapshot(stored)
    report = ingest(stored, manifest, limits=Limits(max_pixels=200 * 200), workers=1)
    assert [r.reason for r in report.rejected_rows] == [reason], report.to_json()
    assert report.ingested == report.duplicates == 0
    snapshot(stored).assert_unchanged_since(before, quarantined=1)


def test_every_reject_reason_is_swept():
    from catalog.events import RejectReason
    assert {reason for _, reason in DELIVERIES.values()} == {r.value for r in RejectReason}


@pytest.mark.parametrize("content, says", [
    ("file,part\nx.png,P-1\n", "lacks column"),
    ("", "is empty: expected a header line"),
    (b"path,part_id,line,station,camera,captured_at\n\xff\xfe\x00bad\n", "UTF-8"),
])
def test_a_malformed_ingest_manifest_is_refused_whole(stored, tmp_path: Path, content, says):
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(stored)
    with pytest.raises(CatalogError, match=says):
        ingest(stored, manifest, workers=1)
    snapshot(stored).assert_unchanged_since(before)


# -- label and correction CSVs through the CLI ---------------------------------------------------------------


def _held(cat: catalog.Catalog) -> tuple[str, str, str]:
    """(sha256, held label, another class) of one labelled factory image."""
    with cat.db.connect() as conn:
        sha, label = conn.exec_driver_sql(
            "SELECT sha256, label FROM projections.images WHERE label IS NOT NULL ORDER BY sha256 LIMIT 1").one()
        other = conn.exec_driver_sql(
            "SELECT label FROM projections.images WHERE label IS NOT NULL AND label <> %(l)s LIMIT 1",
            {"l": label}).scalar()
    return sha, label, other


def _label(sha: str, label: str, **changes: str) -> dict[str, str]:
    return {"label_id": "rel-lbl-1", "sha256": sha, "label": label, "labeler": "eve",
            "labeled_at": "2026-03-05T10:00:00+01:00", **changes}


def _correction(sha: str, old: str, new: str, **changes: str) -> dict[str, str]:
    return {"correction_id": "rel-cor-1", "sha256": sha, "old_label": old, "new_label": new, "corrected_by": "eve",
            "corrected_at": "2026-03-05T11:00:00+01:00", "reason": "second look", **changes}


def _rows(sha: str, held: str, other: str) -> dict[str, tuple[str, list[dict[str, str]], str]]:
    """case -> (command group, rows, the reason or message it is refused with)."""
    return {
        "unknown class": ("labels", [_label(sha, "wobble")], "unknown_class"),
        "injected class": ("labels", [_label(sha, "ok' OR '1'='1")], "unknown_class"),
        "unknown image": ("labels", [_label("0" * 64, held)], "unknown_image"),
        "image by a traversing path": ("labels", [_label("", held, sha256="", path="../../etc/passwd")],
                                       "unknown_image"),
        "mask outside the file's folder": ("labels", [_label(sha, held, mask_path="../../../etc/passwd")],
                                           "bad_mask_path"),
        "naive labeled_at": ("labels", [_label(sha, held, labeled_at="2026-03-05 10:00")], "bad_timestamp"),
        "empty labeler": ("labels", [_label(sha, held, labeler="")], "missing_field"),
        "bad region": ("labels", [_label(sha, held, region='{"cx": "x"')], "bad_region"),
        "NUL in a label's part id": ("labels", [_label(sha, held, part_id="P-\x00")], "bad_field"),
        "over-long labeler": ("labels", [_label(sha, held, labeler="e" * 201)], "bad_field"),
        "control character in a reason": ("corrections", [_correction(sha, held, other, reason="why\x07")],
                                          "bad_field"),
        "old label not the held one": ("corrections", [_correction(sha, other, held)], "old_label_mismatch"),
        "correction to an unknown class": ("corrections", [_correction(sha, held, "wobble")], "unknown_class"),
        "correction of an unknown image": ("corrections", [_correction("f" * 64, held, other)], "unknown_image"),
    }


ROW_CASES = list(_rows("s", "h", "o"))
IMPORTERS = {"labels": import_labels, "corrections": import_corrections}


def _write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("case", ROW_CASES)
def test_a_refused_label_or_correction_row_stores_nothing(stored, tmp_path: Path, case: str):
    group, rows, reason = _rows(*_held(stored))[case]
    before = snapshot(stored)
    report = IMPORTERS[group](stored, _write_rows(tmp_path / f"{group}.csv", rows))
    assert [p.reason for p in report.problems] == [reason] and report.recorded == 0
    snapshot(stored).assert_unchanged_since(before)


@pytest.mark.parametrize("group", IMPORTERS)
def test_the_cli_refuses_every_bad_row_of_a_file_and_exits_1(stored, tmp_path: Path, group: str):
    # The library is swept case by case above; the command gets all of its group's bad rows in one file.
    cases = [(rows, reason) for g, rows, reason in _rows(*_held(stored)).values() if g == group]
    id_column = "label_id" if group == "labels" else "correction_id"
    rows = [row | {id_column: f"rel-{n}"} for n, (case_rows, _) in enumerate(cases) for row in case_rows]
    path = _write_rows(tmp_path / f"{group}.csv", rows)
    before = snapshot(stored)
    signing = SIGNER if group == "corrections" else ()
    result = run_cli(group, "import", str(path), "--json", *signing, env=cli_env(stored), stdin=PASSWORD + "\n",
                     check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [p["reason"] for p in report["problems"]] == [reason for _, reason in cases] and report["recorded"] == 0
    snapshot(stored).assert_unchanged_since(before)


MALFORMED = [
    ("labels", "label_id,path,labeler\nx,a.png,eve\n", "lacks column"),
    ("corrections", "correction_id,sha256,new_label\nx,abc,ok\n", "lacks column"),
    ("labels", "label_id,sha256,label,labeler,labeled_at\n\xff\xfe bad bytes\n", "UTF-8"),
    ("corrections", "\x00\x01\x02", "lacks column"),
]


@pytest.mark.parametrize("group, content, says", MALFORMED)
def test_a_malformed_label_or_correction_file_is_refused_whole(stored, tmp_path: Path, group, content, says):
    path = tmp_path / "rows.csv"
    path.write_bytes(content.encode("latin-1"))
    before = snapshot(stored)
    with pytest.raises(CatalogError, match=says):
        IMPORTERS[group](stored, path)
    snapshot(stored).assert_unchanged_since(before)


def test_the_cli_reports_a_malformed_file_without_a_traceback(stored, tmp_path: Path):
    group, content, says = MALFORMED[2]
    path = tmp_path / "rows.csv"
    path.write_bytes(content.encode("latin-1"))
    before = snapshot(stored)
    result = run_cli(group, "import", str(path), env=cli_env(stored), check=False)
    assert result.returncode != 0 and says in result.stdout + result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    snapshot(stored).assert_unchanged_since(before)


# -- SQL injection in every filter -----------------------------------------------------------------------------


FIELDS = ("lines", "stations", "cameras", "parts", "labels", "predictions")


@pytest.mark.parametrize("field", FIELDS)
def test_injection_in_a_query_filter_matches_nothing_and_changes_nothing(stored, field: str):
    before = snapshot(stored)
    for value in INJECTIONS:
        for values in ((value,), (value, "' OR 1=1 --")):  # one value binds with `=`, several with `= ANY`
            where = ImageFilter(**{field: values})
            for as_of in (None, stored.head()):
                if field == "labels":  # a label filter names classes of the ontology: anything else is refused
                    with pytest.raises(OntologyError, match="unknown class"):
                        count_images(stored, where, as_of=as_of)
                    continue
                assert query_images(stored, where, as_of=as_of) == [], (field, value)
                assert count_images(stored, where, as_of=as_of) == 0, (field, value)
    snapshot(stored).assert_unchanged_since(before)


@pytest.mark.parametrize("options, status, says", [
    (("--line", "--station", "--camera", "--part"), 0, ""),
    (("--label",), 1, "unknown class"),
    (("--from",), 2, "ISO 8601"),  # not a time: refused before any query, with what to give instead
])
def test_injection_through_the_cli_query_options_matches_nothing(stored, options, status: int, says: str):
    # The library is swept value by value above; the command gets each option with several injections at once.
    values = INJECTIONS[:1] if options == ("--from",) else INJECTIONS[:4]
    before = snapshot(stored)
    result = run_cli("images", "query", *[a for o in options for v in values for a in (o, v)], "--as-of",
                     str(stored.head()), "--json", env=cli_env(stored), check=False)
    assert result.returncode == status and says in result.stderr, result.stderr
    if status == 0:
        found = json.loads(result.stdout)
        assert found["total"] == 0 and found["images"] == []
    snapshot(stored).assert_unchanged_since(before)


def test_injection_through_curation_selects_nothing_and_records_nothing(stored):
    before = snapshot(stored)
    result = run_cli("curate", "exclude", "--line", INJECTIONS[0], "--camera", INJECTIONS[1], "--reason",
                     "'); DELETE FROM catalog.events; --", *SIGNER, env=cli_env(stored), stdin=PASSWORD + "\n",
                     check=False)
    assert "Traceback" not in result.stderr, result.stderr
    snapshot(stored).assert_unchanged_since(before)
    with psycopg.connect(catalog.database.libpq_dsn(stored.urls.app)) as conn:
        assert conn.execute("SELECT count(*) FROM projections.images").fetchone()[0] > 0  # the tables are there


# -- paths read from the catalog ---------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["../../../../../../etc/passwd", "/etc/passwd", "datasets/../../blobs/x"])
def test_a_manifest_uri_cannot_lead_outside_the_lake(stored, uri: str):
    before = snapshot(stored)
    with pytest.raises(CatalogError, match="outside the lake"):
        load_manifest(stored.lake, uri)
    snapshot(stored).assert_unchanged_since(before)



# -- the inspection API: what tests/serving/test_api.py does not send -----------------------------------------------


@pytest.fixture
def api(built_engine, tmp_path: Path) -> Iterator[tuple[TestClient, catalog.Catalog]]:
    cat, _ = built_engine
    token = station_token(cat)
    service = InspectionService(cat, ServeConfig(spool=tmp_path / "spool", max_image_bytes=2_000_000, max_wait_ms=2))
    with TestClient(create_app(service), headers=bearer(token)) as client:
        yield client, cat


CAPTURE = {"part_id": "P-9", "station": "st1", "camera": "cam1", "captured_at": FORM_CAPTURED_AT.isoformat()}
BATCHES = {
    "nesting bomb": ("[" * 100_000 + "]" * 100_000, 422, "nested too deeply"),
    "a million entries": (json.dumps([CAPTURE] * 1_000_000), 400, "exceeded maximum size"),  # multipart limit
    "a key named like the parser's own argument": (json.dumps([CAPTURE | {"index": 3}]), 422, "captures[0]"),
    "unknown keys": (json.dumps([CAPTURE | {"__class__": "x", "sql": "'; DROP TABLE catalog.events; --"}]), 422,
                     "captures[0]"),
    "nulls": (json.dumps([dict.fromkeys(CAPTURE)]), 422, "captures[0]"),
}


@pytest.mark.parametrize("case", BATCHES)
def test_a_hostile_captures_field_is_refused_and_stores_nothing(api, case: str):
    client, cat = api
    captures, status, says = BATCHES[case]
    before = snapshot(cat)
    response = client.post("/v1/inspect/batch", files=[("images", ("a.png", png_bytes(1)))],
                           data={"captures": captures})
    assert response.status_code == status and says in response.text, response.text[:500]
    snapshot(cat).assert_unchanged_since(before)


def test_a_decompression_bomb_is_refused_before_decoding_and_quarantined_only(api):
    client, cat = api
    before = snapshot(cat)
    response = client.post("/v1/inspect", files={"image": ("bomb.png", _png_bomb())}, data=CAPTURE)
    assert response.status_code == 413 and "100000x100000" in response.text, response.text
    snapshot(cat).assert_unchanged_since(before, quarantined=1)

