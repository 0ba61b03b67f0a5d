"""The curator's commands end to end: simulate a factory, ingest it, query, exclude a window, trace a part."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import catalog
from identity.people import add_user
from tests.builders import run_cli

PASSWORD = "correct horse battery"


@pytest.fixture
def factory(database, tmp_path: Path) -> Path:
    out = tmp_path / "factory"
    run_cli("simulate", "--out", str(out), "--days", "3", "--size", "tiny", "--image-size", "128",
            env=database.env())
    return out


def test_simulate_ingest_query_curate_trace(database, factory: Path):
    env = database.env()
    expected = {"truncated_png": "truncated", "zero_byte": "empty", "not_png": "not_an_image",
                "missing_file": "missing_file", "naive_timestamp": "bad_timestamp"}
    with open(factory / "bad_files.csv") as f:
        planted = {row["path"]: expected[row["kind"]] for row in csv.DictReader(f) if row["kind"] in expected}
    result = run_cli("ingest", str(factory), "--json", env=env, check=False)
    assert result.returncode == 1  # some rows were quarantined
    report = json.loads(result.stdout)
    assert report["ingested"] > 50 and report["duplicates"] >= 1
    assert {row["path"]: row["reason"] for row in report["rejected_rows"]} == planted
    again = json.loads(run_cli("ingest", str(factory), "--json", env=env, check=False).stdout)
    assert (again["ingested"], again["duplicates"]) == (0, 0)
    assert again["already_ingested"] == report["ingested"] + report["duplicates"]

    day = json.loads(run_cli("images", "query", "--line", "line1", "--from", "2026-03-03", "--to", "2026-03-03",
                             "--limit", "1000", "--json", env=env).stdout)
    assert day["total"] == len(day["images"]) > 0
    assert all(i["line"] == "line1" and i["captured_at"].startswith("2026-03-03") for i in day["images"])

    with catalog.open(database.settings) as cat:
        add_user(cat, "cleo", "Cleo Curator", PASSWORD, ["curator"], actor="test")
    excluded = run_cli("curate", "exclude", "--line", "line1", "--from", "2026-03-03", "--to", "2026-03-03",
                       "--reason", "lamp failed all day", "--user", "cleo", "--password-stdin", env=env,
                       stdin=PASSWORD + "\n")
    assert f"excluded {day['total']} of {day['total']}" in excluded.stdout
    csv_out = run_cli("images", "query", "--excluded", "--limit", "1000", "--csv", env=env).stdout
    rows = list(csv.DictReader(io.StringIO(csv_out)))
    assert len(rows) == day["total"] and {r["exclusion_reason"] for r in rows} == {"lamp failed all day"}
    as_of = json.loads(run_cli("images", "query", "--excluded", "--as-of", "1", "--json", env=env).stdout)
    assert as_of["total"] == 0

    part = day["images"][0]["part_id"]
    trace = json.loads(run_cli("trace", "part", part, "--json", env=env).stdout)
    events = [e["type"] for image in trace["images"] for e in image["events"]]
    assert "ImageIngested" in events and "ImageExcluded" in events


def test_curate_refuses_to_select_everything_and_bad_dates(database):
    env = database.env()
    everything = run_cli("curate", "exclude", "--reason", "oops", "--user", "x", "--password-stdin", env=env,
                         stdin=PASSWORD + "\n", check=False)
    assert everything.returncode != 0 and "give at least one filter" in everything.stderr
    naive = run_cli("images", "query", "--from", "2026-03-02T08:00", env=env, check=False)
    assert naive.returncode != 0 and "has no UTC offset" in naive.stderr
