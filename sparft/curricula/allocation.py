"""Rollout allocators: how a step's rollout budget is split between its prompts.

Any curriculum can use any allocator (``train.allocation``); ``auto`` takes the curriculum's own
(CurES: ``variance``; every other method: ``fixed``). Each returns one count per prompt, at least
1, summing to the budget exactly, so a step always costs what it was given.

* ``fixed``: the budget split evenly (``num_generations`` each), plain GRPO.
* ``knapsack`` (Knapsack RL, Li et al. 2025): a dynamic programme that maximises the expected
  value of the step's gradients, ``sum_i (1 - p_i^N_i - (1 - p_i)^N_i) * v(p_i)`` over the counts
  ``N_i``, where ``1 - p^N - (1-p)^N`` is the chance a group of N has unequal rewards and ``v``
  is the paper's information gain ``p (1 - p)^2`` (``value: nonzero`` drops it, keeping only the
  chance of a gradient). ``p_i`` is the solve rate of the prompt's last visit; a prompt with
  fewer than ``knapsack_min_observed`` observed rollouts has no reliable estimate and gets the
  default ``num_generations``. Each prompt gets at least ``knapsack_floor`` and at most
  ``knapsack_cap`` rollouts, and no more than its estimated need ``log(0.1) / log(max(p, 1-p))``
  (a 90% chance of an informative group); budget left over goes to the never-solved prompts
  (p = 0), then evenly to all, as the released code does.
* ``variance`` (CurES, Zeng et al. 2025): counts proportional to each prompt's gradient-variance
  term, clipped to ``[variance_min, variance_max]``. With correct and wrong answers' gradient
  norms taken as equal, the paper's term reduces to ``sigma_i = sqrt(p_i (1 - p_i))`` with
  ``p_i`` the prompt's Beta posterior mean; the released code instead measures per-response
  gradient norms of the embedding layer, which sparft does not (no extra backward passes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sparft.curricula.registry import Method, Strategy

if TYPE_CHECKING:
    from sparft.curricula.base import Curriculum

Allocation = Literal["auto", "fixed", "knapsack", "variance"]
_NEED_CONFIDENCE = 0.1


class AllocationConfig(BaseModel):
    """The ``allocation`` section: settings of the rollout allocators."""

    model_config = ConfigDict(extra="forbid")

    knapsack_floor: int = Field(2, ge=1, description="knapsack: fewest rollouts of a prompt.")
    knapsack_cap: int = Field(128, ge=1, description="knapsack: most rollouts of a prompt.")
    knapsack_value: Literal["info-gain", "nonzero"] = Field(
        "info-gain",
        description="knapsack: value of a prompt's group: chance of a gradient times p(1-p)^2 "
        "(the paper's information gain), or the chance alone.",
    )
    knapsack_min_observed: int = Field(
        4,
        ge=0,
        description="knapsack: rollouts observed (probe included) before a prompt's solve rate "
        "is trusted; below it a prompt gets num_generations. 4 is probe.k's default, so the "
        "probe's rates are used from the first step.",
    )
    variance_min: int = Field(
        2,
        ge=1,
        description="variance (CurES): fewest rollouts. 2, not the paper's 4: counts can only "
        "vary when variance_min < train.num_generations.",
    )
    variance_max: int = Field(16, ge=1, description="variance (CurES): most rollouts.")


def check_budget(
    method: str, cfg: AllocationConfig, n_prompts: int, group: int, budget: int
) -> None:
    """Raise ``ValueError`` when no allocation within the method's bounds meets the budget."""
    bounds = {
        "knapsack": (min(cfg.knapsack_floor, group), max(cfg.knapsack_cap, group)),
        "variance": (cfg.variance_min, cfg.variance_max),
    }.get(method)
    if bounds is None:
        return
    lo, hi = bounds
    if lo > hi or not n_prompts * lo <= budget <= n_prompts * hi:
        raise ValueError(
            f"train.allocation={method}: {n_prompts} prompts x [{lo}, {hi}] rollouts cannot "
            f"make the step budget of {budget} (train.prompts_per_step x train.num_generations)"
        )


