"""Strategy comparison: which data-selection method trains fastest, with confidence.

A strategy is a named set of params overrides (``STRATEGIES``; ``+knapsack``, ``+variance`` and
``+replay`` add an allocator or rollout replay to any of them, ``+fp32``, ``+bf16-mixed`` and
``+bf16`` set the training precision, so ``uniform+bf16-mixed`` measures what a faster precision
does to learning against ``uniform``, paired). Every strategy trains from the
same base model with the same seeds and is checked on one fixed held-out set at the same steps
(``sparft.heldout``), so runs pair question by question and seed by seed. The statistics here:

- per strategy and step, the mean accuracy over seeds and a 95% interval from a two-level
  bootstrap (seeds resampled, then questions), so it covers both the seed-to-seed spread and the
  finite question set;
- against ``uniform``, a paired bootstrap of the accuracy difference (the same seed and question
  draws for both sides);
- the steps, and rollouts, each strategy needs to reach uniform's final mean accuracy;
- for strategies with arms, each arm's share of picks against its questions' probe solve rate.

Rollouts count what a strategy spent to get there: training rollouts (DOTS's reference rollouts
included), plus the probe stage's when the strategy reads what the probe measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparft.train_config import Precision

BASELINE = "uniform"


@dataclass(frozen=True)
class Strategy:
    """Params overrides of one method, and whether it reads the probe stage's measurements."""

    overrides: dict[str, Any]
    uses_probe: bool
    description: str


STRATEGIES: dict[str, Strategy] = {
    "uniform": Strategy(
        {"train.curriculum": "uniform", "train.data": "full"},
        False,
        "plain GRPO, prompts drawn uniformly from every training question",
    ),
    "sparft": Strategy(
        {
            "train.curriculum": "sparft",
            "train.data": "subset",
            "bandit.reward": "negated-solve-rate",
        },
        True,
        "SPaRFT: bandit over clusters of the selected subset, reward 1 - solve rate",
    ),
    "sparft-lp": Strategy(
        {
            "train.curriculum": "sparft",
            "train.data": "subset",
            "bandit.reward": "learning-progress",
        },
        True,
        "SPaRFT with the learning-progress arm reward",
    ),
    "cures": Strategy(
        {"train.curriculum": "cures", "train.data": "full"},
        True,
        "CurES: prompts by solve-rate variance, rollouts by variance (auto allocation)",
    ),
    "dump": Strategy(
        {"train.curriculum": "dump", "train.data": "full"},
        True,
        "DUMP: UCB over clusters by mean |advantage|",
    ),
    "dots": Strategy(
        {"train.curriculum": "dots", "train.data": "full", "train.replay.enabled": True},
        True,
        "DOTS: predicted solve rate near alpha, with rollout replay",
    ),
    "knapsack": Strategy(
        {"train.curriculum": "uniform", "train.data": "full", "train.allocation": "knapsack"},
        True,
        "uniform prompts, Knapsack RL's rollout allocation",
    ),
}
MODIFIERS: dict[str, dict[str, Any]] = {
    "knapsack": {"train.allocation": "knapsack"},
    "variance": {"train.allocation": "variance"},
    "replay": {"train.replay.enabled": True},
    **{p: {"train.precision": p} for p in get_args(Precision) if p != "auto"},
}


