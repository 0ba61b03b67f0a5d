"""`visionledger rules publish|list`: the part rule sets put in force through the catalog, each a signed act."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from apps.cli.common import open_catalog, out, sign_act, signer_options
from catalog.factory_day import shown
from identity.roles import Action
from identity.signatures import Meaning, signature_of


@click.group()
def rules() -> None:
    """Part decision rule sets: publish one (signed), list those published."""


@rules.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reason", required=True, help="why this change (recorded with the event)")
@click.option("--line", help="the line it is for (default: every line without a rule set of its own)")
@signer_options
def rules_publish(file: Path, reason: str, line: str | None, signer: str, password_stdin: bool) -> None:
    """Validate the rule set in FILE (YAML, as `serve --rules` reads it) and put it in force, signed by --user
    (meaning: approved), who re-enters their password."""
    from serving.published_rules import publish_rules

    with open_catalog() as cat:
        signature = sign_act(cat, signer, password_stdin, Meaning.APPROVED, Action.PUBLISH_RULES)
        event, recorded = publish_rules(cat, file, reason=reason, line=line, signed=signature.metadata())
    where = f"line {line}" if line else "every line"
    out.print(f"rules {event.rules_version} published for {where}, signed by {signer} ({signature.meaning})"
              if recorded else f"rules {event.rules_version} are in force for {where} already: nothing recorded",
              highlight=False)


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines")
def rules_list(as_json: bool) -> None:
    """Every rule set published, oldest first, with who signed it, when, and why."""
    from serving.published_rules import publications

    with open_catalog() as cat:
        found = publications(cat)
    rows = []
    for p in found:
        signature = signature_of(p.event.metadata)
        rows.append({"position": p.event.position, "rules_version": p.rules.rules_version, "line": p.line,
                     "published_at": p.event.occurred_at, "signer": signature.signer if signature else None,
                     "meaning": signature.meaning if signature else None,
                     "signed_at": signature.signed_at if signature else None,
                     "reason": p.event.payload["reason"]})
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    table = Table("#", "rules version", "line", "signed by", "meaning", "signed at", "reason")
    for row in rows:
        table.add_row(str(row["position"]), row["rules_version"], row["line"] or "every line",
                      row["signer"] or "unsigned", row["meaning"] or "",
                      shown(row["signed_at"]) if row["signed_at"] else "", row["reason"])
    out.print(table)