def proportional_counts(weights: np.ndarray, total: int, lo: int, hi: int) -> np.ndarray:
    """Integers in ``[lo, hi]`` summing to ``total``, proportional to ``weights`` as far as the
    bounds allow: real shares ``clip(s * w_i, lo, hi)`` with the scale ``s`` found by bisection
    so they sum to ``total``, then rounded by largest remainder. Equal weights (or all zero)
    give an even split."""
    n = len(weights)
    if not n * lo <= total <= n * hi:
        raise ValueError(f"{n} counts in [{lo}, {hi}] cannot sum to {total}")
    w = np.clip(np.nan_to_num(np.asarray(weights, dtype=float), nan=0.0), 0.0, None)
    w = w + 1e-9 * (w.max() if w.max() > 0 else 1.0)  # a zero weight still takes what is left
    low, high = 0.0, hi / w.min()
    for _ in range(200):
        mid = (low + high) / 2
        if np.clip(mid * w, lo, hi).sum() < total:
            low = mid
        else:
            high = mid
    share = np.clip(high * w, lo, hi)
    counts = np.floor(share + 1e-9).astype(np.int64)
    remainder = share - counts
    for i in np.argsort(-remainder, kind="stable"):
        if counts.sum() >= total:
            break
        if counts[i] < hi:
            counts[i] += 1
    for i in np.argsort(remainder, kind="stable"):
        if counts.sum() <= total:
            break
        if counts[i] > lo:
            counts[i] -= 1
    return counts


def group_value(p: float, n: np.ndarray, value: str = "info-gain") -> np.ndarray:
    """Knapsack RL's value of a group of ``n`` rollouts of a prompt solved at rate ``p``."""
    n = np.asarray(n, dtype=float)
    informative = 1.0 - p**n - (1.0 - p) ** n
    return informative * (p * (1.0 - p) ** 2) if value == "info-gain" else informative


def need(p: float, cap: int) -> int:
    """Rollouts for a 90% chance that a group of a prompt solved at rate ``p`` has unequal
    rewards (``cap`` for p = 0 or 1, where no count is enough)."""
    q = max(p, 1.0 - p)
    if not 0.0 < p < 1.0:
        return cap
    return max(2, math.ceil(math.log(_NEED_CONFIDENCE) / math.log(q)))


def knapsack_counts(
    rates: np.ndarray, budget: int, floor: int, cap: int, value: str = "info-gain"
) -> np.ndarray:
    """Knapsack RL's allocation of ``budget`` over prompts with solve rates ``rates``.

    Dynamic programme over the prompts with 0 < p < 1, each in ``[floor, min(cap, need)]``,
    maximising the summed group values within the budget left after every other prompt has its
    floor; what is then left goes to the never-solved prompts (up to ``cap``), and what remains
    after that evenly to all prompts (up to ``cap``).
    """
    rates = np.asarray(rates, dtype=float)
    n = len(rates)
    if n * floor > budget or n * cap < budget:
        raise ValueError(f"{n} prompts x [{floor}, {cap}] rollouts cannot make {budget}")
    counts = np.full(n, floor, dtype=np.int64)
    items = [i for i in range(n) if 0.0 < rates[i] < 1.0]
    spare = budget - n * floor
    if items and spare > 0:
        best = np.full(spare + 1, -np.inf)
        best[0] = 0.0
        choice = np.zeros((len(items), spare + 1), dtype=np.int64)
        for row, i in enumerate(items):
            hi = min(cap, max(floor, need(rates[i], cap)), floor + spare) - floor
            extras = np.arange(hi + 1)
            gains = group_value(rates[i], floor + extras, value)
            new = np.full(spare + 1, -np.inf)
            for more, gain in zip(extras.tolist(), gains, strict=True):
                candidate = np.full(spare + 1, -np.inf)
                candidate[more:] = best[: spare + 1 - more] + gain
                better = candidate > new
                new[better] = candidate[better]
                choice[row, better] = more
            best = new
        used = int(np.argmax(best))  # the best total value over every budget up to the spare
        for row in range(len(items) - 1, -1, -1):
            extra = int(choice[row, used])
            counts[items[row]] += extra
            used -= extra
    left = budget - int(counts.sum())
    for group in (np.flatnonzero(rates == 0.0), np.arange(n)):
        while left > 0 and group.size and (counts[group] < cap).any():
            for at in group.tolist():
                if left and counts[at] < cap:
                    counts[at] += 1
                    left -= 1
    return counts


