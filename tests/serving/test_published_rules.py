"""Rule sets put in force through the catalog: validated as the server loads them, one version one rule set,
a line's own publication before the plant-wide one, read back from the recorded text."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from catalog.errors import EventValidationError
from catalog.events import parse_event
from serving.decision import RulesError, load_rules
from serving.published_rules import publish_rules, rules_in_force
from serving.service import InspectionService, ServeConfig
from tests.builders import publish_v1

DEFAULT = Path(str(resources.files("serving").joinpath("rules/default.yaml")))
SIGNED = {"actor": "user:quinn", "signer": "quinn", "signed_at": datetime.now(UTC).isoformat(), "meaning": "approved"}


def test_the_line_gets_its_own_rules_before_the_plant_wide_ones(cat, tmp_path: Path):
    publish_v1(cat)
    assert rules_in_force(cat, "line1") is None  # nothing published: `serve` keeps its packaged rules
    publish_rules(cat, DEFAULT, reason="plant-wide rules", line=None, signed=SIGNED)
    strict = tmp_path / "strict.yaml"
    strict.write_text(DEFAULT.read_text().replace('version: "1"', 'version: "2"').replace("min_area_px: 1024",
                                                                                         "min_area_px: 512"))
    event, recorded = publish_rules(cat, strict, reason="line 2 scratches are shorter", line="line2", signed=SIGNED)
    assert recorded and event.rules_version.startswith("default@2+")
    assert rules_in_force(cat, "line1").rules.rules_version == load_rules(DEFAULT).rules_version
    in_force = rules_in_force(cat, "line2")
    assert in_force.rules.rules_version == load_rules(strict).rules_version and in_force.line == "line2"
    assert in_force.event.metadata["signer"] == "quinn"


def test_bad_rules_are_refused_and_record_nothing(cat, tmp_path: Path):
    publish_v1(cat)
    publish_rules(cat, DEFAULT, reason="plant-wide rules", line=None, signed=SIGNED)
    head = cat.head()
    edited = tmp_path / "edited.yaml"
    edited.write_text(DEFAULT.read_text().replace("min_area_px: 1024", "min_area_px: 2048"))
    with pytest.raises(RulesError, match="bump `version`"):  # default@1 names the published rules already
        publish_rules(cat, edited, reason="quiet edit", line=None, signed=SIGNED)
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(DEFAULT.read_text().replace('version: "1"', 'version: "3"').replace("[crack]", "[crak]"))
    with pytest.raises(RulesError, match="'crak'"):  # not a class of the current ontology
        publish_rules(cat, misspelt, reason="typo", line=None, signed=SIGNED)
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("name: x\nversion: '1'\nrules: [{name: r, min_count: 0}]\n")
    with pytest.raises(RulesError, match="min_count"):
        publish_rules(cat, malformed, reason="broken", line=None, signed=SIGNED)
    assert cat.head() == head
    with pytest.raises(EventValidationError, match="text_sha256"):  # the recorded text is the text hashed
        parse_event("RuleSetPublished", {"rules_version": "x@1+0", "text": "name: x", "text_sha256": "0" * 64,
                                         "reason": "forged"})


def test_the_server_decides_by_the_rule_set_published_for_its_line(built_engine, tmp_path: Path):
    cat, _ = built_engine
    packaged = InspectionService(cat, ServeConfig(spool=tmp_path / "spool-1", rules_line="line2")).rules.rules_version
    strict = tmp_path / "strict.yaml"
    strict.write_text(DEFAULT.read_text().replace('version: "1"', 'version: "2"'))
    publish_rules(cat, strict, reason="line 2 gets its own version", line="line2", signed=SIGNED)
    served = InspectionService(cat, ServeConfig(spool=tmp_path / "spool-2", rules_line="line2")).rules.rules_version
    assert packaged == load_rules(DEFAULT).rules_version and served == load_rules(strict).rules_version
    given = InspectionService(cat, ServeConfig(spool=tmp_path / "spool-3", rules_line="line2", rules=DEFAULT))
    assert given.rules.rules_version == packaged  # --rules FILE wins over what is published
