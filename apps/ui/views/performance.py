"""Performance: how good the models are and where they fail. Each evaluated model's confusion matrix,
per-class precision and recall, its figures per day, defect, camera and part; the regression gate's verdicts
on candidates; and production disagreements between the model and the humans, each one click from its trace.
The work is `catalog.performance`."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from apps.ui.common import cached, catalog_state, get_catalog, line_time, trace_link, trace_url
from catalog.errors import CatalogError
from catalog.performance import (
    DISAGREEMENTS,
    EvaluatedModel,
    class_figures,
    confusion_matrix,
    disagreement_summary,
    evaluated_models,
    evaluation_tables,
    production_disagreements,
    regression_replays,
    replay_slices,
)

PAGE_SIZE = 10
BREAKDOWNS = {"day": "per day", "defect": "per defect", "camera": "per camera", "part": "per part"}
MATERIALIZE = ("DAGSTER_HOME=$PWD/.visionledger/dagster .venv/bin/dagster asset materialize -m assets.definitions "
               "--select model_evaluation")


@cached(60)
def _models(_cat, state: str) -> list[EvaluatedModel]:
    return evaluated_models(_cat)


@cached(600)  # an evaluation's tables never change once written
def _figures(_cat, lake: str, report_uri: str) -> tuple[list[dict], list[dict], pd.DataFrame]:
    """The confusion matrix, the per-class figures and the slices of one evaluation."""
    tables = evaluation_tables(_cat.lake, report_uri)
    return confusion_matrix(tables.images), class_figures(tables.images), tables.slices.to_pandas()


@cached(60)
def _replays(_cat, state: str) -> list[dict]:
    return regression_replays(_cat)


@cached(60)
def _summary(_cat, state: str) -> list[dict]:
    return disagreement_summary(_cat)


@cached(60)
def _disagreements(_cat, state: str, kind: str | None, page: int) -> list[dict]:
    return production_disagreements(_cat, kind=kind, limit=PAGE_SIZE, offset=page * PAGE_SIZE)


def _evaluation(cat, state: str) -> None:
    models = _models(cat, state)
    if not models:
        st.info("No model has been evaluated yet: materialize the `model_evaluation` asset (Dagster UI, or "
                f"`{MATERIALIZE}`), then come back.")
        return
    model = st.selectbox("Model", models, format_func=lambda m: m.model_id + (" (champion)" if m.champion else ""))
    st.caption(f"{model.model} evaluated on the {model.split} split of `{model.dataset_version_id}` · threshold "
               f"{model.threshold:.3f} for a false accept costing {model.cost_ratio:g} false rejects")
    figures = model.metrics
    columns = st.columns(5)
    for column, (name, key, fmt) in zip(columns, (
            ("test images", "images", "{:.0f}"), ("accuracy", "accuracy", "{:.1%}"),
            ("average precision", "average_precision", "{:.3f}"),
            ("recall at min. precision", "recall_at_min_precision", "{:.1%}"),
            ("false accepts / rejects", None, None)), strict=True):
        if key is None:
            column.metric(name, f"{figures.get('cost_false_accepts', 0):.0f} / {figures.get('cost_false_rejects', 0):.0f}")
        else:
            column.metric(name, fmt.format(figures[key]) if key in figures else "–")
    try:
        confusion, per_class, slices = _figures(cat, str(cat.lake.root), model.report_uri)
    except CatalogError as exc:
        st.warning(str(exc))
        return
    left, right = st.columns(2)
    with left:
        st.subheader("Confusion matrix")
        matrix = pd.DataFrame(confusion)
        classes = list(dict.fromkeys(matrix["true"]))
        base = alt.Chart(matrix).encode(x=alt.X("predicted:N", sort=classes), y=alt.Y("true:N", sort=classes))
        st.altair_chart((base.mark_rect().encode(color=alt.Color("images:Q", scale=alt.Scale(scheme="blues")),
                                                 tooltip=["true", "predicted", "images"])
                         + base.mark_text(fontSize=14).encode(text="images:Q")).properties(
            title="confusion matrix (rows: human, columns: model)", height=320))
    with right:
        st.subheader("Precision and recall per class")
        per_class = pd.DataFrame(per_class).astype({"precision": float, "recall": float})
        long = per_class.melt(id_vars=["class"], value_vars=["precision", "recall"], var_name="figure").dropna()
        st.altair_chart(alt.Chart(long).mark_bar().encode(
            x=alt.X("class:N", sort=classes, title=None), xOffset="figure:N",
            y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title=None), color="figure:N",
            tooltip=["class", "figure", alt.Tooltip("value:Q", format=".3f")]).properties(height=220))
        st.dataframe(per_class, hide_index=True, column_config={
            "precision": st.column_config.NumberColumn(format="%.3f"),
            "recall": st.column_config.NumberColumn(format="%.3f")})
    _breakdowns(slices)


def _breakdowns(slices: pd.DataFrame) -> None:
    st.subheader("Breakdowns")
    title = st.radio("Breakdown", list(BREAKDOWNS.values()), horizontal=True, label_visibility="collapsed")
    kind = next(k for k, v in BREAKDOWNS.items() if v == title)
    rows = slices[slices["slice"] == kind].drop(columns="slice")
    if rows.empty:
        st.caption(f"No {kind} in the evaluation.")
        return
    if kind == "part":  # parts are many: the worst first, each with its trace
        rows = rows.sort_values(["accuracy", "false_accepts"], ascending=[True, False]).head(50)
        rows.insert(1, "trace", [trace_url(p) for p in rows["value"]])
        st.dataframe(rows, hide_index=True, column_config={
            "trace": st.column_config.LinkColumn("trace", display_text="trace part")})
        return
    long = rows.rename(columns={"value": kind}).melt(
        id_vars=[kind, "images"], value_vars=["accuracy", "defect_recall"], var_name="figure",
        value_name="score").dropna()
    st.altair_chart(alt.Chart(long).mark_bar().encode(
        x=alt.X(f"{kind}:N"), xOffset="figure:N", y=alt.Y("score:Q", scale=alt.Scale(domain=[0, 1])),
        color="figure:N", tooltip=[kind, "figure", alt.Tooltip("score:Q", format=".3f"), "images"],
    ).properties(height=260, title=f"accuracy and defect recall {title}"))
    st.dataframe(rows, hide_index=True)


def _regression_gate(cat, state: str) -> None:
    st.subheader("Regression gate")
    replays = _replays(cat, state)
    if not replays:
        st.info("No candidate has been replayed yet: materialize the `regression_replay` asset.")
        return
    table = pd.DataFrame(replays)
    table.insert(0, "verdict", ["✓ passed" if p else "✗ refused" for p in table["passed"]])
    st.dataframe(table.drop(columns=["passed", "report_uri"]), hide_index=True)
    chosen = st.selectbox("Replay", range(len(replays)), format_func=lambda i: (
        f"{replays[i]['candidate_model_id']} vs {replays[i]['champion_model_id'] or 'no champion'}, "
        f"{replays[i]['replayed_at']:%Y-%m-%d %H:%M}"))
    slices = replay_slices(cat.lake, replays[chosen]["report_uri"])
    if slices is None:
        st.caption("Its per-slice table is no longer in the lake.")
    else:
        st.dataframe(slices.to_pandas(), hide_index=True)


def _disagreements_section(cat, state: str) -> None:
    st.subheader("Disagreements in production")
    st.caption("Images whose latest prediction is not their current human label. "
               "Why did the model call a part defective when the human did not? Open its trace.")
    summary = pd.DataFrame(_summary(cat, state), columns=["day", "kind", "images"])
    totals = summary.groupby("kind")["images"].sum().to_dict() if not summary.empty else {}
    for column, (kind, words) in zip(st.columns(len(DISAGREEMENTS)), DISAGREEMENTS.items(), strict=True):
        column.metric(words, int(totals.get(kind, 0)))
    if summary.empty:
        st.caption("None: every predicted image agrees with its human label (or has none).")
        return
    st.altair_chart(alt.Chart(summary.assign(day=summary["day"].astype(str))).mark_bar().encode(
        x=alt.X("day:O", title="capture day (each line's factory day)"), y=alt.Y("images:Q", title="images"),
        color=alt.Color("kind:N", sort=list(DISAGREEMENTS)), tooltip=["day", "kind", "images"],
    ).properties(height=220))
    kind = st.radio("Show", list(DISAGREEMENTS), format_func=DISAGREEMENTS.get, horizontal=True)
    pages = max(1, -(-int(totals.get(kind, 0)) // PAGE_SIZE))
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1) - 1
    for row in _disagreements(cat, state, kind, page):
        what, link = st.columns([4, 1], vertical_alignment="center")
        decided = f"part {row['part_decision']} by {row['part_rule']}" if row["part_decision"] else "part undecided"
        what.markdown(f"{line_time(cat, row['captured_at'], row['line'])} · {row['line']} {row['camera']} · human "
                      f"**{row['label']}** ({row['annotator'] or '?'}) · model **{row['predicted_class']}** "
                      f"{row['score']:.2f} (engine `{row['engine_id'][:8]}`) · {decided}")
        with link:
            trace_link(row["part_id"], label=f"Trace {row['part_id']}")

st.title("Performance")
cat = get_catalog()
state = catalog_state(cat)
_evaluation(cat, state)
_regression_gate(cat, state)
_disagreements_section(cat, state)
