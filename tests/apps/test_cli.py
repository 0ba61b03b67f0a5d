"""The `visionledger` command line, run as a user would: a real process against a real catalog."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest

import catalog
from tests.builders import run_cli

GOOD = {"type": "ImageExcluded", "payload": {"sha256": "a" * 64, "reason": "fogged lens"},
        "occurred_at": "2026-03-02T08:00:00+01:00"}


def test_demo_runs_the_whole_loop_and_a_second_run_appends_nothing(database):
    env = database.env()
    args = ("demo", "--size", "tiny", "--days", "3", "--history-days", "2", "--image-size", "128", "--epochs", "1")
    first = run_cli(*args, env=env)
    with psycopg.connect(database.dsn("visionledger_app")) as conn:
        head = conn.execute("SELECT max(position) FROM catalog.events").fetchone()[0]
        counts = dict(conn.execute("SELECT type, count(*) FROM catalog.events GROUP BY type").fetchall())
        excluded = conn.execute("SELECT count(*) FROM projections.images WHERE excluded").fetchone()[0]
        served = conn.execute("SELECT count(*) FROM catalog.events WHERE type = 'PredictionRecorded'"
                              " AND metadata->>'source' = 'serve'").fetchone()[0]
    # Every stage left its facts: two dataset versions (history, then with the served days' labels), models
    # with their engines, the served days' predictions and part decisions, corrections, a review queue. An
    # epoch of training is not fit for a line: nothing is promoted, and the demo says so and what it serves.
    assert counts["DatasetVersionPublished"] == 2 and counts["EngineBuilt"] >= 1
    assert "ModelPromoted" not in counts
    assert "WARNING: no model passed the quality floor" in first.stderr
    assert "UNPROMOTED" in first.stdout
    assert served > 0 and counts["PartDispositioned"] > 0 and counts["ReviewRequested"] > 0
    assert counts["RegressionReplayed"] >= 1 and counts["ModelEvaluated"] >= 1
    assert excluded > 0 and f"{head:,} events / {head:,} mirrored" in first.stdout
    assert "regression gate" in first.stdout and "visionledger app" in first.stdout
    assert ".venv/bin/visionledger trace part" in first.stdout and "<part id>" not in first.stdout
    assert f"{counts.get('ImageRejected', 0)} rows (ImageRejected" in first.stdout
    assert_the_stages_ran_through_dagster(database)
    second = run_cli(*args, env=env)
    with psycopg.connect(database.dsn("visionledger_app")) as conn:
        again = dict(conn.execute("SELECT type, count(*) FROM catalog.events WHERE position > %s GROUP BY type",
                                  (head,)).fetchall())
    assert again == {} and f"{head:,} events / {head:,} mirrored" in second.stdout, again
    check = run_cli("projections", "rebuild", "--check", env=env)
    assert "rebuilt tables equal the live ones" in check.stdout
    # The whole loop leaves a catalog `visionledger check` finds consistent: the chain, every blob named (the
    # heatmaps' by the lake), the lake equal to the log.
    assert "consistent: nothing lost" in run_cli("check", env=env).stdout


def assert_the_stages_ran_through_dagster(database) -> None:
    """The demo's stages are materializations on the instance `make dagster` opens: every asset it built, each
    day's drift report and breakdowns, and the heatmaps of every image queued for review."""
    with psycopg.connect(database.dsn("visionledger_app")) as conn:
        days = {d.isoformat() for (d,) in conn.execute("SELECT DISTINCT captured_at::date FROM projections.images")}
        queued = {s for (s,) in conn.execute("SELECT sha256 FROM projections.review_queue")}
    with dg.DagsterInstance.from_config(str(database.settings.home / "dagster")) as instance:
        materialized = {key.to_user_string() for key in instance.get_asset_keys()
                        if instance.get_latest_materialization_event(key) is not None}
        assert {"dataset_inspection_all", "classifier_model", "classifier_onnx", "model_evaluation",
                "regression_replay", "classifier_engine", "embeddings", "review_queue", "heatmaps", "drift_report",
                "breakdowns"} <= materialized
        for daily in ("drift_report", "breakdowns"):
            assert instance.get_materialized_partitions(dg.AssetKey(daily)) == days, daily
    explained = {s for path in (database.settings.lake_root / "heatmaps").glob("*/heatmaps.parquet")
                 for s in pq.read_table(path, columns=["sha256"])["sha256"].to_pylist()}
    assert queued and queued <= explained


