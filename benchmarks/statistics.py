"""Calibration of the strategy comparison's seed-level statistics, measured on simulated runs.

No language model: (seeds x questions) correctness is drawn from a logistic model with a
question effect and a per-run seed effect, and every comparison goes through the code a real
one uses, ``sparft.seed_stats.paired_test``. Model, for strategy k, seed s, question q:

    correct ~ Bernoulli(sigmoid(logit(base) + b_q + u_ks + delta_k)),
    b_q ~ N(0, question_sd),  u_ks = seed_sd * (sqrt(rho) z_s + sqrt(1 - rho) e_ks)

(logit scale; ``rho`` is the share of the seed effect two strategies run with the same seed
have in common). Questions and seeds are drawn anew for every comparison. The default
``seed_sd`` comes from the 8-step pilot (``compare_all_8steps.json``, the scale ``make
compare`` runs): the logit sd whose simulated sd of per-seed accuracy differences matches the
pilot's. The planted difference is on the population (accuracy expected over questions and
seeds): the logit shift ``delta`` that gives it exactly is root-found on a quadrature.

Counted for each number of seeds, ``--comparisons`` times under the null (two identical
strategies) and as many with the planted difference:

- false positives: the verdict is not "not separable" (and, apart, the t interval excludes 0);
- coverage: the interval contains the true difference (0 under the null);
- detection of the planted difference by the verdict and by the interval alone, against the
  power ``seed_stats.power_of`` predicts from each comparison's own estimates and from the
  true parameters. With 5 seeds or fewer the verdict can never fire (the sign-flip test's floor
  2 / 2^n is at least 0.0625), so there the interval's detection is what checks the MDE;
- the mean reported minimum detectable difference.

Each rate comes with its Monte Carlo 95% interval (Wilson). For contrast, the two-level
percentile bootstrap the comparison used before (``sparft.comparison.paired_difference``, since
removed: seeds resampled, then questions; copied here) at 3 seeds. Results go to
``benchmarks/results/statistics_calibration.json``. About 45 s at the defaults on 2 cores.

    python benchmarks/statistics.py
    python benchmarks/statistics.py --seed-sd 0.2 --comparisons 2000 --seeds 6 8 10
"""

# ruff: noqa: E402  (the imports wait until sys.path is settled: see below)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _drop_own_folder() -> list[str]:
    """``sys.path`` without this file's folder (``''`` counts as the working directory)."""
    return [p for p in sys.path if Path(p or ".").resolve() != _HERE]


if __name__ == "statistics":
    # This file's name is the standard library's `statistics`: a sibling benchmark run as a
    # script (`python benchmarks/answers.py`, this folder first on sys.path) that imports the
    # standard module finds this file instead. Put the real module in sys.modules, which is
    # what the import statement returns once this body has run.
    import importlib

    _path, sys.path[:] = sys.path[:], _drop_own_folder()
    del sys.modules["statistics"]
    try:
        importlib.import_module("statistics")
    finally:
        sys.path[:] = _path
elif __name__ == "__main__":
    # Run as a script, this folder is sys.path[0], where this file shadows the standard
    # library's `statistics` for every library imported after it (seaborn, which rliable
    # depends on, does `from statistics import NormalDist`): drop the folder first.
    sys.path[:] = _drop_own_folder()

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import optimize, special, stats

from sparft import seed_stats
from sparft.io import write_json

ROOT = _HERE.parent
RESULTS = ROOT / "benchmarks" / "results"
PILOT = RESULTS / "compare_all_8steps.json"  # the scale `make compare` runs; 3 seeds
OTHER_PILOTS = (RESULTS / "compare_strategies_2seeds.json",)
BASELINE = "uniform"
# Assumed: the stored results keep no per-question correctness to estimate it from. 1.5 logit
# around base 0.3 puts a question one sd away at 9% or 66%, a spread like the held-out
# arithmetic's 8 grades. It barely matters for the paired test (question effects are shared
# by both sides); it sets how the planted shift and the Bernoulli noise map to accuracy.
QUESTION_SD = 1.5
LEVEL = 0.95

# wide enough for the tables when the output is not a terminal
console = Console(width=max(Console().width, 130))


