"""Strategy comparison: which data-selection method trains fastest, and what the runs support.

A strategy is a named set of params overrides (``STRATEGIES``, from the methods' registry entries).
Modifiers change any of them: ``+knapsack``, ``+variance`` and ``+replay`` add an allocator or
rollout replay; ``+fp32``, ``+bf16-mixed`` and ``+bf16`` set the training precision; ``+subset``
and ``+full`` set the training pool, so ``uniform+subset`` and ``sparft+full`` measure the selected
subset's effect and the bandit's apart. Every strategy trains from the same base model with the
same seeds and is checked on one fixed held-out set at the same steps
(``sparft.training.heldout``), so runs pair question by question and seed by seed. The statistics
here:

- per strategy and check, the mean accuracy over seeds with a seed-level t interval (the
  question set's sampling error included), and a two-level bootstrap ``spread`` (seeds, then
  questions) that describes the runs but is no test: over 3 seeds it cannot leave their range;
- against ``uniform`` (and any pair named in ``compare.pairs``), at every check: the paired
  difference, its t interval, an exact sign-flip p over seeds, rliable's probability of
  improvement, a verdict (``ahead``/``behind`` only when the interval excludes 0 and p < 0.05,
  else ``not separable``), the minimum detectable difference and the seeds needed for 3 and 5
  points (``sparft.seed_stats``); Holm's adjustment across strategies beside the raw p;
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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sparft.curricula.registry import STRATEGIES
from sparft.seed_stats import holm, mde, mean_test, paired_test, seeds_needed
from sparft.training import Precision

BASELINE = "uniform"


MODIFIERS: dict[str, dict[str, Any]] = {
    "knapsack": {"train.allocation": "knapsack"},
    "variance": {"train.allocation": "variance"},
    "replay": {"train.replay.enabled": True},
    # controls: the same method on the other pool, so subset and curriculum are measured apart
    "subset": {"train.data": "subset"},
    "full": {"train.data": "full"},
    **{p: {"train.precision": p} for p in get_args(Precision) if p != "auto"},
}


class CompareConfig(BaseModel):
    """The ``compare`` section: what ``sparft compare-strategies`` runs and how it judges."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[str] = Field(
        default_factory=lambda: list(STRATEGIES),
        description="Names from STRATEGIES, each optionally +knapsack, +variance, +replay, a "
        "precision (+fp32, +bf16-mixed, +bf16) or a pool (+subset, +full).",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    eval_every: int = Field(4, ge=1, description="Steps between held-out checks.")
    scale: dict[str, Any] = Field(
        default_factory=dict,
        description="Params (dotted keys) every stage of the comparison runs under, the shared "
        "ones included: the scale at which strategies can differ, kept apart from the small "
        "defaults of `sparft run`. `--set` overrides come after them and win.",
    )
    pairs: list[str] = Field(
        default_factory=list,
        description="Pairs tested beside each strategy against uniform, as A:B (e.g. "
        "sparft:uniform+subset).",
    )
    bootstrap: int = Field(
        2000,
        ge=100,
        description="Resamples of the descriptive spread and of rliable's probability of "
        "improvement interval.",
    )
    level: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals.")
    parallel: int = Field(1, ge=1, description="Variants trained at once.")
    target_mde: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="The minimum detectable difference against uniform the design aims at. Set, "
        "the first `pilot_seeds` seeds train first and their spread predicts each strategy's MDE "
        "at all seeds; a miss warns (under --strict, stops before the other seeds train).",
    )
    pilot_seeds: int = Field(
        3, ge=2, description="Seeds whose spread predicts the MDE when target_mde is set."
    )

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

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, pairs: list[str]) -> list[str]:
        for text in pairs:
            for name in parse_pair(text):
                strategy_overrides(name)
        return pairs

    @model_validator(mode="after")
    def _pairs_are_run(self) -> CompareConfig:
        for text in self.pairs:
            missing = [n for n in parse_pair(text) if n not in self.strategies]
            if missing:
                raise ValueError(f"pair {text!r}: {', '.join(missing)} not in compare.strategies")
        return self

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
        # the subset is selected on clusters of meaning and probed difficulty
        uses_probe = uses_probe or mod in ("knapsack", "subset")
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


