"""What every page shares: the viewer, the catalog opened as the viewer's database role, cached reads, and
links to the trace of a part."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

import streamlit as st

import catalog
from apps.ui.roles import Action, Viewer
from catalog import activity, factory_day

TRACE_PAGE = "views/trace.py"
VIEWER_KEY = "viewer"  # where app.py leaves the viewer it established for this rerun (`apps.ui.session`)


@st.cache_resource
def _catalog(database_role: str, settings: catalog.Settings) -> catalog.Catalog:
    # One catalog (one connection pool) per database role and catalog for the whole server, shared by all
    # sessions.
    return catalog.open(settings, role=database_role)


def catalog_as(database_role: str) -> catalog.Catalog:
    """The catalog as the database login ``database_role`` (`apps.ui.roles.DATABASE_ROLE`)."""
    return _catalog(database_role, catalog.Settings.from_env())


def viewer() -> Viewer:
    """The viewer of this rerun, as app.py established them (`apps.ui.session.current_viewer`). A widget's
    callback runs before that check: one that changes the catalog asks `apps.ui.session.acting_viewer`."""
    return st.session_state[VIEWER_KEY]


def get_catalog() -> catalog.Catalog:
    """The catalog, opened as the database role of the viewer (read-only for analysts and auditors)."""
    return catalog_as(viewer().database_role)


def allowed(action: Action) -> bool:
    return viewer().can(action)


def cached(seconds: int = 30) -> Callable:
    """st.cache_data for reads: a page re-rendering within `seconds` reuses the result; the cache key leaves
    out the catalog argument (named with a leading underscore by the callers)."""
    return st.cache_data(ttl=seconds, show_spinner=False)


def trace_link(part_id: str, *, label: str | None = None) -> None:
    """A link to the Trace page of `part_id`."""
    st.page_link(TRACE_PAGE, label=label or f"Trace {part_id}", query_params={"part": part_id})


def record_actor() -> dict[str, Any]:
    """Metadata for the events this session appends: who did it, from where."""
    return {"actor": viewer().actor, "source": "streamlit"}


def catalog_state(cat: catalog.Catalog) -> str:
    """A cache key for reads of ``cat``: its database and head position, so a cached page re-reads as soon as
    an event is appended, and two catalogs in one process never share results."""
    return f"{cat.db.url.render_as_string(hide_password=True)}@{cat.head()}"


@st.cache_data(ttl=60, show_spinner=False)
def _image_days(_cat: catalog.Catalog, state: str) -> tuple[date, date] | None:
    return activity.image_days(_cat)


@st.cache_data(ttl=60, show_spinner=False)
def time_zones_of(_cat: catalog.Catalog, state: str) -> dict[str, str]:
    """The lines whose time zone was set (`state`: `catalog_state(cat)`)."""
    return factory_day.time_zones(_cat)


def line_time(cat: catalog.Catalog, moment: datetime, line: str | None) -> str:
    """``moment`` as ``line`` reads it: its local time with the offset (UTC for no line)."""
    zones = time_zones_of(cat, catalog_state(cat))
    return factory_day.shown(moment, zones.get(line, factory_day.DEFAULT_TIME_ZONE))


def local_times(cat: catalog.Catalog, state: str, rows: Any, columns: Sequence[str], *, line: str = "line") -> Any:
    """``rows`` (a DataFrame) with its time ``columns`` shown as each row's line reads them: local time with
    the offset (`catalog.factory_day.shown`); a row without a line is shown in UTC."""
    if rows.empty:
        return rows
    zones = time_zones_of(cat, state)
    lines = rows[line] if line in rows else [None] * len(rows)
    return rows.assign(**{column: [
        None if moment is None or moment != moment else  # None or NaT
        factory_day.shown(moment.to_pydatetime() if hasattr(moment, "to_pydatetime") else moment,
                          zones.get(at, factory_day.DEFAULT_TIME_ZONE))
        for moment, at in zip(rows[column], lines, strict=True)] for column in columns if column in rows})


def days_with_images(cat: catalog.Catalog, state: str) -> tuple[date, date]:
    """The first and last factory day with images (`state`: `catalog_state(cat)`); a catalog without images stops
    the page with what to do."""
    span = _image_days(cat, state)
    if span is None:
        st.info("The catalog holds no images yet: ingest a delivery (`visionledger ingest`) or run the line.")
        st.stop()
    return span


def trace_url(part_id: str) -> str:
    """The Trace page of `part_id` as a relative URL, for link columns of tables (st.column_config.LinkColumn)."""
    return f"trace?{urlencode({'part': part_id})}"
