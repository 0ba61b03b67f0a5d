"""The catalog's exceptions: each says what went wrong and what to do next."""

from __future__ import annotations


class CatalogError(Exception):
    """Base of every error the catalog raises on purpose."""


class EventValidationError(CatalogError, ValueError):
    """An event's type, payload, stream or timestamps are not acceptable; nothing was appended."""


class ConcurrencyError(CatalogError):
    """A stream was not at the version the writer expected: someone else appended first. Re-read and retry."""

    def __init__(self, stream_id: str, expected: int, actual: int):
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, not the expected {expected}: "
            "another writer appended first; re-read the stream and decide again"
        )


class EventIdConflict(CatalogError):
    """An event id is already stored with different content: ids must name one event forever."""


class ImmutableEventError(CatalogError):
    """An attempt to change or remove stored events; the database refused it."""
