"""Fixtures of a catalog with a tiny trained, exported classifier and its recorded engine (serving and app tests).

The catalog is built once per session through the code the Dagster assets run (ingest, publish, train,
export, build), then each test gets its own copy of it: a PostgreSQL database created from it as a template
and a copy of its home (blobs, lake), in well under a second.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import catalog
from catalog.datasets import DatasetSpec, publish_dataset_version
from catalog.embedded_postgres import OWNER_ROLE
from catalog.lineage import CLASSIFIER
from catalog.settings import Settings
from ingestion.factory_delivery import deliver_factory
from learning.training import export_model, train_model
from models.training import ClassifierParams
from serving.engines import build_engine
from tests.conftest import TEMPLATE, TestDatabase, TestServer, reachable_tempdir

SPEC = Path(__file__).resolve().parents[1] / "assets" / "dataset_specs" / "inspection_all.yaml"
# Seconds of training, not a useful model: the tests need its lineage and arithmetic, not its judgement.
TINY = ClassifierParams(epochs=1, samples_per_epoch=16, batch_size=8, width=4)


def _quiet(message: str) -> None:
    """The training and export functions report progress through a callback; the tests need none."""


def copy_database(server: TestServer, template: str) -> TestDatabase:
    name = f"vl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template} OWNER {OWNER_ROLE}")
    settings = Settings(home=reachable_tempdir("vl-test-home-"),
                        database_url=server.url("visionledger_app", name),
                        admin_database_url=server.url(OWNER_ROLE, name))
    return TestDatabase(name=name, server=server, settings=settings)


def drop_database(database: TestDatabase) -> None:
    with psycopg.connect(database.server.admin_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database.name} WITH (FORCE)")
    shutil.rmtree(database.settings.home, ignore_errors=True)


@pytest.fixture(scope="session")
def engine_template(pg_server: TestServer, factory_dir: Path) -> Iterator[tuple[TestDatabase, str]]:
    """The catalog `built_engine` copies, and its engine id; built once per session."""
    template = copy_database(pg_server, TEMPLATE)
    with catalog.open(template.settings) as cat:
        deliver_factory(cat, factory_dir, actor="test", workers=1)
        publish_dataset_version(cat, DatasetSpec.from_yaml(SPEC), actor="test")
        trained = train_model(cat, CLASSIFIER, TINY, _quiet)
        export_model(cat, CLASSIFIER, trained.model_id, _quiet)
        engine_id = build_engine(cat, model_id=trained.model_id, actor="test").record.engine_id
    yield template, engine_id
    drop_database(template)


@pytest.fixture
def built_engine(pg_server: TestServer, engine_template: tuple[TestDatabase, str]
                 ) -> Iterator[tuple[catalog.Catalog, str]]:
    """``(cat, engine_id)``: a fresh catalog of the test's own (its own database and home, dropped afterwards,
    so the test may append anything) holding

    - the tiny simulated factory of ``factory_dir`` (128 x 128 px images) ingested, labelled and corrected;
    - one published version of the ``inspection-all`` dataset (assets/dataset_specs/inspection_all.yaml);
    - one tiny classifier (model "inspection-classifier", seconds of training) registered and exported to ONNX
      (input 128 x 128; outputs probabilities, embedding, defect_cells) by the functions the Dagster assets
      call; it is not promoted, so there is no champion;
    - one engine of it, built and recorded (`EngineBuilt`): backend onnxruntime, precision fp32, device cpu.
      ``engine_id`` is the sha256 of its artifact; `load_engine(cat, engine_id)` loads it (input_size
      (128, 128), cell_size 16, classes from the factory's ontology, ok class "ok"), and it is
      `engine_to_serve(cat)` until another engine is built.

    It is not the catalog of the ``cat`` / ``factory_cat`` / ``database`` fixtures; a subprocess reaches it
    with VISIONLEDGER_HOME, VISIONLEDGER_DATABASE_URL and VISIONLEDGER_ADMIN_DATABASE_URL set to
    ``cat.settings.home``, ``.database_url`` and ``.admin_database_url``.
    """
    template, engine_id = engine_template
    database = copy_database(pg_server, template.name)
    shutil.copytree(template.settings.home, database.settings.home, dirs_exist_ok=True)
    with catalog.open(database.settings) as cat:
        yield cat, engine_id
    drop_database(database)
