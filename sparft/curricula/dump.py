"""DUMP (Wang et al. 2025): a UCB bandit over data distributions scored by how much their
recent responses move the policy.

Arms are the clusters of the cluster stage (``arms: cluster``) or the data set's ``source``
column. An arm's score is the mean absolute GRPO advantage over its last ``window`` responses
plus the exploration bonus ``sqrt(2 ln(N + 1) / (n_j + 1))`` (N responses seen in all, n_j from
the arm); sampling weights are ``softmax(score / temperature)``. For every prompt of a step an
arm is drawn from the weights, then a prompt from that arm's shuffled queue. Scores update every
step from the step's advantages, as in the released code (which also feeds validation rewards
into the windows; sparft has no validation during training).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from sparft.checks import Check
from sparft.curricula.base import Curriculum, Group, shuffled
from sparft.curricula.registry import Method, Strategy
from sparft.curricula.sparft import arm_members, arm_pulls_check

if TYPE_CHECKING:
    from sparft.config import Params


class DumpConfig(BaseModel):
    """The ``dump`` section."""

    model_config = ConfigDict(extra="forbid")

    arms: Literal["cluster", "source"] = Field(
        "cluster", description="What an arm is: a cluster of the cluster stage, or a source."
    )
    window: int = Field(300, ge=1, description="Recent responses per arm in its score.")
    temperature: float = Field(0.1, gt=0.0, description="Softmax temperature of the scores.")


class DumpCurriculum(Curriculum):
    """UCB on mean |advantage| per distribution, sampled by softmax."""

    def __init__(self, frame: pd.DataFrame, cfg: DumpConfig, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        self.cfg = cfg
        labels, self.members = arm_members(self.frame, cfg.arms, "dump")
        self.arm_labels = [str(label) for label in labels]
        self.arm_of = {qid: a for a, ids in enumerate(self.members) for qid in ids}
        self.windows: list[deque[float]] = [deque(maxlen=cfg.window) for _ in labels]
        self.responses = np.zeros(len(labels), dtype=np.int64)
        self.queues: list[list[str]] = [[] for _ in labels]

    def scores(self) -> np.ndarray:
        total = float(self.responses.sum())
        mean_abs = np.array([np.mean(w) if w else 0.0 for w in self.windows])
        return mean_abs + np.sqrt(2.0 * math.log(total + 1.0) / (self.responses + 1.0))

    def weights(self) -> np.ndarray:
        logits = self.scores() / self.cfg.temperature
        w = np.exp(logits - logits.max())
        return w / w.sum()

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        draws = self.rng.choice(len(self.members), size=n, p=self.weights())
        picked: list[str] = []
        for arm in draws:
            if not self.queues[arm]:
                self.queues[arm] = shuffled(self.members[arm], self.rng)
            picked.append(self.queues[arm].pop())
        counts = np.bincount(draws, minlength=len(self.members))
        arm = int(np.argmax(counts))
        return picked, {"arm": arm, "cluster": self.arm_labels[arm]}

    def _learn(self, groups: Sequence[Group]) -> dict[str, Any]:
        for group in groups:
            arm = self.arm_of[group.prompt_id]
            self.windows[arm].extend(np.abs(np.asarray(group.advantages, dtype=float)).tolist())
            self.responses[arm] += len(group.advantages)
        return {}

    def metrics(self) -> dict[str, float]:
        scores = self.scores()
        out: dict[str, float] = {}
        for arm, window in enumerate(self.windows):
            out[f"arm{arm}/score"] = float(scores[arm])
            out[f"arm{arm}/responses"] = float(self.responses[arm])
            if window:
                out[f"arm{arm}/mean_abs_advantage"] = float(np.mean(window))
        return out

    def _method_state(self) -> dict[str, Any]:
        return {
            "windows": [list(w) for w in self.windows],
            "responses": self.responses,
            "queues": self.queues,
        }

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.windows = [deque(w, maxlen=self.cfg.window) for w in state["windows"]]
        self.responses = np.asarray(state["responses"], dtype=np.int64)
        self.queues = [list(q) for q in state["queues"]]


def preflight(cfg: DumpConfig, params: Params, probe: pd.DataFrame | None) -> list[Check]:
    """Enough arm draws for the UCB scores to rest on observations: DUMP draws an arm for every
    prompt, so a run pulls ``max_steps x prompts_per_step`` arms."""
    return [arm_pulls_check(params, cfg.arms, probe, params.train.prompts_per_step)]


METHOD = Method(
    name="dump",
    title="DUMP",
    paper="Wang et al., 2025, arXiv 2504.09710",
    summary="UCB over distributions (clusters) scored by mean |advantage|, sampled by softmax.",
    curriculum=DumpCurriculum,
    config=DumpConfig,
    section="dump",
    columns=lambda cfg: (str(cfg.arms),),
    preflight=preflight,
    strategies={
        "dump": Strategy(
            {"train.curriculum": "dump", "train.data": "full"},
            True,
            "DUMP: UCB over clusters by mean |advantage|",
        )
    },
    page="dump",
)
