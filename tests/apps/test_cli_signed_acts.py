"""The acts an auditor asks about, signed from the command line (the signer re-enters their password): an
exclusion, a corrections import, a part's human disposition, a rule set's publication, a hand promotion; each
records signer, time and meaning, a wrong password or a missing role refuses it, and the trace shows them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from catalog.audit import part_audit
from catalog.events import PartDispositioned, PredictionRecorded
from identity import people
from ingestion.labels import import_labels
from learning.evaluation import EvaluationConfig, evaluate
from tests.builders import (
    IMAGE_PATHS,
    cli_env,
    correction_row,
    ingest_images,
    label_row,
    publish_v1,
    query,
    run_cli,
    write_csv,
)

PASSWORD = "correct horse battery"
PEOPLE = {"cleo": "curator", "ana": "annotator", "quinn": "quality", "eli": "engineer"}
DEFAULT_RULES = str(resources.files("serving").joinpath("rules/default.yaml"))


def add_people(cat) -> None:
    for name, role in PEOPLE.items():
        people.add_user(cat, name, name.title(), PASSWORD, [role], actor="test")


@pytest.fixture
def line(cat, tmp_path: Path):
    """Parts p1, p2, p3 of one image each, p1's image labelled scratch, the people of PEOPLE, and the files of a
    corrections import and a rule set."""
    publish_v1(cat)
    shas = ingest_images(cat, IMAGE_PATHS)
    import_labels(cat, write_csv(tmp_path / "labels.csv", [label_row(1, "scratch")]))
    add_people(cat)
    write_csv(tmp_path / "corrections.csv", [correction_row(1, "scratch", "crack")])
    return cat, shas


def signed(result_metadata: dict, signer: str, meaning: str) -> bool:
    """Whether event metadata records ``signer``'s signature with ``meaning``, the signer as the actor."""
    return (result_metadata["actor"] == f"user:{signer}" and result_metadata["signer"] == signer
            and result_metadata["meaning"] == meaning
            and datetime.fromisoformat(result_metadata["signed_at"]).tzinfo is not None)


def new_events(cat, after: int) -> list:
    return cat.store.read(after, limit=None)


def test_each_signed_act_records_its_signature_and_the_trace_shows_them(line, database, tmp_path: Path):
    cat, shas = line
    env, stdin = cli_env(cat), PASSWORD + "\n"
    outputs = []

    head = cat.head()
    outputs.append(run_cli("corrections", "import", str(tmp_path / "corrections.csv"), "--user", "ana",
                           "--password-stdin", "--json", env=env, stdin=stdin))
    assert json.loads(outputs[-1].stdout)["recorded"] == 1
    (correction,) = new_events(cat, head)
    assert correction.type == "CorrectionRecorded" and signed(correction.metadata, "ana", "reviewed")

    head = cat.head()
    outputs.append(run_cli("curate", "exclude", "--part", "p2", "--reason", "lens fogged", "--user", "cleo",
                           "--password-stdin", env=env, stdin=stdin))
    assert "excluded 1 of 1" in outputs[-1].stdout and "signed by cleo (approved)" in outputs[-1].stdout
    (exclusion,) = new_events(cat, head)
    assert exclusion.type == "ImageExcluded" and signed(exclusion.metadata, "cleo", "approved")

    head = cat.head()
    outputs.append(run_cli("parts", "dispose", "p1", "--decision", "reject", "--reason", "crack confirmed by hand",
                           "--user", "quinn", "--password-stdin", env=env, stdin=stdin))
    assert "part p1: reject" in outputs[-1].stdout
    (disposition,) = new_events(cat, head)
    assert disposition.type == "PartDispositioned" and disposition.stream_id == "part:p1"
    assert disposition.payload | {"reason": None} == {
        "part_id": "p1", "decision": "reject", "decided_by": "quinn", "decider": "human", "rule": "human",
        "reason": None, "rules_version": None, "engine_id": None, "image_sha256s": [shas[IMAGE_PATHS[0]]]}
    assert signed(disposition.metadata, "quinn", "reviewed")
    unknown = run_cli("parts", "dispose", "p404", "--decision", "accept", "--reason", "never made",
                      "--user", "quinn", "--password-stdin", env=env, stdin=stdin, check=False)
    assert unknown.returncode == 1 and "no part 'p404'" in unknown.stderr and "Traceback" not in unknown.stderr
    outputs.append(unknown)

    head = cat.head()
    outputs.append(run_cli("rules", "publish", DEFAULT_RULES, "--reason", "the plant's first rule set",
                           "--user", "quinn", "--password-stdin", env=env, stdin=stdin))
    (published,) = new_events(cat, head)
    assert published.type == "RuleSetPublished" and signed(published.metadata, "quinn", "approved")
    rules_version = published.payload["rules_version"]
    assert rules_version.startswith("default@1+") and published.payload["line"] is None
    again = run_cli("rules", "publish", DEFAULT_RULES, "--reason", "once more", "--user", "quinn",
                    "--password-stdin", env=env, stdin=stdin)
    assert "in force for every line already" in again.stdout and cat.head() == published.position
    listed = [json.loads(row) for row in run_cli("rules", "list", "--json", env=env).stdout.splitlines()]
    assert [(r["rules_version"], r["signer"], r["meaning"]) for r in listed] == [(rules_version, "quinn", "approved")]
    outputs += [again]

    # The line's own decision under the published rules: the trace names the rule set's signed publication.
    cat.record(PartDispositioned(part_id="p3", decision="accept", decided_by="engine-1", decider="engine",
                                 rule="default", rules_version=rules_version, image_sha256s=[shas[IMAGE_PATHS[2]]]),
               occurred_at=datetime.now(UTC), actor="visionledger-serve")
    (act,) = part_audit(cat, "p3").signed_acts
    assert (act.type, act.subject, act.signed.signer, act.signed.meaning) == (
        "RuleSetPublished", f"rules {rules_version}", "quinn", "approved")

    outputs.append(run_cli("trace", "part", "p1", "--report", str(tmp_path / "p1.json"), env=env))
    outputs.append(run_cli("trace", "part", "p1", "--report", str(tmp_path / "p1.html"), env=env))
    outputs.append(run_cli("trace", "part", "p1", env=env))
    assert "signed by quinn (reviewed)" in outputs[-1].stdout and "signed by ana (reviewed)" in outputs[-1].stdout
    report = json.loads((tmp_path / "p1.json").read_text())
    acts = [(a["type"], a["subject"], a["signed"]["signer"], a["signed"]["meaning"]) for a in report["signed_acts"]]
    assert acts == [("CorrectionRecorded", f"image {shas[IMAGE_PATHS[0]]}", "ana", "reviewed"),
                    ("PartDispositioned", "part p1", "quinn", "reviewed")]
    assert all(datetime.fromisoformat(a["signed"]["signed_at"]) for a in report["signed_acts"])
    assert report["decision"]["decider"] == "human" and report["decision"]["signed"]["signer"] == "quinn"
    html = (tmp_path / "p1.html").read_text()
    assert "<h2>Signatures</h2>" in html and "signed by quinn (reviewed)" in html
    assert "<td>ana</td><td>reviewed</td><td>CorrectionRecorded</td>" in html

    texts = [r.stdout + r.stderr for r in outputs] + [html, (tmp_path / "p1.json").read_text()]
    texts += [row[0] for row in query(cat, "SELECT payload::text || metadata::text FROM catalog.events")]
    assert not any(PASSWORD in text for text in texts)


