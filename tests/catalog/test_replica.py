"""Reads on a hot standby, against two real servers: the embedded primary and its streaming replica. A read
after a write sees it; a replica held behind slows neither the ingest nor the readers who need no new write;
a stopped replica sends reads to the primary; a failover to the promoted replica loses and doubles nothing."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

import catalog
from catalog.consistency import check_catalog
from catalog.database import libpq_dsn
from catalog.embedded_postgres import ADMIN_ROLE, EmbeddedPostgres
from catalog.embedded_replica import EmbeddedReplica
from catalog.settings import Settings
from ingestion.ingest import ingest
from tests.builders import png, run_cli, texture, write_manifest
from tests.conftest import reachable_tempdir

WAIT = 0.5  # seconds a read that needs a position waits for the replica: short, to keep the tests fast


@dataclass(frozen=True)
class Pair:
    home: Path
    settings: Settings
    primary: EmbeddedPostgres
    replica: EmbeddedReplica

    def open(self, role: str = "app") -> catalog.Catalog:
        return catalog.open(self.settings, role=role)

    def env(self) -> dict[str, str]:
        """A `visionledger` process on this home's embedded servers."""
        return {**{k: v for k, v in os.environ.items() if not k.startswith(("VISIONLEDGER_", "PG"))},
                "VISIONLEDGER_HOME": str(self.home), "VISIONLEDGER_REPLICA_WAIT_SECONDS": str(WAIT)}

    def standby_admin(self) -> psycopg.Connection:
        return psycopg.connect(self.replica.info().url(ADMIN_ROLE, database="postgres", driver="postgresql"),
                               autocommit=True)


@pytest.fixture
def pair() -> Iterator[Pair]:
    root = reachable_tempdir("vl-test-replica-")
    home = root / "home"
    settings = Settings(home=home, replica_wait=WAIT)
    try:
        catalog.open(settings).close()  # the primary, started and migrated
        replica = EmbeddedReplica(home)
        replica.start()
        yield Pair(home, settings, EmbeddedPostgres(home), replica)
    finally:
        EmbeddedReplica(home).stop()
        EmbeddedPostgres(home).stop()
        shutil.rmtree(root, ignore_errors=True)


def delivery(folder: Path, seeds: range, *, prefix: str = "") -> Path:
    """A manifest of one small image per seed (the same seed, the same bytes, whatever the file's name)."""
    folder.mkdir()
    for seed in seeds:
        png(folder / f"{prefix}{seed}.png", texture(seed))
    return write_manifest(folder, [{"path": f"{prefix}{seed}.png"} for seed in seeds])


def answer(cat: catalog.Catalog, **read: object) -> tuple[int, int]:
    """(the port of the server that answered, the images it holds) for a read through ``cat``."""
    with cat.read(**read) as conn:
        return tuple(conn.exec_driver_sql("SELECT inet_server_port(), count(*) FROM projections.images").one())


def test_a_read_after_a_write_sees_it_on_the_replica(pair: Pair, tmp_path: Path):
    replica_port, primary_port = pair.replica.info().port, pair.primary.info().port
    with pair.open() as writer, pair.open("analyst") as analyst:
        ingest(writer, delivery(tmp_path / "d", range(3)), workers=1)
        assert answer(writer) == (replica_port, 3)  # waited for the replica to replay its own ingest
        assert answer(analyst, at_least=writer.head()) == (replica_port, 3)
        with writer.read(latest=True) as conn:
            assert conn.exec_driver_sql("SELECT inet_server_port()").scalar() == primary_port
    status = run_cli("db", "replica", "status", env=pair.env())
    assert "streaming" in status.stdout and "0 bytes" in status.stdout, status.stdout


