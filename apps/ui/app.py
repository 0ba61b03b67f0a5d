"""The visionledger Streamlit app: `visionledger app` (or `streamlit run apps/ui/app.py`). Nothing shows before
a person logs in (`apps.ui.session`), except in the loudly labelled development mode. The pages each role sees
are chosen here; what a role may do on a page is checked on the page and by the database."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts this file's folder on sys.path, not the repository root the packages live in.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apps.ui.common import VIEWER_KEY  # noqa: E402
from apps.ui.roles import RoleError  # noqa: E402
from apps.ui.session import ROLE_KEY, current_viewer, log_out, login_form  # noqa: E402

st.set_page_config(page_title="visionledger", page_icon=":material/precision_manufacturing:", layout="wide")

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

try:
    who = current_viewer()
except RoleError as exc:  # logged in, but no role: nothing to show
    st.error(str(exc))
    st.button("Log out", key="logout", on_click=log_out)
    st.stop()
if who is None:
    # The navigation is declared, hidden and not run, so that the page the address asks for (a shared trace
    # link, `/trace?part=…`) is the one shown once the person has logged in.
    st.navigation(PAGES, position="hidden")
    login_form()
    st.stop()
st.session_state[VIEWER_KEY] = who

if who.dev:
    st.error(f"**DEVELOPMENT MODE**: no login. Anyone reaching this port acts as **{who.name}** ({who.role}), "
             f"and every event they cause names `{who.actor}`. Never run it this way on the line's network.",
             icon=":material/warning:")

if len(who.roles) > 1:
    st.session_state[ROLE_KEY] = who.role  # the one in force (a revoked choice falls back to another)
    st.sidebar.selectbox("Acting as", who.roles, key=ROLE_KEY)
st.sidebar.caption(f"signed in as **{who.full_name or who.name}** ({who.role})"
                   + (" — development mode" if who.dev else ""))
if not who.dev:
    st.sidebar.button("Log out", key="logout", on_click=log_out, icon=":material/logout:")
st.navigation(PAGES).run()