@dataclass(frozen=True)
class Model:
    """The simulation's parameters; ``seed_sd`` and ``question_sd`` on the logit scale."""

    seed_sd: float
    question_sd: float = QUESTION_SD
    base: float = 0.3
    questions: int = 256
    rho: float = 0.0


def _seed_effects(model: Model, z_shared: np.ndarray, z_own: np.ndarray) -> np.ndarray:
    return model.seed_sd * (math.sqrt(model.rho) * z_shared + math.sqrt(1 - model.rho) * z_own)


def simulate(
    model: Model, seeds: int, comparisons: int, shift: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``comparisons`` pairs of (seeds x questions) 0/1 matrices, ``a`` shifted by ``shift``
    (logit) against ``b``; questions and seeds drawn anew for each pair. Seed i of ``a`` and of
    ``b`` share the ``rho`` part of their seed effect."""
    shape = (comparisons, seeds, 1)
    eta = special.logit(model.base) + rng.normal(
        0.0, model.question_sd, (comparisons, 1, model.questions)
    )
    shared = rng.standard_normal(shape)
    u_a = _seed_effects(model, shared, rng.standard_normal(shape))
    u_b = _seed_effects(model, shared, rng.standard_normal(shape))
    size = (comparisons, seeds, model.questions)
    a = rng.random(size) < special.expit(eta + u_a + shift)
    b = rng.random(size) < special.expit(eta + u_b)
    return a, b


def _population_accuracy(model: Model, shift: float, nodes: int = 201) -> float:
    """E[sigmoid(logit(base) + b + u + shift)] over questions and seeds: b + u is normal with
    variance question_sd^2 + seed_sd^2, so a 1-d Gauss-Hermite quadrature is exact to ~1e-12."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    scale = math.hypot(model.question_sd, model.seed_sd)
    values = special.expit(special.logit(model.base) + scale * x + shift)
    return float(values @ w / math.sqrt(2 * math.pi))


@cache
def planted_shift(model: Model, difference: float) -> float:
    """The logit shift whose population accuracy difference is exactly ``difference``."""
    base = _population_accuracy(model, 0.0)
    return float(
        optimize.brentq(
            lambda s: _population_accuracy(model, s) - base - difference, -20, 20, xtol=1e-12
        )
    )


@cache
def true_spread(
    model: Model, shift: float, question_sets: int = 100, draws: int = 2000, seed: int = 1
) -> tuple[float, float]:
    """``(seed_sd, question_var)`` on the accuracy scale, the two parameters ``power_of``
    takes, from the model rather than from data: the sd over seeds of one seed's accuracy
    difference on a fixed question set (Bernoulli noise included, averaged over question sets),
    and the variance over questions of a question's expected difference, divided by Q (what a
    new question set changes). Common random numbers, so it is smooth in the model's
    parameters (``calibrate_seed_sd`` root-finds on it)."""
    rng = np.random.default_rng(seed)
    x, w = np.polynomial.hermite_e.hermegauss(61)
    w = w / w.sum()
    q = model.questions
    seed_var, question_var = 0.0, 0.0
    for _ in range(question_sets):
        eta = special.logit(model.base) + rng.normal(0.0, model.question_sd, q)
        shared = rng.standard_normal((draws, 1))
        p_a = special.expit(
            eta + _seed_effects(model, shared, rng.standard_normal((draws, 1))) + shift
        )
        p_b = special.expit(eta + _seed_effects(model, shared, rng.standard_normal((draws, 1))))
        noise = ((p_a * (1 - p_a)).sum(axis=1) + (p_b * (1 - p_b)).sum(axis=1)) / q**2
        seed_var += float((p_a.mean(axis=1) - p_b.mean(axis=1)).var(ddof=1) + noise.mean())
        # a question's expected difference over seeds, by quadrature over u ~ N(0, seed_sd)
        grid = eta[:, None] + model.seed_sd * x[None, :]
        expected = (special.expit(grid + shift) - special.expit(grid)) @ w
        question_var += float(expected.var(ddof=1)) / q
    return math.sqrt(seed_var / question_sets), question_var / question_sets


def calibrate_seed_sd(target_sd: float, model: Model) -> float:
    """The logit ``seed_sd`` whose simulated sd of per-seed accuracy differences (``rho`` 0,
    Bernoulli noise included) is ``target_sd``; 0 when the noise alone already exceeds it."""

    def gap(sd: float) -> float:
        return true_spread(replace(model, seed_sd=sd), 0.0, 40, 1000)[0] - target_sd

    if gap(0.0) >= 0:
        return 0.0
    return float(optimize.brentq(gap, 0.0, 10.0, xtol=1e-4))


def pilot_spread(path: Path) -> dict[str, Any]:
    """Seed-to-seed spread at a comparison's last held-out step: the pooled sd of per-seed
    accuracy differences against the baseline (what the paired test sees) and the pooled sd
    of per-seed accuracies within a strategy, with their degrees of freedom."""
    data = json.loads(path.read_text())
    last = {
        name: np.asarray(s["curve"][-1]["per_seed"], dtype=float)
        for name, s in data["strategies"].items()
    }
    step = data["strategies"][BASELINE]["curve"][-1]["step"]
    base = last[BASELINE]
    diff_ss, diff_df, within_ss, within_df = 0.0, 0, 0.0, 0
    for name, acc in last.items():
        within_ss += float(((acc - acc.mean()) ** 2).sum())
        within_df += acc.size - 1
        if name != BASELINE and acc.size == base.size:
            d = acc - base
            diff_ss += float(((d - d.mean()) ** 2).sum())
            diff_df += d.size - 1
    return {
        "file": path.name,
        "step": step,
        "seeds": int(base.size),
        "questions": int(data["settings"]["heldout_questions"]),
        "strategies": sorted(last),
        "mean_accuracy": float(np.mean([acc.mean() for acc in last.values()])),
        "difference_sd": math.sqrt(diff_ss / diff_df),
        "difference_df": diff_df,
        "within_strategy_sd": math.sqrt(within_ss / within_df),
        "within_strategy_df": within_df,
        "per_seed": {name: acc.tolist() for name, acc in last.items()},
    }


def derive_seed_sd(question_sd: float) -> tuple[float, dict[str, Any]]:
    """The default logit ``seed_sd`` from the pilot, and how it was derived."""
    pilot = pilot_spread(PILOT)
    at_pilot = Model(0.0, question_sd, pilot["mean_accuracy"], pilot["questions"])
    sd = calibrate_seed_sd(pilot["difference_sd"], at_pilot)
    others = {}
    for path in OTHER_PILOTS:
        if path.exists():
            other = pilot_spread(path)
            model = Model(0.0, question_sd, other["mean_accuracy"], other["questions"])
            other["logit_seed_sd"] = calibrate_seed_sd(other["difference_sd"], model)
            others[other["file"]] = other
    within = calibrate_seed_sd(math.sqrt(2) * pilot["within_strategy_sd"], at_pilot)
    return sd, {
        "method": (
            "pooled sd over strategies of the per-seed accuracy differences against "
            f"'{BASELINE}' at the pilot's last held-out step; the logit seed_sd whose simulated "
            "sd of per-seed differences (rho 0, Bernoulli noise over the pilot's questions "
            "included, base = the pilot's mean accuracy) equals it, root-found by brentq"
        ),
        "pilot": pilot,
        "logit_seed_sd": sd,
        "logit_seed_sd_from_within_strategy_sd": within,
        "other_pilots": others,
        "note": (
            "the pilot's differences are dominated by the baseline's own spread (uniform "
            "0.637, 0.227, 0.469 at step 8); the within-strategy spread gives the smaller "
            "figure beside it. The 16-step lr 1e-5 pilot's differences are smaller than "
            "Bernoulli noise over its 256 questions alone, so it implies a seed_sd of 0: "
            "close runs answer the same questions alike, which independent Bernoulli draws "
            "overstate"
        ),
    }


def run_comparisons(
    a: np.ndarray, b: np.ndarray, difference: float, level: float = LEVEL
) -> dict[str, np.ndarray]:
    """``seed_stats.paired_test`` on each pair, and what it said, one entry per comparison."""
    fired, excludes, covers = [], [], []
    seed_sd, question_var, mde = [], [], []
    outs = [
        seed_stats.paired_test(x, y, level=level, poi_reps=0) for x, y in zip(a, b, strict=True)
    ]
    for out in outs:
        lo, hi = out["ci"]
        fired.append(out["verdict"] != seed_stats.NOT_SEPARABLE)
        excludes.append(lo > 0 or hi < 0)
        covers.append(lo <= difference <= hi)
        seed_sd.append(out["seed_sd"])
        question_var.append((out["question_se"] or 0.0) ** 2)
        mde.append(out["mde"])
    return {
        "fired": np.array(fired),
        "excludes": np.array(excludes),
        "covers": np.array(covers),
        "seed_sd": np.array(seed_sd),
        "question_var": np.array(question_var),
        "mde": np.array(mde, dtype=float),
    }


def rate(hits: np.ndarray) -> dict[str, Any]:
    """A share of comparisons with its Monte Carlo 95% interval (Wilson)."""
    k, n = int(np.sum(hits)), int(np.size(hits))
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"rate": k / n, "count": k, "of": n, "ci": [float(ci.low), float(ci.high)]}


