"""Rollout replay (DOTS+RR, Sun et al. 2025): train again on recent groups that still teach.

The buffer keeps the groups of recent steps: at most ``capacity``, one per question (its
newest), none whose rewards are all equal (they give GRPO no gradient), the oldest evicted
first. Each step trains on a share ``sigma`` of fresh rollouts and fills the rest of its budget
with whole groups drawn uniformly from the buffer (drawn, not removed, as in the released
code), so a step costs ``sigma`` of the rollouts it trains on.

Every group carries its token ids, its rewards per reward function, correctness, and the
behaviour policy's per-token log-probabilities (those of the policy that generated it, computed
by the training model at generation time), plus the reference model's when there is a KL term.
For a replayed row the loss is the decoupled form: with ``mu`` the behaviour policy, ``pi_old``
the policy at the start of the step and ``rho = pi / pi_old``,
``(pi_old / mu) * max(-A rho, -A clip(rho, 1 - eps, 1 + eps))``, the first factor unclipped.
For a fresh row ``pi_old = mu`` and this is TRL's own loss. (TRL's removed replay trainer
clipped against the behaviour policy instead.) The trainer applies it by handing TRL's loss
per-token advantages ``A * pi_old / mu``; the weight is positive, so it passes through the
clipped minimum unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class ReplayConfig(BaseModel):
    """The ``replay`` section."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Train on replayed groups beside fresh ones.")
    capacity: int = Field(512, ge=1, description="Groups kept, one per question, newest.")
    sigma: float = Field(
        0.5, gt=0.0, le=1.0, description="Share of each step's rollouts that are fresh."
    )


@dataclass
class StoredGroup:
    """One prompt's rollouts, as replay needs them (unpadded, one array per row)."""

    prompt_id: str
    step: int
    prompt_ids: list[np.ndarray]
    completion_ids: list[np.ndarray]
    rewards: np.ndarray  # (rows, reward functions)
    total: np.ndarray  # (rows,) weighted sum, for the all-equal test
    correct: np.ndarray  # (rows,)
    behaviour_logps: list[np.ndarray]  # per row, one per completion token
    ref_logps: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def informative(self) -> bool:
        finite = self.total[np.isfinite(self.total)]
        return finite.size > 1 and bool(np.ptp(finite) > 0)

    def state_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.ref_logps is None:
            out["ref_logps"] = []
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StoredGroup:
        arrays = {
            k: [np.asarray(a) for a in state[k]]
            for k in ("prompt_ids", "completion_ids", "behaviour_logps")
        }
        ref = [np.asarray(a) for a in state["ref_logps"]] or None
        return cls(
            prompt_id=str(state["prompt_id"]),
            step=int(state["step"]),
            rewards=np.asarray(state["rewards"], dtype=float),
            total=np.asarray(state["total"], dtype=float),
            correct=np.asarray(state["correct"], dtype=float),
            ref_logps=ref,
            **arrays,
        )


class ReplayBuffer:
    """Recent informative groups, one per question, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.groups: list[StoredGroup] = []  # oldest first

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, groups: Sequence[StoredGroup]) -> int:
        """Keep the informative ones (replacing an older group of the same question); returns
        how many were kept."""
        kept = 0
        for group in groups:
            if not group.informative:
                continue
            self.groups = [g for g in self.groups if g.prompt_id != group.prompt_id]
            self.groups.append(group)
            kept += 1
        del self.groups[: max(0, len(self.groups) - self.capacity)]
        return kept

    def sample(self, max_rows: int, rng: np.random.Generator) -> list[StoredGroup]:
        """Whole groups drawn uniformly without replacement while they fit in ``max_rows``."""
        picked: list[StoredGroup] = []
        room = max_rows
        for i in rng.permutation(len(self.groups)):
            group = self.groups[int(i)]
            if len(group) <= room:
                picked.append(group)
                room -= len(group)
            if room == 0:
                break
        return picked

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "groups": [g.state_dict() for g in self.groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.groups = [StoredGroup.from_state(g) for g in state["groups"]]
