"""Signatures of the acts an auditor asks about (a correction, an exclusion, a promotion, a rule-set change, a
part's disposition), in the manner of 21 CFR Part 11 §11.200: the signer re-enters their password at the act,
and the act's event records who signed, when, and what the signature means. The event is then in the hash
chain like any other, so a signature cannot be edited afterwards without `visionledger check` naming it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from catalog import Catalog
from catalog.event_log import signature_of as recorded_signature
from identity.people import LoginRefused, verify_password
from identity.roles import ROLES, Action


class Meaning(StrEnum):
    """What a signature says about the act it signs."""

    REVIEWED = "reviewed"  # I looked at the evidence and this is right (a correction, a disposition)
    APPROVED = "approved"  # I approve this change (an exclusion, a promotion, a rule set)


@dataclass(frozen=True)
class Signature:
    signer: str  # username
    signed_at: datetime
    meaning: Meaning

    @property
    def actor(self) -> str:
        return f"user:{self.signer}"

    def metadata(self) -> dict[str, str]:
        """The event metadata that records this signature (with the signer as the actor)."""
        return {"actor": self.actor, "signer": self.signer, "signed_at": self.signed_at.isoformat(),
                "meaning": self.meaning.value}


def sign(cat: Catalog, username: str, password: str, meaning: Meaning, *, action: Action,
         client: str = "") -> Signature:
    """A signature by ``username`` for an act of kind ``action``, once their password is verified and one of
    their roles allows the act. A wrong password counts towards lock-out like a failed login."""
    person = verify_password(cat, username, password, client=client)
    if not any(action in ROLES.get(role, ()) for role in person.roles):
        raise LoginRefused("not_allowed", f"{username} holds no role that may {action.value.replace('_', ' ')}")
    return Signature(signer=person.username, signed_at=datetime.now(UTC), meaning=Meaning(meaning))


def signature_of(metadata: dict[str, Any]) -> Signature | None:
    """The signature an event's metadata records, or None for an unsigned event."""
    found = recorded_signature(metadata)
    return found and Signature(signer=found["signer"], signed_at=datetime.fromisoformat(found["signed_at"]),
                               meaning=Meaning(found["meaning"]))