def calibrate(
    model: Model,
    seeds: int,
    comparisons: int,
    difference: float,
    rng: np.random.Generator,
    level: float = LEVEL,
    null: bool = True,
    planted: bool = True,
    truth_sets: int = 100,
) -> dict[str, Any]:
    """False positives and coverage under the null, detection and coverage of the planted
    ``difference``, and the power predicted for it (true parameters from ``truth_sets``
    simulated question sets), at ``seeds`` seeds."""
    out: dict[str, Any] = {"seeds": seeds, "min_p_value": seed_stats.min_p_value(seeds)}
    if null:
        res = run_comparisons(*simulate(model, seeds, comparisons, 0.0, rng), 0.0, level)
        out["null"] = {
            "false_positive": rate(res["fired"]),
            "interval_false_positive": rate(res["excludes"]),
            "coverage": rate(res["covers"]),
            "mean_mde": float(res["mde"].mean()),
        }
    if planted:
        shift = planted_shift(model, difference)
        a, b = simulate(model, seeds, comparisons, shift, rng)
        res = run_comparisons(a, b, difference, level)
        sd, qvar = true_spread(model, shift, truth_sets)
        pairs = list(zip(res["seed_sd"], res["question_var"], strict=True))
        out["planted"] = {
            "detection": rate(res["fired"]),
            "predicted_power": {
                "from_truth": seed_stats.power_of(difference, sd, seeds, qvar, level),
                "from_estimates": float(
                    np.mean([seed_stats.power_of(difference, s, seeds, v, level) for s, v in pairs])
                ),
            },
            "interval_detection": rate(res["excludes"]),
            "predicted_interval_power": {
                "from_truth": seed_stats.interval_power(difference, sd, seeds, qvar, level),
                "from_estimates": float(
                    np.mean(
                        [
                            seed_stats.interval_power(difference, s, seeds, v, level)
                            for s, v in pairs
                        ]
                    )
                ),
            },
            "coverage": rate(res["covers"]),
            "mean_mde": float(res["mde"].mean()),
            "mean_seed_sd_estimate": float(res["seed_sd"].mean()),
            "true_seed_sd": sd,
            "true_question_var": qvar,
        }
    return out


