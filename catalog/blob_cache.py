"""A read-through blob cache: an edge station reads blobs from the catalog's store once, then from its own disk.

Only bytes that hash to their name enter the cache, so a transfer corrupted on the way is refused rather than
served forever after. Writes go to the origin, the system of record; nothing is ever evicted.
"""

from __future__ import annotations

from collections.abc import Callable

from catalog.blobs import Blob, BlobStore


class ReadThroughBlobStore(BlobStore):
    """Reads from ``cache`` (typically a LocalBlobStore on the station), filling it from ``origin`` on a miss;
    stages, promotes and recovers in ``origin``."""

    def __init__(self, origin: BlobStore, cache: BlobStore):
        self.origin = origin
        self.cache = cache

    def exists(self, sha256: str) -> bool:
        return self.cache.exists(sha256) or self.origin.exists(sha256)

    def read(self, sha256: str) -> bytes:
        try:
            return self.cache.read(sha256)
        except KeyError:
            pass
        data = self.origin.read(sha256)
        self.cache.stage(data, sha256)  # checks the bytes against their name: ValueError if they differ
        self.cache.promote(sha256)
        return data

    def stage(self, data: bytes, sha256: str | None = None, *, durable: bool = True) -> Blob:
        return self.origin.stage(data, sha256, durable=durable)

    def sync(self) -> None:
        self.origin.sync()

    def promote(self, sha256: str) -> None:
        self.origin.promote(sha256)

    def discard(self, sha256: str) -> None:
        self.origin.discard(sha256)

    def staged(self) -> list[str]:
        return self.origin.staged()

    def recover(self, has_event: Callable[[str], bool]) -> tuple[int, int]:
        return self.origin.recover(has_event)
