"""Review: the images people were asked to look at (active learning, curators' selections, ontology splits),
best score first, one at a time: the image, its heatmap or the engine's boxes, the engine's scores and the
current label; an annotator confirms or corrects in one click (or key), which appends a label or a correction
with the reviewer as actor, and the next image comes. A correction is signed: the reviewer's password, typed
beside the buttons, records it as "reviewed" by them."""

from __future__ import annotations

import streamlit as st

import catalog
from apps.ui.common import allowed, cached, catalog_state, get_catalog, viewer
from apps.ui.filters import image_filter
from apps.ui.image_panel import load_view, scores_chart, show_facts, show_picture
from apps.ui.roles import Action
from apps.ui.session import acting_viewer, password_input, signature
from catalog.events import Region
from catalog.queries import ImageFilter, filter_choices
from catalog.review_queue import count_waiting_reviews, image_view, review_queues, waiting_reviews
from identity.people import LoginRefused
from identity.signatures import Meaning
from ingestion.labels import record_correction, record_label

ALL_QUEUES = "all queues"


@cached(30)
def _queues(_cat: catalog.Catalog, state: str) -> dict[str, int]:
    return review_queues(_cat)


@cached(30)
def _classes(_cat: catalog.Catalog, state: str) -> list[str]:
    return filter_choices(_cat).classes


@cached(30)
def _waiting(_cat: catalog.Catalog, state: str, where: ImageFilter, queue: str | None, limit: int
             ) -> tuple[int, list[dict]]:
    return (count_waiting_reviews(_cat, where, queue=queue),
            waiting_reviews(_cat, where, queue=queue, limit=limit))


def _decide(sha256: str, queue: str, shown_label: str | None, decided: str) -> None:
    """Record the reviewer's class for the image: a label when it had none (or the reviewer confirms the one it
    has, keeping its regions and mask), a correction, signed, when the reviewer changes it."""
    if (who := acting_viewer(Action.LABEL)) is None:
        return
    cat = get_catalog()
    view = image_view(cat, sha256)
    part = view.image["part_id"]
    held = (view.label or {}).get("held")
    if held != shown_label:  # a correction would be refused as stale; a confirmation would be blind
        st.session_state["review-message"] = (
            "warning", f"Nothing recorded: {view.label['annotator'] if view.label else 'someone'} changed the label "
                       f"of {sha256[:12]} to {held} meanwhile. Here it is again.")
        return
    try:
        if shown_label is None or decided == shown_label:
            regions = [Region.model_validate(r) for r in (view.label or {}).get("regions") or []]
            record_label(cat, sha256=sha256, label=decided, annotator=who.name, regions=regions,
                         mask_uri=(view.label or {}).get("mask_uri"), part_id=part, actor=who.actor)
            what = f"Confirmed {decided}" if shown_label else f"Labelled {decided}"
        else:
            signed = signature(who, "review-password", Meaning.REVIEWED, Action.LABEL)
            record_correction(cat, sha256=sha256, new_label=decided, old_label=shown_label, corrected_by=who.name,
                              label_id=view.label["label_id"], reason=f"review ({queue})", part_id=part,
                              actor=who.actor, signed=signed)
            what = f"Corrected {shown_label} → {decided}"
    except LoginRefused as exc:
        st.session_state["review-message"] = ("error", f"Nothing recorded for {sha256[:12]}: {exc}.")
        return
    except catalog.CatalogError as exc:  # a stale view (someone decided meanwhile) included
        st.session_state["review-message"] = ("error", f"Nothing recorded for {sha256[:12]}: {exc}")
        return
    st.session_state["review-message"] = ("success", f"{what} on part {part} (image {sha256[:12]}).")


def _skip(key: tuple[str, str]) -> None:
    st.session_state.setdefault("review-skipped", []).append(key)


def _decisions(item: dict, shown_label: str | None, target: str, classes: list[str]) -> None:
    """Confirm in one click (or Enter), or one button per other class (or its number key)."""
    args = (item["sha256"], item["queue"], shown_label)
    others = [(str(n) if n < 10 else None, c) for n, c in enumerate(classes, 1) if c != target]
    buttons = st.columns(len(others) + 1)
    buttons[0].button(f"Confirm {target}", key="review-confirm", type="primary", shortcut="Enter",
                      on_click=_decide, args=(*args, target), icon=":material/check:")
    for box, (key, name) in zip(buttons[1:], others, strict=True):
        box.button(name, key=f"review-as-{name}", shortcut=key, on_click=_decide, args=(*args, name),
                   help=f"correct to {name}" if shown_label else f"label as {name}")
    st.caption("Keys: Enter confirms, " + ", ".join(f"{key} = {name}" for key, name in others if key)
               + ", → skips.")
    if shown_label is not None:  # a correction changes what a person said: it is signed
        password_input("review-password", Meaning.REVIEWED)


st.title("Review")
cat = get_catalog()
state = catalog_state(cat)
queues = _queues(cat, state)
queue = st.sidebar.selectbox("Queue", [ALL_QUEUES, *queues], key="review-queue",
                             format_func=lambda q: q if q == ALL_QUEUES else f"{q} ({queues[q]:,} waiting)")
where = image_filter(cat, key="review")
chosen = None if queue == ALL_QUEUES else queue
skipped = [tuple(k) for k in st.session_state.get("review-skipped", [])]
# One more than the skipped ones: the first not skipped is among them, if any waits.
total, items = _waiting(cat, state, where, chosen, len(skipped) + 1)
item = next((i for i in items if (i["queue"], i["sha256"]) not in skipped), None)

summary, restart = st.columns([4, 1])
summary.metric("Waiting for review", f"{total:,}", help="requests with no label or correction of the image since")
if skipped:
    restart.button(f"Back to the {len(skipped)} skipped", key="review-restart",
                   on_click=lambda: st.session_state.pop("review-skipped", None))
if message := st.session_state.pop("review-message", None):
    getattr(st, message[0])(message[1])
if item is None:
    st.success("Nothing waits for review here." if not total else "Only skipped images are left.")
    st.caption("Curators send selections from Curate; the `review_queue` asset queues what the model is unsure of.")
    st.stop()

view = load_view(cat, state, item["sha256"])
shown_label = (view.label or {}).get("held")
st.markdown(f"**{item['queue']}** · {item['strategy']} · score {item['score']:.3f} · {item['reason']}")
decide, skip = st.columns([6, 1], vertical_alignment="bottom")  # above the picture: no scrolling per image
with decide:
    if allowed(Action.LABEL) and (classes := _classes(cat, state)):
        # Confirm what a human said, else what the engine said (a label of a split class has no current name).
        candidates = [shown_label, (view.prediction or {}).get("predicted_class"), classes[0]]
        _decisions(item, shown_label, next(c for c in candidates if c in classes), classes)
    else:
        st.caption(f"Viewing only: a {viewer().role} does not label.")
skip.button("Skip", key="review-skip", shortcut="Right", on_click=_skip, args=((item["queue"], item["sha256"]),),
            icon=":material/skip_next:")
picture, facts = st.columns([1, 1])
with picture:
    show_picture(cat, view, with_prediction=True)
with facts:
    show_facts(cat, view)
    scores_chart(view)
