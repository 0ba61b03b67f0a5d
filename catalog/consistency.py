"""Cross-checks of what the catalog stores: every image event has its blob, every blob its event, nothing
left half-written. Used after crashes in tests and by `visionledger check`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from catalog.blobs import LocalBlobStore


@dataclass(frozen=True)
class ConsistencyReport:
    images: int
    blobs: int
    events_without_blob: list[str] = field(default_factory=list)
    blobs_without_event: list[str] = field(default_factory=list)
    staged_blobs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.events_without_blob or self.blobs_without_event or self.staged_blobs)


def check_blobs(engine: Engine, blobs: LocalBlobStore) -> ConsistencyReport:
    """Compare the images the log knows (ImageIngested streams) with the blobs on disk."""
    with engine.connect() as conn:
        known = {row[0].removeprefix("image:") for row in conn.exec_driver_sql(
            "SELECT DISTINCT stream_id FROM catalog.events WHERE type = 'ImageIngested'")}
    stored = set(blobs.all())
    return ConsistencyReport(
        images=len(known), blobs=len(stored),
        events_without_blob=sorted(known - stored),
        blobs_without_event=sorted(stored - known),
        staged_blobs=blobs.staged(),
    )
