"""Contract tests of a blob store, run per backend by subclassing: content addressing, staging, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.blob_cache import ReadThroughBlobStore
from catalog.blobs import BlobStore, LocalBlobStore, sha256_of, sha_from_uri

NOT_A_HASH = "../../etc/passwd"


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

    @pytest.mark.parametrize("operation", ["exists", "read", "promote", "discard"])
    def test_a_name_that_is_not_a_hash_is_refused_by_every_operation(self, blobs: BlobStore, operation):
        with pytest.raises(ValueError, match="not a SHA-256"):
            getattr(blobs, operation)(NOT_A_HASH)

    def test_recover_promotes_staged_blobs_whose_event_exists_and_discards_the_others(self, blobs: BlobStore):
        kept, dropped = blobs.stage(b"event appended"), blobs.stage(b"killed before its event")
        assert blobs.recover(lambda sha: sha == kept.sha256) == (1, 1)
        assert blobs.read(kept.sha256) == b"event appended" and not blobs.exists(dropped.sha256)
        assert blobs.staged() == []


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "blobs")


class TestReadThroughBlobStore(BlobStoreContract):
    @pytest.fixture
    def origin(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "origin")

    @pytest.fixture
    def cache(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "cache")

    @pytest.fixture
    def blobs(self, origin: LocalBlobStore, cache: LocalBlobStore) -> ReadThroughBlobStore:
        return ReadThroughBlobStore(origin, cache)

    def test_a_read_fills_the_cache_which_then_serves_without_the_origin(self, blobs, origin, cache, tmp_path):
        blob = origin.put(b"pixels from the catalog")
        assert not cache.exists(blob.sha256)
        assert blobs.read(blob.sha256) == b"pixels from the catalog"
        assert cache.read(blob.sha256) == b"pixels from the catalog"
        origin.path(blob.sha256).unlink()  # the link to the catalog is down
        assert blobs.read(blob.sha256) == b"pixels from the catalog" and blobs.exists(blob.sha256)

    def test_bytes_that_do_not_hash_to_their_name_are_refused_and_not_cached(self, blobs, origin, cache):
        blob = origin.put(b"pixels")
        origin.path(blob.sha256).write_bytes(b"pixelz")  # corrupted at the origin, or on the way
        with pytest.raises(ValueError, match="hashes to"):
            blobs.read(blob.sha256)
        assert not cache.exists(blob.sha256) and cache.staged() == []

    def test_writes_go_to_the_origin(self, blobs, origin, cache):
        blob = blobs.put(b"a model artifact")
        assert origin.read(blob.sha256) == b"a model artifact" and not cache.exists(blob.sha256)
        staged = blobs.stage(b"an image awaiting its event")
        assert origin.staged() == [staged.sha256] and cache.staged() == []


def test_recover_promotes_blobs_with_events_and_discards_the_rest(tmp_path: Path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    kept, dropped = blobs.stage(b"event appended"), blobs.stage(b"killed before its event")
    (tmp_path / "blobs" / ".staging" / ".tmp-half").write_bytes(b"half a fi")
    assert blobs.recover(lambda sha: sha == kept.sha256) == (1, 1)
    assert blobs.exists(kept.sha256) and not blobs.exists(dropped.sha256)
    assert list((tmp_path / "blobs" / ".staging").iterdir()) == []
