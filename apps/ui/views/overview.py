"""Overview: the last days on the line at a glance: images, parts, rejects, model-vs-human disagreements,
drift alerts and the engine in service, per day, with the latest rejected parts one click from their trace."""

from __future__ import annotations

from datetime import date, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from apps.ui.common import cached, catalog_state, days_with_images, get_catalog, line_time, trace_link
from catalog import activity
from catalog.drift import out_of_band, read_drift_days

MEASURES = {"images": "images", "parts": "parts", "rejected_parts": "rejected parts",
            "disagreements": "disagreements", "drift_alerts": "drift alerts"}


@cached()
def daily_figures(_cat, state: str, first: date, last: date) -> pd.DataFrame:
    return pd.DataFrame([vars(f) for f in activity.daily_figures(_cat, first, last)])


@cached()
def recent_rejects(_cat, state: str, first: date, last: date) -> list[dict]:
    return activity.rejected_parts(_cat, first, last, limit=10)


@cached()
def in_service(_cat, state: str) -> activity.ServiceEngine | None:
    return activity.engine_in_service(_cat)


@cached(60)
def drift_alerts(_cat, lake_root: str, first: date, last: date) -> pd.DataFrame | None:
    """The out-of-band drift statistics of the days; None when no drift report covers any of them."""
    reports = read_drift_days(_cat.lake, [first + timedelta(days=k) for k in range((last - first).days + 1)])
    if reports.num_rows == 0:
        return None
    return pd.DataFrame(out_of_band(reports), columns=reports.schema.names)


st.title("Overview")
cat = get_catalog()
state = catalog_state(cat)
span = days_with_images(cat, state)

days = st.slider("days", min_value=1, max_value=60, value=7, help="how many days, up to the last day with images")
last = span[1]
first = last - timedelta(days=days - 1)
st.caption(f"{first:%a %d %b %Y} to {last:%a %d %b %Y} (factory days, each line's own, up to the last day with images)")

figures = daily_figures(cat, state, first, last)
alerts = drift_alerts(cat, str(cat.lake.root), first, last)
figures["drift_alerts"] = [0 if alerts is None else int((alerts["day"] == d).sum()) for d in figures["day"]]

total = figures[list(MEASURES)].sum()
images, parts, rejected = int(total["images"]), int(total["parts"]), int(total["rejected_parts"])
columns = st.columns(5)
columns[0].metric("images", f"{images:,}")
columns[1].metric("parts", f"{parts:,}")
columns[2].metric("rejected parts", f"{rejected:,}", help="parts whose decision is reject, by decision time")
judged = int(figures["judged_parts"].sum())
if judged:  # parts the engine never judged were neither accepted nor rejected: not in the rate
    columns[2].caption(f"{rejected / judged:.1%} of the {judged:,} parts judged")
columns[3].metric("disagreements", f"{int(total['disagreements']):,}",
                  help="images whose latest prediction is not their current human label")
columns[4].metric("drift alerts", "no drift report yet" if alerts is None else f"{len(alerts):,}",
                  help="camera statistics outside their band (the daily drift report)")

served = in_service(cat, state)
if served is None:
    st.info("No engine has decided a part yet.")
else:
    lineage = (f"model {served.model} `{served.model_id}` trained on dataset version `{served.dataset_version_id}`"
               f" ({served.backend}, {served.precision})" if served.model_id
               else "no EngineBuilt record names this engine")
    st.markdown(f"**Engine in service** `{served.engine_id[:16]}`{' (champion)' if served.champion else ''}: "
                f"{lineage}; last decision {line_time(cat, served.last_decision_at, None)}")

long = figures.melt(id_vars="day", value_vars=list(MEASURES), var_name="measure", value_name="count")
long["measure"] = long["measure"].map(MEASURES)
chart = (alt.Chart(long).mark_bar()
         .encode(alt.X("yearmonthdate(day):O", title=None, axis=alt.Axis(format="%a %d %b", labelAngle=0)),
                 alt.Y("count:Q", title=None, axis=alt.Axis(tickMinStep=1, format=",d")),
                 alt.Color("measure:N", legend=None), tooltip=["day:T", "measure:N", "count:Q"])
         .properties(height=80, width=700)
         .facet(row=alt.Row("measure:N", sort=list(MEASURES.values()), title=None))
         .resolve_scale(y="independent"))
st.altair_chart(chart, width="stretch")

left, right = st.columns(2)
with left:
    st.subheader("Latest rejected parts")
    rejects = recent_rejects(cat, state, first, last)
    if not rejects:
        st.write("No part rejected in these days.")
    for row in rejects:
        trace_link(row["part_id"], label=f"{row['part_id']} · {row['line']} · {row['rule']} · "
                                         f"{line_time(cat, row['decided_at'], row['line'])}")
with right:
    st.subheader("Drift alerts")
    if alerts is None:
        st.info("no drift report yet for these days: materialize the `drift_report` asset for them")
    elif alerts.empty:
        st.write("Every camera statistic stayed within its band.")
    else:
        st.dataframe(alerts[["day", "line", "station", "camera", "statistic", "value", "low", "high"]],
                     hide_index=True)
