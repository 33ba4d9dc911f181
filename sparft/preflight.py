"""Preflight: before any training, do the settings let every method do what its paper describes?

Each method declares its own conditions (its registry entry's ``preflight``), each allocator its
own (``sparft.curricula.allocation_checks.ALLOCATION_CHECKS``); the conditions of the whole run are
here: the probe, training and held-out token budgets, the pool's share of questions the probe never
or always solved, and (for a comparison) whether its seeds can make a difference significant.
``run_checks`` collects them, per strategy of a comparison. A check that needs the probe's solve
rates is ``pending`` ("known after the probe") until the caller hands the probe's rows in; this
module reads no stage output itself, so the flows decide which outputs are current.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sparft.checks import AFTER_PROBE, Check, ok, pending, warn
from sparft.comparison import BASELINE, analyse_report, strategy_overrides
from sparft.config import ConfigError, Params, as_overrides, with_overrides
from sparft.curricula import curricula, preflight_checks
from sparft.seed_stats import mde, min_p_value, min_seeds

__all__ = [
    "AFTER_PROBE",
    "Check",
    "pool_extremes",
    "previous_seed_sd",
    "report",
    "run_checks",
    "seed_power",
    "strategy_params",
    "strict_error",
    "token_budgets",
]

MAX_EXTREME_SHARE = 0.5


def token_budgets(params: Params) -> Check:
    """The probe, training and the held-out checks should generate under one budget: an answer
    cut at the limit is scored wrong, so under another budget the probe measures a difficulty
    training does not meet, and the held-out checks (``evaluate.max_new_tokens``, which
    ``train.heldout`` uses as the evaluate stage does) judge the policy at a length it was not
    trained to. The fix sets the others to training's budget, the one that costs."""
    train = params.train.max_completion_length
    budgets = {
        # a probe that reads labels generates nothing
        "probe.max_new_tokens": params.probe.max_new_tokens
        if params.probe.source == "model"
        else None,
        "train.max_completion_length": train,
        "evaluate.max_new_tokens": params.evaluate.max_new_tokens,
    }
    shown = {key: value for key, value in budgets.items() if value is not None}
    found = ", ".join(f"{key}={value}" for key, value in shown.items())
    differ = {key: train for key, value in shown.items() if value != train}
    if not differ:
        return ok("token budgets", found)
    return warn(
        "token budgets",
        f"{found} differ: answers cut at a limit score wrong, so the probe and the held-out "
        "checks see another difficulty than training (or raise train.max_completion_length)",
        differ,
    )


def _greedy_grades(frame: pd.DataFrame) -> list[int] | None:
    """Arithmetic grades to keep so that at most half the pool is never or always solved:
    grades taken from the least extreme up while the pooled share stays at most 1/2."""
    by_grade = frame.groupby("difficulty_label")["extreme"].agg(["sum", "count"])
    if by_grade.empty:
        return None
    by_grade = by_grade.assign(share=by_grade["sum"] / by_grade["count"]).sort_values("share")
    kept: list[int] = []
    extreme = total = 0.0
    for grade, row in by_grade.iterrows():
        if (extreme + row["sum"]) / (total + row["count"]) > MAX_EXTREME_SHARE:
            break
        kept.append(int(float(str(grade))))
        extreme, total = extreme + row["sum"], total + row["count"]
    return sorted(kept) or None


def pool_extremes(params: Params, probe: pd.DataFrame | None) -> Check:
    """Questions the probe never or always solved give GRPO no gradient (every answer gets the
    same reward) and give the curricula nothing to choose between; over half of the pool so
    makes every method look alike. With arithmetic's grades in the rows, the fix is the grades
    to keep."""
    name = "learnable pool"
    if params.probe.source == "label":
        return ok(name, "probe.source=label: solve rates from labels, not measured")
    if probe is None or "solve_rate" not in probe:
        return pending(name)
    frame = probe.dropna(subset=["solve_rate"])
    arithmetic = params.data.spec == "arithmetic" and "difficulty_label" in frame
    if arithmetic:  # the pool the settings give, so the fix below can be checked too
        frame = frame[frame["difficulty_label"].isin([float(g) for g in params.arithmetic.grades])]
    if frame.empty:
        return pending(name, "no probed question in the pool")
    rates = frame["solve_rate"].to_numpy(dtype=float)
    never, always = float(np.mean(rates == 0.0)), float(np.mean(rates == 1.0))
    found = f"never solved {never:.0%}, always solved {always:.0%} of {len(frame)} questions"
    if never + always <= MAX_EXTREME_SHARE:
        return ok(name, found)
    fix: dict[str, Any] = {}
    if arithmetic:
        grades = _greedy_grades(frame.assign(extreme=(rates == 0.0) | (rates == 1.0)))
        if grades and grades != params.arithmetic.grades:
            fix["arithmetic.grades"] = grades
    other = (
        "a stronger generation.model or an easier data.spec"
        if never >= always
        else "a harder data.spec or a weaker generation.model"
    )
    return warn(name, f"{found}: over half give no gradient; otherwise {other}", fix)


