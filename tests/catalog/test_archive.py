"""The partitioned log and its archive: migration 0017 turns a log with events into a partitioned table without
copying them; whole old partitions are archived to the lake, verified and dropped; reads, the trace, the
projections and `check` still see the whole log through the lake, an altered archive file is found, a run cut
short converges when run again, and appends go on across the horizon."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pyarrow.parquet as pq
import pytest

import catalog
from catalog import events as ev
from catalog.archive import archive_log
from catalog.audit import part_audit
from catalog.consistency import CatalogReport, check_catalog
from catalog.database import upgrade
from catalog.datasets import DatasetSpec, build_dataset_version
from catalog.embedded_postgres import OWNER_ROLE
from catalog.errors import ConcurrencyError
from catalog.factory_day import zones_as_of
from catalog.lookups import ingested_in_log, part_events, predicted_class
from catalog.partitions import ensure_partitions_at, partitions
from catalog.queries import latest_prediction_id
from catalog.settings import Settings
from catalog.store import NewEvent
from catalog.synthetic import FactoryShape, ontology_event, simulated_day
from ingestion.labels import record_correction, record_label
from tests.builders import cli_env, query, run_cli
from tests.conftest import database_at_revision

PARTITION = 300
SHAPE = FactoryShape(lines=1, stations=1, cameras=2, parts_per_line=40)  # about 280 events a day
DAYS = 4
FIRST_DAY = date(2026, 1, 5)
FIRST_PART = f"L0-{FIRST_DAY:%Y%m%d}-00000"
ACTOR = "test:archivist"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def year(cat: catalog.Catalog, database) -> catalog.Catalog:
    """DAYS synthetic days in partitions of PARTITION positions, their read models caught up."""
    ensure_partitions_at(database.dsn(OWNER_ROLE), size=PARTITION, ahead=DAYS * 300 // PARTITION + 2)
    cat.store.append([ontology_event()])
    for n in range(DAYS):
        cat.store.append(list(simulated_day(FIRST_DAY + timedelta(days=n), shape=SHAPE)))
    cat.catch_up()
    return cat


def _consistent(report: CatalogReport) -> bool:
    """Whether `check` found nothing wrong but the blobs, which a synthetic catalog has none of."""
    return all(problem.startswith("events without their blob") for problem in report.problems())


def _table_partitions(database) -> list:
    with psycopg.connect(database.dsn(OWNER_ROLE)) as conn:
        return partitions(conn)


def test_whole_old_partitions_are_archived_verified_and_dropped_and_the_log_reads_the_same(year, database):
    before = year.store.read(limit=None)
    trace_before = part_audit(year, FIRST_PART)
    archived = archive_log(year, before=3 * PARTITION + 1, actor=ACTOR)

    assert [(a.first, a.last, a.events) for a in archived] == [
        (1, PARTITION, PARTITION), (PARTITION + 1, 2 * PARTITION, PARTITION), (2 * PARTITION + 1, 3 * PARTITION,
                                                                                PARTITION)]
    assert _table_partitions(database)[0].first == 3 * PARTITION + 1  # dropped from PostgreSQL
    assert year.store.archived_through() == 3 * PARTITION
    for done in archived:
        assert (year.settings.lake_root / done.files[0].path).stat().st_size == done.files[0].bytes
    records = year.store.read(types=["LogRangeArchived"])
    assert [(r.data.first_position, r.data.last_position) for r in records] == [(a.first, a.last) for a in archived]

    # The whole log reads as before, across the horizon, in any page size.
    assert year.store.read(limit=None) == before + records
    assert [e for page in year.store.iter_events(page_size=97) for e in page] == before + records
    assert year.store.read(PARTITION - 5, upto=PARTITION + 5) == before[PARTITION - 5:PARTITION + 5]
    assert year.store.verify_chain(page_size=128).ok
    assert year.store.position_at(before[10].recorded_at) >= 11
    # The trace of a part from the first day, unchanged; the server's view of the part, too.
    trace_after = part_audit(year, FIRST_PART)
    assert trace_after.timeline == trace_before.timeline and trace_after.images == trace_before.images
    assert trace_after.decision == trace_before.decision
    assert [e[:2] for e in part_events(year, FIRST_PART)] == [
        (e.event_id, e.type) for e in before if e.payload.get("part_id") == FIRST_PART
        and e.type in ("ImageIngested", "PredictionRecorded", "PartDispositioned")]
    # `check` proves the whole history, the read models rebuilt from zero through the lake included.
    report = check_catalog(year)
    assert _consistent(report), report.problems()
    assert report.blobs.images == DAYS * SHAPE.parts_per_line * SHAPE.cameras  # the archived images' too
    assert (report.archived_through, report.events, report.chain.head.position) == (
        3 * PARTITION, len(before) + 3, len(before) + 3)
    # Nothing more is old enough; a re-run archives nothing and appends nothing.
    assert archive_log(year, before=3 * PARTITION + 1, actor=ACTOR) == []


def test_appends_go_on_across_the_horizon_with_the_archived_streams_versions(year):
    image = year.store.read(limit=1, types=["ImageIngested"])[0]
    archive_log(year, before=2 * PARTITION + 1, actor=ACTOR)
    stream = image.stream_id
    version = year.store.stream_version(stream)
    assert version == len(year.store.read_stream(stream)) >= 2
    excluded = NewEvent(ev.ImageExcluded(sha256=image.payload["sha256"], reason="dusty lens"),
                        datetime.now(UTC), metadata={"actor": ACTOR})
    with pytest.raises(ConcurrencyError):
        year.store.append([excluded], expected_versions={stream: version - 1})
    year.store.append([excluded], expected_versions={stream: version})
    history = year.store.read_stream(stream)
    assert [e.version for e in history] == list(range(1, version + 2)) and history[-1].type == "ImageExcluded"
    assert history[0] == image  # read from the lake
    # Streams read together: one across the horizon, one archived whole, one in the table only, one unknown
    archived_whole = year.store.read(limit=1, types=["OntologyPublished"])[0].stream_id
    live = year.store.read(2 * PARTITION, limit=1, types=["ImageIngested"])[0].stream_id
    asked = [live, stream, "image:" + "0" * 64, archived_whole]
    log = year.store.read(limit=None)  # by position ranges, across the horizon
    assert year.store.read_streams(asked) == {s: sorted((e for e in log if e.stream_id == s), key=lambda e: e.version)
                                              for s in asked}
    assert year.store.read_streams(asked)[archived_whole] and year.store.read_streams(asked)[stream] == history
    assert _consistent(check_catalog(year))


def test_the_writers_lookups_by_image_read_the_archive_too(year):
    prediction = year.store.read(limit=1, types=["PredictionRecorded"])[0]
    sha = prediction.payload["sha256"]
    archive_log(year, before=2 * PARTITION + 1, actor=ACTOR)
    assert prediction.position <= year.store.archived_through()  # only in the lake now
    assert predicted_class(year, sha, prediction.event_id) == prediction.payload["predicted_class"]
    assert predicted_class(year, sha, uuid.uuid4()) is None
    assert ingested_in_log(year, sha) and not ingested_in_log(year, "0" * 64)
    assert latest_prediction_id(year, sha) == [e.event_id for e in year.store.read_stream(prediction.stream_id)
                                               if e.type == "PredictionRecorded"][-1]


def test_the_line_zones_a_version_reads_as_of_its_position_survive_the_archive(cat, database):
    ensure_partitions_at(database.dsn(OWNER_ROLE), size=PARTITION, ahead=4)
    cat.store.append([ontology_event(), NewEvent(ev.LineTimeZoneSet(line="line-0", time_zone="Asia/Tokyo"), T0)])
    for n in range(2):
        cat.store.append(list(simulated_day(FIRST_DAY + timedelta(days=n), shape=SHAPE)))
    cat.store.append([NewEvent(ev.LineTimeZoneSet(line="line-0", time_zone="Europe/Paris"), T0)])
    cat.catch_up()
    at = PARTITION + 1  # a version's position: after Tokyo was set, before Paris

    def zones_then() -> list[tuple]:
        return query(cat, f"SELECT line, time_zone FROM {zones_as_of('%(p)s')} z", {"p": at})

    assert zones_then() == [("line-0", "Asia/Tokyo")]
    archive_log(cat, before=PARTITION + 1, actor=ACTOR)  # the partition that holds the Tokyo event
    assert cat.store.archived_through() == PARTITION
    assert zones_then() == [("line-0", "Asia/Tokyo")]
    assert _consistent(check_catalog(cat))  # the read models rebuilt from zero, through the archive, agree


def test_the_masks_a_version_reads_as_of_its_position_survive_the_archive(cat, database):
    ensure_partitions_at(database.dsn(OWNER_ROLE), size=PARTITION, ahead=4)
    cat.store.append([ontology_event(), *simulated_day(FIRST_DAY, shape=SHAPE)])
    sha = cat.store.read(limit=1, types=["ImageIngested"])[0].payload["sha256"]
    drawn = [ev.Region(shape="box", x0=3, y0=4, x1=30, y1=40)]
    record_label(cat, sha256=sha, label="crack", annotator="ana", regions=drawn, mask_uri=f"masks/{sha}.png")
    assert cat.head() <= PARTITION  # the label with its mask is in the first partition
    cat.store.append(list(simulated_day(FIRST_DAY + timedelta(days=1), shape=SHAPE)))
    at = cat.head()  # a version's position: after the label, before its correction
    record_correction(cat, sha256=sha, new_label="scratch", corrected_by="dana")  # the image changed since

    def row_then() -> dict:
        version = build_dataset_version(cat.db, DatasetSpec.parse(
            {"name": "masks", "sampling": {"counts": {"crack": "all"}}, "seed": 1}), position=at)
        return next(r for r in version.manifest.to_pylist() if r["sha256"] == sha)

    before = row_then()
    assert (before["class"], before["mask_uri"]) == ("crack", f"masks/{sha}.png")
    assert [ev.Region.model_validate(r) for r in json.loads(before["regions"])] == drawn
    archive_log(cat, before=PARTITION + 1, actor=ACTOR)  # the partition that holds the label
    assert cat.store.archived_through() == PARTITION
    assert row_then() == before
    assert _consistent(check_catalog(cat))  # the label history rebuilt from zero, through the archive, agrees


def test_an_altered_archive_file_is_found_by_check(year):
    archived = archive_log(year, before=PARTITION + 1, actor=ACTOR)
    path = year.settings.lake_root / archived[0].files[0].path
    table = pq.read_table(path)
    metadata = table.column("metadata").to_pylist()
    metadata[7] = metadata[7].replace("synthetic", "mallory")
    pq.write_table(table.set_column(table.schema.get_field_index("metadata"), "metadata", [metadata]), path)

    report = check_catalog(year)
    assert not report.ok
    assert (report.chain.broken_at, report.chain.head.position) == (8, 7)
    assert any(f"{archived[0].files[0].path} is" in p and "it was changed" in p for p in report.archive_problems)
    assert "does not match its hash" in report.problems()[0]


def test_an_archive_cut_short_at_any_step_converges_when_run_again(year, database, monkeypatch):
    first = _table_partitions(database)[0]
    # Killed while writing: a temporary file; or the file in place, but torn, and nothing recorded.
    path = year.archive.path_of(first.first, first.last)
    path.parent.mkdir(parents=True)
    path.with_name(f".{path.name}.tmp").write_bytes(b"half a file")
    path.write_bytes(b"PAR1 torn")
    # Then killed before the drop, after recording the range: the drop cannot take its lock in time.
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=300")
    with psycopg.connect(database.dsn("visionledger_app")) as reader:
        reader.execute("SELECT count(*) FROM catalog.events")  # holds the table's lock until it ends
        with pytest.raises(psycopg.errors.LockNotAvailable):
            archive_log(year, before=PARTITION + 1, actor=ACTOR)
    assert _table_partitions(database)[0] == first  # nothing dropped
    assert [r.data.first_position for r in year.store.read(types=["LogRangeArchived"])] == [1]
    assert _consistent(check_catalog(year))  # a verified copy and its record beside the live partition

    assert [a.first for a in archive_log(year, before=PARTITION + 1, actor=ACTOR)] == [1]
    assert len(year.store.read(types=["LogRangeArchived"])) == 1  # recorded once
    assert not path.with_name(f".{path.name}.tmp").exists()
    assert year.store.archived_through() == PARTITION and _consistent(check_catalog(year))


def test_an_append_beyond_the_last_partition_adds_partitions_of_the_owners_size(cat, database):
    with psycopg.connect(database.dsn(OWNER_ROLE)) as conn:
        for p in partitions(conn):
            conn.execute(f"DROP TABLE catalog.{p.name}")
        conn.execute("SELECT catalog.create_event_partition(1, 3)")  # two positions, no partition ahead
    cat.store.append([ontology_event()])
    cat.store.append_one(NewEvent(ev.LineTimeZoneSet(line="line-0", time_zone="Europe/Paris"), datetime.now(UTC)))
    # The next single event, then a batch spanning several partitions: the writer adds them, of size 2
    cat.store.append_one(NewEvent(ev.LineTimeZoneSet(line="line-1", time_zone="UTC"), datetime.now(UTC)))
    cat.store.append([NewEvent(ev.LineTimeZoneSet(line=f"line-{i}", time_zone="UTC"), datetime.now(UTC))
                      for i in range(2, 40)])
    # and batches appended in turn (the next staged while one is stored), each past the last partition
    list(cat.store.append_batches([NewEvent(ev.LineTimeZoneSet(line=f"line-{i}", time_zone="UTC"), datetime.now(UTC))
                                   for i in range(first, first + 20)] for first in (40, 60)))
    assert cat.head() == 81 and cat.store.verify_chain().ok
    with psycopg.connect(database.dsn(OWNER_ROLE)) as conn:
        made = partitions(conn)
    assert {p.size for p in made} == {2} and made[-1].end > 81 + 2  # a whole partition to spare
    assert [p.end for p in made] == [p.first for p in made[1:]] + [made[-1].end]  # no gap, no overlap
    # Writers reach partitions only through that function, which decides the size; readers not even that.
    with psycopg.connect(database.dsn("visionledger_app")) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT catalog.create_event_partition(1000, 2000000)")
    with psycopg.connect(database.dsn("visionledger_analyst")) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT catalog.add_event_partitions(10)")
    run_cli("log", "partitions", env=cli_env(cat))  # the owner's maintenance agrees with what writers made
    assert check_catalog(cat).ok


def test_the_cli_archives_by_age_and_check_still_proves_the_log(year):
    env = cli_env(year)
    assert "nothing to archive" in run_cli("log", "archive", "--older-than", "1", env=env).stdout
    shown = run_cli("log", "archive", "--before", str(PARTITION + 1), env=env).stdout
    assert f"archived 1–{PARTITION}: {PARTITION} events" in shown
    assert "positions 1–300 archived" in run_cli("log", "partitions", env=env).stdout
    checked = json.loads(run_cli("check", "--json", env=env, check=False).stdout)
    assert checked["chain_head"].startswith(f"{year.head()}:")
    assert all(problem.startswith("events without their blob") for problem in checked["problems"])


@pytest.fixture
def database_at_0016(pg_server, tmp_path) -> Iterator[tuple[str, Settings]]:
    with database_at_revision(pg_server, tmp_path, "0016") as settings:
        yield settings.admin_database_url, settings


def test_migration_0017_partitions_a_log_with_events_without_copying_them(year, database, database_at_0016):
    owner_url, settings = database_at_0016
    rows = year.store.read(limit=None)
    # The events as the store wrote them, copied into a log still at 0016 (a plain table).
    with psycopg.connect(database.dsn(OWNER_ROLE)) as source, \
            psycopg.connect(owner_url.replace("+psycopg", "")) as target:
        with source.cursor().copy("COPY (TABLE catalog.events ORDER BY position) TO STDOUT (FORMAT BINARY)") as out, \
                target.cursor().copy("COPY catalog.events FROM STDIN (FORMAT BINARY)") as into:
            for block in out:
                into.write(block)
        target.commit()
        stored = target.execute("SELECT pg_relation_filenode('catalog.events')").fetchone()[0]
    upgrade(owner_url)
    with psycopg.connect(owner_url.replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT relkind FROM pg_class WHERE oid = 'catalog.events'::regclass").fetchone()[0] == "p"
        found = partitions(conn)
        assert found[0].first == 1 and found[0].last == len(rows)  # the old table, exactly its events
        assert conn.execute(f"SELECT pg_relation_filenode('catalog.{found[0].name}')").fetchone()[0] == stored
        assert sum(p.first > len(rows) for p in found) >= 2  # partitions ahead
    with catalog.open(settings) as migrated:
        assert migrated.store.read(limit=None) == rows and migrated.store.verify_chain().ok
        migrated.store.append([NewEvent(ev.LineTimeZoneSet(line="line-0", time_zone="UTC"), datetime.now(UTC))])
        assert migrated.store.verify_chain().events == len(rows) + 1
    # Still append-only, for the owner too, through the parent or a partition.
    for table in ("events", found[0].name):
        with psycopg.connect(owner_url.replace("+psycopg", "")) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(f"UPDATE catalog.{table} SET type = type")