def two_level_bootstrap(
    a: np.ndarray, b: np.ndarray, draws: int, level: float, seed: int = 0
) -> dict[str, Any]:
    """The withdrawn comparison interval, a copy of what ``sparft.comparison.paired_difference``
    computed before it was removed: a percentile interval of the paired accuracy difference
    over two-level resamples (seeds, then questions, the same draws for both sides)."""
    rng = np.random.default_rng(seed)
    seeds, questions = a.shape
    s = rng.integers(0, seeds, size=(draws, seeds))
    q = rng.integers(0, questions, size=(draws, questions))
    diff = a.astype(float) - b.astype(float)
    means = np.array([diff[s[i]][:, q[i]].mean() for i in range(draws)])
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return {"difference": float(diff.mean()), "ci": [float(lo), float(hi)]}


def bootstrap_contrast(
    model: Model,
    seeds: int,
    comparisons: int,
    draws: int,
    difference: float,
    rng: np.random.Generator,
    level: float = LEVEL,
) -> dict[str, Any]:
    """The percentile bootstrap's false positives and coverage, and the t interval's on the
    same simulated comparisons."""
    out: dict[str, Any] = {
        "seeds": seeds,
        "draws": draws,
        "method": "two_level_bootstrap: an inline copy of the removed "
        "sparft.comparison.paired_difference",
    }
    for name, shift, truth in (
        ("null", 0.0, 0.0),
        ("planted", planted_shift(model, difference), difference),
    ):
        a, b = simulate(model, seeds, comparisons, shift, rng)
        boot = [
            two_level_bootstrap(x, y, draws, level, seed=i)["ci"]
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        ]
        excludes = np.array([lo > 0 or hi < 0 for lo, hi in boot])
        covers = np.array([lo <= truth <= hi for lo, hi in boot])
        t = run_comparisons(a, b, truth, level)
        key = "false_positive" if name == "null" else "detection"
        out[name] = {
            f"bootstrap_{key}": rate(excludes),
            "bootstrap_coverage": rate(covers),
            f"t_interval_{key}": rate(t["excludes"]),
            "t_interval_coverage": rate(t["covers"]),
            "bootstrap_mean_width": float(np.mean([hi - lo for lo, hi in boot])),
        }
    return out


