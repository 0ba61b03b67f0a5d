"""The app's frame: every role opens it on the real catalog, and a role the app does not know is refused."""

from __future__ import annotations

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