class CompareConfig(BaseModel):
    """The ``compare`` section: what ``sparft compare-strategies`` runs and how it judges."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[str] = Field(
        default_factory=lambda: list(STRATEGIES),
        description="Names from STRATEGIES, each optionally +knapsack, +variance, +replay or a "
        "precision (+fp32, +bf16-mixed, +bf16).",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    eval_every: int = Field(4, ge=1, description="Steps between held-out checks.")
    scale: dict[str, Any] = Field(
        default_factory=dict,
        description="Params (dotted keys) every stage of the comparison runs under, the shared "
        "ones included: the scale at which strategies can differ, kept apart from the small "
        "defaults of `sparft run`. `--set` overrides come after them and win.",
    )
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples.")
    level: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals.")
    parallel: int = Field(1, ge=1, description="Variants trained at once.")

    @field_validator("scale")
    @classmethod
    def _dotted_keys(cls, scale: dict[str, Any]) -> dict[str, Any]:
        for key in scale:
            section, _, field = key.partition(".")
            if not field or section == "compare":
                raise ValueError(
                    f"scale key {key!r}: want section.field of a stage's section, not compare's"
                )
        return scale

    @field_validator("strategies")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            strategy_overrides(name)
        if len(set(names)) != len(names):
            raise ValueError(f"strategies repeat: {names}")
        return names


def strategy_overrides(name: str) -> tuple[dict[str, Any], bool]:
    """The overrides of ``base[+modifier...]`` and whether it uses the probe."""
    base, *mods = name.split("+")
    if base not in STRATEGIES:
        raise ValueError(f"unknown strategy {base!r} (strategies: {', '.join(STRATEGIES)})")
    strategy = STRATEGIES[base]
    overrides = dict(strategy.overrides)
    uses_probe = strategy.uses_probe
    for mod in mods:
        if mod not in MODIFIERS:
            raise ValueError(
                f"strategy {name!r}: unknown modifier {mod!r} (modifiers: {', '.join(MODIFIERS)})"
            )
        overrides |= MODIFIERS[mod]
        uses_probe = uses_probe or mod == "knapsack"
    return overrides, uses_probe


@dataclass
class RunCurve:
    """One strategy x seed: its held-out checks and its per-step training record."""

    strategy: str
    seed: int
    points: pd.DataFrame  # step, correct (list of bool), rollouts, unique_seen, train_seconds
    history: pd.DataFrame  # the train stage's: step, effective_prompt_ratio, arm, solve_rate
    probe_rollouts: int = 0
    arm_picks: dict[str, int] = field(default_factory=dict)


def _quantiles(values: np.ndarray, level: float) -> list[float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return [float(lo), float(hi)]


def bootstrap_means(correct: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Mean accuracy under ``draws`` two-level resamples of a (seeds, questions) 0/1 matrix."""
    seeds, questions = correct.shape
    s = rng.integers(0, seeds, size=(draws, seeds))
    q = rng.integers(0, questions, size=(draws, questions))
    return np.array([correct[s[i]][:, q[i]].mean() for i in range(draws)])


