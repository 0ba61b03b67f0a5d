"""Line stations' API tokens: issue one (its secret is printed once), list them (never a secret or a hash),
revoke one."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import click
from rich.table import Table

from apps.cli.common import console, open_catalog, out
from identity.stations import issue, list_tokens, revoke

_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)([dhm])", value.strip())
    if match is None or int(match[1]) == 0:
        raise click.BadParameter("give a positive number of days, hours or minutes, e.g. 90d, 12h, 30m")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise click.BadParameter("give an ISO 8601 time with its UTC offset, e.g. 2026-12-31T23:59:00+01:00")
    return moment


@click.group()
def tokens() -> None:
    """API tokens of the line's stations: each opens the inspection API for one station of one line."""


@tokens.command("issue")
@click.option("--line", required=True, help="the station's line")
@click.option("--station", required=True, help="the station")
@click.option("--camera", "cameras", multiple=True, help="a camera the token may send (repeat; default: any)")
@click.option("--expires-in", callback=_duration, help="how long it is valid: 90d, 12h, 30m [default: 90d]")
@click.option("--expires-at", callback=_moment, help="when it expires instead (ISO 8601 with its offset)")
@click.option("--actor", help="who issues it (recorded with the event)")
def tokens_issue(line: str, station: str, cameras: tuple[str, ...], expires_in: timedelta | None,
                 expires_at: datetime | None, actor: str | None) -> None:
    """Issue a token for STATION of LINE. The token is printed once: put it in the station's configuration
    (it sends `Authorization: Bearer <token>`); the catalog keeps only its hash."""
    if expires_in is not None and expires_at is not None:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    expires_at = expires_at or datetime.now(UTC) + (expires_in or timedelta(days=90))
    with open_catalog() as cat:
        issued = issue(cat, line=line, station=station, cameras=list(cameras) or None, expires_at=expires_at,
                       issued_by=actor or "cli")
    t = issued.record
    console.print("the token is shown this once; the catalog keeps only its hash")
    out.print_json(json.dumps({"token_id": t.token_id, "token": issued.token, "line": t.line, "station": t.station,
                               "cameras": list(t.cameras) if t.cameras else None,
                               "expires_at": t.expires_at.isoformat()}))


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="a JSON list instead of a table")
def tokens_list(as_json: bool) -> None:
    """Every token issued, the newest first, with its scope and state (no secret, no hash)."""
    with open_catalog() as cat:
        found = list_tokens(cat)
    now = datetime.now(UTC)
    if as_json:
        out.print_json(json.dumps([{
            "token_id": t.token_id, "line": t.line, "station": t.station,
            "cameras": list(t.cameras) if t.cameras else None, "expires_at": t.expires_at.isoformat(),
            "state": t.state(now), "issued_by": t.issued_by, "issued_at": t.issued_at.isoformat(),
            "revoked_by": t.revoked_by, "revoke_reason": t.revoke_reason} for t in found]))
        return
    table = Table("line", "station", "cameras", "expires", "issued by", "revoked because")
    table.add_column("token id", no_wrap=True)  # what `tokens revoke` takes: never cut
    table.add_column("state", no_wrap=True)
    for t in found:
        table.add_row(t.line, t.station, ", ".join(t.cameras) if t.cameras else "any",
                      t.expires_at.isoformat(timespec="minutes"), t.issued_by, t.revoke_reason or "", t.token_id,
                      t.state(now))
    out.print(table)


@tokens.command("revoke")
@click.argument("token_id")
@click.option("--reason", required=True, help="why (recorded with the event)")
@click.option("--actor", help="who revokes it (recorded with the event)")
def tokens_revoke(token_id: str, reason: str, actor: str | None) -> None:
    """Revoke TOKEN_ID: servers refuse it within seconds (their view of the tokens is refreshed every few)."""
    with open_catalog() as cat:
        revoked = revoke(cat, token_id, reason=reason, revoked_by=actor or "cli")
    out.print(f"token {token_id} {'revoked' if revoked else 'was already revoked'}")
