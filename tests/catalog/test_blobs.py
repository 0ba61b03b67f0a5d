"""Contract tests of a blob store, run per backend by subclassing: content addressing, staging, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.blobs import BlobStore, LocalBlobStore, sha256_of, sha_from_uri


class BlobStoreContract:
    def test_put_is_content_addressed_and_idempotent(self, blobs: BlobStore):
        blob = blobs.put(b"pixels")
        assert blob.sha256 == sha256_of(b"pixels") and blob.size == 6
        assert blobs.put(b"pixels") == blob
        assert blobs.read(blob.sha256) == b"pixels" and sha_from_uri(blob.uri) == blob.sha256

    def test_staged_blobs_are_invisible_until_promoted(self, blobs: BlobStore):
        blob = blobs.stage(b"later")
        assert not blobs.exists(blob.sha256) and blobs.staged() == [blob.sha256]
        blobs.promote(blob.sha256)
        assert blobs.exists(blob.sha256) and blobs.staged() == []
        blobs.promote(blob.sha256)  # promoting twice is harmless (a resumed writer may)

    def test_discard_forgets_a_staged_blob(self, blobs: BlobStore):
        blob = blobs.stage(b"never mind")
        blobs.discard(blob.sha256)
        assert blobs.staged() == [] and not blobs.exists(blob.sha256)

    def test_staging_already_stored_bytes_stages_nothing(self, blobs: BlobStore):
        blob = blobs.put(b"same")
        assert blobs.stage(b"same") == blob and blobs.staged() == []

    def test_a_wrong_claimed_hash_is_refused(self, blobs: BlobStore):
        with pytest.raises(ValueError, match="hashes to"):
            blobs.stage(b"abc", "0" * 64)

    def test_missing_blob_and_bad_names(self, blobs: BlobStore):
        with pytest.raises(KeyError, match="no blob"):
            blobs.read("f" * 64)
        with pytest.raises(ValueError, match="not a SHA-256"):
            blobs.exists("../../etc/passwd")
        with pytest.raises(ValueError, match="not a blob URI"):
            sha_from_uri("file:///etc/passwd")


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "blobs")


def test_recover_promotes_blobs_with_events_and_discards_the_rest(tmp_path: Path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    kept, dropped = blobs.stage(b"event appended"), blobs.stage(b"killed before its event")
    (tmp_path / "blobs" / ".staging" / ".tmp-half").write_bytes(b"half a fi")
    assert blobs.recover(lambda sha: sha == kept.sha256) == (1, 1)
    assert blobs.exists(kept.sha256) and not blobs.exists(dropped.sha256)
    assert list((tmp_path / "blobs" / ".staging").iterdir()) == []
