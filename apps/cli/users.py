"""`visionledger users`: people's accounts, their roles and passwords. Whoever can run this command against
the catalog (its writers' database login) administers accounts; every change is an event naming them."""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime

import click
from rich.table import Table

from apps.cli.common import open_catalog, out, password_stdin_option, read_password
from catalog.factory_day import shown
from identity import people
from identity.roles import ROLES


def administrator() -> str:
    """The actor of an account change made from this command line."""
    return f"cli:{os.environ.get('USER') or getpass.getuser()}"


def _changed(done: bool, yes: str, no: str) -> None:
    out.print(yes if done else no)


@click.group()
def users() -> None:
    """People's accounts: who may log in to the app and sign acts, in which roles."""


@users.command("add")
@click.argument("username")
@click.option("--name", "full_name", required=True, help="the person's full name, as signatures show it")
@click.option("--role", "roles", multiple=True, type=click.Choice(list(ROLES)), help="a role to grant (repeatable)")
@password_stdin_option
def users_add(username: str, full_name: str, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create the account USERNAME with its roles and first password."""
    password = read_password(password_stdin)
    with open_catalog() as cat:
        people.add_user(cat, username, full_name, password, list(roles), actor=administrator())
    out.print(f"user {username} added" + (f" as {', '.join(roles)}" if roles else " (no role yet)"))


@users.command("grant")
@click.argument("username")
@click.argument("role", type=click.Choice(list(ROLES)))
@click.option("--reason", default="")
def users_grant(username: str, role: str, reason: str) -> None:
    """Give USERNAME the ROLE."""
    with open_catalog() as cat:
        _changed(people.grant(cat, username, role, actor=administrator(), reason=reason),
                 f"{username} is now {role}", f"{username} was {role} already")


@users.command("revoke")
@click.argument("username")
@click.argument("role", type=click.Choice(list(ROLES)))
@click.option("--reason", default="")
def users_revoke(username: str, role: str, reason: str) -> None:
    """Take the ROLE from USERNAME."""
    with open_catalog() as cat:
        _changed(people.revoke(cat, username, role, actor=administrator(), reason=reason),
                 f"{username} is no longer {role}", f"{username} was not {role}")


@users.command("disable")
@click.argument("username")
@click.option("--reason", required=True, help="why (recorded with the event)")
def users_disable(username: str, reason: str) -> None:
    """Stop USERNAME from logging in or signing; their history stays."""
    with open_catalog() as cat:
        _changed(people.disable(cat, username, actor=administrator(), reason=reason),
                 f"{username} disabled", f"{username} was disabled already")


@users.command("enable")
@click.argument("username")
@click.option("--reason", required=True, help="why (recorded with the event)")
def users_enable(username: str, reason: str) -> None:
    """Let a disabled or locked-out USERNAME back in."""
    with open_catalog() as cat:
        _changed(people.enable(cat, username, actor=administrator(), reason=reason),
                 f"{username} enabled", f"{username} was neither disabled nor locked out")


@users.command("passwd")
@click.argument("username")
@password_stdin_option
def users_passwd(username: str, password_stdin: bool) -> None:
    """Set a new password for USERNAME (this also ends a lock-out)."""
    password = read_password(password_stdin, prompt="New password")
    with open_catalog() as cat:
        people.set_password(cat, username, password, actor=administrator())
    out.print(f"password of {username} set")


@users.command("list")
def users_list() -> None:
    """Every account, its roles and state (never a password or its hash)."""
    now = datetime.now(UTC)
    with open_catalog() as cat:
        records = people.users(cat)
    table = Table("user", "name", "roles", "state", "last login")
    for r in records:
        until = people.locked_until(r, now)
        state = "disabled" if r.disabled else f"locked until {shown(until)}" if until else "active"
        table.add_row(r.username, r.full_name, ", ".join(r.roles) or "-", state,
                      shown(r.last_login_at) if r.last_login_at else "never")
    out.print(table)
