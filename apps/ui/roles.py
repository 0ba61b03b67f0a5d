"""Who is looking, and what they may do: a viewer is a person logged in (`apps.ui.session`) acting as one of
the roles the catalog grants them, or, in development mode only, a role and a name the app was started with
(`visionledger app --dev-as ROLE:USER`). Each role opens the catalog as the database role that enforces it:
analysts and auditors through read-only logins."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from identity.roles import DATABASE_ROLE, ROLES, Action

__all__ = ["DATABASE_ROLE", "DEV_VIEWER", "ROLES", "Action", "RoleError", "Viewer", "dev_viewer"]

# `ROLE:USER`: set by `visionledger app --dev-as`, it turns the login off. Development only.
DEV_VIEWER = "VISIONLEDGER_DEV_VIEWER"


class RoleError(ValueError):
    """The role is not one the app knows, or the person holds none."""


@dataclass(frozen=True)
class Viewer:
    name: str  # the username (in development mode, the name it was started with)
    role: str  # the one of their roles they act as now
    full_name: str = ""
    roles: tuple[str, ...] = ()  # every role the catalog grants them, for the role selector
    dev: bool = False  # development mode: nobody proved who they are

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RoleError(f"unknown role {self.role!r}: one of {', '.join(ROLES)}")
        if not self.name.strip():
            raise RoleError("the viewer's name is empty")

    def can(self, action: Action) -> bool:
        return action in ROLES[self.role]

    @property
    def database_role(self) -> str:
        return DATABASE_ROLE[self.role]

    @property
    def actor(self) -> str:
        """What the events this viewer causes record as their actor: the person (as `identity.people.Person`
        names them), or in development mode a name nobody vouched for."""
        return f"dev:{self.name}" if self.dev else f"user:{self.name}"


def dev_viewer(env: Mapping[str, str] | None = None) -> Viewer | None:
    """The viewer development mode names (`VISIONLEDGER_DEV_VIEWER=ROLE:USER`), or None: the login is required."""
    value = (os.environ if env is None else env).get(DEV_VIEWER, "").strip()
    if not value:
        return None
    role, _, name = value.partition(":")
    if not name.strip():
        raise RoleError(f"{DEV_VIEWER} is ROLE:USER, e.g. curator:ana (got {value!r})")
    return Viewer(name=name.strip(), role=role.strip(), roles=(role.strip(),), dev=True)
