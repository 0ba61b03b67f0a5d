"""Publishing a version of the class ontology from its YAML file, and queueing for review the images whose class
that version split (their new class is for a human to choose)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from catalog import Catalog, ConcurrencyError, EventIdConflict, NewEvent, event_id_for
from catalog.events import OntologyChange, OntologyPublished, ReviewRequested
from catalog.lookups import labels_named
from catalog.ontology import Ontology, OntologyError, OntologyVersion

CLASS_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")  # the rule of catalog.events.ClassName, to explain a refusal
OPS = ("create", "rename", "merge", "split")
SPLIT_QUEUE = "ontology-split"
BATCH_SIZE = 2_000


@dataclass(frozen=True)
class PublishReport:
    """The version now current, whether it was already published before this call, and what it queued."""

    version: int
    classes: tuple[str, ...]
    changes: tuple[OntologyChange, ...]
    already_published: bool
    queued_for_review: int  # images put in the ontology-split queue by this call


def publish_ontology(cat: Catalog, source: Path | str | Mapping[str, Any], *, actor: str | None = None) -> PublishReport:
    """Publish the ontology version that a YAML file (or its parsed mapping) describes:
    ``{version: N, classes: [...], changes: [{op, sources, targets}, ...]}``.

    The version must follow from the current one through its changes (OntologyError says why not); publishing
    a version that is already published appends nothing; another publisher appending first raises
    ConcurrencyError. Images whose current label this version split are queued for review.
    """
    where = "the ontology" if isinstance(source, Mapping) else str(source)
    version, classes, changes = _parse(where, source if isinstance(source, Mapping) else _load_yaml(Path(source)))
    seen = cat.store.stream_version("ontology")  # read first: anything published after it makes our append fail
    ontology = Ontology.load(cat)
    published = _published_already(where, ontology, version, classes, changes)
    if published is not None:
        queued = _queue_split_images(cat, ontology, actor) if published == ontology.current else 0
        return PublishReport(published.version, published.classes, published.changes, True, queued)
    proposed = ontology.next_version(classes, changes)
    if version is not None and version != proposed.version:
        raise OntologyError(f"{where} says version {version}, but the next version of the catalog's ontology is "
                            f"{proposed.version}: fix `version:` (or leave it out)")
    event = NewEvent(data=OntologyPublished(version=proposed.version, classes=list(classes), changes=list(changes)),
                     occurred_at=datetime.now(UTC), event_id=event_id_for("ontology", proposed.version),
                     metadata={"source": f"ontology publish {where}"} | ({"actor": actor} if actor else {}))
    try:
        result = cat.append([event], expected_versions={"ontology": seen})
    except EventIdConflict as exc:  # another publisher stored a different version N since we read the ontology
        raise ConcurrencyError("ontology", seen, seen + 1) from exc
    queued = _queue_split_images(cat, Ontology.load(cat), actor)
    return PublishReport(proposed.version, proposed.classes, proposed.changes, result.all_duplicates, queued)


def _published_already(where: str, ontology: Ontology, version: int | None, classes: list[str],
                       changes: list[OntologyChange]) -> OntologyVersion | None:
    """The published version the file repeats, if any; a file naming a published version with other content
    is refused. A file without a version number repeats the current version or proposes the next one."""
    number = version if version is not None else max(ontology.versions, default=0)
    published = ontology.versions.get(number)
    same = published is not None and sorted(published.classes) == sorted(classes) and list(published.changes) == changes
    if version is not None and published is not None and not same:
        raise OntologyError(f"{where}: version {version} is already published with other classes or changes; "
                            f"the next version is {ontology.current.version + 1}")
    return published if same else None


# -- reading the file -------------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise OntologyError(f"{path} is not valid YAML: {exc}") from None


def _parse(where: str, raw: Any) -> tuple[int | None, list[str], list[OntologyChange]]:
    if not isinstance(raw, Mapping):
        raise OntologyError(f"{where} must be a mapping like `{{version: 1, classes: [ok, crack]}}`, "
                            f"not {type(raw).__name__}")
    unknown = sorted(set(raw) - {"version", "classes", "changes"})
    if unknown:
        raise OntologyError(f"{where}: unknown keys {', '.join(map(str, unknown))}; expected version, classes, changes")
    version = raw.get("version")
    if version is not None and (type(version) is not int or version < 1):
        raise OntologyError(f"{where}: version must be a whole number from 1, not {version!r}")
    if not raw.get("classes"):
        raise OntologyError(f"{where} lists no classes: add e.g. `classes: [ok, scratch, crack]`")
    changes = raw.get("changes") or []
    if not isinstance(changes, list):
        raise OntologyError(f"{where}: changes must be a list of {{op, sources, targets}}")
    return version, _class_names(where, "classes", raw["classes"]), [
        _change(where, number, change) for number, change in enumerate(changes, 1)]


def _change(where: str, number: int, raw: Any) -> OntologyChange:
    if not isinstance(raw, Mapping) or raw.get("op") not in OPS:
        raise OntologyError(f"{where}: change {number} needs `op:` one of {', '.join(OPS)}, got {raw!r}")
    for key in ("sources", "targets"):
        _class_names(where, f"change {number} {key}", raw.get(key, []))
    try:
        return OntologyChange.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise OntologyError(f"{where}: change {number}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None


def _class_names(where: str, what: str, names: Any) -> list[str]:
    if not isinstance(names, list):
        raise OntologyError(f"{where}: {what} must be a list of class names, not {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not CLASS_NAME.fullmatch(n)]
    if bad:
        raise OntologyError(f"{where}: {what}: {', '.join(map(repr, bad))} not class names: use lower-case "
                            "letters, digits and _, starting with a letter (quote a name YAML reads otherwise, "
                            "like 'no')")
    return names


# -- the review queue of split classes ---------------------------------------------------------------------------


def _queue_split_images(cat: Catalog, ontology: Ontology, actor: str | None) -> int:
    """Queue every image whose current label the current version split; returns how many were new to it."""
    current = ontology.current
    before = Ontology([v for number, v in ontology.versions.items() if number < current.version])
    splits = _splits(before.current, current) if before.versions else {}
    # (name, version) of every label that read as a split class until now, with the split that hit it
    recorded = {(name, number): splits[cls] for number, v in before.versions.items() for name in v.classes
                if (cls := before.resolve(name, number)) in splits}
    if not recorded:
        return 0
    labels = labels_named(cat, {name for name, _ in recorded})
    meta = {"source": f"ontology version {current.version}"} | ({"actor": actor} if actor else {})
    now = datetime.now(UTC)
    reviews = [
        NewEvent(data=ReviewRequested(
            sha256=sha, queue=SPLIT_QUEUE, strategy="ontology_split", score=1.0,
            reason=f"class {split.sources[0]} was split into {', '.join(split.targets)}: choose one"),
            occurred_at=now, event_id=event_id_for("review", SPLIT_QUEUE, current.version, sha), metadata=meta)
        for sha, label, number in labels if (split := recorded.get((label, number))) is not None]
    queued = sum(cat.append(reviews[start:start + BATCH_SIZE], catch_up=False).appended
                 for start in range(0, len(reviews), BATCH_SIZE))
    cat.catch_up()
    return queued


def _splits(previous: OntologyVersion, version: OntologyVersion) -> dict[str, OntologyChange]:
    """The previous version's classes that ``version`` splits, each with its split change (following the
    renames and merges made before the split within the same version)."""
    splits = {}
    for cls in previous.classes:
        name = cls
        for change in version.changes:
            if name in change.sources:
                if change.op == "split":
                    splits[cls] = change
                    break
                name = change.targets[0]
    return splits
