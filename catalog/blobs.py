"""Content-addressed blob storage: image bytes kept under their SHA-256, written atomically, never twice.

Writers that must not leave a blob without its event stage it first, append the event, then promote it;
on restart, ``staged()`` lists what a killed writer left, to be promoted (its event exists) or discarded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

URI_PREFIX = "blob:"


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int

    @property
    def uri(self) -> str:
        return uri_of(self.sha256)


def uri_of(sha256: str) -> str:
    """The location-independent name events give the blob of these bytes."""
    return URI_PREFIX + sha256


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha_from_uri(uri: str) -> str:
    if not uri.startswith(URI_PREFIX) or len(uri) != len(URI_PREFIX) + 64:
        raise ValueError(f"not a blob URI: {uri!r} (expected blob:<sha256>)")
    return uri[len(URI_PREFIX):]


class BlobStore(ABC):
    """Where image bytes live: the interface of every blob store. Each backend keeps these promises, and
    tests/catalog/test_blobs.py checks them against each one:

    - **Content addressing.** A blob's name is the SHA-256 (64 lowercase hex digits) of its bytes: the same bytes
      stored twice are one blob, and storing them again changes nothing.
    - **Integrity.** Bytes are stored under their own hash only: a hash given with them is checked (a mismatch
      raises ValueError and stores nothing), and a blob is written whole or not at all.
    - **Visibility.** A staged blob is invisible (``exists`` is False, ``read`` raises) until promoted; a
      promoted blob is never removed.
    - **Errors.** A name that is not a SHA-256 hex digest raises ValueError before any storage is touched (so a
      name can never reach outside the store); a missing blob raises KeyError.
    """

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored and promoted."""

    @abstractmethod
    def read(self, sha256: str) -> bytes:
        """The blob's bytes; KeyError when it is not stored (or only staged)."""

    @abstractmethod
    def stage(self, data: bytes, sha256: str | None = None, *, durable: bool = True) -> Blob:
        """Keep ``data`` aside, not yet visible; its hash is checked when given. Bytes already stored are not
        staged again (their blob is returned as it is). With ``durable=False`` the caller promises a
        :meth:`sync` before relying on it (one sync for a whole batch is much cheaper)."""

    @abstractmethod
    def sync(self) -> None:
        """Make every blob staged so far durable."""

    @abstractmethod
    def promote(self, sha256: str) -> None:
        """Make a staged blob visible (a no-op when it already is)."""

    @abstractmethod
    def discard(self, sha256: str) -> None:
        """Forget a staged blob."""

    @abstractmethod
    def staged(self) -> list[str]:
        """Hashes of blobs staged and neither promoted nor discarded, sorted."""

    def recover(self, has_event: Callable[[str], bool]) -> tuple[int, int]:
        """After a crash: promote staged blobs whose event was appended, discard the others (their event never
        was; re-running the writer stages them again). Returns (promoted, discarded)."""
        self._clear_partial_writes()
        promoted = discarded = 0
        for sha in self.staged():
            if has_event(sha):
                self.promote(sha)
                promoted += 1
            else:
                self.discard(sha)
                discarded += 1
        return promoted, discarded

    def _clear_partial_writes(self) -> None:  # noqa: B027 - a hook: backends with atomic writes have none
        """Remove half-written staging files a killed writer left."""

    def put(self, data: bytes) -> Blob:
        """Store ``data`` at once (stage and promote): for blobs with no event to wait for."""
        blob = self.stage(data)
        self.promote(blob.sha256)
        return blob


class LocalBlobStore(BlobStore):
    """Blobs as files ``root/ab/cd/<sha256>``; staged ones in ``root/.staging``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._staging = self.root / ".staging"

    def path(self, sha256: str) -> Path:
        _check_sha(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def read(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no blob {sha256} in {self.root}") from None

    def stage(self, data: bytes, sha256: str | None = None, *, durable: bool = True) -> Blob:
        actual = sha256_of(data)
        if sha256 is not None and sha256 != actual:
            raise ValueError(f"blob content hashes to {actual}, not the claimed {sha256}")
        blob = Blob(actual, len(data))
        if self.exists(actual):
            return blob  # same bytes already stored: content addressing makes this one blob
        self._staging.mkdir(parents=True, exist_ok=True)
        _write_atomically(self._staging / actual, data, durable=durable)
        return blob

    def sync(self) -> None:
        os.sync()

    def promote(self, sha256: str) -> None:
        staged, final = self._staging / sha256, self.path(sha256)
        if final.exists():
            staged.unlink(missing_ok=True)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)

    def discard(self, sha256: str) -> None:
        _check_sha(sha256)
        (self._staging / sha256).unlink(missing_ok=True)

    def staged(self) -> list[str]:
        if not self._staging.exists():
            return []
        return sorted(p.name for p in self._staging.iterdir() if len(p.name) == 64)

    def _clear_partial_writes(self) -> None:
        if self._staging.exists():
            for partial in self._staging.glob(".tmp-*"):
                partial.unlink(missing_ok=True)

    def all(self) -> list[str]:
        """Every promoted blob (for consistency checks)."""
        return sorted(p.name for p in self.root.glob("??/??/*") if len(p.name) == 64)


def _check_sha(sha256: str) -> None:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")


def _write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
