"""The class ontology across its versions: validating a new version's changes, and reading a label recorded
under an old version as the class it is now (rename and merge map one to one; a split makes it unknown)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from catalog.errors import CatalogError
from catalog.events import OntologyChange

if TYPE_CHECKING:
    from catalog import Catalog

# The class every ontology keeps for a good part: what the models are trained to call good, what a served
# decision accepts, and the side of ok / defect a label or a correction falls on.
OK_CLASS = "ok"


class OntologyError(CatalogError):
    """An ontology version that does not follow from the previous one, or a class it does not know."""


@dataclass(frozen=True)
class OntologyVersion:
    version: int
    classes: tuple[str, ...]
    changes: tuple[OntologyChange, ...] = ()


def step(previous: Sequence[str], changes: Iterable[OntologyChange]) -> tuple[list[str], dict[str, str | None]]:
    """Apply ``changes`` to the ``previous`` classes: the resulting classes, and where each previous class went
    (None: split, so its images need a human to choose)."""
    classes = list(previous)
    mapping: dict[str, str | None] = {c: c for c in previous}

    def require(names: Sequence[str], count: str, op: str) -> None:
        missing = [n for n in names if n not in classes]
        if missing:
            raise OntologyError(f"{op}: {', '.join(missing)} not in the classes {classes}")
        if count == "one" and len(names) != 1:
            raise OntologyError(f"{op} takes exactly one source class, got {list(names)}")

    def redirect(old: str, new: str | None) -> None:
        for source, target in mapping.items():
            if target == old:
                mapping[source] = new

    for change in changes:
        clashes = [t for t in change.targets if t in classes and t not in change.sources]
        if clashes:  # merging into an existing class names it among the sources: merge [a, b, c] into c
            raise OntologyError(f"{change.op}: {', '.join(clashes)} already exist")
        if change.op == "create":
            if change.sources:
                raise OntologyError("create takes no source classes")
            classes += change.targets
        elif change.op == "rename":
            require(change.sources, "one", "rename")
            if len(change.targets) != 1:
                raise OntologyError("rename takes exactly one target class")
            old, new = change.sources[0], change.targets[0]
            classes[classes.index(old)] = new
            redirect(old, new)
        elif change.op == "merge":
            require(change.sources, "many", "merge")
            if len(change.sources) < 2 or len(change.targets) != 1:
                raise OntologyError("merge takes two or more source classes and exactly one target")
            target = change.targets[0]
            classes = [c for c in classes if c not in change.sources] + [target]
            for source in change.sources:
                redirect(source, target)
        elif change.op == "split":
            require(change.sources, "one", "split")
            if len(change.targets) < 2:
                raise OntologyError("split takes one source class and two or more targets")
            classes = [c for c in classes if c != change.sources[0]] + list(change.targets)
            redirect(change.sources[0], None)
    return classes, mapping


class Ontology:
    """Every published version, oldest first."""

    def __init__(self, versions: Sequence[OntologyVersion]):
        self.versions = {v.version: v for v in versions}
        self._steps: dict[int, dict[str, str | None]] = {}
        for v in sorted(self.versions.values(), key=lambda v: v.version):
            if v.version - 1 in self.versions:
                _, self._steps[v.version] = step(self.versions[v.version - 1].classes, v.changes)

    @classmethod
    def load(cls, cat: Catalog, *, as_of: int | None = None) -> Ontology:
        """The ontology from the projection (only versions published at or before ``as_of``, if given)."""
        with cat.read() as conn:
            return cls.read(conn.connection.driver_connection, as_of=as_of)

    @classmethod
    def read(cls, conn: psycopg.Connection, *, as_of: int | None = None) -> Ontology:
        """As :meth:`load`, on a connection the caller holds (one round trip less for a query that follows)."""
        query = "SELECT version, classes, changes FROM projections.ontology_versions"
        if as_of is not None:
            query += " WHERE position <= %(p)s"
        rows = conn.execute(query + " ORDER BY version", {"p": as_of}).fetchall()
        return cls([OntologyVersion(v, tuple(classes), tuple(OntologyChange.model_validate(c) for c in changes))
                    for v, classes, changes in rows])

    @property
    def current(self) -> OntologyVersion:
        if not self.versions:
            raise OntologyError("no ontology has been published yet: run `visionledger ontology publish FILE`")
        return self.versions[max(self.versions)]

    def next_version(self, classes: Sequence[str], changes: Sequence[OntologyChange]) -> OntologyVersion:
        """Check that ``classes`` follow from the current version through ``changes``; the version to publish."""
        if not self.versions:
            if changes:
                raise OntologyError("the first ontology version lists its classes and no changes")
            if len(set(classes)) != len(classes):
                raise OntologyError(f"classes listed twice: {sorted({c for c in classes if list(classes).count(c) > 1})}")
            return OntologyVersion(1, tuple(classes))
        current = self.current
        derived, _ = step(current.classes, changes)
        if sorted(derived) != sorted(classes):
            raise OntologyError(
                f"version {current.version + 1} lists {sorted(classes)}, but applying its changes to version "
                f"{current.version} {sorted(current.classes)} gives {sorted(derived)}: every class that appears, "
                "disappears or is renamed needs a create, rename, merge or split"
            )
        return OntologyVersion(current.version + 1, tuple(classes), tuple(changes))

    def resolve(self, label: str, version: int) -> str | None:
        """The current class of a label recorded under ``version``; None when a split made it ambiguous."""
        if version not in self.versions or label not in self.versions[version].classes:
            raise OntologyError(f"{label!r} is not a class of ontology version {version}")
        current: str | None = label
        for v in range(version + 1, self.current.version + 1):
            current = self._steps[v].get(current)
            if current is None:
                return None
        return current

    def recorded_names(self, current_class: str) -> list[tuple[str, int]]:
        """Every (class name, version) whose labels now read as ``current_class``: a query for the current
        class asks for all of them."""
        if current_class not in self.current.classes:
            raise OntologyError(f"unknown class {current_class!r}; known classes: {', '.join(self.current.classes)}")
        return [(name, v) for v, version in sorted(self.versions.items()) for name in version.classes
                if self.resolve(name, v) == current_class]
