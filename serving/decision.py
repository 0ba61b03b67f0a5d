"""The part-level decision: what every image of a part showed, judged by a versioned rule set loaded from YAML
(the packaged serving/rules/default.yaml unless a line brings its own)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from catalog.dispositions import HUMAN
from catalog.event_log import Signature, signature_of

Decision = Literal["accept", "reject"]
Probability = Annotated[float, Field(ge=0, le=1)]
FALLBACK_THRESHOLD = 0.5  # for an engine whose model was never evaluated on a validation split
DEFAULT_RULE = "default"  # the `rule` of a decision that no rule made
HUMAN_RULE = HUMAN  # the `rule` of a decision a person signed (catalog.dispositions records them)


class RulesError(ValueError):
    """A rule set that cannot be used: unreadable, not YAML, malformed, or naming classes the engine lacks."""


@dataclass(frozen=True)
class DefectRegion:
    """Connected cells of an image's defect map at or above the rule set's region threshold."""

    area_px: int  # cells x cell_size²
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, x1 and y1 exclusive, on the cell grid
    peak: float  # the highest cell probability in the region


@dataclass(frozen=True)
class Finding:
    """What one image of a part showed."""

    sha256: str
    camera: str
    # What rules match their classes against: for a defective image, its most probable defect class, even
    # where the ok class is more probable than any single defect class.
    predicted_class: str
    scores: dict[str, float]  # class -> probability
    defect_score: float  # 1 - p(ok)
    regions: Sequence[DefectRegion] = ()


@dataclass(frozen=True)
class PartDecision:
    decision: Decision
    rule: str  # the name of the rule that decided, or "default"
    reason: str
    rules_version: str
    image_sha256s: list[str]  # the images the decision considered


@dataclass(frozen=True)
class Disposition:
    """A part's decision as the log records it (a PartDispositioned), with its signature when a person signed
    it (the event's metadata `signer`, `signed_at`, `meaning`)."""

    decision: Decision
    decider: Literal["engine", "human"]
    rule: str
    reason: str
    rules_version: str | None
    signature: Signature | None = None

    @property
    def counts(self) -> bool:
        """Whether it takes part in the part's decision: an engine's, or a person's signed one. An unsigned
        human disposition is kept in the log but decides nothing."""
        return self.decider == "engine" or self.signature is not None

    @property
    def rule_decided(self) -> str:
        """The rule a decision it stands for reports: a person's signed one reports HUMAN_RULE."""
        return HUMAN_RULE if self.decider == HUMAN else self.rule

    @classmethod
    def of(cls, payload: dict[str, Any], metadata: dict[str, Any]) -> Disposition:
        """From a recorded PartDispositioned's payload and metadata."""
        return cls(decision=payload["decision"], decider=payload["decider"], rule=payload["rule"],
                   reason=payload.get("reason", ""), rules_version=payload.get("rules_version"),
                   signature=signature_of(metadata) if payload["decider"] == HUMAN else None)


def regions_from_map(defect_map: np.ndarray, *, cell_size: int, threshold: float) -> list[DefectRegion]:
    """The 8-connected regions of defect-map cells at or above ``threshold``, largest first."""
    hot = defect_map >= threshold
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hot.astype(np.uint8), connectivity=8)
    peaks = np.zeros(count, dtype=np.float32)
    np.maximum.at(peaks, labels[hot], defect_map[hot])
    regions = []
    for label in range(1, count):  # label 0 is the background
        left, top, width, height, cells = (int(value) for value in stats[label])  # cv2.CC_STAT_* column order
        bbox = (left * cell_size, top * cell_size, (left + width) * cell_size, (top + height) * cell_size)
        regions.append(DefectRegion(area_px=cells * cell_size**2, bbox=bbox, peak=float(peaks[label])))
    return sorted(regions, key=lambda region: region.area_px, reverse=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """A rule fires when at least ``min_count`` distinct defective images of the part (from any of its
    cameras) each meet all of its criteria; a criterion left out does not restrict.

    ``classes``: the image's predicted class is one of these. ``min_score``: the probability of the image's
    predicted class is at least this. ``region_of_interest`` (x0, y0, x1, y1 in pixels): only regions whose
    bounding box intersects it count, and an image without one does not match. ``min_area_px`` /
    ``max_area_px``: bounds on the image's largest counted region (0 when it has none). ``cameras``: the image
    was taken by one of these.
    """

    name: str = Field(min_length=1)
    decision: Decision = "reject"
    classes: list[str] | None = Field(default=None, min_length=1)
    min_score: Probability | None = None
    min_area_px: int | None = Field(default=None, ge=0)
    max_area_px: int | None = Field(default=None, ge=0)
    min_count: int = Field(default=1, ge=1)
    region_of_interest: tuple[int, int, int, int] | None = None
    cameras: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.name == DEFAULT_RULE:
            raise ValueError(f"a rule may not be named {DEFAULT_RULE!r}: it names decisions no rule made")
        low, high = self.min_area_px, self.max_area_px
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_area_px {self.min_area_px} is above max_area_px {self.max_area_px}")
        if self.region_of_interest is not None:
            x0, y0, x1, y1 = self.region_of_interest
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"region_of_interest {list(self.region_of_interest)} must be "
                                 "[x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        return self

    def counted_regions(self, finding: Finding) -> list[DefectRegion]:
        """The regions of the image the rule counts: all, or those whose box meets its region of interest."""
        if self.region_of_interest is None:
            return list(finding.regions)
        x0, y0, x1, y1 = self.region_of_interest
        counted = []
        for region in finding.regions:
            left, top, right, bottom = region.bbox
            # Boxes are half-open: a region touching the region of interest's edge from outside stays out.
            if left < x1 and x0 < right and top < y1 and y0 < bottom:
                counted.append(region)
        return counted

    def matches(self, finding: Finding) -> bool:
        """Whether one defective image meets all the rule's criteria."""
        if self.cameras is not None and finding.camera not in self.cameras:
            return False
        if self.classes is not None and finding.predicted_class not in self.classes:
            return False
        if self.min_score is not None and finding.scores.get(finding.predicted_class, 0.0) < self.min_score:
            return False
        regions = self.counted_regions(finding)
        if self.region_of_interest is not None and not regions:
            return False
        largest = max((region.area_px for region in regions), default=0)
        return (self.min_area_px is None or largest >= self.min_area_px) and (
            self.max_area_px is None or largest <= self.max_area_px)


class RuleSet(_Strict):
    """Named, versioned rules, tried in order: the first that fires decides, else ``default``. An image is
    defective when its defect score reaches ``threshold``; only defective images reach the rules."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    # None: the engine's operating threshold (its model's, chosen on the validation split); a number here
    # overrides it, and every prediction records which it was decided at.
    threshold: Probability | None = None
    # None: the image threshold, so an image called defective always has a region for the area rules to see.
    region_threshold: Probability | None = None
    default: Decision = "accept"
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        names = [rule.name for rule in self.rules]
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"rule names must be unique; used more than once: {', '.join(twice)}")
        return self

    # A copy settled for an engine (`resolved`) keeps the version of the rules as written: the threshold it
    # was settled at is recorded beside each prediction instead.
    _written_version: str | None = PrivateAttr(default=None)

    @cached_property
    def rules_version(self) -> str:
        """``name@version+hash``: the hash of the canonical rules shows edits made without a version bump."""
        if self._written_version:
            return self._written_version
        canonical = json.dumps(self.model_dump(mode="json", exclude={"name", "version"}), sort_keys=True,
                               separators=(",", ":"))
        return f"{self.name}@{self.version}+{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"

    def resolved(self, engine_threshold: float | None) -> tuple[RuleSet, str]:
        """These rules with their thresholds settled for an engine, and whose the image threshold is:
        "rules" (set here), "engine" (the engine's operating point), or "default" (an engine that carries
        none, decided at FALLBACK_THRESHOLD)."""
        if self.threshold is not None:
            threshold, source = self.threshold, "rules"
        elif engine_threshold is not None:
            threshold, source = engine_threshold, "engine"
        else:
            threshold, source = FALLBACK_THRESHOLD, "default"
        region = self.region_threshold if self.region_threshold is not None else threshold
        settled = self.model_copy(update={"threshold": threshold, "region_threshold": region})
        settled._written_version = self.rules_version
        return settled, source

    @classmethod
    def parse(cls, data: Any, *, origin: str = "rules") -> RuleSet:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'rule set'}: {e['msg']}"
                                 for e in exc.errors())
            raise RulesError(f"{origin}: {problems}") from None

    def check_classes(self, defect_classes: Collection[str]) -> None:
        """Refuse rules naming a class the engine does not predict: a misspelt class would never fire."""
        unknown = [f"rule {rule.name!r} names {name!r}" for rule in self.rules for name in rule.classes or ()
                   if name not in defect_classes]
        if unknown:
            raise RulesError(f"rules {self.rules_version} name classes the engine does not predict (its "
                             f"defect classes: {', '.join(sorted(defect_classes))}): {'; '.join(unknown)}")


def load_rules(path: Path | None = None) -> RuleSet:
    """The rule set in the YAML file at ``path``, by default the packaged serving/rules/default.yaml."""
    source = resources.files("serving").joinpath("rules/default.yaml") if path is None else Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{source}: cannot read the rules: {exc}") from None
    return parse_rules(text, origin=str(source))


def parse_rules(text: str, *, origin: str = "rules") -> RuleSet:
    """The rule set a YAML text writes (a file's, or one the catalog recorded as published)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{origin}: cannot read the rules: {exc}") from None
    return RuleSet.parse(data, origin=origin)


def _describe(finding: Finding, regions: list[DefectRegion]) -> str:
    score = finding.scores.get(finding.predicted_class, 0.0)
    text = f"{finding.predicted_class} {score:.2f} on camera {finding.camera}"
    if regions:
        largest = max(regions, key=lambda region: region.area_px)
        text += f", region {largest.area_px} px² at ({largest.bbox[0]}, {largest.bbox[1]})"
    return text


def decide(rules: RuleSet, findings: list[Finding]) -> PartDecision:
    """The decision on a part from all its images seen so far: the first rule that fires, else the default."""
    image_sha256s = [finding.sha256 for finding in findings]
    if rules.threshold is None:  # rules not settled for an engine: the fallback, as for an engine without one
        rules = rules.resolved(None)[0]
    defective = [finding for finding in findings if finding.defect_score >= rules.threshold]
    for rule in rules.rules:
        matching = [finding for finding in defective if rule.matches(finding)]
        # Distinct images: the same image sent twice is still one piece of evidence.
        images = len({finding.sha256 for finding in matching})
        if images >= rule.min_count:
            worst = max(matching, key=lambda f: f.scores.get(f.predicted_class, 0.0))
            reason = _describe(worst, rule.counted_regions(worst))
            if rule.min_count > 1:
                reason += f"; {images} images match, the rule needs {rule.min_count}"
            return PartDecision(decision=rule.decision, rule=rule.name, reason=reason,
                                rules_version=rules.rules_version, image_sha256s=image_sha256s)

    if not findings:
        reason = "no images of the part"
    elif not defective:
        worst = max(findings, key=lambda f: f.defect_score)
        reason = (f"no image reaches the defect threshold {rules.threshold:.2f}; highest defect score "
                  f"{worst.defect_score:.2f} on camera {worst.camera}")
    else:
        worst = max(defective, key=lambda f: f.defect_score)
        reason = (f"no rule fired on {len(defective)} defective image(s); the worst: "
                  f"{_describe(worst, list(worst.regions))}")
    return PartDecision(decision=rules.default, rule=DEFAULT_RULE, reason=reason,
                        rules_version=rules.rules_version, image_sha256s=image_sha256s)


def decide_part(rules: RuleSet, findings: list[Finding], dispositions: Sequence[Disposition]) -> PartDecision:
    """The decision on a part from all its images and what the log already decided about it (`dispositions`,
    oldest first): a person's signed disposition stands (the latest of them); else the rules over all the
    images, except that a reject once decided stands, so a later clean image cannot un-reject a part."""
    image_sha256s = [finding.sha256 for finding in findings]
    counting = [d for d in dispositions if d.counts]
    signed = [d for d in counting if d.decider == HUMAN]
    if signed:
        person = signed[-1]
        s = person.signature
        reason = f"signed by {s.signer} at {s.signed_at.isoformat()}, meaning {s.meaning!r}"
        return PartDecision(decision=person.decision, rule=HUMAN_RULE,
                            reason=f"{reason}: {person.reason}" if person.reason else reason,
                            rules_version=person.rules_version or rules.rules_version, image_sha256s=image_sha256s)
    decision = decide(rules, findings)
    standing = next((d for d in reversed(counting) if d.decision == "reject"), None)
    if decision.decision == "accept" and standing is not None:
        return PartDecision(decision="reject", rule=standing.rule,
                            reason=f"{standing.reason} (decided before; only a signed human disposition "
                                   "overturns a reject)",
                            rules_version=standing.rules_version or rules.rules_version, image_sha256s=image_sha256s)
    return decision