def per_call_ms(
    model: Model, seeds: list[int], rng: np.random.Generator, calls: int = 10
) -> dict[str, dict[str, float]]:
    """Milliseconds per call, by number of seeds, of ``paired_test`` as run here, of the
    original ``seeds_needed`` for both of ``seed_stats.TARGETS`` at the comparison's estimates,
    and of the sign-flip test (``scipy.stats.permutation_test``)."""
    out = {}
    for n in seeds:
        a, b = simulate(model, n, calls, 0.0, rng)
        clock = time.perf_counter()
        res = run_comparisons(a, b, 0.0)
        paired = time.perf_counter() - clock
        clock = time.perf_counter()
        for sd, qvar in zip(res["seed_sd"], res["question_var"], strict=True):
            for target in seed_stats.TARGETS:
                seed_stats.seeds_needed(target, sd, qvar)
        needed = time.perf_counter() - clock
        clock = time.perf_counter()
        for x, y in zip(a, b, strict=True):
            seed_stats.sign_flip_p(x.mean(axis=1) - y.mean(axis=1))
        flips = time.perf_counter() - clock
        out[str(n)] = {
            "paired_test": 1000 * paired / calls,
            "original_seeds_needed": 1000 * needed / calls,
            "sign_flip_p": 1000 * flips / calls,
        }
    return out


def _pct(r: dict[str, Any]) -> str:
    return f"{100 * r['rate']:.1f} ({100 * r['ci'][0]:.1f}-{100 * r['ci'][1]:.1f})"