ACTS = {  # each signed act, its arguments after the command, and what it records
    "exclude": ("curate", "exclude", "--part", "p2", "--reason", "lens fogged"),
    "correct": ("corrections", "import", "{tmp}/corrections.csv"),
    "dispose": ("parts", "dispose", "p1", "--decision", "accept", "--reason", "mould mark, not a crack"),
    "publish": ("rules", "publish", DEFAULT_RULES, "--reason", "new rules"),
}
ALLOWED = {"exclude": "cleo", "correct": "ana", "dispose": "quinn", "publish": "quinn"}


@pytest.mark.parametrize("act", sorted(ACTS))
def test_a_wrong_password_or_a_missing_role_refuses_the_act(line, act, tmp_path: Path):
    cat, _ = line
    env = cli_env(cat)
    args = [a.replace("{tmp}", str(tmp_path)) for a in ACTS[act]]
    head = cat.head()
    wrong = run_cli(*args, "--user", ALLOWED[act], "--password-stdin", env=env, stdin="not the password at all\n",
                    check=False)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.strip().splitlines() == ["Error: LoginRefused: wrong user name or password"]
    assert [e.type for e in new_events(cat, head)] == ["UserLoginFailed"]  # counted towards lock-out, nothing else

    head = cat.head()
    outsider = next(name for name in PEOPLE if name != ALLOWED[act] and not (act == "publish" and name == "quinn"))
    refused = run_cli(*args, "--user", outsider, "--password-stdin", env=env, stdin=PASSWORD + "\n", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"Error: LoginRefused: {outsider} holds no role that may {people_action(act)}"]
    assert new_events(cat, head) == []
    assert PASSWORD not in wrong.stderr + refused.stderr


def people_action(act: str) -> str:
    return {"exclude": "exclude", "correct": "label", "dispose": "dispose", "publish": "publish rules"}[act]


def test_a_hand_promotion_is_signed_and_the_trace_of_a_part_it_judged_shows_it(built_engine):
    cat, engine_id = built_engine
    add_people(cat)
    env = cli_env(cat)
    evaluate(cat, EvaluationConfig(), lambda message: None)
    lax = ("--min-validation-recall", "0", "--max-good-parts-rejected", "1", "--json")
    refused = run_cli("models", "promote", *lax, "--user", "quinn", "--password-stdin", env=env,
                      stdin=PASSWORD + "\n", check=False)
    assert refused.returncode == 1 and "quinn holds no role that may promote" in refused.stderr
    head = cat.head()
    promoted = run_cli("models", "promote", *lax, "--user", "eli", "--password-stdin", env=env,
                       stdin=PASSWORD + "\n")
    assert json.loads(promoted.stdout)["promoted"], promoted.stdout
    events = {e.type: e for e in new_events(cat, head)}
    assert signed(events["ModelPromoted"].metadata, "eli", "approved")
    assert events["RegressionReplayed"].metadata["actor"] == "user:eli"
    assert "signer" not in events["RegressionReplayed"].metadata  # the signature is on the promotion

    # A part the promoted model's engine judged: its trace shows who signed the model's promotion.
    sha, part = query(cat, "SELECT sha256, part_id FROM projections.images ORDER BY sha256 LIMIT 1")[0]
    cat.record(PredictionRecorded(sha256=sha, engine_id=engine_id, scores={"ok": 0.9, "crack": 0.1},
                                  predicted_class="ok", part_id=part), occurred_at=datetime.now(UTC))
    acts = [a for a in part_audit(cat, part).signed_acts if a.type == "ModelPromoted"]
    assert [(a.subject, a.signed.signer, a.signed.meaning) for a in acts] == [
        (f"model {events['ModelPromoted'].payload['model_id']}", "eli", "approved")]
    assert PASSWORD not in promoted.stdout + promoted.stderr + refused.stderr
