"""The app's frame, roles × pages: a person of every role, logged in, opens every page on the real catalog; each
page offers the acts of the person's role and no other; no page shows a password or a password hash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apps.ui.roles import ROLES, Action
from tests.apps.ui.conftest import PASSWORD, USERS, page_text

PAGES = ["views/overview.py", "views/day.py", "views/performance.py", "views/curate.py", "views/review.py",
         "views/trace.py", "views/lineage.py"]
# The widgets (by key) through which a page offers each act; a page not named offers none.
ACT_WIDGETS = {
    Action.EXCLUDE: {"views/curate.py": {"curate-exclude", "curate-include", "curate-password"}},
    Action.REQUEST_REVIEW: {"views/curate.py": {"curate-review"}},
    Action.LABEL: {"views/review.py": {"review-confirm", "review-password"}},
    Action.EXPORT: {"views/curate.py": {"curate-export"}},
}


def widget_keys(at) -> set[str]:
    return {node.key for node in at._tree if getattr(node, "key", None)}


def stored_hash(cat, username: str) -> str:
    with cat.db.connect() as conn:
        return conn.exec_driver_sql("SELECT password_hash FROM catalog.credentials WHERE username = %(u)s",
                                    {"u": username}).scalar_one()


@pytest.mark.parametrize("role", list(ROLES))
def test_every_role_opens_every_page_and_is_offered_only_its_acts(app, ui_catalog, role) -> None:
    cat, _, _ = ui_catalog
    secret = stored_hash(cat, USERS[role])
    at = app(role).run()
    assert not at.exception, at.exception
    assert at.sidebar.caption[0].value == f"signed in as **{USERS[role].capitalize()}** ({role})"
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
        keys = widget_keys(at)
        for action, pages in ACT_WIDGETS.items():
            offered = pages.get(page, set()) & keys
            assert offered == (pages.get(page, set()) if action in ROLES[role] else set()), (page, action)
        text = page_text(at)
        assert PASSWORD not in text and secret not in text and "$argon2" not in text, page


def test_readers_work_through_read_only_database_logins(app) -> None:
    for role in ("analyst", "auditor"):
        at = app(role).run()
        assert at.session_state["viewer"].database_role == role  # the database refuses their appends too


def test_the_app_shows_no_error_details_from_any_working_folder(tmp_path: Path) -> None:
    """`streamlit run apps/ui/app.py`, from wherever it is started, reads apps/ui/.streamlit/config.toml: an
    uncaught error shows a generic message, not its traceback, SQL or paths."""
    app = Path(__file__).resolve().parents[3] / "apps" / "ui" / "app.py"
    read = ("import sys; from streamlit import config; config._main_script_path = sys.argv[1]; "
            "config.get_config_options(force_reparse=True); print(config.get_option('client.showErrorDetails'))")
    shown = subprocess.run([sys.executable, "-c", read, str(app)], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert shown == "none"
