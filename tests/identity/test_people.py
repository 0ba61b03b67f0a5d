"""People's accounts against a real catalog: passwords hashed apart from the log, lock-out, roles, signatures,
and the `visionledger users` command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from catalog.events import ImageExcluded
from catalog.principals import user_record
from identity import people
from identity.people import LoginRefused, PeopleError
from identity.roles import Action
from identity.signatures import Meaning, sign, signature_of
from tests.builders import cli_env, run_cli

PASSWORD = "correct horse battery"


@pytest.fixture
def ana(cat):
    people.add_user(cat, "ana", "Ana Curator", PASSWORD, ["curator"], actor="test")
    return "ana"


def everything_stored(database) -> str:
    """The log, the read models and the lake's files as text, to look for secrets in."""
    with psycopg.connect(database.dsn("visionledger_app")) as conn:
        events = conn.execute("SELECT payload::text || metadata::text FROM catalog.events").fetchall()
        users = conn.execute("SELECT row_to_json(u)::text FROM projections.users u").fetchall()
    return "\n".join(row[0] for row in events + users)


def test_a_person_logs_in_and_the_hash_stays_out_of_the_log(cat, database, ana):
    person = people.log_in(cat, "ana", PASSWORD, client="127.0.0.1")
    assert (person.username, person.roles, person.actor) == ("ana", ("curator",), "user:ana")
    record = user_record(cat, "ana")
    assert record.last_login_at is not None and record.failed_logins == 0
    with psycopg.connect(database.dsn("visionledger_app")) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM catalog.credentials").fetchone()
    assert stored.startswith("$argon2id$")
    text = everything_stored(database)
    assert PASSWORD not in text and stored not in text and "argon2" not in text


@pytest.mark.parametrize("role", ["visionledger_analyst", "visionledger_auditor"])
def test_readers_cannot_read_password_hashes(database, ana, role):
    with psycopg.connect(database.dsn(role)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT password_hash FROM catalog.credentials")


def test_the_app_role_cannot_change_a_stored_hash(database, ana):
    with psycopg.connect(database.dsn("visionledger_app")) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE catalog.credentials SET password_hash = 'x'")


def test_a_wrong_password_and_an_unknown_name_are_refused_alike(cat, ana):
    with pytest.raises(LoginRefused) as wrong:
        people.log_in(cat, "ana", "not her password at all")
    with pytest.raises(LoginRefused) as unknown:
        people.log_in(cat, "nobody", PASSWORD)
    assert str(wrong.value) == str(unknown.value) == "wrong user name or password"
    assert user_record(cat, "ana").failed_logins == 1
    assert user_record(cat, "nobody") is None  # no stream for names that are not accounts


def test_lock_out_after_repeated_failures_even_with_the_right_password(cat, ana):
    for _ in range(people.MAX_FAILED_LOGINS):
        with pytest.raises(LoginRefused):
            people.log_in(cat, "ana", "guessing wrongly again")
    with pytest.raises(LoginRefused, match="locked") as locked:
        people.log_in(cat, "ana", PASSWORD)
    assert locked.value.reason == "locked_out"
    record = user_record(cat, "ana")
    assert people.locked_until(record) is not None
    # The lock ends by itself after LOCKOUT, and at once when an administrator sets a new password.
    assert people.locked_until(record, datetime.now(UTC) + people.LOCKOUT + timedelta(seconds=1)) is None
    people.set_password(cat, "ana", "a brand new passphrase", actor="test")
    assert people.log_in(cat, "ana", "a brand new passphrase").username == "ana"
    with pytest.raises(LoginRefused):
        people.log_in(cat, "ana", PASSWORD)  # the old password no longer works


def test_a_disabled_person_cannot_log_in_or_sign(cat, ana):
    assert people.disable(cat, "ana", actor="test", reason="left the company")
    with pytest.raises(LoginRefused, match="disabled"):
        people.log_in(cat, "ana", PASSWORD)
    with pytest.raises(LoginRefused):
        sign(cat, "ana", PASSWORD, Meaning.APPROVED, action=Action.EXCLUDE)
    assert people.enable(cat, "ana", actor="test", reason="came back")
    assert people.log_in(cat, "ana", PASSWORD).username == "ana"


def test_roles_are_granted_and_revoked_as_events(cat, ana):
    assert people.grant(cat, "ana", "annotator", actor="test") and not people.grant(cat, "ana", "annotator", actor="t")
    assert user_record(cat, "ana").roles == ["annotator", "curator"]
    assert people.revoke(cat, "ana", "curator", actor="test")
    assert user_record(cat, "ana").roles == ["annotator"]
    with pytest.raises(PeopleError, match="unknown role"):
        people.grant(cat, "ana", "admin", actor="test")
    types = [e.type for e in cat.store.read_stream("user:ana")]
    assert types == ["UserCreated", "UserRoleGranted", "UserPasswordSet", "UserRoleGranted", "UserRoleRevoked"]


def test_bad_accounts_are_refused(cat, ana):
    with pytest.raises(PeopleError, match="exists already"):
        people.add_user(cat, "ana", "Another Ana", PASSWORD, [], actor="test")
    with pytest.raises(PeopleError, match="not a user name"):
        people.add_user(cat, "Ana\x00", "Nul", PASSWORD, [], actor="test")
    with pytest.raises(PeopleError, match="at least"):
        people.add_user(cat, "bob", "Bob", "short", [], actor="test")


def test_a_signature_needs_the_password_and_a_role_that_may_act(cat, ana):
    signature = sign(cat, "ana", PASSWORD, Meaning.APPROVED, action=Action.EXCLUDE)
    cat.record(ImageExcluded(sha256="a" * 64, reason="fogged lens"), occurred_at=datetime.now(UTC),
               signed=signature.metadata())
    (event,) = cat.store.read_stream("image:" + "a" * 64)
    assert event.metadata["actor"] == "user:ana"
    assert signature_of(event.metadata) == signature
    with pytest.raises(LoginRefused):
        sign(cat, "ana", "not her password at all", Meaning.APPROVED, action=Action.EXCLUDE)
    with pytest.raises(LoginRefused, match="no role that may label"):
        sign(cat, "ana", PASSWORD, Meaning.REVIEWED, action=Action.LABEL)  # a curator does not correct labels
    assert user_record(cat, "ana").failed_logins == 1  # the wrong password counted towards lock-out


def test_users_command(cat, database):
    env = cli_env(cat)
    added = run_cli("users", "add", "bo", "--name", "Bo Quality", "--role", "quality", "--password-stdin",
                    env=env, stdin=PASSWORD + "\n")
    assert "user bo added as quality" in added.stdout
    run_cli("users", "grant", "bo", "auditor", env=env)
    run_cli("users", "revoke", "bo", "quality", env=env)
    listed = run_cli("users", "list", env=env).stdout
    assert "bo" in listed and "auditor" in listed and "quality" not in listed and "active" in listed
    run_cli("users", "disable", "bo", "--reason", "moved", env=env)
    assert "disabled" in run_cli("users", "list", env=env).stdout
    weak = run_cli("users", "passwd", "bo", "--password-stdin", env=env, stdin="short\n", check=False)
    assert weak.returncode == 1 and "at least 12 characters" in weak.stderr
    unknown = run_cli("users", "grant", "nobody", "auditor", env=env, check=False)
    assert unknown.returncode == 1 and "no user 'nobody'" in unknown.stderr
    for result in (added, weak):
        assert PASSWORD not in result.stdout + result.stderr
    assert PASSWORD not in everything_stored(database)