def previous_seed_sd(previous: Mapping[str, Any] | None) -> float | None:
    """The seed-to-seed sd of paired differences against uniform in an earlier comparison
    report, pooled over its strategies (root mean square): ``vs_uniform.seed_sd`` as the report
    saved it, or, for a report written before that field, as ``analyse_report`` recomputes it
    from the per-seed accuracies."""
    strategies = (previous or {}).get("strategies") or {}
    tests = [e.get("vs_uniform") for n, e in strategies.items() if n != BASELINE]
    if not all(isinstance(t, Mapping) and "seed_sd" in t for t in tests):
        try:
            analysed = analyse_report(dict(previous or {}), reps=0)["strategies"]
        except (ValueError, KeyError, TypeError):  # not a comparison report: no spread to use
            return None
        tests = [e.get("vs_uniform") for n, e in analysed.items() if n != BASELINE]
    sds = [float(t["seed_sd"]) for t in tests if t and isinstance(t.get("seed_sd"), int | float)]
    sds = [s for s in sds if math.isfinite(s)]
    return float(math.sqrt(np.mean(np.square(sds)))) if sds else None


def seed_power(seeds: Sequence[int], previous: Mapping[str, Any] | None = None) -> Check:
    """An exact sign-flip test over n seeds cannot give p below 2 / 2^n, so below
    ``min_seeds()`` no difference can be called at 95%; and the minimum detectable difference
    (80% power) in units of the seed-to-seed sd of the paired differences, and in accuracy
    points from an earlier comparison's spread where there is one."""
    n, need = len(seeds), min_seeds()
    name = "seeds"
    unit = mde(1.0, n)
    sd = previous_seed_sd(previous)
    if unit is None:
        detect = "no minimum detectable difference with one seed"
    else:
        detect = f"minimum detectable difference {unit:.2f} x the seed sd of the differences"
        if sd is not None:
            detect += f" (= {unit * sd:.3f} accuracy at the previous comparison's sd {sd:.3f})"
    if n >= need:
        return ok(name, f"{n} seeds: smallest sign-flip p {min_p_value(n):.3g}; {detect}")
    fix_seeds = sorted(seeds)[:need]
    while len(fix_seeds) < need:
        fix_seeds.append(max(fix_seeds, default=-1) + 1)
    better = mde(1.0, need)
    return warn(
        name,
        f"{n} seed(s): the exact sign-flip test's smallest p is 2/2^{n} = {min_p_value(n):.3g}, "
        f"so no difference can reach p < 0.05 below {need} seeds; {detect}; at {need} seeds "
        f"{better:.2f} x sd (or --seed {need} times)",
        {"compare.seeds": fix_seeds},
    )


def strategy_params(params: Params, name: str) -> Params:
    """``params`` under strategy ``name``'s overrides, as the comparison trains it."""
    overrides, _ = strategy_overrides(name)
    return with_overrides(params, as_overrides(overrides), f"strategy {name}")


def run_checks(
    params: Params,
    probe: pd.DataFrame | None = None,
    seeds: Sequence[int] | None = None,
    strategies: Sequence[str] | None = None,
    previous: Mapping[str, Any] | None = None,
) -> list[Check]:
    """Every check for a run (``strategies`` None: ``train.curriculum``'s, labelled with it) or
    a comparison (each strategy's checks under its overrides, plus the seeds check over
    ``seeds``, default ``compare.seeds``). ``probe``: the probe's rows if its output is current
    (with ``cluster``, ``difficulty_label``, ``source`` where known), else None, which leaves
    what needs it pending. ``previous``: an earlier comparison report, for the MDE in points."""
    checks = [token_budgets(params), pool_extremes(params, probe)]
    if strategies is None:
        name = params.train.curriculum
        if name not in curricula():
            known = ", ".join(curricula())
            raise ConfigError(f"train.curriculum={name!r}: unknown (allowed: {known})")
        checks += [c.labelled(name) for c in preflight_checks(name, params, probe)]
        return checks
    for strategy in strategies:
        p = strategy_params(params, strategy)
        checks += [c.labelled(strategy) for c in preflight_checks(p.train.curriculum, p, probe)]
    checks.append(seed_power(list(seeds if seeds is not None else params.compare.seeds), previous))
    return checks


def report(checks: Sequence[Check]) -> dict[str, Any]:
    """What a report and MLflow keep: every check, and the warnings as one line each."""
    return {
        "checks": [c.as_dict() for c in checks],
        "warnings": [c.line() for c in checks if c.warns],
    }


def strict_error(checks: Sequence[Check]) -> ConfigError | None:
    """Under ``--strict``, the error every warning makes (None when there is none)."""
    warned = [c for c in checks if c.warns]
    if not warned:
        return None
    lines = "\n".join(f"  {c.line()}" for c in warned)
    return ConfigError(f"preflight (--strict): {len(warned)} warning(s):\n{lines}")
