"""Curation verdicts over a selection: exclude a filter's images from every derived dataset (they stay in the
catalog and its history), or include them back; the reason is mandatory and recorded with the filter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import catalog
from catalog.errors import CatalogError
from catalog.events import ImageExcluded, ImageIncluded, text_problem
from catalog.queries import ImageFilter, query_images
from catalog.store import NewEvent

MIN_REASON = 3


@dataclass(frozen=True)
class CurationReport:
    matched: int  # images the filter selects
    changed: int  # images whose state this run changed (the rest already were so)


def set_excluded(cat: catalog.Catalog, where: ImageFilter, *, exclude: bool, reason: str, actor: str,
                 signed: Mapping[str, str] | None = None, batch_size: int = 2_000) -> CurationReport:
    """Exclude (or include) every image ``where`` selects, with ``reason`` and ``actor`` on each event, and the
    act's signature (``signed``: `identity.signatures.Signature.metadata()`) when it was signed."""
    if len(reason.strip()) < MIN_REASON:
        raise CatalogError("a curation needs a reason a colleague will understand (e.g. 'lamp failed 14:00-15:00')")
    if (problem := text_problem(reason)) is not None:
        raise CatalogError(f"the reason {problem}")
    matched = query_images(cat, where, limit=None)
    to_change = query_images(cat, replace(where, excluded=not exclude), limit=None)
    now = datetime.now(UTC)
    kind = ImageExcluded if exclude else ImageIncluded
    selection = where.describe()
    events = [NewEvent(kind(sha256=row["sha256"], reason=reason.strip(), selection=selection), occurred_at=now,
                       metadata={"actor": actor, "source": "curate", **(signed or {})}) for row in to_change]
    for start in range(0, len(events), batch_size):
        cat.append(events[start:start + batch_size], catch_up=False)
    cat.catch_up()
    return CurationReport(matched=len(matched), changed=len(events))
