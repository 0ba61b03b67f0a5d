"""The roles a person can hold, what each may do, and the catalog login each works through. The app, the CLI's
signed acts and `visionledger users grant` all check against this one table."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    EXCLUDE = "exclude"  # exclude or include images, with a reason (signed)
    REQUEST_REVIEW = "request_review"  # put images in a review queue
    LABEL = "label"  # confirm or correct a label from the review queue (a correction is signed)
    EXPORT = "export"  # download selections and trace reports
    DISPOSE = "dispose"  # overturn or confirm a part's decision (signed)
    PUBLISH_RULES = "publish_rules"  # change the part rule set the line decides by (signed)
    PROMOTE = "promote"  # put a model in service by hand (signed)


ROLES: dict[str, frozenset[Action]] = {
    "curator": frozenset({Action.EXCLUDE, Action.REQUEST_REVIEW, Action.EXPORT}),
    "annotator": frozenset({Action.LABEL, Action.EXPORT}),
    "analyst": frozenset({Action.EXPORT}),
    "auditor": frozenset({Action.EXPORT}),  # reads and exports; never writes
    "quality": frozenset({Action.DISPOSE, Action.PUBLISH_RULES, Action.EXPORT}),  # the plant's quality engineer
    "engineer": frozenset({Action.PROMOTE, Action.EXPORT}),  # the ML engineer
}
# The catalog's database login for each role: the writers' role for those who may write, read-only else.
DATABASE_ROLE = {"curator": "app", "annotator": "app", "analyst": "analyst", "auditor": "auditor", "quality": "app",
                 "engineer": "app"}


def roles_allowed(action: Action) -> list[str]:
    """The roles whose holders may do ``action``."""
    return [role for role, actions in ROLES.items() if action in actions]
