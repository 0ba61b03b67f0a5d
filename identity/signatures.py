"""Signatures of the acts an auditor asks about (a correction, an exclusion, a promotion, a rule-set change, a
part's disposition), in the manner of 21 CFR Part 11 §11.200: the signer re-enters their password at the act,
and the act's event records who signed, when, and what the signature means. The event is then in the hash
chain like any other, so a signature cannot be edited afterwards without `visionledger check` naming it."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from catalog import Catalog
from catalog.event_log import Signature, signature_of
from identity.people import LoginRefused, verify_password
from identity.roles import ROLES, Action

# A signature as events record it is the catalog's (it reads them back for the trace); signing is this module's.
__all__ = ["Meaning", "Signature", "sign", "signature_of"]


class Meaning(StrEnum):
    """What a signature says about the act it signs."""

    REVIEWED = "reviewed"  # I looked at the evidence and this is right (a correction, a disposition)
    APPROVED = "approved"  # I approve this change (an exclusion, a promotion, a rule set)


def sign(cat: Catalog, username: str, password: str, meaning: Meaning, *, action: Action,
         client: str = "") -> Signature:
    """A signature by ``username`` for an act of kind ``action``, once their password is verified and one of
    their roles allows the act. A wrong password counts towards lock-out like a failed login."""
    person = verify_password(cat, username, password, client=client)
    if not any(action in ROLES.get(role, ()) for role in person.roles):
        raise LoginRefused("not_allowed", f"{username} holds no role that may {action.value.replace('_', ' ')}")
    return Signature(signer=person.username, signed_at=datetime.now(UTC), meaning=Meaning(meaning))
