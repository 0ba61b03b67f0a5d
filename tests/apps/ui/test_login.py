"""Logging in to the app, and the browser session that follows: nothing shows before a login, a refused login
says no more than "wrong user name or password" and is recorded, repeated failures lock the account out, a
session expires (idle or too long) and can be ended, the person's roles are read from the catalog at every
click, and development mode says loudly what it is."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import pytest

from apps.ui.roles import DEV_VIEWER
from apps.ui.session import SESSION_KEY
from identity.people import MAX_FAILED_LOGINS, disable, grant, revoke
from tests.apps.ui.conftest import PASSWORD, log_in, page_text
from tests.builders import run_cli

CURATE, REVIEW = "views/curate.py", "views/review.py"


def logged_out(at) -> bool:
    """The login form, and nothing of the app: no page, no navigation."""
    return "login-submit" in {b.key for b in at.button} and not at.sidebar.caption and not at.title[1:]


def events_since(cat, head: int) -> list[tuple[str, str, str]]:
    return [(e.type, e.metadata["actor"], e.payload.get("reason", "")) for e in cat.store.read(after=head)]


def test_nothing_shows_before_a_login_and_a_login_is_recorded(app_test, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    at = app_test().run()
    assert logged_out(at)
    at.switch_page(CURATE).run()  # a page's address is no way in
    assert logged_out(at) and not at.metric

    head = cat.head()
    log_in(at, "Cora ").run()  # names are lower-case; stray spaces are forgiven
    assert not at.exception, at.exception
    assert at.sidebar.caption[0].value == "signed in as **Cora** (curator)"
    assert at.title[0].value == "Curate"
    assert events_since(cat, head) == [("UserLoggedIn", "user:cora", "")]


def test_a_refused_login_says_no_more_and_is_recorded(app_test, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    at = app_test().run()
    head = cat.head()
    log_in(at, "cora", "not the password at all").run()
    wrong_password = at.error[0].value
    log_in(at, "nobody", PASSWORD).run()
    assert at.error[0].value == wrong_password == "Not logged in: wrong user name or password."
    assert logged_out(at)
    assert PASSWORD not in page_text(at) and "not the password" not in page_text(at)  # the form was cleared
    # A failure against an account is recorded (it counts towards the lock-out); an unknown name has no stream.
    assert events_since(cat, head) == [("UserLoginFailed", "user:cora", "wrong_password")]


def test_repeated_failures_lock_the_account_out(app_test, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    at = app_test().run()
    for _ in range(MAX_FAILED_LOGINS):
        log_in(at, "anna", "not the password at all").run()
    head = cat.head()
    log_in(at, "anna", PASSWORD).run()  # the right password, too late
    assert logged_out(at)
    assert "locked for 15 more minutes" in at.error[0].value
    assert events_since(cat, head) == [("UserLoginFailed", "user:anna", "locked_out")]


@pytest.mark.parametrize("moved", [{"last_seen_at": timedelta(minutes=31)}, {"logged_in_at": timedelta(hours=13)}],
                         ids=["idle", "too-long"])
def test_a_session_expires(app, ui_catalog, moved) -> None:
    cat, _, _ = ui_catalog
    at = app("curator").switch_page(CURATE).run()
    at.text_input(key="curate-parts").input("line1-20260302-0001").run()
    at.text_input(key="curate-reason").input("lamp failed on line1")
    at.text_input(key="curate-password").input(PASSWORD)
    session = at.session_state[SESSION_KEY]
    at.session_state[SESSION_KEY] = replace(session, **{k: getattr(session, k) - back for k, back in moved.items()})
    head = cat.head()
    at.button(key="curate-exclude").click().run()  # the click that finds the session over acts on nothing
    assert cat.head() == head
    assert logged_out(at)
    assert at.info[0].value == "Your session expired: please log in again."
    log_in(at, "cora").run()
    assert at.title[0].value == "Curate"


def test_logging_out_ends_the_session(app) -> None:
    at = app("auditor").run()
    at.sidebar.button(key="logout").click().run()
    assert logged_out(at)
    assert at.info[0].value == "You logged out."
    at.run()
    assert logged_out(at) and not at.info


def test_roles_come_from_the_catalog_at_every_click(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    grant(cat, "cora", "annotator", actor="user:admin")
    at = app("curator").switch_page(REVIEW).run()
    assert at.sidebar.selectbox(key="role").options == ["curator", "annotator"]
    assert "review-confirm" not in {b.key for b in at.button}  # acting as a curator
    at.sidebar.selectbox(key="role").set_value("annotator").run()
    assert "review-confirm" in {b.key for b in at.button}
    assert at.sidebar.caption[0].value == "signed in as **Cora** (annotator)"

    revoke(cat, "cora", "annotator", actor="user:admin")  # takes effect at the next click
    head = cat.head()
    at.button(key="review-confirm").click().run()
    assert cat.head() == head  # no label recorded
    assert at.sidebar.caption[0].value == "signed in as **Cora** (curator)"
    assert "role" not in {s.key for s in at.sidebar.selectbox} and "review-confirm" not in {b.key for b in at.button}

    revoke(cat, "cora", "curator", actor="user:admin")
    at.run()
    assert "Cora holds no role in visionledger" in at.error[0].value
    assert not at.sidebar.caption and not at.title  # nothing of the app

    disable(cat, "cora", actor="user:admin", reason="left the plant")
    at.run()
    assert logged_out(at) and at.info[0].value == "This account is disabled."


def test_development_mode_needs_no_login_and_says_so_on_every_page(app_test, ui_catalog, monkeypatch) -> None:
    """Development mode is the one way in without a login: it is for working on the app itself."""
    cat, _, _ = ui_catalog
    monkeypatch.setenv(DEV_VIEWER, "curator:dev")
    at = app_test().switch_page(CURATE).run()
    assert not at.exception, at.exception
    banner = at.error[0].value
    assert banner.startswith("**DEVELOPMENT MODE**: no login. Anyone reaching this port acts as **dev** (curator)")
    assert "logout" not in {b.key for b in at.button}
    at.text_input(key="curate-parts").input("line1-20260302-0001").run()
    head = cat.head()
    at.text_input(key="curate-review-reason").input("odd reflections")
    at.button(key="curate-review").click().run()
    assert {actor for _, actor, _ in events_since(cat, head)} == {"dev:dev"}  # a name nobody vouched for
    at.switch_page("views/trace.py").run()
    assert at.error[0].value == banner

    monkeypatch.setenv(DEV_VIEWER, "boss:dev")
    assert "unknown role 'boss'" in app_test().run().error[0].value


def test_the_command_line_refuses_a_development_mode_it_cannot_honour(tmp_path) -> None:
    refused = run_cli("app", "--dev-as", "boss:dev", env={**os.environ, "VISIONLEDGER_HOME": str(tmp_path)},
                      check=False)
    assert refused.returncode == 2 and "unknown role 'boss'" in refused.stderr
