"""The Dagster assets materialized in process against the real PostgreSQL, once through the `dagster` CLI,
and once with Dagster's own run storage in the catalog's PostgreSQL server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pytest

import catalog
from assets.breakdowns import breakdowns
from assets.datasets import dataset_assets
from assets.lake_snapshot import lake_snapshot
from assets.resources import CatalogResource, LakeResource
from catalog.database import dagster_database_url
from catalog.events import PredictionRecorded
from catalog.store import NewEvent

ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-03-03"


def resources(cat: catalog.Catalog) -> dict[str, dg.ConfigurableResource]:
    return {"catalog": CatalogResource(home=str(cat.settings.home), database_url=cat.settings.database_url),
            "lake": LakeResource(root=str(cat.settings.lake_root))}


def dataset_asset(name: str) -> dg.AssetsDefinition:
    return next(a for a in dataset_assets if a.key.path[-1] == name)


def test_the_code_location_loads_every_asset_and_check():
    from assets.definitions import defs

    repository = defs.get_repository_def()
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert {"lake_snapshot", "dataset_inspection_all", "dataset_defects_balanced", "breakdowns",
            "drift_report"} <= keys
    checks = {key.name for key in repository.asset_graph.asset_check_keys if key.asset_key.path == ["dataset_inspection_all"]}
    assert checks == {"no_part_in_two_splits", "class_proportions", "no_image_newer_than_position", "no_excluded_image"}


def test_lake_snapshot_records_the_position_it_reached(factory_cat: catalog.Catalog):
    result = dg.materialize([lake_snapshot], partition_key=DAY, resources=resources(factory_cat),
                            instance=dg.DagsterInstance.ephemeral())
    metadata = result.asset_materializations_for_node("lake_snapshot")[0].metadata
    assert metadata["position"].value == factory_cat.head() == factory_cat.lake.synced_position()
    ingested_that_day = factory_cat.lake.duckdb().execute(
        "SELECT count(*) FROM events WHERE day = DATE '2026-03-03'").fetchone()[0]
    assert metadata["events_that_day"].value == ingested_that_day > 0


def test_dataset_asset_publishes_a_version_once_and_passes_its_checks(factory_cat: catalog.Catalog):
    instance = dg.DagsterInstance.ephemeral()
    asset = dataset_asset("dataset_inspection_all")
    first = dg.materialize([asset], resources=resources(factory_cat), instance=instance)
    metadata = first.asset_materializations_for_node("dataset_inspection_all")[0].metadata
    checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
    assert set(checks) == {"no_part_in_two_splits", "class_proportions", "no_image_newer_than_position",
                           "no_excluded_image"}
    assert all(c.passed for c in checks.values())
    events = factory_cat.store.read_stream("dataset:inspection-all")
    assert [e.data.version_id for e in events] == [metadata["version_id"].value]
    assert metadata["as_of_position"].value == events[0].data.as_of_position
    assert Path(metadata["manifest"].value).is_file()

    second = dg.materialize([asset], resources=resources(factory_cat), instance=instance)
    again = second.asset_materializations_for_node("dataset_inspection_all")[0].metadata
    assert again["version_id"].value == metadata["version_id"].value and again["already_published"].value
    assert len(factory_cat.store.read_stream("dataset:inspection-all")) == 1


def test_run_config_overrides_the_spec_and_a_failed_check_says_why(factory_cat: catalog.Catalog):
    position = factory_cat.head() - 10  # before the last corrections
    spec_yaml = ("name: impossible\nsampling:\n  proportions: {ok: 0.5, crack: 0.5}\n  total: 400\n"
                 "  tolerance: 0.05\n")
    result = dg.materialize(
        [dataset_asset("dataset_defects_balanced")], resources=resources(factory_cat),
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"dataset_defects_balanced": {"config": {"spec_yaml": spec_yaml, "as_of_position": position}}}})
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["class_proportions"].passed
    assert checks["class_proportions"].severity == dg.AssetCheckSeverity.ERROR
    assert "total" in checks["class_proportions"].description
    metadata = result.asset_materializations_for_node("dataset_defects_balanced")[0].metadata
    assert metadata["as_of_position"].value == position
    assert factory_cat.store.read_stream("dataset:impossible")[0].data.as_of_position == position


def test_breakdowns_count_labels_and_predictions_per_slice(factory_cat: catalog.Catalog):
    cat = factory_cat
    with cat.db.connect() as conn:
        shas = [r[0] for r in conn.exec_driver_sql(
            "SELECT sha256, part_id FROM projections.images WHERE captured_at::date = %(d)s ORDER BY sha256",
            {"d": DAY})]
    cat.append([NewEvent(PredictionRecorded(sha256=sha, engine_id="engine-a", scores={"ok": 0.9, "crack": 0.1},
                                            predicted_class="ok"), occurred_at=datetime(2026, 3, 3, 23, tzinfo=UTC))
                for sha in shas])
    result = dg.materialize([breakdowns], partition_key=DAY, resources=resources(cat),
                            instance=dg.DagsterInstance.ephemeral())
    metadata = result.asset_materializations_for_node("breakdowns")[0].metadata
    assert metadata["images"].value == len(shas)
    for key in ("labels", "predictions", "chart"):
        assert Path(metadata[key].value).is_file()
    assert Path(metadata["chart"].value).read_bytes()[:4] == b"\x89PNG"
    folder = cat.settings.lake_root / "breakdowns"
    labels = duckdb.sql(f"SELECT class, sum(images)::INT FROM read_parquet('{folder}/day=*/labels.parquet',"
                        " hive_partitioning = true) GROUP BY class").fetchall()
    with cat.db.connect() as conn:
        expected = dict(conn.exec_driver_sql(
            "SELECT coalesce(label, 'unlabelled'), count(*) FROM projections.images WHERE captured_at::date = %(d)s"
            " GROUP BY 1", {"d": DAY}).fetchall())
    assert dict(labels) == expected
    predictions = duckdb.sql(f"SELECT engine_id, sum(images)::INT FROM '{folder}/day={DAY}/predictions.parquet'"
                             " GROUP BY ALL").fetchall()
    assert predictions == [("engine-a", len(shas))]


def dagster_home(tmp_path: Path, config: str = "dagster.yaml") -> Path:
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(ROOT / config, home / "dagster.yaml")
    return home


def test_the_dagster_cli_materializes_a_dataset_version(factory_cat: catalog.Catalog, database, tmp_path: Path):
    env = database.env() | {"DAGSTER_HOME": str(dagster_home(tmp_path))}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "assets.definitions",
         "--select", "dataset_inspection_all"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    versions = factory_cat.store.read_stream("dataset:inspection-all")
    assert len(versions) == 1 and versions[0].metadata["actor"] == "dagster"


@pytest.fixture
def dagster_database(database, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A `dagster` database on the catalog's server, as `dagster.postgres.yaml` reads it from
    VISIONLEDGER_DAGSTER_DATABASE_URL (set here); its URL, for psycopg2."""
    with psycopg.connect(database.server.admin_dsn(), autocommit=True) as conn:  # an external server's DBA does this
        conn.execute(f"CREATE DATABASE {database.name}_dagster OWNER visionledger_owner")
    url = dagster_database_url(database.settings, database=f"{database.name}_dagster")
    assert url.startswith("postgresql+psycopg2://")
    monkeypatch.setenv("VISIONLEDGER_DAGSTER_DATABASE_URL", url)
    try:
        yield url
    finally:
        with psycopg.connect(database.server.admin_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database.name}_dagster WITH (FORCE)")


