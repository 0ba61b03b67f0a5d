"""Publishing a dataset version: the manifest into the lake under its content hash, then the event.

The manifest, and what the trace of a part needs of it (`catalog.datasets.facts`), are written before the
event, so a crash in between leaves a file and facts no event names (harmless, and found by the next run)
rather than an event naming a missing file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from sqlalchemy import Connection

from catalog import Catalog
from catalog.datasets.build import DatasetVersion, build_dataset_version
from catalog.datasets.facts import store_facts
from catalog.datasets.spec import DatasetSpec
from catalog.errors import CatalogError
from catalog.events import DatasetVersionPublished
from catalog.lake import Lake, parquet_bytes
from catalog.store import NewEvent, event_id_for


@dataclass(frozen=True)
class PublishedDataset:
    version: DatasetVersion
    version_id: str
    manifest_hash: str  # sha256 of the manifest file's bytes
    manifest_uri: str  # the manifest's path relative to the lake root
    position: int  # where DatasetVersionPublished sits in the log
    already_published: bool


def manifest_uri(dataset: str, version_id: str) -> str:
    return f"datasets/{dataset}/{version_id}/manifest.parquet"


def publish_dataset_version(cat: Catalog, spec: DatasetSpec, *, position: int | None = None,
                            actor: str | None = None) -> PublishedDataset:
    """Build ``spec`` as of ``position`` (default: ``spec.as_of``, else the head), write its manifest and
    append ``DatasetVersionPublished``. Publishing the same manifest again appends nothing."""
    # On the replica when it has folded the head: the build's long read then costs the primary nothing.
    version = build_dataset_version(cat.reader(at_least=cat.head()), spec, position=position)
    data = parquet_bytes(version.manifest)
    digest = hashlib.sha256(data).hexdigest()
    version_id = f"{spec.name}-{digest[:12]}"
    uri = manifest_uri(spec.name, version_id)
    # What a trace needs of the version, before the event that names it (as the manifest is)
    store_facts(cat, digest, version.manifest, version.position)
    known = _published(cat, version_id)
    if known is not None:
        return PublishedDataset(version, version_id, digest, uri, known, already_published=True)
    cat.lake.write_bytes(uri, data)
    record_manifest_file(cat, digest, uri)
    cat.lake.write_bytes(Path(uri).with_name("spec.yaml"), yaml.safe_dump(
        {"version_id": version_id, "as_of_position": version.position, "spec": spec.recorded()},
        sort_keys=False).encode())
    event = DatasetVersionPublished(
        dataset=spec.name, version_id=version_id, spec=spec.recorded() | {"ontology_version": version.ontology_version},
        as_of_position=version.position, counts=version.counts, manifest_hash=digest, manifest_uri=uri)
    result = cat.append([NewEvent(event, datetime.now(UTC), event_id=event_id_for("dataset-version", version_id),
                                  metadata={"actor": actor or "visionledger", "source": "catalog.datasets"})])
    return PublishedDataset(version, version_id, digest, uri, result.positions[0],
                            already_published=result.all_duplicates)


def _published(cat: Catalog, version_id: str) -> int | None:
    with cat.read() as conn:
        row = conn.exec_driver_sql("SELECT position FROM projections.dataset_versions WHERE version_id = %(v)s",
                                   {"v": version_id}).fetchone()
    return row[0] if row else None


def file_identity(lake: Lake, uri: str) -> str | None:
    """The lake file's identity on disk: device, inode, size, modification and change times (None when it
    is missing). Writing or replacing the file changes it (catalog.manifest_files, migration 0019)."""
    try:
        s = (lake.root / uri).stat()
    except OSError:
        return None
    return f"{s.st_dev}:{s.st_ino}:{s.st_size}:{s.st_mtime_ns}:{s.st_ctime_ns}"


def record_manifest_file(cat: Catalog, manifest_hash: str, uri: str) -> None:
    """Record that the manifest at ``uri``, as it is on disk now, holds the bytes hashed to ``manifest_hash``."""
    with cat.db.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO catalog.manifest_files (manifest_hash, uri, file_identity) VALUES (%(h)s, %(u)s, %(i)s)"
            " ON CONFLICT (manifest_hash, uri) DO UPDATE SET file_identity = excluded.file_identity,"
            " hashed_at = excluded.hashed_at", {"h": manifest_hash, "u": uri, "i": file_identity(cat.lake, uri)})


def recorded_manifest_file(conn: Connection, manifest_hash: str, uri: str) -> str | None:
    """The identity the manifest at ``uri`` had when it was last found to hold ``manifest_hash``'s bytes."""
    return conn.exec_driver_sql("SELECT file_identity FROM catalog.manifest_files WHERE manifest_hash = %(h)s"
                                " AND uri = %(u)s", {"h": manifest_hash, "u": uri}).scalar()


def load_manifest(lake: Lake, uri: str, *, expected_hash: str | None = None) -> pa.Table:
    """A published manifest, checked against its recorded hash when one is given."""
    return pq.read_table(pa.BufferReader(manifest_bytes(lake, uri, expected_hash=expected_hash)))


def manifest_bytes(lake: Lake, uri: str, *, expected_hash: str | None = None) -> bytes:
    """A published manifest's bytes, checked against its recorded hash when one is given: `CatalogError` says
    what is wrong with the file."""
    path = lake.root / uri
    # The uri is read from an event, which anyone who may append can write: it must not reach other files.
    if not path.resolve().is_relative_to(lake.root.resolve()):
        raise CatalogError(f"manifest uri {uri!r} leads outside the lake {lake.root}: refusing to read it")
    if not path.is_file():
        raise CatalogError(f"no manifest at {path}: was the lake moved, or the version never published?")
    data = path.read_bytes()
    if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
        raise CatalogError(f"{path}: its content does not match the recorded manifest hash {expected_hash[:12]}…")
    return data
