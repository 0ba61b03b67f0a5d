"""One image, full size, as Curate and Review show it: the picture with what humans and the engine marked on
it, the engine's heatmap, and the facts about it (part, where and when, label, prediction, exclusion)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

import catalog
from apps.ui.common import cached, line_time, trace_link
from apps.ui.overlays import draw_regions
from catalog.blobs import sha_from_uri
from catalog.review_queue import ImageView, image_view


@cached(30)
def load_view(_cat: catalog.Catalog, state: str, sha256: str) -> ImageView:
    return image_view(_cat, sha256)


@cached(300)
def _drawn(_cat: catalog.Catalog, sha256: str, regions: list[dict[str, Any]], predicted: list[dict[str, Any]],
           mask_uri: str | None) -> bytes:
    mask = _cat.blobs.read(sha_from_uri(mask_uri)) if mask_uri else None
    return draw_regions(_cat.blobs.read(sha256), regions, predicted=predicted, mask=mask)


@cached(300)
def _blob(_cat: catalog.Catalog, uri: str) -> bytes:
    return _cat.blobs.read(sha_from_uri(uri))


def show_picture(cat: catalog.Catalog, view: ImageView, *, with_prediction: bool) -> None:
    """The image with its label regions or mask; with the prediction, the engine's heatmap beside it when
    one was made, else the engine's boxes drawn over the image."""
    label = view.label or {}
    predicted = (view.prediction or {}).get("regions", []) if with_prediction and not view.heatmap_uri else []
    picture = _drawn(cat, view.image["sha256"], label.get("regions") or [], predicted, label.get("mask_uri"))
    drawn = [("amber: the human's regions", label.get("regions")), ("red: the human's mask", label.get("mask_uri")),
             ("magenta: the engine's boxes", predicted)]
    legend = ", ".join(what for what, shown in drawn if shown) or None
    if with_prediction and view.heatmap_uri:
        left, right = st.columns(2)
        left.image(picture, caption=legend, width="stretch")
        right.image(_blob(cat, view.heatmap_uri), caption=f"heatmap of {view.prediction['predicted_class']}",
                    width="stretch")
    else:
        st.image(picture, caption=legend, width="stretch")


def show_facts(cat: catalog.Catalog, view: ImageView) -> None:
    """Where and when the image was taken, its label, the engine's prediction and its curation state; times
    in the line's local time."""
    image, label, prediction = view.image, view.label, view.prediction

    def when(moment: datetime) -> str:
        return line_time(cat, moment, image["line"])

    trace_link(image["part_id"], label=f"part {image['part_id']}")
    st.markdown(f"**{image['line']} · {image['station']} · {image['camera']}** · captured "
                f"{when(image['captured_at'])} · {image['width']}×{image['height']} px")
    if label:
        st.markdown(f"Label: **{label['class']}** by {label['annotator']} ({label['source']}, "
                    f"{when(label['labeled_at'])})")
    else:
        st.markdown("Label: **none yet**")
    if prediction:
        st.markdown(f"Model: **{prediction['predicted_class']}** (engine `{prediction['engine_id'][:12]}`, "
                    f"{when(prediction['predicted_at'])})")
    if image["excluded"]:
        st.warning(f"Excluded: {image['exclusion_reason']}")
    st.caption(f"{image['source_path']} · sha256 {image['sha256']}")


def scores_chart(view: ImageView) -> None:
    """The engine's score for each class, the predicted one and the human's highlighted."""
    if not view.prediction:
        st.caption("No engine has judged this image yet.")
        return
    human = (view.label or {}).get("class")
    frame = pd.DataFrame([{"class": c, "score": s,
                           "is": "prediction" if c == view.prediction["predicted_class"]
                           else "human label" if c == human else "other"}
                          for c, s in view.prediction["scores"].items()])
    chart = alt.Chart(frame).mark_bar().encode(
        x=alt.X("score:Q", scale=alt.Scale(domain=[0, 1]), title=None),
        y=alt.Y("class:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False)),
        color=alt.Color("is:N", scale=alt.Scale(domain=["prediction", "human label", "other"],
                                                range=["#d62dd6", "#f0a000", "#9aa4b1"]),
                        legend=None),
        tooltip=["class", alt.Tooltip("score:Q", format=".3f")],
    ).properties(height=alt.Step(28), title=alt.TitleParams(
        "The engine's scores", subtitle="magenta: its prediction · amber: the human's label", anchor="start"))
    st.altair_chart(chart, width="stretch")
