"""Curate: "show me the images of line B from 3 to 5 March with a crack label". Filters narrow a thumbnail
gallery; one image opens full size with its regions or mask; curators exclude or include the selection with a
reason and send it to review; whoever may export downloads it as CSV."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

import catalog
from apps.ui.common import allowed, cached, catalog_state, get_catalog
from apps.ui.filters import image_filter
from apps.ui.image_panel import load_view, show_facts, show_picture
from apps.ui.roles import Action
from apps.ui.session import acting_viewer, password_input, signature
from catalog.curation import set_excluded
from catalog.queries import ImageFilter, count_images, latest_predictions, query_images, selection_csv
from catalog.review_queue import CURATOR_QUEUE, MAX_REVIEW_REQUEST, request_review
from identity.people import LoginRefused
from identity.signatures import Meaning

PAGE_SIZE = 24
COLUMNS = 6


@cached(30)
def _count(_cat: catalog.Catalog, state: str, where: ImageFilter) -> int:
    return count_images(_cat, where)


@cached(30)
def _page(_cat: catalog.Catalog, state: str, where: ImageFilter, offset: int) -> list[dict]:
    rows = query_images(_cat, where, limit=PAGE_SIZE, offset=offset)
    predictions = latest_predictions(_cat, [r["sha256"] for r in rows])
    return [r | {"prediction": predictions.get(r["sha256"], {}).get("predicted_class")} for r in rows]


def _thumbnail(cat: catalog.Catalog, row: dict) -> str | bytes:
    path = Path(cat.settings.home) / row["thumbnail_uri"] if row["thumbnail_uri"] else None
    return str(path) if path is not None and path.is_file() else cat.blobs.read(row["sha256"])


def _say(kind: str, text: str) -> None:
    st.session_state["curate-message"] = (kind, text)


def _is_everything(where: ImageFilter) -> bool:
    return replace(where, excluded=None) == ImageFilter()


def _set_excluded(where: ImageFilter, exclude: bool) -> None:
    verb = "exclude" if exclude else "include"
    if _is_everything(where):
        _say("error", f"Choose a filter first: to {verb} every image is never what is meant.")
        return
    if (who := acting_viewer(Action.EXCLUDE)) is None:
        return
    try:  # an exclusion is signed: the curator approves it with their password
        signed = signature(who, "curate-password", Meaning.APPROVED, Action.EXCLUDE)
        report = set_excluded(get_catalog(), where, exclude=exclude, reason=st.session_state["curate-reason"],
                              actor=who.actor, signed=signed)
    except LoginRefused as exc:
        _say("error", f"Nothing {verb}d: {exc}.")
        return
    except catalog.CatalogError as exc:
        _say("error", str(exc))
        return
    _say("success", f"{verb.capitalize()}d {report.changed} of {report.matched} selected images "
                    f"({report.matched - report.changed} already were).")


def _send_to_review(where: ImageFilter) -> None:
    if _is_everything(where):
        _say("error", "Choose a filter first: the whole catalog is not a review batch.")
        return
    if (who := acting_viewer(Action.REQUEST_REVIEW)) is None:
        return
    try:
        selected, queued = request_review(get_catalog(), where, actor=who.actor,
                                          reason=st.session_state["curate-review-reason"])
    except catalog.CatalogError as exc:
        _say("error", str(exc))
        return
    _say("success", f"Sent {queued} of {selected} selected images to the {CURATOR_QUEUE!r} review queue "
                    f"({selected - queued} were already waiting there).")


def _actions(cat: catalog.Catalog, where: ImageFilter, total: int) -> None:
    """What the viewer's role may do with the selection, and nothing else."""
    shown = [a for a in (Action.EXCLUDE, Action.REQUEST_REVIEW, Action.EXPORT) if allowed(a)]
    if not shown or not total:
        return
    for box, action in zip(st.columns(len(shown)), shown, strict=True):
        with box.container(border=True):
            if action is Action.EXCLUDE:
                st.text_input("Reason (required)", key="curate-reason",
                              placeholder="lamp failed 14:00-15:00", help="recorded with every image's event")
                password_input("curate-password", Meaning.APPROVED)
                left, right = st.columns(2)
                left.button("Exclude", key="curate-exclude", on_click=_set_excluded, args=(where, True),
                            icon=":material/block:")
                right.button("Include", key="curate-include", on_click=_set_excluded,
                             args=(where, False), icon=":material/check_circle:")
            elif action is Action.REQUEST_REVIEW:
                st.text_input("Why review them?", key="curate-review-reason", placeholder="curator selection")
                st.button(f"Send {total:,} to review", key="curate-review", on_click=_send_to_review, args=(where,),
                          icon=":material/rate_review:", disabled=total > MAX_REVIEW_REQUEST,
                          help=f"at most {MAX_REVIEW_REQUEST:,} images at a time: narrow the filters")
            else:
                st.caption(f"{total:,} images with their label and the model's prediction")
                st.download_button("Download CSV", data=lambda: selection_csv(cat, where),
                                   file_name="selection.csv", mime="text/csv", key="curate-export",
                                   on_click="ignore", icon=":material/download:")


def _open(sha256: str | None) -> None:
    st.session_state["curate-open"] = sha256


def _opened(cat: catalog.Catalog, state: str) -> None:
    sha = st.session_state.get("curate-open")
    if not sha:
        return
    view = load_view(cat, state, sha)
    with st.container(border=True):
        picture, facts = st.columns([3, 2])
        with picture:
            show_picture(cat, view, with_prediction=False)
        with facts:
            show_facts(cat, view)
            st.button("Close", key="curate-close", on_click=_open, args=(None,), icon=":material/close:")


def _gallery(cat: catalog.Catalog, rows: list[dict]) -> None:
    for start in range(0, len(rows), COLUMNS):
        for box, row in zip(st.columns(COLUMNS), rows[start:start + COLUMNS], strict=False):
            label = row["label"] or "unlabelled"
            caption = f"{row['part_id']} · {row['camera']}\n{label} · model: {row['prediction'] or '–'}"
            box.image(_thumbnail(cat, row), caption=caption + (" · EXCLUDED" if row["excluded"] else ""),
                      width="stretch")
            box.button("Open", key=f"open-{row['sha256']}", on_click=_open, args=(row["sha256"],),
                       type="tertiary", icon=":material/open_in_full:")


st.title("Curate")
cat = get_catalog()
state = catalog_state(cat)
where = image_filter(cat, key="curate")
if st.session_state.get("curate-filter") != where:  # a new selection starts at its first page
    st.session_state["curate-filter"] = where
    st.session_state["curate-page"] = 1
total = _count(cat, state, where)
pages = max(1, -(-total // PAGE_SIZE))
st.session_state["curate-page"] = min(st.session_state.get("curate-page", 1), pages)

summary, pager = st.columns([3, 1])
summary.metric("Images selected", f"{total:,}")
page = pager.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="curate-page")
if message := st.session_state.pop("curate-message", None):
    getattr(st, message[0])(message[1])
_actions(cat, where, total)
_opened(cat, state)
if total:
    _gallery(cat, _page(cat, state, where, (page - 1) * PAGE_SIZE))
else:
    st.info("No image matches these filters.")