def test_a_replica_held_behind_an_ingest_slows_neither_side(pair: Pair, tmp_path: Path):
    replica_port, primary_port = pair.replica.info().port, pair.primary.info().port
    with pair.open() as writer, pair.open("analyst") as analyst, pair.open() as other_writer:
        ingest(writer, delivery(tmp_path / "first", range(3)), workers=1)
        assert answer(writer) == (replica_port, 3)
        with pair.standby_admin() as standby:
            standby.execute("SELECT pg_wal_replay_pause()")
            ingested = ingest(writer, delivery(tmp_path / "second", range(3, 13)), workers=1, batch_size=2)
            assert ingested.ingested == 10  # the primary took the ingest while replay stood still

            status = run_cli("db", "replica", "status", env=pair.env())
            assert "replay paused" in status.stdout and " 0 bytes" not in status.stdout, status.stdout
            started = time.monotonic()
            assert answer(analyst) == (replica_port, 3)  # needs no new write: the replica answers at once
            assert answer(other_writer) == (replica_port, 3)  # nor does a writer that appended nothing
            assert time.monotonic() - started < WAIT

            started = time.monotonic()
            assert answer(writer) == (primary_port, 13)  # needs its own ingest: waited, then the primary
            assert answer(analyst, at_least=writer.head()) == (primary_port, 13)
            assert 2 * WAIT <= time.monotonic() - started < 2 * WAIT + 2

            standby.execute("SELECT pg_wal_replay_resume()")
        assert answer(writer) == (replica_port, 13)


def test_a_long_read_on_the_replica_is_neither_cancelled_nor_holding_replay_back(pair: Pair, tmp_path: Path):
    replica_port = pair.replica.info().port
    with pair.open() as writer, pair.open("analyst") as analyst:
        ingest(writer, delivery(tmp_path / "first", range(4)), workers=1)
        with analyst.read(at_least=writer.head()) as long_read:  # a dataset build's snapshot, held open
            long_read.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            sightings = "SELECT sum(sightings) FROM projections.images"
            before = long_read.exec_driver_sql(sightings).scalar()
            # The same images under other names: each row of projections.images is updated, its old version dead.
            ingest(writer, delivery(tmp_path / "again", range(4), prefix="copy-"), workers=1)
            with psycopg.connect(libpq_dsn(writer.urls.owner), autocommit=True) as owner:
                owner.execute("VACUUM projections.images")  # keeps what the standby's snapshot sees (feedback)
            ingest(writer, delivery(tmp_path / "after", range(4, 5)), workers=1)
            assert answer(writer)[0] == replica_port  # replay went past the VACUUM within the bounded wait
            assert long_read.exec_driver_sql(sightings).scalar() == before  # the snapshot still stands


def test_a_stopped_replica_sends_reads_to_the_primary_without_an_error(pair: Pair, tmp_path: Path):
    replica_port, primary_port = pair.replica.info().port, pair.primary.info().port
    with pair.open("analyst") as analyst, pair.open() as writer:
        ingest(writer, delivery(tmp_path / "d", range(2)), workers=1)
        assert answer(analyst, at_least=writer.head()) == (replica_port, 2)
        assert pair.replica.stop()
        assert answer(analyst) == (primary_port, 2)
        assert answer(writer) == (primary_port, 2)
    queried = run_cli("images", "query", env=pair.env())  # a process of its own: it learns anew
    assert "1–2 of 2 images" in queried.stdout, queried.stdout
    assert "does not answer" in queried.stderr and "Error" not in queried.stderr, queried.stderr


def test_failover_to_the_promoted_replica_loses_and_doubles_nothing(pair: Pair, tmp_path: Path):
    manifest = delivery(tmp_path / "d", range(12))

    def stop_the_primary_after_the_first_batch(done: int, total: int) -> None:
        if done < total:
            pair.primary._pg_ctl("stop", "-m", "immediate", "-w")  # as a crash: no checkpoint, no goodbye

    with pair.open() as writer, pytest.raises(psycopg.OperationalError):
        ingest(writer, manifest, workers=1, batch_size=4, progress=stop_the_primary_after_the_first_batch)
    run_cli("db", "replica", "promote", env=pair.env())
    assert not pair.replica.state_file.exists() and not pair.replica.running()

    with pair.open() as promoted:
        assert promoted.replica is None
        again = ingest(promoted, manifest, workers=1)
        assert again.ingested + again.already_ingested == 12 and again.already_ingested >= 4
        report = check_catalog(promoted)
        assert report.ok, report.problems()
        with promoted.read() as conn:
            ingested = conn.exec_driver_sql("SELECT count(*), count(DISTINCT payload->>'sha256') FROM catalog.events"
                                            " WHERE type = 'ImageIngested'").one()
        assert tuple(ingested) == (12, 12)
    checked = run_cli("check", env=pair.env())
    assert "12 images" in checked.stdout, checked.stdout
