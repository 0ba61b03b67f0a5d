"""Trace: one part end to end, for the auditor. Its decision and the rule that fired, every image with what the
engine saw and what the human said, every event in time order, and the chain engine → model → dataset
version → whether these images were in training → the labels and annotators behind the predicted class;
exported as a self-contained HTML report or JSON. The work is `catalog.audit` and `apps.reports`."""

from __future__ import annotations

from datetime import timedelta

import altair as alt
import pandas as pd
import streamlit as st

from apps.reports.trace_report import decision_badge, image_pictures, trace_html, trace_json
from apps.ui.common import allowed, cached, catalog_state, get_catalog, line_time, trace_link, trace_url
from apps.ui.roles import Action
from catalog.activity import image_days, rejected_parts
from catalog.audit import Chain, PartAudit, PartImage, part_audit
from catalog.errors import CatalogError

PER_ROW = 4  # images side by side


@cached(60)
def _audit(_cat, state: str, part_id: str) -> PartAudit:
    return part_audit(_cat, part_id)


@cached(600)
def _pictures(_cat, _image: PartImage, key: str) -> list[tuple[str, bytes | None]]:
    return image_pictures(_image, _cat.blobs.read)


@cached(60)
def _recent_rejects(_cat, state: str) -> list[dict]:
    days = image_days(_cat)
    if days is None:
        return []
    return rejected_parts(_cat, days[1] - timedelta(days=6), days[1], limit=10)


def _part_from_link() -> str:
    """The part to trace: the one typed, or the one a link (``?part=``) brought; the URL follows the input so
    a trace can be shared."""
    wanted = st.query_params.get("part", "")
    if st.session_state.get("trace_linked") != wanted:  # arrived from a link: it wins over what was typed
        st.session_state.trace_linked = wanted
        st.session_state.trace_part = wanted
    part_id = st.text_input("Part id", key="trace_part", placeholder="e.g. line1-20260302-0002").strip()
    if part_id != wanted:
        st.query_params["part"] = part_id
        st.session_state.trace_linked = part_id
    return part_id


def _decision(cat, audit: PartAudit) -> None:
    d = audit.decision
    if d is None:
        st.info("No decision was recorded for this part.")
        return
    colour = "red" if d.decision == "reject" else "green"
    st.markdown(f"### :{colour}-background[{decision_badge(d)}] by rule **{d.rule}**")
    st.markdown(f"**Why:** {d.reason or '(no reason recorded)'}")
    st.caption(f"rules version `{d.rules_version or 'unversioned'}` · decided by {d.decider} `{d.decided_by[:16]}` "
               f"at {line_time(cat, d.decided_at, audit.line)} · event #{d.position}")
    if d.signed:
        st.markdown(f"**Signed** by {d.signed.signer} ({d.signed.meaning}) at "
                    f"{line_time(cat, d.signed.signed_at, audit.line)}")
    if len(audit.decision_history) > 1:
        with st.expander(f"Decision history ({len(audit.decision_history)})"):
            st.dataframe(pd.DataFrame([{
                "decided at": line_time(cat, h.decided_at, audit.line), "decision": h.decision, "rule": h.rule, "reason": h.reason,
                "rules version": h.rules_version, "images": len(h.image_sha256s),
                "signed by": h.signed.signer if h.signed else None} for h in audit.decision_history]),
                hide_index=True)


def _signatures(cat, audit: PartAudit) -> None:
    """Who signed the acts behind this part, when, and what each signature means."""
    st.subheader(f"Signatures ({len(audit.signed_acts)})")
    if not audit.signed_acts:
        st.caption("No signed act is recorded behind this part.")
        return
    st.dataframe(pd.DataFrame([{
        "signed at": line_time(cat, a.signed.signed_at, audit.line), "signer": a.signed.signer,
        "meaning": a.signed.meaning, "act": a.type, "concerns": a.subject, "what": a.summary, "event": a.position}
        for a in audit.signed_acts]), hide_index=True)


def _images(cat, audit: PartAudit, state: str) -> None:
    st.subheader(f"Images ({len(audit.images)})")
    for start in range(0, len(audit.images), PER_ROW):
        for column, image in zip(st.columns(PER_ROW), audit.images[start:start + PER_ROW], strict=False):
            with column.container(border=True):
                for caption, png in _pictures(cat, image, f"{state}:{image.sha256}"):
                    if png is None:
                        st.warning(caption)
                    else:
                        st.image(png, caption=caption, width="stretch")
                st.markdown(f"**{image.camera}** at {image.station} · {line_time(cat, image.captured_at, audit.line)}")
                st.caption(f"`{image.sha256[:16]}`")
                if image.excluded:
                    st.warning(f"excluded: {image.exclusion_reason}")
                human = (f"**{image.label.label}** by {image.label.annotator} ({image.label.source})"
                         if image.label else "*no human label*")
                st.markdown(f"human: {human}")
                for p in image.predictions:
                    verdict = "agrees" if image.label and image.label.label == p.predicted_class else "disagrees"
                    st.markdown(f"engine `{p.engine_id[:8]}`: **{p.predicted_class}** "
                                f"{p.scores.get(p.predicted_class, 0):.2f} ({verdict})")
    scores = pd.DataFrame([{"image": f"{i.camera} {i.sha256[:8]}", "engine": p.engine_id[:8], "class": c, "score": v}
                           for i in audit.images for p in i.predictions for c, v in p.scores.items()])
    if not scores.empty:  # one chart for every image: each chart costs a page tens of milliseconds
        st.altair_chart(alt.Chart(scores).mark_bar().encode(
            x=alt.X("score:Q", scale=alt.Scale(domain=[0, 1])), y=alt.Y("image:N", title=None),
            yOffset="class:N", color="class:N", tooltip=["image", "engine", "class", alt.Tooltip("score:Q", format=".3f")],
        ).properties(title="the engine's scores per image", height=18 * len(scores) + 40))

