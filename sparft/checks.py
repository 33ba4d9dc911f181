"""A preflight check's result: whether a method's conditions hold under the given settings.

A leaf module (nothing of sparft imported), so that every curriculum and allocator can declare
its own checks beside its code while ``sparft.preflight``, which collects them, imports the
curricula. A check that needs the probe's solve rates before the probe has run is ``pending``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Status = Literal["ok", "warn", "pending"]
AFTER_PROBE = "known after the probe"


@dataclass(frozen=True)
class Check:
    """One condition under which a method does what its paper describes.

    ``fix`` maps the params keys to change to values that clear the warning (empty when the
    check holds, or when no single setting can be named); ``strategy`` is the strategy (or
    curriculum) it was checked for, None for a condition of the whole run."""

    name: str
    status: Status
    message: str
    fix: dict[str, Any] = field(default_factory=dict)
    strategy: str | None = None

    @property
    def warns(self) -> bool:
        return self.status == "warn"

    def fix_text(self) -> str:
        """The fix as ``--set`` takes it, one ``key=value`` after another."""
        return " ".join(self.overrides())

    def overrides(self) -> list[str]:
        """The fix as ``section.key=value`` overrides (values in compact JSON, which is YAML:
        no spaces, so each is one shell word)."""
        compact = (",", ":")
        return [f"{key}={json.dumps(value, separators=compact)}" for key, value in self.fix.items()]

    def labelled(self, strategy: str | None) -> Check:
        return replace(self, strategy=strategy)

    def line(self) -> str:
        """One line for logs and the report's ``warnings``."""
        where = f" ({self.strategy})" if self.strategy else ""
        fix = f" (clear it: {self.fix_text()})" if self.fix else ""
        return f"{self.name}{where}: {self.message}{fix}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strategy": self.strategy,
            "status": self.status,
            "message": self.message,
            "fix": dict(self.fix),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        """The inverse of ``as_dict`` (a report's checks read back)."""
        return cls(
            data["name"], data["status"], data["message"], dict(data["fix"]), data["strategy"]
        )


def ok(name: str, message: str) -> Check:
    return Check(name, "ok", message)


def warn(name: str, message: str, fix: dict[str, Any]) -> Check:
    return Check(name, "warn", message, dict(fix))


def pending(name: str, what: str = AFTER_PROBE) -> Check:
    """A check whose evidence does not exist yet (``what`` says when it will)."""
    return Check(name, "pending", what)
