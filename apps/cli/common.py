"""What every command shares: the consoles, a progress bar, the quarantined rows of an import, opening the catalog
from the environment, reading a password, and signing an act."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import catalog
from identity.roles import Action
from identity.signatures import Meaning, Signature, sign
from ingestion.tables import parse_aware_timestamp

if TYPE_CHECKING:
    from ingestion.ingest import RejectedRow

console = Console(stderr=True)  # progress and remarks
out = Console()  # results, so that they can be piped


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields a callback ``update(done, total)``."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def print_quarantine(rejected_rows: Sequence[RejectedRow], *, path: str = "path", shown: int = 30) -> None:
    """The first ``shown`` quarantined rows of an import, each with its reason code and detail."""
    if not rejected_rows:
        return
    rows = Table("row", path, "reason", "detail", title="quarantined rows")
    for r in rejected_rows[:shown]:
        rows.add_row(str(r.row), r.path, r.reason, r.detail)
    out.print(rows)
    if len(rejected_rows) > shown:
        out.print(f"… and {len(rejected_rows) - shown} more (--json lists them all)")


def open_catalog(**kwargs) -> catalog.Catalog:
    """The catalog the environment names (see catalog.settings)."""
    return catalog.open(**kwargs)


def parse_day(value: str | None, *, option: str) -> date | None:
    """A factory day given on the command line (2026-03-02): each line's own calendar day."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (2026-03-02)", param_hint=option) from None


def parse_day_or_moment(value: str | None, *, option: str) -> date | datetime | None:
    """A bare date (a factory day) or a timestamp with its UTC offset (one instant)."""
    return parse_day(value, option=option) if value is not None and len(value) == 10 else parse_moment(value, option=option)


def parse_moment(value: str | None, *, option: str) -> datetime | None:
    """A time given on the command line: a timestamp with its UTC offset."""
    if value is None:
        return None
    try:
        return parse_aware_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def read_password(password_stdin: bool, *, prompt: str = "Password", confirm: bool = True) -> str:
    """A password from stdin's first line (scripts), or typed at a prompt that does not echo it (twice when
    ``confirm``: a new password)."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


password_stdin_option = click.option("--password-stdin", is_flag=True,
                                     help="read the password from the first line of stdin instead of a prompt")


def signer_options(command):
    """``--user NAME`` and ``--password-stdin``: who signs the act, and where their password comes from."""
    command = password_stdin_option(command)
    return click.option("--user", "signer", required=True,
                        help="who signs the act (a person's account); their password is asked for")(command)


def sign_act(cat: catalog.Catalog, signer: str, password_stdin: bool, meaning: Meaning, action: Action) -> Signature:
    """``signer``'s signature of an act of kind ``action``, with the password they re-enter now; `LoginRefused`
    (one line, exit status 1) for a wrong password or a person whose roles may not do it."""
    password = read_password(password_stdin, prompt=f"Password of {signer} (signing as {meaning.value})",
                             confirm=False)
    return sign(cat, signer, password, meaning, action=action)