# step -> seed -> that check's per-question correctness (or, from an old report, [accuracy])
Scores = dict[int, dict[int, np.ndarray]]


def as_bits(correct: np.ndarray) -> str:
    """One check's per-question correctness as a string of 0/1, the report's compact form."""
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool))


def scores_of(entry: dict[str, Any]) -> Scores:
    """A report entry's checks by step and seed: per-question correctness where the report kept
    it (``correct`` bit strings), else each seed's accuracy alone (older reports)."""
    out: Scores = {}
    for point in entry["curve"]:
        bits = point.get("correct")
        rows = (
            [np.frombuffer(b.encode(), dtype=np.uint8) - ord("0") for b in bits]
            if bits
            else [np.array([value]) for value in point["per_seed"]]
        )
        out[int(point["step"])] = {
            seed: row.astype(float) for seed, row in zip(entry["seeds"], rows, strict=True)
        }
    return out


def compare_scores(
    a: Scores, b: Scores, level: float = 0.95, reps: int = 2000
) -> dict[str, Any] | None:
    """``a`` against ``b`` with seed-level inference (``sparft.seed_stats.paired_test``) at each
    check both have, over the seeds both ran: the last common check in full (with rliable's
    probability of improvement), every check in brief under ``by_step``. None when the two
    share no check or no seed."""
    steps = sorted(set(a) & set(b))
    tests = []
    for step in steps:
        seeds = sorted(set(a[step]) & set(b[step]))
        if not seeds:
            continue
        x = np.vstack([a[step][s] for s in seeds])
        y = np.vstack([b[step][s] for s in seeds])
        if x.shape != y.shape:  # one side kept only accuracies: compare those
            x, y = x.mean(axis=1, keepdims=True), y.mean(axis=1, keepdims=True)
        last = step == steps[-1]
        test = paired_test(x, y, level, poi_reps=reps if last else 0)
        tests.append({"step": step, "seeds": seeds, **test})
    if not tests:
        return None
    final = dict(tests[-1])
    final["by_step"] = [
        {k: t[k] for k in ("step", "difference", "ci", "p_value", "verdict", "mde")} for t in tests
    ]
    return final


