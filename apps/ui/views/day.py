"""Day: "what happened on this day?": each line's images and rejects hour by hour, the rejects, corrections
and disagreements (each one click from its part's trace), the cameras' drift statistics against their bands,
and the dataset versions, models, engines and promotions recorded that day. A drift alert names each camera
out of band and lets a curator exclude that camera-day's images from training or queue them for review."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import altair as alt
import pandas as pd
import streamlit as st

import catalog
from apps.ui.common import (
    allowed,
    cached,
    catalog_state,
    days_with_images,
    get_catalog,
    local_times,
    time_zones_of,
    trace_url,
)
from apps.ui.roles import Action
from apps.ui.session import acting_viewer, password_input, signature
from catalog import activity, factory_day
from catalog.curation import set_excluded
from catalog.drift import STATISTICS, Camera, read_drift_days
from catalog.queries import ImageFilter, count_images
from catalog.review_queue import CURATOR_QUEUE, count_waiting_reviews, request_review
from identity.people import LoginRefused
from identity.signatures import Meaning

ROWS = 200  # of each table: the figures above count them all
DRIFT_STRATEGY = "drift-alert"  # how review requests from a drift alert name themselves in the queue


@cached()
def day_figures(_cat, state: str, day: date) -> activity.DayFigures:
    return activity.daily_figures(_cat, day, day)[0]


@cached()
def timeline(_cat, state: str, day: date) -> pd.DataFrame:
    return pd.DataFrame([vars(h) for h in activity.day_timeline(_cat, day)],
                        columns=["line", "hour", "images", "rejected_parts"])


@cached()
def rows_of(_cat, state: str, what: str, day: date) -> pd.DataFrame:
    read = {"rejects": activity.rejected_parts, "corrections": activity.corrections,
            "disagreements": activity.disagreements}[what]
    return pd.DataFrame(read(_cat, day, day, limit=ROWS))


@cached()
def lineage_of(_cat, state: str, day: date) -> pd.DataFrame:
    return pd.DataFrame([vars(r) for r in activity.lineage_records(_cat, day, day)])


@cached(60)
def drift_of(_cat, lake_root: str, day: date) -> pd.DataFrame | None:
    """The day's drift table (one row per camera and statistic), or None when no report covers the day."""
    report = read_drift_days(_cat.lake, [day])
    return None if report.num_rows == 0 else report.to_pandas()


def camera_day(camera: Camera, day: date) -> ImageFilter:
    """The images ``camera`` took on the factory ``day``, excluded ones included."""
    return ImageFilter(lines=(camera[0],), stations=(camera[1],), cameras=(camera[2],), first_day=day, last_day=day)


@cached()
def camera_day_counts(_cat, state: str, camera: Camera, day: date) -> tuple[int, int, int]:
    """The camera-day's images, how many of them are excluded, and how many wait in the curators' queue."""
    where = camera_day(camera, day)
    return (count_images(_cat, where), count_images(_cat, replace(where, excluded=True)),
            count_waiting_reviews(_cat, where, queue=CURATOR_QUEUE))


def describe(row: dict) -> str:
    """One out-of-band statistic as a curator reads it."""
    if row["statistic"] == "stuck_pixels":
        return (f"{row['value']:.0f} stuck pixels (reference {row['reference']:.0f}, chance allows up to "
                f"{row['high']:.0f})")
    change = row["value"] / row["reference"] - 1 if row["reference"] else float("nan")
    return (f"{row['statistic']} {row['value']:.3g}, {change:+.1%} from its reference"
            + (", with every camera of its line" if row["line_wide"] else ""))


def _say(kind: str, text: str) -> None:
    st.session_state["day-message"] = (kind, text)


def _exclude(camera: Camera, day: date, reason: str) -> None:
    if (who := acting_viewer(Action.EXCLUDE)) is None:
        return
    try:  # an exclusion is signed: the curator approves it with their password
        signed = signature(who, "day-password", Meaning.APPROVED, Action.EXCLUDE)
        report = set_excluded(get_catalog(), camera_day(camera, day), exclude=True, reason=reason,
                              actor=who.actor, signed=signed)
    except LoginRefused as exc:
        _say("error", f"Nothing excluded: {exc}.")
        return
    except catalog.CatalogError as exc:
        _say("error", str(exc))
        return
    _say("success", f"Excluded {report.changed} of the {report.matched} images of {'/'.join(camera)} on {day} "
                    f"from training ({report.matched - report.changed} already were).")


