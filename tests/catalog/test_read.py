"""`Catalog.read`: the one way to read the read models, as fresh as the role can make them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import catalog
from catalog.events import OntologyPublished
from catalog.store import NewEvent
from tests.reliability.stored import with_readers


def ontology_versions(conn) -> int:
    return conn.exec_driver_sql("SELECT count(*) FROM projections.ontology_versions").scalar()


def append_unfolded(cat: catalog.Catalog, version: int) -> int:
    """Append an event without folding it, as a bulk loader does until its end; the position."""
    event = NewEvent(OntologyPublished(version=version, classes=["ok", "scratch"]), occurred_at=datetime.now(UTC))
    cat.append([event], catch_up=False)
    return cat.head()


def test_a_writers_read_sees_everything_appended_before_it(cat: catalog.Catalog) -> None:
    append_unfolded(cat, 1)
    with cat.db.connect() as conn:
        assert ontology_versions(conn) == 0  # the read model lags the log ...
    with cat.read() as conn:
        assert ontology_versions(conn) == 1  # ... not for a read


def test_settings_hold_for_one_read_only(cat: catalog.Catalog) -> None:
    with cat.read(settings={"work_mem": "64MB", "statement_timeout": "5s"}) as conn:
        assert conn.exec_driver_sql("SHOW work_mem").scalar() == "64MB"
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"
    with cat.read() as conn:
        assert conn.exec_driver_sql("SHOW work_mem").scalar() != "64MB"  # the pooled connection came back clean
    with pytest.raises(Exception, match="unrecognized configuration parameter"), cat.read(settings={"no_such": "1"}):
        pass


def test_a_reader_waits_for_the_writers_and_says_when_they_are_behind(cat: catalog.Catalog, pg_server) -> None:
    with catalog.open(with_readers(cat.settings, pg_server), role="analyst") as analyst:
        head = append_unfolded(cat, 1)
        with analyst.read() as conn:
            assert ontology_versions(conn) == 0  # a reader cannot fold: it reads what the writers have folded
        with (pytest.raises(catalog.CatalogError, match=rf"behind {head}.*is a writer .* running"),
              analyst.read(at_least=head, wait=0.2)):
            pass
        cat.catch_up()
        with analyst.read(at_least=head, wait=0.2) as conn:
            assert ontology_versions(conn) == 1