def _chain(chain: Chain) -> None:
    st.markdown(f"#### Engine `{chain.engine_id[:16]}`")
    if chain.problem:
        st.error(chain.problem)
    engine, model, version = chain.engine, chain.model, chain.dataset_version
    boxes = st.columns(4)
    with boxes[0].container(border=True):
        st.markdown("**engine**")
        if engine:
            st.markdown(f"{engine['backend']} {engine['precision']} on {engine['device']}")
            st.caption(f"built {engine['built_at']:%Y-%m-%d %H:%M}")
    with boxes[1].container(border=True):
        st.markdown("**→ model**")
        if model:
            st.markdown(f"`{model['model_id']}`")
            st.caption(f"artifact `{model['artifact_sha256'][:12]}` · "
                       + ("promoted" if model["promoted_at"] else "not promoted"))
    with boxes[2].container(border=True):
        st.markdown("**→ dataset version**")
        if version:
            st.markdown(f"`{version['version_id']}`")
            st.caption(f"as of position {version['as_of_position']} · manifest `{version['manifest_hash'][:12]}`"
                       + (" ✓ verified" if chain.manifest_verified else ""))
    with boxes[3].container(border=True):
        st.markdown("**→ this part in training?**")
        st.markdown(chain.training_verdict())
    if model:
        with st.expander("Model: artifact, hyper-parameters, figures"):
            st.markdown(f"artifact `{model['artifact_uri']}` · ONNX `{model['onnx_uri'] or 'not exported'}`")
            st.json({"hyperparameters": model["hyperparameters"], "validation": model["metrics"],
                     "evaluation": model["evaluation"]}, expanded=False)
    if version:
        with st.expander("Dataset version: spec, position, manifest"):
            st.markdown(f"manifest `{version['manifest_uri']}` · sha256 `{version['manifest_hash']}`")
            st.json(version["spec"], expanded=False)
            st.dataframe(pd.DataFrame([{"image": m.sha256[:16], "split": m.split or "not in the dataset",
                                        "class in the manifest": m.manifest_class} for m in chain.membership]),
                         hide_index=True)
    for evidence in chain.evidence:
        st.markdown(f"**Training images of the predicted class “{evidence.predicted_class}”: "
                    f"{evidence.training_images}** · {evidence.corrections} were corrections · "
                    f"{evidence.relabelled_since} relabelled since the version was cut")
        if not evidence.training_images:
            st.caption("The model saw no training image of this class.")
            continue
        left, right = st.columns([1, 2])
        left.altair_chart(alt.Chart(pd.DataFrame(evidence.annotators)).mark_bar().encode(
            x=alt.X("images:Q", title="training images labelled"), y=alt.Y("annotator:N", sort="-x", title=None),
            tooltip=["annotator", "images", "corrections"]).properties(height=30 * len(evidence.annotators) + 60))
        right.dataframe(pd.DataFrame([{
            "part": e["part_id"], "trace": trace_url(e["part_id"]), "label": e["label"], "annotator": e["annotator"],
            "source": e["source"], "labelled at": e["labeled_at"], "image": e["sha256"][:16]}
            for e in evidence.examples]), hide_index=True, column_config={
                "trace": st.column_config.LinkColumn("trace", display_text="trace part")})


def _export(cat, audit: PartAudit) -> None:
    if not allowed(Action.EXPORT):
        return
    st.subheader("Export")
    left, right = st.columns(2)
    left.download_button("Download the HTML report", data=lambda: trace_html(audit, cat.blobs.read),
                         file_name=f"trace-{audit.part_id}.html", mime="text/html", on_click="ignore",
                         icon=":material/description:")
    right.download_button("Download JSON", data=lambda: trace_json(audit), file_name=f"trace-{audit.part_id}.json",
                          mime="application/json", on_click="ignore", icon=":material/data_object:")
    st.caption("The HTML report embeds its images and loads nothing from elsewhere. For a PDF, print it from the "
               "browser (no PDF renderer is installed with the app).")


st.title("Trace")
cat = get_catalog()
part_id = _part_from_link()
state = catalog_state(cat)
if not part_id:
    st.caption("Enter a part id, or start from a recently rejected part:")
    for row in _recent_rejects(cat, state):
        trace_link(row["part_id"], label=f"{row['part_id']} — rejected by {row['rule']} at {line_time(cat, row['decided_at'], row['line'])}")
    st.stop()
try:
    audit = _audit(cat, state, part_id)
except CatalogError as exc:
    st.warning(f"{exc}. Check the id, or pick a part from Curate or Day.")
    st.stop()

st.caption(f"line {audit.line} · {len(audit.images)} image(s) captured {line_time(cat, audit.first_captured_at, audit.line)}"
           f" to {line_time(cat, audit.last_captured_at, audit.line)} · catalog position {audit.catalog_position}"
           if audit.first_captured_at else f"catalog position {audit.catalog_position}")
_decision(cat, audit)
_signatures(cat, audit)
_images(cat, audit, state)
st.subheader("Lineage: engine → model → dataset version → training data")
if not audit.chains:
    st.info("No engine judged this part: there is no model lineage to follow.")
for chain in audit.chains:
    _chain(chain)
st.subheader(f"Events ({len(audit.timeline)}, in time order)")
st.dataframe(pd.DataFrame([{"position": e.position, "occurred at": e.occurred_at, "type": e.type, "what": e.summary,
                            "actor": e.actor, "signed by": e.signed.signer if e.signed else None,
                            "stream": e.stream_id} for e in audit.timeline]), hide_index=True)
_export(cat, audit)
