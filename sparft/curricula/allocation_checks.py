"""Preflight checks of the rollout allocators: the conditions under which ``variance`` (CurES)
and ``knapsack`` (Knapsack RL) do more than fixed allocation. Kept apart from the allocators,
whose settings class ``sparft.config`` reads: these checks read the whole ``Params``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sparft.checks import Check, ok, warn

if TYPE_CHECKING:
    import pandas as pd

    from sparft.config import Params


def variance_checks(params: Params, probe: pd.DataFrame | None) -> list[Check]:
    """CurES's counts can only differ between prompts when ``variance_min < num_generations <
    variance_max``: the step's budget is ``prompts_per_step x num_generations``, so at
    ``variance_min >= num_generations`` (or ``variance_max <= num_generations``) every prompt
    gets exactly ``num_generations`` and the run is plain fixed allocation."""
    cfg, group = params.allocation, params.train.num_generations
    name = "variance room"
    if cfg.variance_min < group < cfg.variance_max:
        return [
            ok(
                name,
                f"counts in [{cfg.variance_min}, {cfg.variance_max}] around "
                f"train.num_generations={group}",
            )
        ]
    fix: dict[str, int] = {}
    if cfg.variance_min >= group:
        if group >= 2:
            fix["allocation.variance_min"] = max(1, group // 2)
        else:
            group = cfg.variance_min + 1
            fix["train.num_generations"] = group
    if cfg.variance_max <= group:
        fix["allocation.variance_max"] = 2 * group
    per_step = params.train.prompts_per_step
    return [
        warn(
            name,
            f"{per_step} prompts x allocation.variance_min={cfg.variance_min} .. "
            f"variance_max={cfg.variance_max} must make {per_step} x "
            f"train.num_generations={params.train.num_generations}: every prompt gets exactly "
            f"{params.train.num_generations} rollouts (fixed allocation)",
            fix,
        )
    ]


def knapsack_checks(params: Params, probe: pd.DataFrame | None) -> list[Check]:
    """Knapsack RL trusts a prompt's solve rate only after ``knapsack_min_observed`` rollouts;
    the probe's ``k`` answers are a prompt's only rollouts before its first visit, so with fewer
    every first visit gets ``num_generations`` (fixed allocation)."""
    cfg = params.allocation
    if probe is not None and "k" in probe:
        k = int(probe["k"].fillna(0).median()) if len(probe) else 0
        where = "the probe's k column (median)"
    else:
        k = params.probe.k if params.probe.source == "model" else 0
        where = "probe.k" if params.probe.source == "model" else "probe.source=label: no answers"
    name = "knapsack estimates"
    if k >= cfg.knapsack_min_observed:
        return [ok(name, f"{k} probe rollouts per question ({where}) >= knapsack_min_observed")]
    fix: dict[str, object] = (
        {"allocation.knapsack_min_observed": k} if k >= 1 else {"probe.source": "model"}
    )
    return [
        warn(
            name,
            f"{k} probe rollouts per question ({where}) < allocation.knapsack_min_observed="
            f"{cfg.knapsack_min_observed}: every prompt's first visit gets "
            f"train.num_generations={params.train.num_generations} (fixed allocation); "
            f"or raise probe.k to {cfg.knapsack_min_observed}",
            fix,
        )
    ]


# allocation method -> its preflight checks (fixed allocation has no condition)
ALLOCATION_CHECKS: dict[str, Callable[[Params, pd.DataFrame | None], list[Check]]] = {
    "variance": variance_checks,
    "knapsack": knapsack_checks,
}


def allocation_checks(method: str, params: Params, probe: pd.DataFrame | None) -> list[Check]:
    """The preflight checks of allocation ``method`` (none for ``fixed``)."""
    checks = ALLOCATION_CHECKS.get(method)
    return checks(params, probe) if checks else []
