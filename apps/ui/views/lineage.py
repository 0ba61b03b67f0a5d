"""Lineage: which dataset version each model learned from, which engines were built from each model, and
which models were promoted over which, as a graph and as tables."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.ui.common import cached, catalog_state, get_catalog
from catalog import activity


@cached()
def chains(_cat, state: str) -> list[dict]:
    return activity.lineage_table(_cat)


@cached()
def promotions(_cat, state: str) -> list[dict]:
    return activity.promotions(_cat)


@cached()
def in_service(_cat, state: str) -> activity.ServiceEngine | None:
    return activity.engine_in_service(_cat)


st.title("Lineage")
cat = get_catalog()
state = catalog_state(cat)
rows, promoted = chains(cat, state), promotions(cat, state)
if not rows:
    st.info("No dataset version, model or engine is recorded yet: materialize a dataset asset, then train, "
            "export and build an engine (`visionledger engines build`).")
    st.stop()

served = in_service(cat, state)
if served is not None:
    st.markdown(f"**Engine in service** (it made the latest part decision): `{served.engine_id}`")

graph = activity.lineage_graph(rows, promoted)
st.graphviz_chart(activity.to_dot(graph), width="stretch")
st.caption("dataset versions (cylinders) → models (boxes; the champion filled) → engines; dashed: promoted over")

st.subheader("Dataset versions → models → engines")
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.subheader("Promotions")
if promoted:
    st.dataframe(pd.DataFrame(promoted), hide_index=True)
else:
    st.write("No model was promoted yet.")
