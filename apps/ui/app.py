"""The visionledger Streamlit app: `visionledger app` (or `streamlit run apps/ui/app.py`). The pages each
role sees are chosen here; what a role may do on a page is checked on the page and by the database."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts this file's folder on sys.path, not the repository root the packages live in.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apps.ui.common import viewer  # noqa: E402
from apps.ui.roles import RoleError  # noqa: E402

st.set_page_config(page_title="visionledger", page_icon=":material/precision_manufacturing:", layout="wide")

try:
    who = viewer()
except RoleError as exc:
    st.error(str(exc))
    st.stop()

# The pages live in views/, not pages/: Streamlit would also serve a folder named pages/ as pages of their own,
# and a browser opening one of them directly would skip this file (the viewer, the navigation, the layout).
PAGES = {
    "Look": [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/day.py", title="Day", icon=":material/calendar_today:"),
        st.Page("views/performance.py", title="Performance", icon=":material/insights:"),
    ],
    "Work": [
        st.Page("views/curate.py", title="Curate", icon=":material/photo_library:"),
        st.Page("views/review.py", title="Review", icon=":material/rate_review:"),
    ],
    "Audit": [
        st.Page("views/trace.py", title="Trace", icon=":material/search:"),
        st.Page("views/lineage.py", title="Lineage", icon=":material/account_tree:"),
    ],
}
st.sidebar.caption(f"signed in as **{who.name}** ({who.role})")
st.navigation(PAGES).run()
