"""What a dataset version selects and how: filters, class sampling, per-part / per-day caps, the split and
the seed. Kept as YAML in the repository (assets/dataset_specs/) or passed as run configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from catalog.errors import CatalogError
from catalog.events import ClassName, Name
from catalog.queries import ImageFilter

SPLITS = ("train", "validation", "test")


class DatasetSpecError(CatalogError):
    """A spec that cannot be built: malformed, or asking for classes the ontology does not have."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Filters(_Strict):
    lines: list[str] = Field(default_factory=list)
    stations: list[str] = Field(default_factory=list)
    cameras: list[str] = Field(default_factory=list)
    parts: list[str] = Field(default_factory=list)
    captured_from: AwareDatetime | None = None  # inclusive
    captured_to: AwareDatetime | None = None  # exclusive

    def image_filter(self) -> ImageFilter:
        return ImageFilter(lines=tuple(self.lines), stations=tuple(self.stations), cameras=tuple(self.cameras),
                           parts=tuple(self.parts), captured_from=self.captured_from, captured_to=self.captured_to)


class Sampling(_Strict):
    """Class-stratified sampling: target ``proportions`` (with an optional ``total``; without one, the largest
    total the scarcest class allows), or ``counts`` per class (a number, or ``all``). Classes not named are
    left out. ``tolerance`` is how far a class's share may stray from its target before the check fails."""

    proportions: dict[ClassName, float] | None = None
    counts: dict[ClassName, int | Literal["all"]] | None = None
    total: int | None = Field(default=None, gt=0)
    tolerance: float = Field(default=0.02, ge=0, le=1)

    @model_validator(mode="after")
    def _one_way(self) -> Sampling:
        if (self.proportions is None) == (self.counts is None):
            raise ValueError("give exactly one of sampling.proportions and sampling.counts")
        if self.proportions is not None:
            if not self.proportions or any(p <= 0 for p in self.proportions.values()):
                raise ValueError("sampling.proportions must name classes with shares above 0")
            if abs(sum(self.proportions.values()) - 1) > 1e-6:
                raise ValueError(f"sampling.proportions must add up to 1, not {sum(self.proportions.values()):g}")
        if self.counts is not None:
            if self.total is not None:
                raise ValueError("sampling.total goes with proportions; counts name each class's number")
            if not self.counts or any(c != "all" and c <= 0 for c in self.counts.values()):
                raise ValueError("sampling.counts must name classes with counts above 0 (or 'all')")
        return self

    @property
    def classes(self) -> list[str]:
        return sorted(self.proportions or self.counts or {})


class Balance(_Strict):
    """Caps that keep one over-photographed part or one busy day from dominating a class: at most
    ``max_per_part`` images of a class from one part, ``max_per_day`` from one capture day (UTC). Whatever
    the caps, a class that is sampled down is drawn evenly across days."""

    max_per_part: int | None = Field(default=None, gt=0)
    max_per_day: int | None = Field(default=None, gt=0)


class Split(_Strict):
    """Shares of parts (not images) per split: every image of a part lands in the same split."""

    train: float = Field(default=0.7, ge=0)
    validation: float = Field(default=0.15, ge=0)
    test: float = Field(default=0.15, ge=0)

    @model_validator(mode="after")
    def _adds_up(self) -> Split:
        if abs(self.train + self.validation + self.test - 1) > 1e-6:
            raise ValueError("split.train + split.validation + split.test must add up to 1")
        return self

    def shares(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


class DatasetSpec(_Strict):
    """A dataset's selection. ``as_of`` pins the catalog position (default: the head when built);
    ``ontology_version`` the classes the labels are read in (default: the latest at that position)."""

    name: Name
    description: str = ""
    filters: Filters = Field(default_factory=Filters)
    ontology_version: int | None = Field(default=None, ge=1)
    sampling: Sampling
    balance: Balance = Field(default_factory=Balance)
    split: Split = Field(default_factory=Split)
    seed: int = 0
    as_of: int | None = Field(default=None, ge=0)

    @classmethod
    def parse(cls, data: dict[str, Any], *, origin: str = "spec") -> DatasetSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
            raise DatasetSpecError(f"{origin}: {problems}") from None

    @classmethod
    def from_yaml(cls, source: str | Path) -> DatasetSpec:
        """A spec from a YAML file, or from YAML text."""
        is_file = isinstance(source, Path) or (len(source) < 4096 and "\n" not in source and Path(source).is_file())
        text = Path(source).read_text() if is_file else str(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DatasetSpecError(f"{source if is_file else 'spec'}: not YAML ({exc})") from None
        if not isinstance(data, dict):
            raise DatasetSpecError(f"{source if is_file else 'spec'}: a spec is a mapping of fields, got {type(data).__name__}")
        return cls.parse(data, origin=str(source) if is_file else "spec")

    def recorded(self) -> dict[str, Any]:
        """The spec as recorded with the version (JSON values; the position is recorded beside it)."""
        return self.model_dump(mode="json", exclude={"as_of"})