def test_events_append_then_tail_and_stream(database, tmp_path: Path):
    env = database.env()
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "type": "ImageIncluded"}) + "\n")
    assert "appended 2, already stored 0" in run_cli("events", "append", str(lines), "--actor", "cli-test", env=env).stdout
    tailed = [json.loads(line) for line in run_cli("events", "tail", env=env).stdout.splitlines()]
    assert [e["type"] for e in tailed] == ["ImageExcluded", "ImageIncluded"]
    assert tailed[0]["metadata"] == {"actor": "cli-test", "source": "cli"}
    assert tailed[0]["occurred_at"] == "2026-03-02T07:00:00+00:00"
    streamed = run_cli("events", "stream", "image:" + "a" * 64, env=env).stdout.splitlines()
    assert [json.loads(line)["version"] for line in streamed] == [1, 2]


def test_events_tail_follow_prints_events_as_they_arrive(database, tmp_path: Path):
    env = database.env()
    follower = subprocess.Popen([sys.executable, "-m", "apps.cli", "events", "tail", "--follow"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)  # let it reach its idle wait on the NOTIFY channel
        lines = tmp_path / "events.jsonl"
        lines.write_text(json.dumps(GOOD) + "\n")
        run_cli("events", "append", str(lines), env=env)
        ready, _, _ = select.select([follower.stdout], [], [], 30)
        assert ready, "the follower printed nothing within 30 s"
        first = json.loads(follower.stdout.readline())
        assert (first["position"], first["type"]) == (1, "ImageExcluded")
        assert follower.poll() is None, "--follow must keep waiting for more"
    finally:
        follower.kill()
        follower.wait()


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not JSON"),
    (json.dumps({"type": "ImageExcluded", "payload": {}}), "line 2: missing occurred_at"),
    (json.dumps({**GOOD, "occurred_at": "2026-03-02T08:00:00"}), "has no UTC offset"),
    (json.dumps({**GOOD, "occurred_at": "yesterday"}), "'yesterday' is not an ISO 8601 timestamp"),
    (json.dumps({**GOOD, "type": "ImageDeleted"}), "unknown event type 'ImageDeleted'"),
    (json.dumps({**GOOD, "payload": {"sha256": "a" * 64}}), "invalid ImageExcluded: reason: Field required"),
])
def test_bad_event_lines_are_refused_whole_with_a_specific_message(database, tmp_path: Path, line, message):
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    result = run_cli("events", "append", str(lines), env=database.env(), check=False)
    assert result.returncode != 0 and message in result.stderr
    with psycopg.connect(database.dsn("visionledger_app")) as conn:
        assert conn.execute("SELECT count(*) FROM catalog.events").fetchone() == (0,)


def test_labels_as_of_and_projection_status(database):
    env = database.env()
    with catalog.open(database.settings) as cat:
        from datetime import date

        from catalog.synthetic import FactoryShape, simulated_day
        cat.append(list(simulated_day(date(2026, 3, 2), shape=FactoryShape(lines=1, stations=1, cameras=1,
                                                                          parts_per_line=4))))
        first_label = next(e.position for e in cat.store.read() if e.type == "LabelRecorded")
    rows = json.loads(run_cli("labels", "as-of", "--position", str(first_label), "--json", env=env).stdout)
    assert len(rows) == 1 and rows[0]["position"] == first_label
    naive = run_cli("labels", "as-of", "--at", "2026-03-02T08:00", env=env, check=False)
    assert naive.returncode != 0 and "has no UTC offset" in naive.stderr
    garbage = run_cli("labels", "as-of", "--at", "last tuesday", env=env, check=False)
    assert garbage.returncode != 0 and "'last tuesday' is not an ISO 8601 timestamp" in garbage.stderr
    assert "label_history" in run_cli("projections", "status", env=env).stdout


def test_embedded_server_commands(pg_server):
    env = {**__import__("os").environ, "VISIONLEDGER_HOME": str(pg_server.home)}
    env.pop("VISIONLEDGER_DATABASE_URL", None)
    assert "running: 127.0.0.1" in run_cli("db", "status", env=env).stdout
    assert "schema migrated" in run_cli("db", "start", env=env).stderr
    dsn = run_cli("db", "url", "--role", "auditor", env=env).stdout.strip()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("visionledger_auditor",)


def test_stop_refuses_with_an_external_server(database):
    result = run_cli("db", "stop", env=database.env(), check=False)
    assert result.returncode != 0 and "there is no embedded server to stop" in result.stderr