def seed_level(
    scores: dict[str, Scores],
    level: float = 0.95,
    reps: int = 2000,
    baseline: str = BASELINE,
    pairs: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Every strategy against ``baseline`` (``vs_uniform``, with Holm's adjustment over the
    strategies at the final check, since several strategies against one baseline are several
    tests) and each named pair ``(a, b)``."""
    vs: dict[str, Any] = {}
    if baseline in scores:
        for name, entry in scores.items():
            if name != baseline:
                vs[name] = compare_scores(entry, scores[baseline], level, reps)
    adjusted = holm({k: v["p_value"] for k, v in vs.items() if v})
    for name, p in adjusted.items():
        vs[name]["p_value_holm"] = p
    named = {}
    for a, b in pairs or []:
        missing = [n for n in (a, b) if n not in scores]
        if missing:
            raise ValueError(f"pair {a}:{b}: no strategy {', '.join(missing)} in the comparison")
        named[f"{a} vs {b}"] = compare_scores(scores[a], scores[b], level, reps)
    return {"vs_baseline": vs, "pairs": named}


def format_interval(ci: list[float] | None, spec: str = "+.3f") -> str | None:
    """``[lo, hi]`` with both ends in ``spec``; None for no interval (one seed)."""
    return None if ci is None else f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def parse_pair(text: str) -> tuple[str, str]:
    """``A:B`` (strategy names hold ``-`` and ``+``, so a colon separates them)."""
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise ValueError(f"pair {text!r}: want STRATEGY:STRATEGY, e.g. sparft:uniform")
    return a.strip(), b.strip()


def summarise(
    runs: list[RunCurve],
    cfg: CompareConfig,
    arm_solve_rates: dict[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything ``strategies.json`` holds: per strategy its curve (mean, seed-level interval,
    bootstrap spread, per-seed accuracy and per-question correctness at each check), its gain
    over its start, the seed-level test against uniform, steps and rollouts to reach uniform's
    final accuracy, effective prompt ratio per step and arm picks; then the named pairs' tests."""
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
                    "ci": mean_test(matrix, cfg.level)["ci"],
                    "spread": _quantiles(bootstrap_means(matrix, cfg.bootstrap, rng), cfg.level),
                    "per_seed": matrix.mean(axis=1).tolist(),
                    "correct": [as_bits(row) for row in matrix],
                    "rollouts": float(np.mean([p["rollouts"] for p in at])) + probe,
                    "unique_seen": float(np.mean([p["unique_seen"] for p in at])),
                    "train_seconds": float(np.mean([p["train_seconds"] for p in at])),
                }
            )
        first, last = _matrix(group, steps[0]), _matrix(group, steps[-1])
        epr = pd.concat([r.history[["step", "effective_prompt_ratio"]] for r in group])
        epr_curve = epr.groupby("step")["effective_prompt_ratio"].mean()
        out[name] = {
            "seeds": [r.seed for r in group],
            "probe_rollouts": group[0].probe_rollouts,
            "curve": curve,
            "final": curve[-1],
            "gain": paired_test(last, first, cfg.level, poi_reps=0),
            "effective_prompt_ratio": {
                "mean": float(epr["effective_prompt_ratio"].mean()),
                "per_step": [[int(s) + 1, float(v)] for s, v in epr_curve.items()],
            },
            "arms": arm_table(group, arm_solve_rates or {}) if group[0].arm_picks else [],
        }
    scores = {name: scores_of(entry) for name, entry in out.items()}
    tests = seed_level(scores, cfg.level, cfg.bootstrap, pairs=[parse_pair(p) for p in cfg.pairs])
    for name, test in tests["vs_baseline"].items():
        out[name]["vs_uniform"] = test
    if BASELINE in out:
        base_final = out[BASELINE]["final"]
        for entry in out.values():
            steps = [p["step"] for p in entry["curve"]]
            means = [p["mean"] for p in entry["curve"]]
            hit = reach(steps, means, base_final["mean"])
            reached = next((p for p in entry["curve"] if p["step"] == hit), None)
            entry["reach_uniform_final"] = {
                "target": base_final["mean"],
                "step": hit,
                "rollouts": None if reached is None else reached["rollouts"],
                "train_seconds": None if reached is None else reached["train_seconds"],
            }
    return out, tests["pairs"]


def pilot_power(
    summary: dict[str, Any], seeds: int, target: float, level: float = 0.95
) -> dict[str, Any]:
    """Whether the design can meet ``target``: each strategy's minimum detectable difference
    against uniform predicted at ``seeds`` seeds from the pilot's spread of the paired
    differences (``summary`` from ``summarise`` over the pilot's seeds), and the seeds that
    ``target`` would need. The spread comes from few degrees of freedom, so this is a stop rule
    (a design the pilot already rules out is not worth the rest of its runs), not a result."""
    out: dict[str, Any] = {}
    for name, entry in summary.items():
        vs = entry.get("vs_uniform")
        if not vs or vs["seed_sd"] is None:
            continue
        question_var = (vs["question_se"] or 0.0) ** 2
        predicted = mde(vs["seed_sd"], seeds, question_var, level)
        needed = seeds_needed(target, vs["seed_sd"], question_var, level)
        out[name] = {
            "pilot_seeds": len(vs["seeds"]),
            "seed_sd": vs["seed_sd"],
            "question_se": vs["question_se"],
            "predicted_mde": predicted,
            # the verdict's power, not the t-based MDE alone: the sign-flip test binds at few
            # seeds, so an MDE within the target can still need more seeds than the design has
            "meets": needed is not None and needed <= seeds,
            "seeds_needed": needed,
        }
    return {
        "target_mde": target,
        "seeds": seeds,
        "strategies": out,
        "passed": all(entry["meets"] for entry in out.values()),
    }


