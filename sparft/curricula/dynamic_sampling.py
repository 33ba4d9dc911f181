"""DAPO's dynamic sampling (Yu et al., 2025, arXiv 2503.14476): generate groups and train only on
those whose rewards differ.

Each step draws ``train.prompts_per_step`` prompts in the uniform order, ``num_generations``
rollouts each, and keeps the groups whose rewards are not all equal (a group with equal rewards
has zero advantage everywhere: no GRPO gradient). While fewer than ``prompts_per_step`` groups
are kept and fewer than ``max_gen_batches`` batches were generated, it draws the next batch of
as many prompts. The first ``prompts_per_step`` kept groups, in generation order, make the step's
batch; the surplus is dropped, not carried to the next step (as in verl's recipe). Every generated
rollout counts in ``rollouts_total``: the comparison is at matched compute.

Choices (``../shared/docs/ALGORITHMS.md``, verl's ``recipe/dapo``):

- a generation batch has the training batch's size (verl's default ``gen_batch_size``; the
  paper's script over-samples 3x, which here is ``max_gen_batches`` rounds of one batch);
- ``metric: reward`` keeps groups whose total rewards differ (what gives a gradient);
  ``correct`` keeps those with 0 < #correct < G, the paper's condition;
- at the cap verl raises; MoPPS's copy trains on a short batch. Here ``at_cap: fill`` completes
  the batch with the earliest dropped groups (zero advantage: they add no gradient, so the step is
  the kept groups' update, diluted as plain GRPO's would be) and ``at_cap: error`` is verl's.
  A short batch is not offered: every process must train on the same number of rows.
- the allocator is ``fixed``: kept groups fill the step's rows exactly only when all groups
  have ``num_generations`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sparft.checks import Check, ok, pending, warn
from sparft.curricula.base import Assignment, Group
from sparft.curricula.registry import Method, Strategy
from sparft.curricula.uniform import UniformCurriculum


class DynamicSamplingConfig(BaseModel):
    """The ``dynamic_sampling`` section."""

    model_config = ConfigDict(extra="forbid")

    max_gen_batches: int = Field(
        4, ge=1, description="Generation batches per step at most (MoPPS's DAPO baseline: 4)."
    )
    metric: Literal["reward", "correct"] = Field(
        "reward",
        description="reward: keep groups whose total rewards differ; correct: 0 < #correct < G.",
    )
    at_cap: Literal["fill", "error"] = Field(
        "fill",
        description="Still short after max_gen_batches: fill with dropped groups, or stop (verl).",
    )


class DynamicSamplingCurriculum(UniformCurriculum):
    """The uniform order, with further generation batches until the step has enough groups that
    teach (``more``) and only those trained on (``keep``)."""

    @classmethod
    def allocation_method(cls, train: Any) -> str:
        if train.allocation not in ("auto", "fixed"):
            raise ValueError(
                f"train.curriculum=dynamic-sampling with train.allocation={train.allocation}: "
                "not done (kept groups fill a step's rows exactly only with the fixed allocator)"
            )
        return "fixed"

    def __init__(self, frame: Any, cfg: DynamicSamplingConfig | None = None, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        self.cfg = cfg or DynamicSamplingConfig()
        self.want = 0  # groups the step trains on (its first round's prompts)

    def plan(self, n_prompts: int, budget: int) -> list[Assignment]:
        self.want = n_prompts
        return super().plan(n_prompts, budget)

    def _teaches(self, group: Group) -> bool:
        if self.cfg.metric == "reward":
            return group.informative
        solved = float(np.sum(group.correct))
        return 0.0 < solved < len(group.correct)

    def more(self, groups: Sequence[Group]) -> list[Assignment]:
        kept = sum(self._teaches(g) for g in groups)
        if kept >= self.want or self._rounds >= self.cfg.max_gen_batches:
            return []
        return self._plan_more(self.want, sum(len(g.rewards) for g in groups[: self.want]))

    def keep(self, groups: Sequence[Group]) -> list[int]:
        teach = [i for i, g in enumerate(groups) if self._teaches(g)]
        if len(teach) >= self.want:
            return teach[: self.want]
        if self.cfg.at_cap == "error":
            raise RuntimeError(
                f"dynamic-sampling: {len(teach)} of {len(groups)} generated groups had differing "
                f"rewards after {self.cfg.max_gen_batches} generation batches, fewer than the "
                f"step's {self.want} (dynamic_sampling.at_cap: error). Raise "
                "dynamic_sampling.max_gen_batches, or set at_cap: fill"
            )
        rest = [i for i in range(len(groups)) if i not in set(teach)]
        return sorted(teach + rest[: self.want - len(teach)])


def preflight(cfg: DynamicSamplingConfig, params: Any, probe: Any | None) -> list[Check]:
    """With the probe's solve rates: the expected share of groups that teach, and whether
    ``max_gen_batches`` batches fill a step on average."""
    name = "dynamic-sampling keep rate"
    if params.probe.source == "label":
        return [ok(name, "no probe solve rates: the keep rate is measured during training")]
    if probe is None or not {"k", "n_correct"} <= set(probe.columns):
        return [pending(name)]
    k = probe["k"].fillna(0).to_numpy(dtype=float)
    rate = probe["n_correct"].fillna(0).to_numpy(dtype=float) / np.maximum(k, 1)
    g = params.train.num_generations
    keep = float(np.mean(1.0 - rate**g - (1.0 - rate) ** g))
    filled = keep * cfg.max_gen_batches
    detail = (
        f"a group of {g} has differing answers with probability {keep:.2f} at the probe's solve "
        f"rates; {cfg.max_gen_batches} batches keep {filled:.2f} of a step's prompts on average"
    )
    if filled >= 1.0:
        return [ok(name, detail)]
    return [
        warn(
            name,
            detail + ": most steps end at the cap (filled with groups that teach nothing, "
            "or stopped with at_cap: error)",
            {"dynamic_sampling.max_gen_batches": int(np.ceil(1.0 / max(keep, 1e-3)))},
        )
    ]


METHOD: Method[DynamicSamplingConfig] = Method(
    name="dynamic-sampling",
    title="Dynamic sampling (DAPO)",
    paper="Yu et al., 2025, arXiv 2503.14476",
    summary="Uniform order; generation batches until the step has enough groups whose rewards "
    "differ, only those trained on; every generated rollout counted.",
    curriculum=DynamicSamplingCurriculum,
    config=DynamicSamplingConfig,
    section="dynamic_sampling",
    preflight=preflight,
    strategies={
        "dynamic-sampling": Strategy(
            {"train.curriculum": "dynamic-sampling", "train.data": "full"},
            False,
            "DAPO's dynamic sampling: train only on groups whose rewards differ",
        )
    },
    page="dynamic-sampling",
)
