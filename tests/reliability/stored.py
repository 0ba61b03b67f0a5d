"""A fingerprint of everything a catalog stores (events, projections, blobs, thumbnails, lake), so a test can
assert that a bad input changed nothing."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import make_url

import catalog
from ingestion.factory_delivery import deliver_factory
from tests.conftest import TEMPLATE, TestServer
from tests.engine_fixtures import copy_database, drop_database

# Quarantine is the one trace a rejected delivery row is meant to leave; everything else must stay as it was.
QUARANTINE = ("ImageRejected",)


@dataclass(frozen=True)
class Stored:
    events: tuple[int, int, str]  # count, highest position, hash of every row (quarantine left out)
    quarantined: int
    tables: dict[str, tuple[int, str]]  # projection table -> (rows, hash)
    files: dict[str, str]  # blob, thumbnail and lake files (relative to home) -> sha256

    def assert_unchanged_since(self, before: Stored, *, quarantined: int = 0) -> None:
        """Equal to ``before``, except for ``quarantined`` more ImageRejected events."""
        assert self.events == before.events, "events were added or altered"
        assert self.quarantined == before.quarantined + quarantined
        assert self.tables == before.tables, _diff(before.tables, self.tables)
        assert self.files == before.files, _diff(before.files, self.files)


def snapshot(cat: catalog.Catalog) -> Stored:
    """What ``cat`` stores now, read through its owner's connection (no role filters what it sees)."""
    with psycopg.connect(catalog.database.libpq_dsn(cat.urls.owner)) as conn:
        count, head, digest = conn.execute(
            "SELECT count(*), coalesce(max(position), 0), md5(coalesce(string_agg(e::text, '|' ORDER BY position), ''))"
            " FROM catalog.events e WHERE type <> ALL(%s)", [list(QUARANTINE)]).fetchone()
        quarantined = conn.execute("SELECT count(*) FROM catalog.events WHERE type = ANY(%s)",
                                   [list(QUARANTINE)]).fetchone()[0]
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'projections'"
            " AND table_type = 'BASE TABLE' ORDER BY 1")]
        tables = {}
        for name in names:
            if "checkpoint" in name:  # advances over quarantine events too: the read models themselves are compared
                continue
            rows, table_hash = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                f" FROM projections.{name} t").fetchone()
            tables[name] = (rows, table_hash)
    return Stored(events=(count, head, digest), quarantined=quarantined, tables=tables, files=_files(cat))


def _files(cat: catalog.Catalog) -> dict[str, str]:
    home = cat.settings.home
    files = {}
    for root in (cat.settings.blob_root, cat.settings.thumbnail_root, cat.settings.lake_root):
        for path in sorted(Path(root).rglob("*")) if Path(root).exists() else ():
            if path.is_file() and not path.name.endswith(".lock"):
                files[str(path.relative_to(home) if path.is_relative_to(home) else path)] = \
                    hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _diff(before: dict, after: dict) -> str:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return f"changed: {changed[:10]}"


@contextmanager
def factory_catalog(server: TestServer, factory_dir: Path) -> Iterator[catalog.Catalog]:
    """A catalog of its own holding the tiny factory (ontology, images, labels, corrections), dropped afterwards;
    for a module of tests that each leave it as it was (which the tests assert)."""
    database = copy_database(server, TEMPLATE)
    settings = with_readers(database.settings, server)
    try:
        with catalog.open(settings) as cat:
            deliver_factory(cat, factory_dir, actor="test", workers=1)
            yield cat
    finally:
        drop_database(database)


def with_readers(settings: catalog.Settings, server: TestServer) -> catalog.Settings:
    """``settings`` that also know the read-only logins (analyst, auditor) of the same database."""
    name = make_url(settings.database_url).database
    return dataclasses.replace(settings, reader_urls=tuple(
        (role, server.url(f"visionledger_{role}", name)) for role in ("analyst", "auditor")))