def power_lines(power: dict[str, Any]) -> list[str]:
    """``pilot_power``'s verdict as lines: the summary, then each strategy that misses."""
    entries = power["strategies"]
    pilot = max((e["pilot_seeds"] for e in entries.values()), default=0)
    head = (
        f"power: the {pilot}-seed pilot predicts the MDE against {BASELINE} at "
        f"{power['seeds']} seeds {'within' if power['passed'] else 'above'} the target "
        f"{power['target_mde']:.3f}"
    )
    lines = [head]
    for name, e in entries.items():
        if not e["meets"]:
            needed, predicted = e["seeds_needed"], e["predicted_mde"]
            if needed is None:
                why = "the target needs more held-out questions"
            elif predicted > power["target_mde"]:
                why = f"the target needs {needed} seeds"
            else:
                why = f"within the target, but the verdict's sign-flip test needs {needed} seeds"
            lines.append(
                f"  {name}: predicted MDE {predicted:.3f} (seed sd of the differences "
                f"{e['seed_sd']:.3f}); {why}"
            )
    return lines


def target_line(strategies: dict[str, Any], target: float) -> str:
    """The measured MDE against ``target`` (``compare.target_mde``), per strategy: what the
    pilot predicted, checked against the seeds that ran."""
    met: list[str] = []
    missed: list[str] = []
    for name, entry in strategies.items():
        vs = entry.get("vs_uniform")
        if vs and vs.get("mde") is not None:
            (met if vs["mde"] <= target else missed).append(f"{name} ({vs['mde']:.3f})")
    parts = [
        f"{how} it for {', '.join(names)}"
        for how, names in (("within", met), ("above", missed))
        if names
    ]
    return f"measured MDE against {BASELINE} (target {target:.3f}): " + (
        "; ".join(parts) or "no strategy besides the baseline"
    )


def analyse_report(
    report: dict[str, Any],
    level: float | None = None,
    reps: int | None = None,
    pairs: list[tuple[str, str]] | None = None,
    baseline: str = BASELINE,
) -> dict[str, Any]:
    """The seed-level statistics of a saved ``compare-strategies`` report, recomputed from its
    checks: per strategy its final accuracy with a seed-level interval, its gain over its first
    check and ``vs_uniform`` (the test against ``baseline``), and each named pair. Reports
    written before question-level correctness was kept (no ``correct`` in their checks) are
    tested on per-seed accuracies alone, which leaves the question set's sampling error out
    (said in ``question_level``). The report's preflight checks are passed on as saved (None
    for a report written before they were kept)."""
    if not isinstance(report.get("strategies"), dict) or not report["strategies"]:
        raise ValueError("not a compare-strategies report: no 'strategies' mapping")
    saved = report.get("settings", {})
    level = level if level is not None else float(saved.get("level", 0.95))
    reps = reps if reps is not None else int(saved.get("bootstrap", 2000))
    entries = report["strategies"]
    for name, entry in entries.items():
        for key in ("seeds", "curve"):
            if key not in entry:
                raise ValueError(f"strategies.{name}: no '{key}'")
    if baseline not in entries:
        raise ValueError(f"no {baseline!r} strategy to compare against (has: {', '.join(entries)})")
    scores = {name: scores_of(entry) for name, entry in entries.items()}
    tests = seed_level(scores, level, reps, baseline, pairs)
    out: dict[str, Any] = {}
    for name, entry in entries.items():
        first, final = (
            np.vstack([scores[name][int(point["step"])][s] for s in entry["seeds"]])
            for point in (entry["curve"][0], entry["curve"][-1])
        )
        out[name] = {
            "seeds": entry["seeds"],
            "step": int(entry["curve"][-1]["step"]),
            "accuracy": {"mean": float(final.mean()), "ci": mean_test(final, level)["ci"]},
            "gain": paired_test(final, first, level, poi_reps=0),
            "question_level": all(bool(p.get("correct")) for p in entry["curve"]),
        }
        if name != baseline:
            out[name]["vs_uniform"] = tests["vs_baseline"][name]
    return {
        "baseline": baseline,
        "level": level,
        "settings": saved,
        "preflight": report.get("preflight"),
        "power": report.get("power"),
        "merged": report.get("merged"),
        "strategies": out,
        "pairs": tests["pairs"],
    }