class Allocator:
    """Splits a step's budget between the curriculum's chosen prompts."""

    def __init__(self, method: str, cfg: AllocationConfig, group: int) -> None:
        if method not in ("fixed", "knapsack", "variance"):
            raise ValueError(f"unknown allocation {method!r} (allowed: fixed, knapsack, variance)")
        self.method = method
        self.cfg = cfg
        self.group = group

    def allocate(self, curriculum: Curriculum, ids: Sequence[str], budget: int) -> np.ndarray:
        n = len(ids)
        if self.method == "fixed":
            return proportional_counts(np.ones(n), budget, 1, budget)
        rates, observed = curriculum.estimates(ids)
        if self.method == "variance":
            p = curriculum.posterior(np.array([curriculum.index[i] for i in ids]))
            sigma = np.sqrt(p * (1.0 - p))
            return proportional_counts(sigma, budget, self.cfg.variance_min, self.cfg.variance_max)
        return self._knapsack(rates, observed, budget)

    def _knapsack(self, rates: np.ndarray, observed: np.ndarray, budget: int) -> np.ndarray:
        cfg = self.cfg
        floor, cap = min(cfg.knapsack_floor, self.group), max(cfg.knapsack_cap, self.group)
        known = np.isfinite(rates) & (observed >= cfg.knapsack_min_observed)
        counts = np.zeros(len(rates), dtype=np.int64)
        counts[~known] = self.group
        rest = budget - int(counts.sum())
        if known.any():
            counts[known] = knapsack_counts(rates[known], rest, floor, cap, cfg.knapsack_value)
        elif rest:
            counts = proportional_counts(np.ones(len(rates)), budget, 1, budget)
        return counts


def fixed_run_note(
    method: str, cfg: AllocationConfig, group: int, group_sizes: Sequence[Sequence[int]]
) -> str | None:
    """A note when an adaptive allocator gave every prompt of every step ``group`` rollouts:
    the run was plain fixed allocation, which a comparison would otherwise report as the
    method's result."""
    if method == "fixed" or not group_sizes or any(n != group for g in group_sizes for n in g):
        return None
    why = (
        f"no prompt reached allocation.knapsack_min_observed={cfg.knapsack_min_observed} observed"
        " rollouts (probe.k and earlier visits count); lower it, raise probe.k, or train longer"
        if method == "knapsack"
        else "the estimates never differed enough between prompts"
    )
    return f"{method} allocation gave every group train.num_generations={group} rollouts: {why}"


# Knapsack RL is an allocator, not a curriculum: its strategy runs it beside uniform prompts,
# and ``+knapsack`` adds it to any other strategy. Its checks are ALLOCATION_CHECKS'.
METHOD: Method[BaseModel] = Method(
    name="knapsack",
    title="Knapsack RL",
    paper="Li et al. (ByteDance Seed), 2025, arXiv 2509.25849",
    summary="Splits each step's rollout budget between prompts by a dynamic programme over "
    "their solve rates.",
    reads=("allocation",),
    strategies={
        "knapsack": Strategy(
            {"train.curriculum": "uniform", "train.data": "full", "train.allocation": "knapsack"},
            True,
            "uniform prompts, Knapsack RL's rollout allocation",
        )
    },
    page="knapsack",
)
