"""A person's disposition of a part: accept or reject it, over whatever the line's rules decided, as a signed act.
The server's part decision honours it (a later image cannot un-reject a part; only this can), and the trace shows
who signed it, when and with what meaning."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import catalog
from catalog.curation import MIN_REASON
from catalog.errors import CatalogError
from catalog.events import PartDispositioned
from catalog.queries import part_images

HUMAN = "human"  # the `decider` and the `rule` of a person's disposition


def record_human_disposition(cat: catalog.Catalog, part_id: str, *, decision: Literal["accept", "reject"],
                             reason: str, signed: Mapping[str, str]) -> PartDispositioned:
    """Append ``PartDispositioned`` for ``part_id`` (every image the catalog holds of it), decided by the person
    whose signature ``signed`` is (`identity.signatures.Signature.metadata()`), with their ``reason``."""
    if len(reason.strip()) < MIN_REASON:
        raise CatalogError("a disposition needs a reason a colleague will understand (e.g. 'crack is a mould mark')")
    shas = part_images(cat, part_id)
    if not shas:
        raise CatalogError(f"no part {part_id!r} in the catalog: only a part with images can be dispositioned")
    disposition = PartDispositioned(part_id=part_id, decision=decision, decided_by=signed["signer"], decider=HUMAN,
                                    rule=HUMAN, reason=reason.strip(), image_sha256s=shas)
    cat.record(disposition, occurred_at=datetime.now(UTC), source="parts dispose", signed=signed)
    return disposition
