"""Who is looking, and what they may do: the viewer's role and name come from the app's configuration
(`VISIONLEDGER_ROLE`, `VISIONLEDGER_USER`, set by `visionledger app --role --user`), and each role opens the
catalog as the database role that enforces it: analysts and auditors through read-only logins."""

from __future__ import annotations

import os
from dataclasses import dataclass

from identity.roles import DATABASE_ROLE, ROLES, Action

__all__ = ["DATABASE_ROLE", "ROLES", "Action", "RoleError", "Viewer"]


class RoleError(ValueError):
    """The configured role is not one the app knows."""


@dataclass(frozen=True)
class Viewer:
    role: str
    name: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise RoleError(f"unknown role {self.role!r}: set VISIONLEDGER_ROLE to one of {', '.join(ROLES)}")
        if not self.name.strip():
            raise RoleError("the viewer's name is empty: set VISIONLEDGER_USER")

    def can(self, action: Action) -> bool:
        return action in ROLES[self.role]

    @property
    def database_role(self) -> str:
        return DATABASE_ROLE[self.role]

    @property
    def actor(self) -> str:
        """What the events this viewer causes record as their actor."""
        return f"{self.role}:{self.name}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Viewer:
        env = dict(os.environ if env is None else env)
        return cls(role=env.get("VISIONLEDGER_ROLE", "auditor"), name=env.get("VISIONLEDGER_USER", "anonymous"))
