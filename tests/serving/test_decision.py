"""Part decisions by versioned rules: each criterion, rule order, the default, the rules' version and their
validation, and defect regions from a defect map."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.decision import (
    DefectRegion,
    Finding,
    RulesError,
    RuleSet,
    decide,
    load_rules,
    regions_from_map,
)
from serving.tiling import combine, cut_tiles

CELL = 16


def region(cells: int, x: int, y: int, *, width_cells: int = 1) -> DefectRegion:
    """A region of ``cells`` cells whose box starts at pixel (x, y), ``width_cells`` wide."""
    height_cells = -(-cells // width_cells)
    return DefectRegion(area_px=cells * CELL**2, bbox=(x, y, x + width_cells * CELL, y + height_cells * CELL),
                        peak=0.9)


def finding(defect_class: str = "scratch", score: float = 0.9, *, camera: str = "cam1",
            regions: tuple[DefectRegion, ...] = (), defect_score: float | None = None,
            image: str = "a") -> Finding:
    return Finding(sha256=hashlib.sha256(image.encode()).hexdigest(), camera=camera,
                   predicted_class=defect_class, scores={"ok": 1 - score, defect_class: score},
                   defect_score=score if defect_score is None else defect_score, regions=regions)


def rule_set(*rules: dict[str, Any], **fields: Any) -> RuleSet:
    return RuleSet.parse({"name": "test", "version": "1", "rules": list(rules), **fields})


def fires(rule: dict[str, Any], *findings: Finding) -> bool:
    return decide(rule_set({"name": "the-rule", **rule}), list(findings)).rule == "the-rule"


# The packaged defaults


@pytest.mark.parametrize(
    ("findings", "decision", "rule"),
    [
        ([finding("crack", 0.6)], "reject", "crack"),
        ([finding("scratch", regions=(region(2, 0, 0),))], "accept", "default"),
        ([finding("scratch", regions=(region(4, 0, 0, width_cells=4),))], "reject", "long-scratch"),
        ([finding("spot", regions=(region(3, 0, 0),))], "reject", "large-spot"),
        ([finding("spot", regions=(region(1, 0, 0),))], "accept", "default"),
        ([finding("spot", image="a"), finding("spot", camera="cam2", image="b")], "reject", "repeated-spots"),
        ([finding("crack", 0.3, defect_score=0.3)], "accept", "default"),
        ([], "accept", "default"),
    ],
)
def test_the_packaged_rules(findings: list[Finding], decision: str, rule: str) -> None:
    result = decide(load_rules(), findings)
    assert (result.decision, result.rule) == (decision, rule)


def test_the_packaged_rules_name_only_the_classes_of_the_defect_engine() -> None:
    load_rules().check_classes(("scratch", "spot", "crack"))
    with pytest.raises(RulesError, match="rule 'crack' names 'crack'"):
        load_rules().check_classes(("scratch", "spot", "fissure"))


# Each criterion


def test_classes() -> None:
    assert fires({"classes": ["crack", "spot"]}, finding("crack"))
    assert not fires({"classes": ["crack", "spot"]}, finding("scratch"))


def test_min_score_is_the_probability_of_the_predicted_class() -> None:
    assert fires({"min_score": 0.8}, finding("scratch", 0.85))
    assert not fires({"min_score": 0.9}, finding("scratch", 0.85))


def test_area_bounds_apply_to_the_largest_region() -> None:
    large_and_small = finding(regions=(region(5, 0, 0), region(1, 200, 200)))
    assert fires({"min_area_px": 5 * 256}, large_and_small)
    assert not fires({"min_area_px": 5 * 256 + 1}, large_and_small)
    assert fires({"max_area_px": 5 * 256}, large_and_small)
    assert not fires({"max_area_px": 5 * 256 - 1}, large_and_small)
    # Without regions the largest is 0 px²: a minimum cannot be met, a maximum is.
    assert not fires({"min_area_px": 1}, finding())
    assert fires({"max_area_px": 100}, finding())


def test_min_count_counts_distinct_defective_images_across_cameras() -> None:
    rule = {"classes": ["spot"], "min_count": 2}
    assert fires(rule, finding("spot", camera="cam1", image="a"), finding("spot", camera="cam2", image="b"))
    assert not fires(rule, finding("spot", image="a"))
    assert not fires(rule, finding("spot", image="a"), finding("spot", image="a"))  # the same image, resent
    assert not fires(rule, finding("spot", image="a"), finding("scratch", image="b"))
    assert not fires(rule, finding("spot", image="a"), finding("spot", 0.4, image="b"))  # not defective


def test_region_of_interest_counts_only_regions_that_meet_it() -> None:
    roi = {"region_of_interest": [100, 100, 300, 300]}
    assert fires(roi, finding(regions=(region(1, 290, 150),)))
    assert not fires(roi, finding(regions=(region(1, 300, 150),)))  # touches the right edge from outside
    assert not fires(roi, finding(regions=(region(1, 84, 150),)))  # ends at x = 100: touches the left edge
    assert not fires(roi, finding())  # no region at all
    # A large region outside does not make a small one inside large.
    regions = (region(10, 600, 600), region(1, 150, 150))
    assert not fires({**roi, "min_area_px": 512}, finding(regions=regions))
    assert fires({"min_area_px": 512}, finding(regions=regions))


def test_cameras() -> None:
    assert fires({"cameras": ["cam2", "cam3"]}, finding(camera="cam2"))
    assert not fires({"cameras": ["cam2", "cam3"]}, finding(camera="cam1"))


def test_criteria_are_anded() -> None:
    rule = {"classes": ["scratch"], "cameras": ["cam1"], "min_score": 0.7}
    assert fires(rule, finding("scratch", 0.8, camera="cam1"))
    assert not fires(rule, finding("scratch", 0.8, camera="cam2"))
    assert not fires(rule, finding("scratch", 0.6, camera="cam1"))
    assert not fires(rule, finding("spot", 0.8, camera="cam1"))


def test_only_images_at_the_threshold_reach_the_rules() -> None:
    rules = rule_set({"name": "any-defect"}, threshold=0.7)
    assert decide(rules, [finding(defect_score=0.7)]).rule == "any-defect"
    assert decide(rules, [finding(defect_score=0.69)]).rule == "default"


# Order, default, what a decision records


def test_the_first_rule_that_fires_decides() -> None:
    rules = rule_set(
        {"name": "cosmetic-side", "decision": "accept", "classes": ["scratch"], "cameras": ["cam3"]},
        {"name": "any-scratch", "classes": ["scratch"]},
    )
    assert decide(rules, [finding(camera="cam3")]).decision == "accept"
    assert decide(rules, [finding(camera="cam1")]).decision == "reject"
    # A later image of the part, from another camera, can still make the earlier rule fire.
    both = [finding(camera="cam1", image="a"), finding(camera="cam3", image="b")]
    assert decide(rules, both).rule == "cosmetic-side"


def test_the_default_decides_when_no_rule_fires() -> None:
    rules = rule_set({"name": "crack", "classes": ["crack"]}, default="reject")
    result = decide(rules, [finding("scratch", camera="cam2", regions=(region(2, 64, 32),))])
    assert (result.decision, result.rule) == ("reject", "default")
    assert result.reason == ("no rule fired on 1 defective image(s); the worst: scratch 0.90 on camera cam2, "
                             "region 512 px² at (64, 32)")

    result = decide(rules, [finding(defect_score=0.2, camera="cam4")])
    assert result.reason == ("no image reaches the defect threshold 0.50; "
                             "highest defect score 0.20 on camera cam4")
    assert decide(rules, []).reason == "no images of the part"


def test_a_decision_names_its_rule_reason_version_and_images() -> None:
    rules = rule_set({"name": "spots", "classes": ["spot"], "min_count": 2})
    findings = [finding("spot", 0.81, image="a", camera="cam1", regions=(region(2, 320, 64),)),
                finding("spot", 0.93, image="b", camera="cam2", regions=(region(1, 16, 16),)),
                finding("spot", 0.1, image="c")]  # not defective, but considered

    result = decide(rules, findings)

    assert (result.decision, result.rule) == ("reject", "spots")
    assert result.reason == ("spot 0.93 on camera cam2, region 256 px² at (16, 16); "
                             "2 images match, the rule needs 2")
    assert result.rules_version == rules.rules_version
    assert result.image_sha256s == [f.sha256 for f in findings]


# The rules' version


def test_rules_version_names_the_rules_and_hashes_their_content() -> None:
    base = rule_set({"name": "big", "min_area_px": 1024})
    assert re.fullmatch(r"test@1\+[0-9a-f]{12}", base.rules_version)
    digest = base.rules_version.split("+")[1]

    assert rule_set({"name": "big", "min_area_px": 1024}).rules_version == base.rules_version
    # Spelling out a default is no change.
    spelt_out = rule_set({"name": "big", "decision": "reject", "min_area_px": 1024}, default="accept")
    assert spelt_out.rules_version == base.rules_version
    # Overriding the engine's operating threshold is a change of the rules.
    assert rule_set({"name": "big", "min_area_px": 1024}, threshold=0.5).rules_version != base.rules_version
    # An edit without a version bump still shows; a bump alone changes only the version.
    edited = rule_set({"name": "big", "min_area_px": 2048})
    assert edited.rules_version.startswith("test@1+") and edited.rules_version != base.rules_version
    assert rule_set({"name": "big", "min_area_px": 1024}, version="2").rules_version == f"test@2+{digest}"
    assert rule_set({"name": "big", "min_area_px": 1024}, threshold=0.6).rules_version != base.rules_version
    in_order = rule_set({"name": "a", "classes": ["crack"]}, {"name": "b"})
    reordered = rule_set({"name": "b"}, {"name": "a", "classes": ["crack"]})
    assert in_order.rules_version != reordered.rules_version


# Loading and validation


def test_load_rules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "line-b.yaml"
    path.write_text("name: line-b\nversion: '7'\nthreshold: 0.4\nrules:\n  - name: any\n    min_score: 0.6\n")
    rules = load_rules(path)
    assert rules.rules_version.startswith("line-b@7+")
    assert rules.threshold == 0.4 and rules.rules[0].decision == "reject"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nversion: '1'\nrules:\n  - name: a\n    min_aera_px: 5\n",
         r"rules\.0\.min_aera_px: Extra inputs are not permitted"),
        ("name: x\nversion: '1'\nthreshold: high\n", r"threshold: Input should be a valid number"),
        ("name: x\nversion: '1'\nthreshold: 1.5\n", r"threshold: Input should be less than or equal to 1"),
        ("name: x\nversion: '1'\nrules:\n  - name: a\n  - decision: reject\n",
         r"rules\.1\.name: Field required"),
        ("version: '1'\n", r"name: Field required"),
        ("name: x\nversion: 1\n", r"version: Input should be a valid string"),
        ("name: x\nversion: '1'\nrules:\n  - name: a\n    decision: rework\n",
         r"rules\.0\.decision: Input should be 'accept' or 'reject'"),
        ("name: x\nversion: '1'\nrules:\n  - name: a\n    region_of_interest: [0, 0, 10]\n",
         r"rules\.0\.region_of_interest\.3: Field required"),
        ("name: x\nversion: '1'\nrules:\n  - name: a\n    region_of_interest: [10, 0, 5, 10]\n",
         r"rules\.0: Value error, region_of_interest \[10, 0, 5, 10\] must be"),
        ("name: x\nversion: '1'\nrules:\n  - name: a\n    min_area_px: 10\n    max_area_px: 5\n",
         r"rules\.0: Value error, min_area_px 10 is above max_area_px 5"),
        ("name: x\nversion: '1'\nrules:\n  - name: a\n  - name: a\n",
         r"rule names must be unique; used more than once: a"),
        ("name: x\nversion: '1'\nrules:\n  - name: default\n", r"may not be named 'default'"),
        ("- just\n- a list\n", r"rule set: Input should be a valid dictionary"),
        ("name: x\nversion: '1'\nrules: [\n", r"cannot read the rules"),
    ],
)
def test_malformed_rules_are_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError, match=message) as error:
        load_rules(path)
    assert str(path) in str(error.value)


def test_a_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the rules"):
        load_rules(tmp_path / "absent.yaml")


# Regions


def test_regions_from_map_finds_each_blob_with_its_area_box_and_peak() -> None:
    defect_map = np.zeros((20, 30), dtype=np.float32)
    defect_map[2:4, 5:8] = 0.7  # 6 cells: x 80..128, y 32..64
    defect_map[3, 6] = 0.95
    defect_map[10, 20] = defect_map[11, 21] = 0.5  # diagonal neighbours, at the threshold: one region
    defect_map[15, 0] = 0.49  # below the threshold

    regions = regions_from_map(defect_map, cell_size=CELL, threshold=0.5)

    assert regions == [
        DefectRegion(area_px=6 * 256, bbox=(80, 32, 128, 64), peak=pytest.approx(0.95)),
        DefectRegion(area_px=2 * 256, bbox=(320, 160, 352, 192), peak=pytest.approx(0.5)),
    ]
    assert regions_from_map(np.zeros((4, 4), dtype=np.float32), cell_size=CELL, threshold=0.5) == []


def test_a_hot_tile_cell_becomes_a_region_at_its_image_position() -> None:
    tiles = cut_tiles(np.zeros((1000, 1000), dtype=np.uint8), (512, 512))
    cells = np.zeros((4, 32, 32), dtype=np.float32)
    cells[3, 2, 4:6] = 0.8  # tile (488, 488): cells centred at y 528, x 560 and 576
    probabilities = np.tile(np.array([[0.9, 0.1]], dtype=np.float32), (4, 1))
    result = combine(tiles, probabilities, cells, cell_size=CELL, ok_index=0)

    regions = regions_from_map(result.defect_map, cell_size=CELL, threshold=0.5)

    assert regions == [DefectRegion(area_px=512, bbox=(560, 528, 592, 544), peak=pytest.approx(0.8))]