def _queue_for_review(camera: Camera, day: date, reason: str) -> None:
    if (who := acting_viewer(Action.REQUEST_REVIEW)) is None:
        return
    try:
        selected, queued = request_review(get_catalog(), camera_day(camera, day), actor=who.actor,
                                          reason=reason, strategy=DRIFT_STRATEGY)
    except catalog.CatalogError as exc:
        _say("error", str(exc))
        return
    _say("success", f"Sent {queued} of the {selected} images of {'/'.join(camera)} on {day} to the "
                    f"{CURATOR_QUEUE!r} review queue ({selected - queued} were already waiting there).")


def drift_alerts(cat, state: str, day: date, drift: pd.DataFrame) -> None:
    """One alert per camera with a statistic out of band, and what the viewer may do about its images."""
    out = drift[drift["in_band"] == False]  # noqa: E712 - null (unknown) is neither in nor out
    if out.empty:
        return
    st.subheader("Drift alerts")
    if message := st.session_state.pop("day-message", None):
        getattr(st, message[0])(message[1])
    may_exclude, may_queue = allowed(Action.EXCLUDE), allowed(Action.REQUEST_REVIEW)
    if may_exclude:
        password_input("day-password", Meaning.APPROVED)
    for (line, station, camera_name), rows in out.groupby(["line", "station", "camera"], sort=True):
        camera, name = (line, station, camera_name), f"{line}/{station}/{camera_name}"
        findings = [describe(row) for row in rows.to_dict("records")]
        reason = f"drift alert on {day}, {name}: " + "; ".join(findings)
        images, excluded, waiting = camera_day_counts(cat, state, camera, day)
        with st.container(border=True):
            st.markdown(f"**{name}**: " + "; ".join(findings))
            st.caption(f"{images:,} images that day: {excluded:,} excluded from training, {waiting:,} waiting in "
                       f"the {CURATOR_QUEUE!r} review queue")
            if not (may_exclude or may_queue):
                continue
            exclude, review = st.columns(2)
            if may_exclude:
                exclude.button("Exclude from training", key=f"drift-exclude-{name}", on_click=_exclude,
                               args=(camera, day, reason), disabled=excluded == images, icon=":material/block:",
                               help="records an exclusion of each of the camera-day's images, with this alert "
                                    "as its reason; they stay in the catalog, out of every dataset version")
            if may_queue:
                review.button("Queue for review", key=f"drift-review-{name}", on_click=_queue_for_review,
                              args=(camera, day, reason), disabled=waiting == images,
                              icon=":material/rate_review:",
                              help=f"asks reviewers to look at the camera-day's images (the {CURATOR_QUEUE!r} queue)")
    if not (may_exclude or may_queue):
        st.caption("A curator can exclude these camera-days from training or queue them for review.")


