"""The browser session: who is at the keyboard, as which of their roles, until when. A person logs in with the
form here (`identity.people.log_in`, which records the login or the failure and locks an account out after
repeated failures); the session then holds only their user name and its two times. Their name, roles and state
are read from the catalog again at every rerun, so a revoked role or a disabled account takes effect at the
person's next click. A session ends after `IDLE_LIMIT` without a rerun or `SESSION_LIMIT` after the login
(`VISIONLEDGER_SESSION_IDLE_MINUTES`, `VISIONLEDGER_SESSION_MAX_HOURS`), or when the person logs out.

Signed acts ask for the password again (`signature`): the catalog records the signer, the time and the meaning
in the act's events.

Development mode (`apps.ui.roles.dev_viewer`) replaces all of this with one role and name for everybody."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import streamlit as st

import catalog
from apps.ui.common import VIEWER_KEY, catalog_as
from apps.ui.roles import ROLES, Action, RoleError, Viewer, dev_viewer
from catalog.principals import user_record
from identity.people import LoginRefused, log_in
from identity.signatures import Meaning, sign

SESSION_KEY = "login-session"
NOTE_KEY = "login-note"  # why the login form is shown again (expired, logged out, disabled)
REFUSED_KEY = "login-refused"  # why the last attempt was refused
ROLE_KEY = "role"  # the sidebar's role selector, for people with several roles
WRITERS = "app"  # the database login that may read credentials and record logins


@dataclass(frozen=True)
class LoginSession:
    """What a browser session keeps of a login: who, and the times that end it. Never a password."""

    username: str
    logged_in_at: datetime
    last_seen_at: datetime


def session_limits() -> tuple[timedelta, timedelta]:
    """How long a session may stay idle, and how long it may last at all."""
    return (timedelta(minutes=float(os.environ.get("VISIONLEDGER_SESSION_IDLE_MINUTES", 30))),
            timedelta(hours=float(os.environ.get("VISIONLEDGER_SESSION_MAX_HOURS", 12))))


def writers_catalog() -> catalog.Catalog:
    """The catalog as the writers' login: whatever role a person acts as, their login, their failures and their
    signatures are recorded, and their password is checked, through this one."""
    return catalog_as(WRITERS)


def client_address() -> str:
    """Where the browser connects from, as far as Streamlit knows ("" when it does not)."""
    try:
        address, host = st.context.ip_address, st.context.headers.get("host")
    except Exception:  # noqa: BLE001 - no browser behind this session (a bare script run)
        return ""
    # Streamlit gives no address for a browser on this machine; AppTest's context holds no strings at all.
    return address if isinstance(address, str) and address else "localhost" if isinstance(host, str) else ""


def current_viewer() -> Viewer | None:
    """The viewer of this browser session as the catalog has them now; None when nobody is logged in (the
    reason why the session ended, if it did, is left for the login form). Raises RoleError for a person who holds
    no role. Counts as activity: the idle time starts again."""
    if (dev := dev_viewer()) is not None:
        return dev
    session: LoginSession | None = st.session_state.get(SESSION_KEY)
    if session is None:
        return None
    now = datetime.now(UTC)
    idle_limit, session_limit = session_limits()
    if now - session.last_seen_at > idle_limit or now - session.logged_in_at > session_limit:
        return _end("Your session expired: please log in again.")
    record = user_record(writers_catalog(), session.username)
    if record is None or record.disabled:
        return _end("This account is disabled.")
    st.session_state[SESSION_KEY] = replace(session, last_seen_at=now)
    roles = tuple(role for role in ROLES if role in record.roles)  # in the app's order: the first is the default
    if not roles:
        raise RoleError(f"{record.full_name or record.username} holds no role in visionledger: an administrator "
                        "grants one (`visionledger users grant`).")
    chosen = st.session_state.get(ROLE_KEY)
    return Viewer(name=record.username, role=chosen if chosen in roles else roles[0], full_name=record.full_name,
                  roles=roles)


def acting_viewer(action: Action) -> Viewer | None:
    """The viewer, checked now, if they may still do ``action``; else None. For the callbacks of widgets that
    change the catalog: Streamlit runs them before app.py checks the session at the rerun, so they check it
    themselves (app.py then says why nothing happened)."""
    try:
        who = current_viewer()
    except RoleError:
        return None
    return who if who is not None and who.can(action) else None


def log_out(note: str = "You logged out.") -> None:
    _end(note)


def _end(note: str) -> None:
    st.session_state.pop(SESSION_KEY, None)
    st.session_state.pop(VIEWER_KEY, None)
    st.session_state[NOTE_KEY] = note
    return None


def login_form() -> None:
    """The login form; a successful login starts the session, and the app shows the page asked for."""
    st.title("visionledger")
    if note := st.session_state.pop(NOTE_KEY, None):
        st.info(note)
    if refused := st.session_state.pop(REFUSED_KEY, None):
        st.error(refused)
    with st.form("login"):
        st.text_input("User name", key="login-user", autocomplete="username")
        st.text_input("Password", type="password", key="login-password", autocomplete="current-password")
        st.form_submit_button("Log in", key="login-submit", type="primary", on_click=_log_in)


def _log_in() -> None:
    username = (st.session_state.get("login-user") or "").strip().lower()
    password = st.session_state.get("login-password") or ""
    st.session_state["login-password"] = ""  # never kept, whatever happens next
    try:
        person = log_in(writers_catalog(), username, password, client=client_address())
    except LoginRefused as exc:  # its message never says whether the name exists
        st.session_state[REFUSED_KEY] = f"Not logged in: {exc}."
        return
    now = datetime.now(UTC)
    st.session_state[SESSION_KEY] = LoginSession(person.username, logged_in_at=now, last_seen_at=now)


def password_input(key: str, meaning: Meaning) -> None:
    """The field a signed act reads its signer's password from (`signature`)."""
    st.text_input("Your password, to sign", type="password", key=key, autocomplete="current-password",
                  help=f"your electronic signature: the act is recorded as {meaning.value} by you, now")


def signature(who: Viewer, password_key: str, meaning: Meaning, action: Action) -> dict[str, str]:
    """The metadata of ``who``'s signature of an ``action`` with the ``meaning``, from the password typed into
    the field ``password_key`` (cleared at once: it is never kept). Raises LoginRefused, with what to tell the
    person; a wrong password is recorded as a failed login and counts towards the lock-out."""
    password = st.session_state.get(password_key) or ""
    st.session_state[password_key] = ""
    if not password:
        raise LoginRefused("no_password_given", "enter your password to sign")
    return sign(writers_catalog(), who.name, password, meaning, action=action, client=client_address()).metadata()