def paired_difference(
    a: np.ndarray, b: np.ndarray, draws: int, level: float, seed: int = 0
) -> dict[str, Any]:
    """Accuracy of ``a`` minus ``b`` (both (seeds, questions), seed i of one paired with seed i
    of the other): the observed difference, its paired bootstrap interval, and the share of
    resamples in which ``a`` is ahead."""
    if a.shape != b.shape:
        raise ValueError(f"paired runs differ in shape: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)
    seeds, questions = a.shape
    s = rng.integers(0, seeds, size=(draws, seeds))
    q = rng.integers(0, questions, size=(draws, questions))
    diff = a.astype(float) - b.astype(float)
    stats = np.array([diff[s[i]][:, q[i]].mean() for i in range(draws)])
    return {
        "difference": float(diff.mean()),
        "ci": _quantiles(stats, level),
        "share_ahead": float((stats > 0).mean()),
    }


def _matrix(runs: list[RunCurve], step: int) -> np.ndarray:
    rows = []
    for run in runs:
        at = run.points[run.points["step"] == step]
        if at.empty:
            raise ValueError(f"{run.strategy} seed {run.seed}: no held-out check at step {step}")
        rows.append(np.asarray(at["correct"].iloc[0], dtype=float))
    return np.vstack(rows)


def _common_steps(runs: list[RunCurve]) -> list[int]:
    steps = set(runs[0].points["step"].astype(int))
    for run in runs[1:]:
        steps &= set(run.points["step"].astype(int))
    return sorted(steps)


def reach(steps: list[int], means: list[float], target: float) -> int | None:
    """First step whose mean accuracy is at least ``target`` (None: never)."""
    for step, value in zip(steps, means, strict=True):
        if value >= target - 1e-12:
            return step
    return None


def arm_table(runs: list[RunCurve], arm_solve_rates: dict[str, float]) -> list[dict[str, Any]]:
    """Per arm, over all seeds: picks, share of picks, and the arm's probe solve rate."""
    picks: dict[str, int] = {}
    for run in runs:
        for arm, n in run.arm_picks.items():
            picks[arm] = picks.get(arm, 0) + int(n)
    total = sum(picks.values()) or 1
    return [
        {
            "arm": arm,
            "picks": n,
            "share": n / total,
            "probe_solve_rate": arm_solve_rates.get(arm),
        }
        for arm, n in sorted(picks.items(), key=lambda kv: kv[0])
    ]


def summarise(
    runs: list[RunCurve],
    cfg: CompareConfig,
    arm_solve_rates: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything ``strategies.json`` holds: per strategy its curve with intervals, final
    accuracy, gain over its start, the paired difference against uniform, steps and rollouts to
    reach uniform's final accuracy, effective prompt ratio per step and arm picks."""
    rng = np.random.default_rng(0)
    by_strategy: dict[str, list[RunCurve]] = {}
    for run in runs:
        by_strategy.setdefault(run.strategy, []).append(run)
    for name, group in by_strategy.items():
        group.sort(key=lambda r: r.seed)
        seeds = [r.seed for r in group]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{name}: seed repeated in {seeds}")
    out: dict[str, Any] = {}
    for name, group in by_strategy.items():
        steps = _common_steps(group)
        probe = float(np.mean([r.probe_rollouts for r in group]))
        curve = []
        for step in steps:
            matrix = _matrix(group, step)
            at = [r.points[r.points["step"] == step].iloc[0] for r in group]
            curve.append(
                {
                    "step": step,
                    "mean": float(matrix.mean()),
                    "ci": _quantiles(bootstrap_means(matrix, cfg.bootstrap, rng), cfg.level),
                    "per_seed": matrix.mean(axis=1).tolist(),
                    "rollouts": float(np.mean([p["rollouts"] for p in at])) + probe,
                    "unique_seen": float(np.mean([p["unique_seen"] for p in at])),
                    "train_seconds": float(np.mean([p["train_seconds"] for p in at])),
                }
            )
        first, last = _matrix(group, steps[0]), _matrix(group, steps[-1])
        gain = paired_difference(last, first, cfg.bootstrap, cfg.level)
        epr = pd.concat([r.history[["step", "effective_prompt_ratio"]] for r in group])
        epr_curve = epr.groupby("step")["effective_prompt_ratio"].mean()
        out[name] = {
            "seeds": [r.seed for r in group],
            "probe_rollouts": group[0].probe_rollouts,
            "curve": curve,
            "final": curve[-1],
            "gain": gain,
            "gain_exceeds_interval": bool(gain["ci"][0] > 0),
            "effective_prompt_ratio": {
                "mean": float(epr["effective_prompt_ratio"].mean()),
                "per_step": [[int(s) + 1, float(v)] for s, v in epr_curve.items()],
            },
            "arms": arm_table(group, arm_solve_rates or {}) if group[0].arm_picks else [],
        }
    if BASELINE in out:
        base_group = by_strategy[BASELINE]
        base_final = out[BASELINE]["final"]
        for name, group in by_strategy.items():
            entry = out[name]
            steps = [p["step"] for p in entry["curve"]]
            means = [p["mean"] for p in entry["curve"]]
            hit = reach(steps, means, base_final["mean"])
            entry["reach_uniform_final"] = {
                "target": base_final["mean"],
                "step": hit,
                "rollouts": next((p["rollouts"] for p in entry["curve"] if p["step"] == hit), None),
            }
            if name == BASELINE:
                continue
            if [r.seed for r in group] != [r.seed for r in base_group]:
                entry["vs_uniform"] = None  # not paired: other seeds
                continue
            final_step = min(steps[-1], base_final["step"])
            entry["vs_uniform"] = {
                "step": final_step,
                **paired_difference(
                    _matrix(group, final_step),
                    _matrix(base_group, final_step),
                    cfg.bootstrap,
                    cfg.level,
                ),
            }
    return out