def with_trace(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(trace=[trace_url(p) if p else None for p in frame["part_id"]])


def table(frame: pd.DataFrame, empty: str, count: int) -> None:
    if frame.empty:
        st.write(empty)
        return
    if count > len(frame):
        st.caption(f"the latest {len(frame):,} of {count:,}")
    st.dataframe(with_trace(frame), hide_index=True,
                 column_config={"trace": st.column_config.LinkColumn("trace", display_text="open trace")})


st.title("Day")
cat = get_catalog()
state = catalog_state(cat)
span = days_with_images(cat, state)

asked = st.query_params.get("day")
try:
    default = date.fromisoformat(asked) if asked else span[1]
except ValueError:
    st.warning(f"?day={asked} is not a date (YYYY-MM-DD): showing the last day with images")
    default = span[1]
day = st.date_input("factory day", value=default,
                    help=f"images from {span[0]} to {span[1]}; each line's own day, in its time zone")

figures = day_figures(cat, state, day)
columns = st.columns(5)
for column, (label, value) in zip(columns, [
        ("images", figures.images), ("parts", figures.parts), ("rejected parts", figures.rejected_parts),
        ("corrections", figures.corrections), ("disagreements", figures.disagreements)], strict=True):
    column.metric(label, f"{value:,}")

drift = drift_of(cat, str(cat.lake.root), day)
if drift is not None:
    drift_alerts(cat, state, day, drift)

st.subheader("Timeline per line")
hours = timeline(cat, state, day)
if hours.empty:
    st.write(f"Nothing captured or decided on {day}.")
else:
    zones = time_zones_of(cat, state)
    local_hours = [factory_day.local_time(h.to_pydatetime(), zones.get(line, factory_day.DEFAULT_TIME_ZONE)).hour
                   for h, line in zip(hours["hour"], hours["line"], strict=True)]
    long = hours.assign(hour=local_hours).melt(
        id_vars=["line", "hour"], value_vars=["images", "rejected_parts"], var_name="measure", value_name="count")
    long["measure"] = long["measure"].str.replace("_", " ")
    chart = (alt.Chart(long).mark_bar()
             .encode(alt.X("hour:O", title="hour (each line's local time)", scale=alt.Scale(domain=list(range(24))),
                           axis=alt.Axis(labelAngle=0)),
                     alt.Y("count:Q", title=None, axis=alt.Axis(tickMinStep=1, format=",d")),
                     alt.Color("line:N"), alt.XOffset("line:N"), tooltip=["line:N", "hour:O", "measure:N", "count:Q"])
             .properties(height=110, width=760)
             .facet(row=alt.Row("measure:N", title=None, sort=["images", "rejected parts"]))
             .resolve_scale(y="independent"))
    st.altair_chart(chart, width="stretch")

rejects, corrected, disagreeing = (
    local_times(cat, state, rows_of(cat, state, what, day), ["decided_at", "corrected_at", "captured_at"])
    for what in ("rejects", "corrections", "disagreements"))
tabs = st.tabs([f"rejects ({figures.rejected_parts:,})", f"corrections ({figures.corrections:,})",
                f"disagreements ({figures.disagreements:,})", "drift", "lineage"])
with tabs[0]:
    table(rejects, "No part rejected.", figures.rejected_parts)
with tabs[1]:
    table(corrected, "No correction made.", figures.corrections)
with tabs[2]:
    table(disagreeing, "The model agreed with every human label.", figures.disagreements)
with tabs[3]:
    if drift is None:
        st.info(f"no drift report for {day}: materialize the `drift_report` asset for that day")
    else:
        out = drift[drift["in_band"] == False]  # noqa: E712 - null (unknown) is neither in nor out
        st.write(f"{len(out)} statistic(s) out of band" if len(out) else "Every statistic within its band.")
        drift = drift.assign(camera=drift["line"] + "/" + drift["station"] + "/" + drift["camera"],
                             state=drift["in_band"].map({True: "in band", False: "out of band"}).fillna("unknown"))
        base = alt.Chart().encode(alt.Y("camera:N", title=None))
        bands = base.mark_bar(opacity=0.3, color="#4c78a8").encode(alt.X("low:Q", title=None), alt.X2("high:Q"))
        values = base.mark_point(filled=True, size=70).encode(
            alt.X("value:Q", scale=alt.Scale(zero=False)),
            alt.Color("state:N", scale=alt.Scale(domain=["in band", "out of band", "unknown"],
                                                 range=["#333333", "#d62728", "#999999"])),
            tooltip=["camera:N", "statistic:N", "value:Q", "reference:Q", "low:Q", "high:Q", "images:Q"])
        cameras = drift["camera"].nunique()
        st.altair_chart(alt.layer(bands, values, data=drift).properties(height=16 * cameras + 10, width=600)
                        .facet(row=alt.Row("statistic:N", sort=list(STATISTICS), title=None))
                        .resolve_scale(x="independent"), width="stretch")
        st.dataframe(drift[["camera", "statistic", "value", "reference", "low", "high", "state", "images"]],
                     hide_index=True)
with tabs[4]:
    records = lineage_of(cat, state, day)
    if records.empty:
        st.write("No dataset version, model, engine, replay or promotion recorded on this day.")
    else:
        st.dataframe(records, hide_index=True)
