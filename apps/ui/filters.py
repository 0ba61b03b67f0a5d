"""The image filter form of the sidebar, shared by the Curate and Review pages: line, station, camera, part,
capture window, current label, the model's prediction and exclusion, read into a catalog ImageFilter."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import streamlit as st

import catalog
from apps.ui.common import cached, catalog_state
from catalog.factory_day import DEFAULT_TIME_ZONE
from catalog.queries import NOT_PREDICTED, UNLABELLED, FilterChoices, ImageFilter, filter_choices

EXCLUDED = {"any": None, "included": False, "excluded": True}


@cached(60)
def _choices(_cat: catalog.Catalog, state: str) -> FilterChoices:
    return filter_choices(_cat)


def image_filter(cat: catalog.Catalog, *, key: str) -> ImageFilter:
    """The sidebar's filter form (widget keys prefixed with ``key``), read as an ImageFilter."""
    choices = _choices(cat, catalog_state(cat))
    bar = st.sidebar
    bar.subheader("Filters")
    lines = bar.multiselect("Line", choices.lines, key=f"{key}-line")
    stations = bar.multiselect("Station", choices.stations, key=f"{key}-station")
    cameras = bar.multiselect("Camera", choices.cameras, key=f"{key}-camera")
    parts = bar.text_input("Part ids", key=f"{key}-parts", placeholder="line1-20260302-0001, …",
                           help="one or more part ids, separated by commas or spaces")
    captured_from, captured_to, first_day, last_day = _window(choices, tuple(lines) or tuple(choices.lines), key)
    labels = bar.multiselect("Current label", [*choices.classes, UNLABELLED], key=f"{key}-label")
    predictions = bar.multiselect("Model's prediction", [*choices.classes, NOT_PREDICTED], key=f"{key}-prediction",
                                  help="the class of the image's latest prediction, whichever engine made it")
    excluded = bar.radio("Excluded", list(EXCLUDED), horizontal=True, key=f"{key}-excluded")
    try:
        return ImageFilter(lines=tuple(lines), stations=tuple(stations), cameras=tuple(cameras),
                           parts=tuple(p for p in parts.replace(",", " ").split() if p),
                           captured_from=captured_from, captured_to=captured_to, first_day=first_day,
                           last_day=last_day, labels=tuple(labels),
                           predictions=tuple(predictions), excluded=EXCLUDED[excluded])
    except catalog.CatalogError as exc:
        bar.error(str(exc))
        st.stop()


def _window(choices: FilterChoices, lines: tuple[str, ...], key: str
            ) -> tuple[datetime | None, datetime | None, date | None, date | None]:
    """The capture window: a range of factory days (each line's own), optionally from a time on the first and
    until a time on the last, read in the lines' time zone when they share one. Returns (captured_from,
    captured_to, first_day, last_day); the whole catalog's range with no times is no window at all."""
    if choices.days is None:
        return None, None, None, None
    first, last = choices.days
    zones = {choices.time_zones.get(line, DEFAULT_TIME_ZONE) for line in lines}
    zone = next(iter(zones)) if len(zones) == 1 else None
    bar = st.sidebar
    days = bar.date_input("Captured (factory days)", (first, last), key=f"{key}-days",
                          help="each line's own calendar days, in its time zone")
    start_day, end_day = _day_range(days, first, last)
    left, right = bar.columns(2)
    note = f"local time, {zone}" if zone else "the chosen lines stand in several time zones: pick one line"
    start_time = left.time_input("from", value=None, key=f"{key}-from", step=timedelta(minutes=15), help=note,
                                 disabled=zone is None)
    end_time = right.time_input("until", value=None, key=f"{key}-until", step=timedelta(minutes=15), help=note,
                                disabled=zone is None)
    if zone is None or (start_time is None and end_time is None):
        whole = (start_day, end_day) == (first, last)
        return None, None, None if whole else start_day, None if whole else end_day
    local = ZoneInfo(zone)
    start = datetime.combine(start_day, start_time or time(0), local)
    end = (datetime.combine(end_day, end_time, local) if end_time is not None
           else datetime.combine(end_day + timedelta(days=1), time(0), local))
    return start, end, None, None


def _day_range(days: object, first: date, last: date) -> tuple[date, date]:
    # While a range is being picked the widget holds one day: that day alone.
    if isinstance(days, tuple | list):
        if len(days) == 2:
            return days[0], days[1]
        if len(days) == 1:
            return days[0], days[0]
        return first, last
    return (days, days) if isinstance(days, date) else (first, last)
