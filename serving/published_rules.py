"""Part rule sets put in force through the catalog: publishing one is a signed act (`RuleSetPublished`, with the
YAML as written), and the rule set in force for a line is its latest publication for that line, else the
latest for every line. `visionledger rules publish|list` use this; `serve` can load `rules_in_force`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from catalog import Catalog, RecordedEvent
from catalog.events import RULES_STREAM, RuleSetPublished
from catalog.ontology import OK_CLASS, Ontology
from serving.decision import RulesError, RuleSet, parse_rules


@dataclass(frozen=True)
class Publication:
    """One recorded publication and the rule set it put in force."""

    event: RecordedEvent
    rules: RuleSet

    @property
    def line(self) -> str | None:
        return self.event.payload.get("line")


def publications(cat: Catalog) -> list[Publication]:
    """Every rule set published, oldest first, each read back from its recorded text."""
    return [_publication(e) for e in cat.store.read_stream(RULES_STREAM)]


def rules_in_force(cat: Catalog, line: str | None) -> Publication | None:
    """The latest publication for ``line``, else the latest for every line (``line`` None: only that); None
    when none was published."""
    found = publications(cat)
    for scope in (line, None):
        for publication in reversed(found):
            if publication.line == scope:
                return publication
    return None


def publish_rules(cat: Catalog, path: Path, *, reason: str, line: str | None,
                  signed: Mapping[str, str]) -> tuple[RuleSetPublished, bool]:
    """Put the rule set in the YAML file ``path`` in force for ``line`` (None: every line without its own),
    signed (``signed``: `identity.signatures.Signature.metadata()`). The file is validated as the server
    loads rules, and its classes against the current ontology. Returns the event and whether it was recorded
    (False: that exact rule set is in force there already)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules: {exc}") from None
    rules = parse_rules(text, origin=str(path))
    _check_classes(cat, rules)
    event = RuleSetPublished(rules_version=rules.rules_version, text=text,
                             text_sha256=hashlib.sha256(text.encode()).hexdigest(), line=line, reason=reason)
    found = publications(cat)
    written = f"{rules.name}@{rules.version}"
    for publication in found:  # a version names one rule set: an edit needs a new version, or it shows as none
        if publication.rules.rules_version.startswith(written + "+") \
                and publication.rules.rules_version != rules.rules_version:
            raise RulesError(f"{written} was published before with other rules "
                             f"({publication.rules.rules_version}): bump `version` in {path}")
    current = [p for p in found if p.line == line]
    if current and current[-1].event.payload["rules_version"] == rules.rules_version:
        return event, False
    cat.record(event, occurred_at=datetime.now(UTC), source="rules publish", signed=signed)
    return event, True


def _publication(event: RecordedEvent) -> Publication:
    rules = parse_rules(event.payload["text"], origin=f"the rules published at position {event.position}")
    if rules.rules_version != event.payload["rules_version"]:  # the code's canonical form changed since
        raise RulesError(f"the rules published at position {event.position} read as {rules.rules_version}, "
                         f"not {event.payload['rules_version']} as recorded")
    return Publication(event, rules)


def _check_classes(cat: Catalog, rules: RuleSet) -> None:
    """Refuse rules naming a class the current ontology lacks (a misspelt class would never fire); with no
    ontology published yet there is nothing to check against."""
    ontology = Ontology.load(cat)
    if ontology.versions:
        rules.check_classes([c for c in ontology.current.classes if c != OK_CLASS])
