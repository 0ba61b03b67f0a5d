"""`visionledger parts dispose`: a person's accept or reject of a part, signed, over what the line's rules
decided."""

from __future__ import annotations

import click

from apps.cli.common import open_catalog, out, sign_act, signer_options
from catalog.dispositions import record_human_disposition
from identity.roles import Action
from identity.signatures import Meaning


@click.group()
def parts() -> None:
    """The line's parts."""


@parts.command("dispose")
@click.argument("part_id")
@click.option("--decision", type=click.Choice(["accept", "reject"]), required=True)
@click.option("--reason", required=True, help="why (recorded with the event)")
@signer_options
def parts_dispose(part_id: str, decision: str, reason: str, signer: str, password_stdin: bool) -> None:
    """Accept or reject PART_ID by hand, signed by --user (meaning: reviewed), who re-enters their password.
    Only such a disposition overturns a reject: the line's later images cannot."""
    with open_catalog() as cat:
        signature = sign_act(cat, signer, password_stdin, Meaning.REVIEWED, Action.DISPOSE)
        disposition = record_human_disposition(cat, part_id, decision=decision, reason=reason,
                                               signed=signature.metadata())
    out.print(f"part {part_id}: {disposition.decision} ({len(disposition.image_sha256s)} image(s)), signed by "
              f"{signer} ({signature.meaning})", highlight=False)
