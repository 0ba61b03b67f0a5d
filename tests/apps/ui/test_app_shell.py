"""The app's frame: every role opens it on the real catalog, and a role the app does not know is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apps.ui.roles import ROLES, Action, Viewer


@pytest.mark.parametrize("role", list(ROLES))
def test_every_role_opens_the_app(app, role) -> None:
    at = app(role).run()
    assert not at.exception, at.exception
    assert f"({role})" in at.sidebar.caption[0].value


def test_an_unknown_role_is_refused_with_what_to_set(app) -> None:
    at = app("boss").run()
    assert "VISIONLEDGER_ROLE" in at.error[0].value


def test_roles_allow_only_their_actions() -> None:
    assert Viewer("curator", "c").can(Action.EXCLUDE) and not Viewer("curator", "c").can(Action.LABEL)
    assert Viewer("annotator", "a").can(Action.LABEL) and not Viewer("annotator", "a").can(Action.EXCLUDE)
    for role in ("analyst", "auditor"):
        viewer = Viewer(role, "x")
        assert not any(viewer.can(a) for a in (Action.EXCLUDE, Action.LABEL, Action.REQUEST_REVIEW))
        assert viewer.database_role == role  # a read-only login: the database refuses their appends too


def test_the_app_shows_no_error_details_from_any_working_folder(tmp_path: Path) -> None:
    """`streamlit run apps/ui/app.py`, from wherever it is started, reads apps/ui/.streamlit/config.toml: an
    uncaught error shows a generic message, not its traceback, SQL or paths."""
    app = Path(__file__).resolve().parents[3] / "apps" / "ui" / "app.py"
    read = ("import sys; from streamlit import config; config._main_script_path = sys.argv[1]; "
            "config.get_config_options(force_reparse=True); print(config.get_option('client.showErrorDetails'))")
    shown = subprocess.run([sys.executable, "-c", read, str(app)], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert shown == "none"
