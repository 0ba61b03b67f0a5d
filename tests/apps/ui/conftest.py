"""Fixtures of the app tests: a catalog the line has run on, and AppTest of the real app against it.

`ui_catalog` starts from the engine fixture's catalog (the tiny factory ingested and labelled, a dataset
version, a registered and exported classifier, its engine) and runs the line's inspection over the factory's
images, recording predictions and part decisions as the server does. Its rules make the decisions
predictable whatever the tiny model thinks: a part is rejected once its cam2 image is in; parts of odd number
are only seen by cam1, so they stay accepted. Some images are queued for review. The classifier is then
evaluated (`ModelEvaluated`, tables in lake/evaluations/) and replayed against no champion, which it passes,
so it is promoted (`RegressionReplayed`, `ModelPromoted`). Each role has a person (`USERS`, all with
`PASSWORD`), and `app(role)` logs an AppTest in as that person through the login form.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import catalog
from apps.ui.roles import DEV_VIEWER
from catalog.events import ReviewRequested
from catalog.store import NewEvent
from identity.people import add_user
from identity.roles import ROLES
from learning.evaluation import EvaluationConfig, evaluate
from learning.promotion import ReplayConfig, replay_and_gate
from serving.decision import RuleSet
from serving.engines import load_engine
from serving.inspection import Inspector
from serving.replay import inspect_history
from tests.conftest import TestDatabase, TestServer
from tests.engine_fixtures import _quiet, copy_database, drop_database

APP = Path(__file__).resolve().parents[3] / "apps" / "ui" / "app.py"
PASSWORD = "correct horse battery staple"
USERS = {"curator": "cora", "annotator": "anna", "analyst": "ali", "auditor": "audrey", "quality": "quinn",
         "engineer": "emil"}  # one person per role
RULES = RuleSet(name="test", version="1", threshold=0.0, default="accept",
                rules=[{"name": "seen-by-cam2", "decision": "reject", "cameras": ["cam2"]}])


def _run_the_line(cat: catalog.Catalog, engine_id: str) -> None:
    engine = load_engine(cat, engine_id)
    with cat.db.connect() as conn:
        images = [tuple(r) for r in conn.exec_driver_sql(
            "SELECT sha256, part_id, line, station, camera, captured_at FROM projections.images"
            " WHERE NOT excluded ORDER BY captured_at, camera").fetchall()]
    # Odd-numbered parts are seen by cam1 only, so they stay accepted.
    images = [i for i in images if i[4] == "cam1" or int(i[1].rsplit("-", 1)[1]) % 2 == 0]
    inspector = Inspector(cat, engine, RULES, source="serve")
    events = [e for inspection in inspect_history(cat, inspector, images) for e in inspection.events]
    queue = [NewEvent(ReviewRequested(sha256=sha, queue="active-learning", strategy="uncertainty",
                                      score=1 - k / 10, reason="test"),
                      occurred_at=datetime(2026, 3, 5, tzinfo=UTC), event_id=uuid.uuid4())
             for k, (sha, *_) in enumerate(images[:6])]
    cat.append(events + queue)
    engine.close()
    # The Performance page's figures: the classifier evaluated on its test split, then replayed as a candidate
    # (no champion yet, and the quality floor lowered for seconds of training, so it passes and is promoted),
    # by the functions the Dagster assets call.
    evaluate(cat, EvaluationConfig(), _quiet)
    replay_and_gate(cat, ReplayConfig(min_images=5, min_validation_recall=0.0, max_good_parts_rejected=1.0),
                    _quiet)



@pytest.fixture(autouse=True)
def main_module_restored() -> Iterator[None]:
    """AppTest runs the app as ``__main__`` and leaves it in sys.modules; a later process pool (the ingester's,
    the simulator's) would then start each worker by running the app. Put the real ``__main__`` back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main

@pytest.fixture(scope="session")
def ui_template(pg_server: TestServer, engine_template: tuple[TestDatabase, str]
                ) -> Iterator[tuple[TestDatabase, str]]:
    template, engine_id = engine_template
    database = copy_database(pg_server, template.name)
    shutil.copytree(template.settings.home, database.settings.home, dirs_exist_ok=True)
    with catalog.open(database.settings) as cat:
        _run_the_line(cat, engine_id)
        for role, username in USERS.items():
            add_user(cat, username, username.capitalize(), PASSWORD, [role], actor="admin")
    yield database, engine_id
    drop_database(database)


@pytest.fixture
def ui_catalog(pg_server: TestServer, ui_template: tuple[TestDatabase, str]
               ) -> Iterator[tuple[catalog.Catalog, TestDatabase, str]]:
    """``(cat, database, engine_id)``: a fresh copy of the line-run catalog; ``database.env()`` points a
    subprocess (or AppTest, through the environment) at it."""
    template, engine_id = ui_template
    database = copy_database(pg_server, template.name)
    shutil.copytree(template.settings.home, database.settings.home, dirs_exist_ok=True)
    with catalog.open(database.settings) as cat:
        yield cat, database, engine_id
    drop_database(database)


def log_in(at: AppTest, username: str, password: str = PASSWORD) -> AppTest:
    """Fill and submit the login form of ``at`` (run, showing it); the next `.run()` logs in and shows the page."""
    at.text_input(key="login-user").input(username)
    at.text_input(key="login-password").input(password)
    at.button(key="login-submit").click()
    return at


def page_text(at: AppTest) -> str:
    """Everything the page sent to the browser: every element's message, and every widget's value."""
    return "\n".join(f"{getattr(node, 'proto', '')}\n{getattr(node, 'value', '')}" for node in at._tree)


@pytest.fixture
def app_test(ui_catalog, monkeypatch: pytest.MonkeyPatch):
    """A function `app_test() -> AppTest` of the real app on `ui_catalog`, not yet run: nobody logged in."""
    _, database, _ = ui_catalog
    for key, value in database.env().items():
        if key.startswith("VISIONLEDGER_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv(DEV_VIEWER, raising=False)

    yield lambda: AppTest.from_file(str(APP), default_timeout=60)
    # The app caches one catalog per database role for the process: close them before the database goes.
    from apps.ui.common import _catalog

    _catalog.clear()


@pytest.fixture
def app(app_test):
    """A function `app(role) -> AppTest` of the real app, logged in through the form as the person of ``role``
    (`USERS`) the next time it runs (call `.run()`, or `.switch_page(...)` then `.run()`)."""
    assert set(USERS) == set(ROLES)
    return lambda role: log_in(app_test().run(), USERS[role])