def test_dagster_run_storage_in_the_catalogs_postgresql(factory_cat: catalog.Catalog, dagster_database: str,
                                                        tmp_path: Path):
    home = dagster_home(tmp_path, "dagster.postgres.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize([lake_snapshot], partition_key=DAY, resources=resources(factory_cat),
                                instance=instance)
        assert result.success
    with psycopg.connect(dagster_database.replace("+psycopg2", "")) as conn:
        runs = conn.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'").fetchone()[0]
    assert runs == 1


def test_the_multiprocess_executor_on_postgresql_storage(factory_cat: catalog.Catalog, database,
                                                        dagster_database: str, tmp_path: Path):
    """What `make dagster` (with dagster.postgres.yaml) runs: the CLI's asset job, whose default executor gives
    each step a process of its own, with the run and its events kept in the catalog's server."""
    env = database.env() | {"DAGSTER_HOME": str(dagster_home(tmp_path, "dagster.postgres.yaml")),
                            "VISIONLEDGER_DAGSTER_DATABASE_URL": dagster_database}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "assets.definitions",
         "--select", "dataset_inspection_all,dataset_defects_balanced"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with psycopg.connect(dagster_database.replace("+psycopg2", "")) as conn:
        runs = conn.execute("SELECT status FROM runs").fetchall()
        kinds = dict(conn.execute("SELECT dagster_event_type, count(*) FROM event_logs"
                                  " WHERE dagster_event_type IS NOT NULL GROUP BY 1").fetchall())
    assert runs == [("SUCCESS",)]
    # The multiprocess executor starts a worker process per step; the in-process one starts none.
    assert kinds.get("STEP_WORKER_STARTED") == 2 and kinds.get("ASSET_MATERIALIZATION") == 2, kinds
    assert {e.stream_id for e in factory_cat.store.read(0, types=["DatasetVersionPublished"])} == {
        "dataset:inspection-all", "dataset:defects-balanced"}