def _table(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def show(result: dict[str, Any]) -> None:
    """The three tables: null, planted difference, and the bootstrap contrast."""
    model, rows = result["model"], result["rows"]
    setting = (
        f"seed_sd {model['seed_sd']:.3f}, question_sd {model['question_sd']:.2f} (logit), "
        f"{model['questions']} questions, {result['comparisons']} comparisons each; "
        "% (Monte Carlo 95%)"
    )
    console.print(
        _table(
            f"Null, two identical strategies: {setting}",
            ("seeds", "false positive (verdict)", "interval excludes 0", "coverage"),
            [
                (
                    str(r["seeds"]),
                    _pct(r["null"]["false_positive"]),
                    _pct(r["null"]["interval_false_positive"]),
                    _pct(r["null"]["coverage"]),
                )
                for r in rows
            ],
        )
    )
    planted = []
    for r in rows:
        p = r["planted"]
        power, interval = p["predicted_power"], p["predicted_interval_power"]
        planted.append(
            (
                str(r["seeds"]),
                _pct(p["detection"]),
                f"{100 * power['from_truth']:.1f} / {100 * power['from_estimates']:.1f}",
                _pct(p["interval_detection"]),
                f"{100 * interval['from_truth']:.1f} / {100 * interval['from_estimates']:.1f}",
                _pct(p["coverage"]),
                f"{p['mean_mde']:.3f}",
            )
        )
    console.print(
        _table(
            f"Planted +{result['difference']:.2f}: detection against predicted power "
            "(from the true parameters / mean over each comparison's estimates)",
            (
                "seeds",
                "detected (verdict)",
                "predicted",
                "interval excludes 0",
                "predicted",
                "coverage",
                "mean MDE",
            ),
            planted,
        )
    )
    boot = result["bootstrap_contrast"]
    console.print(
        _table(
            f"{boot['seeds']} seeds: the withdrawn percentile bootstrap ({boot['draws']} draws) "
            "and the t interval on the same comparisons",
            ("interval", "excludes 0 (null)", "coverage (null)", "detected", "coverage"),
            [
                (
                    name,
                    _pct(boot["null"][f"{name}_false_positive"]),
                    _pct(boot["null"][f"{name}_coverage"]),
                    _pct(boot["planted"][f"{name}_detection"]),
                    _pct(boot["planted"][f"{name}_coverage"]),
                )
                for name in ("bootstrap", "t_interval")
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-sd", type=float, help="logit; default: from the pilot")
    parser.add_argument("--question-sd", type=float, default=QUESTION_SD, help="logit")
    parser.add_argument("--base", type=float, default=0.3, help="accuracy at b = u = 0")
    parser.add_argument("--rho", type=float, default=0.0, help="shared share of the seed effect")
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--comparisons", type=int, default=1000, help="per n, null and planted")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 6, 8, 10])
    parser.add_argument("--difference", type=float, default=0.05, help="planted, accuracy")
    parser.add_argument("--bootstrap-seeds", type=int, default=3)
    parser.add_argument("--bootstrap-comparisons", type=int, default=300)
    parser.add_argument("--bootstrap-draws", type=int, default=500)
    parser.add_argument("--rng-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "statistics_calibration.json")
    args = parser.parse_args()

    start = time.perf_counter()
    if args.seed_sd is None:
        seed_sd, source = derive_seed_sd(args.question_sd)
    else:
        seed_sd, source = args.seed_sd, {"method": "--seed-sd"}
    model = Model(seed_sd, args.question_sd, args.base, args.questions, args.rho)
    shift = planted_shift(model, args.difference)
    # the quadrature's difference checked on plain Monte Carlo draws of b + u
    draws = 4_000_000
    total = math.hypot(model.question_sd, model.seed_sd)
    eta = special.logit(model.base) + total * np.random.default_rng(1).standard_normal(draws)
    check = float(special.expit(eta + shift).mean() - special.expit(eta).mean())
    rng = np.random.default_rng(args.rng_seed)
    rows = []
    for n in args.seeds:
        clock = time.perf_counter()
        row = calibrate(model, n, args.comparisons, args.difference, rng)
        row["seconds"] = round(time.perf_counter() - clock, 1)
        rows.append(row)
        console.print(f"{n} seeds: {row['seconds']} s")
    clock = time.perf_counter()
    contrast = bootstrap_contrast(
        model,
        args.bootstrap_seeds,
        args.bootstrap_comparisons,
        args.bootstrap_draws,
        args.difference,
        rng,
    )
    contrast["seconds"] = round(time.perf_counter() - clock, 1)
    calibration_s = time.perf_counter() - start
    result = {
        "model": asdict(model),
        "seed_sd_source": source,
        "question_sd_source": "--question-sd"
        if args.question_sd != QUESTION_SD
        else "assumed (no per-question correctness is stored): see QUESTION_SD",
        "difference": args.difference,
        "planted": {
            "logit_shift": shift,
            "true_difference": _population_accuracy(model, shift) - _population_accuracy(model, 0),
            "monte_carlo_check": check,
            "monte_carlo_draws": draws,
            "population_accuracy_null": _population_accuracy(model, 0.0),
        },
        "comparisons": args.comparisons,
        "level": LEVEL,
        "rng_seed": args.rng_seed,
        "targets": {"false_positive_at_most": 0.05, "coverage": [0.93, 0.975]},
        "rows": rows,
        "bootstrap_contrast": contrast,
        "calibration_seconds": round(calibration_s, 1),
    }
    result["per_call_ms"] = per_call_ms(model, args.seeds, np.random.default_rng(2))
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    show(result)
    write_json(result, args.out)
    console.print(f"{result['wall_seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
