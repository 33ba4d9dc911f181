"""SPaRFT phase 2: a bandit picks a cluster (arm) per step; the step's prompts come from it.

The bandit and its settings are ``sparft.bandit`` (section ``bandit``). Within a cluster the
prompts are drawn from a shuffled queue, so a small cluster is cycled through rather than one
prompt repeated; the arm's observation is the step's solve rate over all its rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sparft.bandit import Bandit, BanditConfig, make_bandit
from sparft.curricula.base import Curriculum, Group, shuffled


def arm_members(frame: pd.DataFrame, column: str, method: str) -> tuple[list[Any], list[list[str]]]:
    """The distinct values of ``column`` (the arms) and each arm's prompt ids."""
    if column not in frame:
        raise ValueError(
            f"the {method} curriculum needs a '{column}' column: train on the select stage's "
            "output (data/subset.parquet) or the clustered questions"
        )
    labels = sorted(frame[column].dropna().unique().tolist())
    ids = frame["id"].astype(str)
    return labels, [ids[frame[column] == label].tolist() for label in labels]


class SparftCurriculum(Curriculum):
    """A bandit over the clusters of the cluster stage; one cluster per step."""

    @classmethod
    def needs_column(cls, cfg: Any) -> str | None:
        return "cluster"

    def __init__(self, frame: pd.DataFrame, cfg: BanditConfig, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        labels, self.members = arm_members(self.frame, "cluster", "sparft")
        self.arm_labels = [int(label) for label in labels]
        self.queues: list[list[str]] = [[] for _ in labels]
        self.bandit: Bandit = make_bandit(cfg, len(labels))

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        arm = self.bandit.select()
        picked: list[str] = []
        while len(picked) < n:
            if not self.queues[arm]:
                self.queues[arm] = shuffled(self.members[arm], self.rng)
            picked.append(self.queues[arm].pop())
        return picked, {"arm": arm, "cluster": self.arm_labels[arm]}

    def _learn(self, groups: Sequence[Group]) -> dict[str, Any]:
        correct = np.concatenate([g.correct for g in groups])
        reward = self.bandit.update(self._record["arm"], float(correct.mean()))
        return {"bandit_reward": reward}

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for arm, stats in enumerate(self.bandit.arm_stats()):
            for key in ("pulls", "last_solve_rate", "score"):
                value = float(stats.get(key, math.nan))
                if math.isfinite(value):  # never-pulled arms have no rate (nan), UCB index inf
                    out[f"arm{arm}/{key}"] = value
        return out

    def _method_state(self) -> dict[str, Any]:
        return {"queues": self.queues, "bandit": self.bandit.state_dict()}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.queues = [list(q) for q in state["queues"]]
        self.bandit.load_state_dict(state["bandit"])
