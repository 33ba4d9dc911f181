"""GRPO advantages for groups of unequal size: TRL's formulas (``grpo_trainer.py``) with each
prompt's group taken from the curriculum's plan instead of a fixed ``num_generations``, so that a
curriculum may give each prompt its own rollout count and the advantages still match TRL's
wherever the groups are equal (``tests/test_trainer.py`` checks both).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from trl.trainer.utils import nanstd


def group_advantages(
    rewards_per_func: torch.Tensor,
    sizes: Sequence[int],
    weights: torch.Tensor,
    scale_rewards: str = "group",
    aggregation: str = "sum_then_normalize",
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO advantages for consecutive groups of the given sizes, and whether each row's group
    (or batch, under ``scale_rewards="batch"``) had zero reward spread.

    TRL's formulas with the group taken from ``sizes`` instead of a fixed ``num_generations``:
    rewards are the weighted sum over reward functions (NaN where every function returned
    None, left out of means and spreads); ``sum_then_normalize`` subtracts the group mean and
    divides by the group's (Bessel) standard deviation + 1e-4 (``scale_rewards="batch"``: the
    batch's; ``"none"``: no division); ``normalize_then_sum`` normalises each function within
    the group, sums, then normalises over the batch. A group of one rollout has advantage 0.
    """
    bounds = np.cumsum([0, *sizes])
    if bounds[-1] != rewards_per_func.shape[0]:
        raise ValueError(f"groups of {list(sizes)} rollouts but {rewards_per_func.shape[0]} rows")
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    weights = weights.to(rewards_per_func.device)
    spans = list(itertools.pairwise(bounds))

    def per_group(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        parts = [fn(x[a:b]).expand(b - a, *x.shape[1:]) for a, b in spans]
        return torch.cat(parts)

    def group_std(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            return torch.zeros_like(x[0])
        return nanstd(x, dim=0)

    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable] = torch.nan
        mean = per_group(rewards, lambda x: torch.nanmean(x))
        if scale_rewards in ("group", "none"):
            std = per_group(rewards, group_std)
        elif scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else rewards * 0
        else:
            raise ValueError(f"unknown scale_rewards {scale_rewards!r}")
        advantages = rewards - mean
        if scale_rewards != "none":
            advantages = advantages / (std + 1e-4)
    elif aggregation == "normalize_then_sum":
        mean_k = per_group(rewards_per_func, lambda x: torch.nanmean(x, dim=0))
        std_k = per_group(rewards_per_func, group_std)
        rewards = (((rewards_per_func - mean_k) / (std_k + 1e-4)) * weights.unsqueeze(0)).nansum(1)
        rewards[unscorable] = torch.nan
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else rewards * 0
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)
    else:
        raise ValueError(f"unknown multi_objective_aggregation {aggregation!r}")
    zero_std = torch.isclose(std, torch.zeros_like(std))
    return torch.nan_to_num(advantages, nan=0.0), zero_std
