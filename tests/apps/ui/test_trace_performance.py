"""The Trace and Performance pages on the line-run catalog: a rejected part's trace names the rule that fired
and reaches the dataset version its engine learned from, its exports hold that chain and need nothing from
elsewhere, and Performance shows the evaluation and the disagreements, each one click from its trace."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

import pyarrow.parquet as pq

from apps.reports.trace_report import trace_html, trace_json
from catalog.audit import part_audit
from tests.builders import run_cli

TRACE = "views/trace.py"
PERFORMANCE = "views/performance.py"


def rejected_part(cat) -> str:
    with cat.db.connect() as conn:
        return conn.exec_driver_sql("SELECT part_id FROM projections.part_dispositions WHERE decision = 'reject'"
                                    " ORDER BY part_id LIMIT 1").scalar_one()


def lineage_of(cat, engine_id: str) -> dict:
    """The dataset version behind the engine, and the split of each image in its manifest, read here directly."""
    with cat.db.connect() as conn:
        version_id, manifest_hash, uri = conn.exec_driver_sql(
            "SELECT d.version_id, d.manifest_hash, d.manifest_uri FROM projections.engines e"
            " JOIN projections.dataset_versions d ON d.version_id = e.dataset_version_id"
            " WHERE e.engine_id = %(e)s", {"e": engine_id}).one()
    manifest = pq.read_table(cat.lake.root / uri)
    return {"version_id": version_id, "manifest_hash": manifest_hash,
            "split": dict(zip(manifest["sha256"].to_pylist(), manifest["split"].to_pylist(), strict=True))}


def part_images(cat, part_id: str) -> list[str]:
    with cat.db.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(
            "SELECT sha256 FROM projections.images WHERE part_id = %(p)s", {"p": part_id})]


def texts(at) -> str:
    return "\n".join(e.value for kind in ("markdown", "caption") for e in getattr(at, kind))


def test_trace_of_a_rejected_part_reaches_its_dataset_version(app, ui_catalog) -> None:
    cat, _, engine_id = ui_catalog
    part_id = rejected_part(cat)
    lineage = lineage_of(cat, engine_id)
    splits = [lineage["split"].get(sha) for sha in part_images(cat, part_id)]
    at = app("auditor")
    at.query_params["part"] = part_id
    at.switch_page(TRACE).run()

    assert not at.exception, at.exception
    shown = texts(at)
    assert at.text_input(key="trace_part").value == part_id
    assert "REJECT" in shown and "by rule **seen-by-cam2**" in shown
    assert lineage["version_id"] in shown and lineage["manifest_hash"] in shown
    trained = splits.count("train")
    expected = (f"yes: {trained} of {len(splits)} image(s) in the training split" if trained
                else f"no: none of the part's {len(splits)} image(s) in the training split")
    assert expected in shown
    assert "Training images of the predicted class" in shown
    assert [b.label for b in at.get("download_button")] == ["Download the HTML report", "Download JSON"]


def test_a_typed_part_becomes_the_link_and_an_unknown_one_is_named(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    at = app("analyst")
    at.switch_page(TRACE).run()
    assert not at.exception, at.exception
    assert at.get("page_link"), "with no part, the page offers recently rejected parts"
    part_id = rejected_part(cat)
    at.text_input(key="trace_part").set_value(part_id).run()
    assert at.query_params["part"] == part_id  # the URL now names the part: the trace can be shared
    assert "seen-by-cam2" in texts(at)
    at.text_input(key="trace_part").set_value("no-such-part").run()
    assert "no part 'no-such-part'" in at.warning[0].value


def test_the_exports_hold_the_chain_and_need_nothing_from_elsewhere(ui_catalog) -> None:
    cat, _, engine_id = ui_catalog
    part_id = rejected_part(cat)
    lineage = lineage_of(cat, engine_id)
    audit = part_audit(cat, part_id)

    data = json.loads(trace_json(audit))
    assert data["part_id"] == part_id and data["decision"]["rule"] == "seen-by-cam2"
    chain = data["chains"][0]
    assert chain["engine_id"] == engine_id
    assert chain["dataset_version"]["version_id"] == lineage["version_id"]
    assert chain["dataset_version"]["manifest_hash"] == lineage["manifest_hash"]
    assert {m["sha256"]: m["split"] for m in chain["membership"]} == {
        sha: lineage["split"].get(sha) for sha in part_images(cat, part_id)}
    assert isinstance(chain["in_training"], bool) and chain["training_verdict"]
    assert chain["evidence"][0]["predicted_class"] and chain["evidence"][0]["annotators"]
    assert [e["position"] for e in data["timeline"]] and data["timeline"][0]["type"] == "ImageIngested"

    html = trace_html(audit, cat.blobs.read)
    assert not re.search(r"(?:src|href)\s*=\s*[\"'](?!data:|#)", html), "every resource is inline"
    assert not re.search(r"url\(|@import|https?://", html)
    assert html.count('src="data:image/png;base64,') == len(audit.images)
    assert "seen-by-cam2" in html and lineage["version_id"] in html and lineage["manifest_hash"] in html

    def lost(sha256: str) -> bytes:
        raise KeyError(f"no blob {sha256}")

    without_pixels = trace_html(audit, lost)  # a blob store that lost the images: the trace still stands
    assert "data:image" not in without_pixels and without_pixels.count("not shown (") == len(audit.images)


def test_performance_shows_the_evaluation_and_the_disagreements(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    at = app("analyst")
    at.switch_page(PERFORMANCE).run()

    assert not at.exception, at.exception
    assert [s.value for s in at.subheader][:2] == ["Confusion matrix", "Precision and recall per class"]
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    assert any("confusion matrix" in json.dumps(spec.get("title", "")) for spec in specs)
    with cat.db.connect() as conn:
        evaluated = conn.exec_driver_sql("SELECT evaluation FROM projections.models"
                                         " WHERE evaluation IS NOT NULL").scalar_one()
    assert {m.label: m.value for m in at.metric}["test images"] == f"{evaluated['metrics']['images']:.0f}"
    assert "Regression gate" in [s.value for s in at.subheader]

    with cat.db.connect() as conn:  # the costly disagreement: the model says defect, the human says ok
        false_rejects = conn.exec_driver_sql("""
            SELECT count(*) FROM projections.images i
            JOIN (SELECT DISTINCT ON (sha256) sha256, predicted_class FROM projections.latest_predictions
                  ORDER BY sha256, predicted_at DESC, position DESC) p USING (sha256)
            WHERE i.label = 'ok' AND p.predicted_class <> 'ok'""").scalar_one()
    assert false_rejects > 0
    assert {m.label: m.value for m in at.metric}["model says defect, human says ok"] == str(false_rejects)
    links = [(link.proto.page, parse_qs(link.proto.query_string)) for link in at.get("page_link")]
    assert links and all(page == "trace" and "part" in query for page, query in links)

    # The second click: the linked part's trace, where the model's call and the human's verdict disagree.
    part_id = links[0][1]["part"][0]
    at.query_params["part"] = part_id
    at.switch_page(TRACE).run()
    assert not at.exception, at.exception
    assert at.text_input(key="trace_part").value == part_id
    assert "(disagrees)" in texts(at) and "human: **ok**" in texts(at)


def test_the_command_line_writes_the_same_reports(ui_catalog, tmp_path) -> None:
    cat, database, engine_id = ui_catalog
    part_id = rejected_part(cat)
    run_cli("trace", "part", part_id, "--report", str(tmp_path / "trace.json"), env=database.env())
    run_cli("trace", "part", part_id, "--report", str(tmp_path / "trace.html"), env=database.env())
    written = json.loads((tmp_path / "trace.json").read_text())
    expected = json.loads(trace_json(part_audit(cat, part_id)))
    assert written.pop("read_at") and expected.pop("read_at")  # when each was read; all else is equal
    assert written == expected
    html = (tmp_path / "trace.html").read_text()
    assert lineage_of(cat, engine_id)["version_id"] in html and "seen-by-cam2" in html
    refused = run_cli("trace", "part", part_id, "--report", str(tmp_path / "trace.pdf"), env=database.env(),
                      check=False)
    assert refused.returncode != 0 and ".html or .json" in refused.stderr


def test_a_part_id_with_a_control_character_gets_a_short_message(app) -> None:
    at = app("auditor")
    at.query_params["part"] = "\x00"  # /trace?part=%00
    at.switch_page(TRACE).run()
    assert not at.exception, at.exception
    shown = "\n".join(e.value for kind in ("warning", "error", "markdown", "caption", "code") for e in getattr(at, kind))
    assert "the part id contains the control character U+0000" in at.warning[0].value
    for leak in ("SELECT", "projections.", "Traceback", ".py", "psycopg"):
        assert leak not in shown, (leak, shown)
