"""Seed-level inference: what a comparison of training runs can and cannot say.

A seed is one training run, the unit of replication for what training does; a held-out question
is the unit of the evaluation's sampling error. With a handful of seeds a percentile bootstrap
over them cannot leave the range of the seeds, so the tests here work on the seeds directly:

- a t interval for the mean over seeds (n - 1 degrees of freedom). When the (seeds x questions)
  correctness is at hand, the variance of the mean over a population of questions is added
  (a two-way random-effects decomposition: the seed mean square alone already carries the
  per-answer noise; the question term adds what a new question set would change), with
  Satterthwaite's degrees of freedom;
- an exact sign-flip permutation test over the seeds' paired differences (``scipy.stats``); its
  smallest two-sided p is 2 / 2^n, so with 5 seeds or fewer no difference can reach p < 0.05;
- rliable's probability of improvement with a bootstrap interval over each side's runs;
- a verdict, ``ahead`` / ``behind`` only when the interval excludes 0 and p < 1 - level;
- the minimum detectable difference of the t interval at 80% power for the seeds run, and the
  seeds the verdict needs for a target difference (up to 10 seeds the sign-flip test binds, so
  there the verdict's power is simulated), from the observed seed-to-seed spread.

``../shared/docs/STATISTICS.md`` (the project's notes) gives the formulas and references;
``benchmarks/statistics.py`` measures the false-positive rate, coverage and power of this code
on simulated runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from scipy import stats

Verdict = Literal["ahead", "behind", "not separable"]
NOT_SEPARABLE: Verdict = "not separable"
POWER = 0.8
TARGETS = (0.03, 0.05)
# sign patterns enumerated exactly up to 2^16 seeds' worth; beyond, a Monte Carlo draw
_EXACT_SEEDS = 16
# up to this many seeds the verdict's power is simulated (the sign-flip test binds there)
VERDICT_EXACT_SEEDS = 10
_MAX_SEEDS = 1000


def min_p_value(n: int) -> float:
    """Smallest two-sided p an exact sign-flip test over ``n`` seeds can give: 2 / 2^n."""
    return min(1.0, 2.0 / 2.0**n)


def min_seeds(level: float = 0.95) -> int:
    """Fewest seeds whose sign-flip test can reach p < 1 - level (6 at 95%)."""
    n = 1
    while min_p_value(n) >= 1 - level:
        n += 1
    return n


def sign_flip_p(differences: np.ndarray, seed: int = 0) -> float:
    """Exact two-sided sign-flip permutation p-value of the mean of paired differences."""
    d = np.asarray(differences, dtype=float)
    if d.size < 2 or not np.any(d):
        return 1.0
    exact = d.size <= _EXACT_SEEDS
    result = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf if exact else 99_999,
        alternative="two-sided",
        rng=None if exact else np.random.default_rng(seed),
    )
    return float(min(1.0, result.pvalue))


def _variance_of_mean(matrix: np.ndarray) -> tuple[float, float, float]:
    """``(seed part, question part, degrees of freedom)`` of the variance of a (seeds x
    questions) matrix's grand mean, both seeds and questions drawn from populations.

    Two-way random effects without replication: the seed part is var(seed means) / n (it holds
    the per-answer noise too); the question part (MS_q - MS_e) / (n Q) estimates
    var(question effects) / Q and is clipped at 0. Satterthwaite's degrees of freedom; n - 1
    when the question part is 0."""
    n, q = matrix.shape
    seed_means = matrix.mean(axis=1)
    seed_part = float(seed_means.var(ddof=1) / n)
    if q < 2:
        return seed_part, 0.0, float(n - 1)
    grand = matrix.mean()
    question_means = matrix.mean(axis=0)
    ms_seed = q * float(((seed_means - grand) ** 2).sum()) / (n - 1)
    ms_question = n * float(((question_means - grand) ** 2).sum()) / (q - 1)
    residual = matrix - seed_means[:, None] - question_means[None, :] + grand
    ms_error = float((residual**2).sum()) / ((n - 1) * (q - 1))
    question_part = (ms_question - ms_error) / (n * q)
    if question_part <= 0:
        return seed_part, 0.0, float(n - 1)
    denominator = (
        ms_seed**2 / (n - 1) + ms_question**2 / (q - 1) + ms_error**2 / ((n - 1) * (q - 1))
    )
    total = ms_seed + ms_question - ms_error
    df = total**2 / denominator if denominator > 0 else float(n - 1)
    return seed_part, float(question_part), float(max(n - 1, df))


def _critical(df: float, level: float) -> float:
    return float(stats.t.ppf(1 - (1 - level) / 2, df))


def _mde_factor(n: np.ndarray | int, level: float, power: float) -> np.ndarray:
    return np.asarray(stats.t.ppf(1 - (1 - level) / 2, np.asarray(n) - 1)) + np.asarray(
        stats.t.ppf(power, np.asarray(n) - 1)
    )


def mde(
    seed_sd: float, n: int, question_var: float = 0.0, level: float = 0.95, power: float = POWER
) -> float | None:
    """Minimum detectable difference of the t interval at ``power`` for ``n`` seeds:
    (t_crit + t_power) * se, se^2 = seed_sd^2 / n + question_var, n - 1 degrees of freedom.
    None below 2 seeds. Below ``VERDICT_EXACT_SEEDS`` the verdict's own power at this
    difference is lower, since it also needs the sign-flip test (``power_of``)."""
    if n < 2:
        return None
    return float(_mde_factor(n, level, power) * math.sqrt(seed_sd**2 / n + question_var))


def seeds_needed(
    target: float,
    seed_sd: float,
    question_var: float = 0.0,
    level: float = 0.95,
    power: float = POWER,
) -> int | None:
    """Fewest seeds whose verdict detects ``target`` with ``power``: the t interval's MDE at
    most ``target`` (searched over every n at once), then, where the sign-flip test binds,
    the verdict's simulated power. None when no number of seeds does (the question part alone
    is too large: more held-out questions are needed)."""
    n = np.arange(max(2, min_seeds(level)), _MAX_SEEDS + 1)
    hits = np.flatnonzero(
        _mde_factor(n, level, power) * np.sqrt(seed_sd**2 / n + question_var) <= target
    )
    if not hits.size:
        return None
    first = int(n[hits[0]])
    for seeds in range(first, VERDICT_EXACT_SEEDS + 1):
        if power_of(target, seed_sd, seeds, question_var, level) >= power:
            return seeds
    return max(first, VERDICT_EXACT_SEEDS + 1)


def interval_power(
    difference: float, seed_sd: float, n: int, question_var: float = 0.0, level: float = 0.95
) -> float:
    """Chance the t interval alone excludes 0 for a true ``difference`` (noncentral t with
    n - 1 degrees of freedom)."""
    if n < 2:
        return 0.0
    se = math.sqrt(seed_sd**2 / n + question_var)
    if se == 0:
        return 1.0 if difference else 1 - level
    crit, ncp = _critical(n - 1, level), difference / se
    # lower tail as sf(crit, -ncp) (the same by symmetry): scipy's nct.cdf gives NaN far out
    return float(stats.nct.sf(crit, n - 1, ncp) + stats.nct.sf(crit, n - 1, -ncp))


def power_of(
    difference: float,
    seed_sd: float,
    n: int,
    question_var: float = 0.0,
    level: float = 0.95,
    draws: int = 2000,
    seed: int = 0,
) -> float:
    """Predicted chance that the verdict fires for a true ``difference``: the t interval
    excludes 0 and the exact sign-flip p < 1 - level. 0 where the sign-flip test cannot reach
    the level. Up to ``VERDICT_EXACT_SEEDS`` seeds the sign flip binds (at 6 seeds only six
    differences of one sign reach p < 0.05), so normal per-seed differences are simulated
    (``draws``, fixed ``seed``) and both tests run on each; beyond, the t interval decides
    (``interval_power``)."""
    if n < 2 or min_p_value(n) >= 1 - level:
        return 0.0
    if n > VERDICT_EXACT_SEEDS:
        return interval_power(difference, seed_sd, n, question_var, level)
    rng = np.random.default_rng(seed)
    shared = math.sqrt(question_var) * rng.standard_normal((draws, 1))
    d = difference + shared + seed_sd * rng.standard_normal((draws, n))
    mean = d.mean(axis=1)
    se = np.sqrt(d.var(axis=1, ddof=1) / n + question_var)
    interval = np.abs(mean) > _critical(n - 1, level) * se
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    flipped = np.abs(d @ (1 - 2 * bits).T)
    p = (flipped >= np.abs(d.sum(axis=1, keepdims=True)) * (1 - 1e-12)).mean(axis=1)
    return float(np.mean(interval & (p < 1 - level)))


def _improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X > Y) of one task as rliable computes it, U / (n m) of a one-sided Mann-Whitney test
    (ties count a half), vectorised over resamples for ``scipy.stats.bootstrap``."""
    u = stats.mannwhitneyu(x, y, alternative="greater", axis=axis).statistic
    return np.asarray(u) / (np.shape(x)[axis] * np.shape(y)[axis])


def probability_of_improvement(
    a: np.ndarray, b: np.ndarray, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, list[float] | None]:
    """rliable's P(A > B) over runs (per-seed scores as the runs of one task) and its
    percentile interval from resampling each side's runs independently, as rliable's stratified
    bootstrap does for one task. The interval uses ``scipy.stats.bootstrap`` on the same
    statistic: rliable's own interval code needs ``arch`` < 8, which does not import beside
    pandas 3. None with ``reps`` 0 or fewer than 2 runs a side."""
    from rliable.metrics import probability_of_improvement as poi

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    point = float(poi(x[:, None], y[:, None]))
    if reps <= 0 or min(len(x), len(y)) < 2:
        return point, None
    result = stats.bootstrap(
        (x, y),
        _improvement,
        vectorized=True,
        paired=False,
        n_resamples=reps,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return point, [float(ci.low), float(ci.high)]


def mean_test(
    values: np.ndarray, level: float = 0.95, power: float = POWER, seed: int = 0
) -> dict[str, Any]:
    """The mean over seeds of ``values`` (per-seed numbers, or a (seeds x questions) matrix
    whose rows are averaged), its t interval, sign-flip p, verdict, MDE and seeds needed."""
    matrix = np.asarray(values, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    n, q = matrix.shape
    per_seed = matrix.mean(axis=1)
    mean = float(per_seed.mean())
    out: dict[str, Any] = {
        "difference": mean,
        "n_seeds": n,
        "per_seed": per_seed.tolist(),
        "questions": q if q > 1 else None,
        "ci": None,
        "se": None,
        "df": None,
        "seed_sd": None,
        "question_se": None,
        "p_value": 1.0,
        "min_p_value": min_p_value(n),
        "verdict": NOT_SEPARABLE,
        "mde": None,
        "seeds_needed": {f"{t:.2f}": None for t in TARGETS},
        "level": level,
    }
    if n < 2:
        out["note"] = "one seed: no seed-level interval or test"
        return out
    seed_part, question_part, df = _variance_of_mean(matrix)
    se = math.sqrt(seed_part + question_part)
    half = _critical(df, level) * se
    ci = [mean - half, mean + half]
    p = sign_flip_p(per_seed, seed)
    seed_sd = float(per_seed.std(ddof=1))
    separated = (ci[0] > 0 or ci[1] < 0) and p < 1 - level
    verdict: Verdict = NOT_SEPARABLE
    if separated:
        verdict = "ahead" if mean > 0 else "behind"
    out |= {
        "ci": ci,
        "se": se,
        "df": df,
        "seed_sd": seed_sd,
        "question_se": math.sqrt(question_part) if q > 1 else None,
        "p_value": p,
        "verdict": verdict,
        "mde": mde(seed_sd, n, question_part, level, power),
        "seeds_needed": {
            f"{t:.2f}": seeds_needed(t, seed_sd, question_part, level, power) for t in TARGETS
        },
    }
    return out


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    level: float = 0.95,
    power: float = POWER,
    poi_reps: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """``a`` against ``b``, seed i of one paired with seed i of the other: per-seed numbers or
    (seeds x questions) correctness on the same questions. ``mean_test`` of the differences,
    plus rliable's probability of improvement."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired runs differ in shape: {a.shape} vs {b.shape}")
    out = mean_test(a - b, level, power, seed)
    per_a = a.mean(axis=1) if a.ndim == 2 else a
    per_b = b.mean(axis=1) if b.ndim == 2 else b
    poi, poi_ci = probability_of_improvement(per_a, per_b, poi_reps, level, seed)
    out |= {"probability_of_improvement": poi, "probability_of_improvement_ci": poi_ci}
    return out


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of several tests' p-values (family-wise error), by name."""
    names = sorted(p_values, key=lambda k: p_values[k])
    m, running, out = len(names), 0.0, {}
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        out[name] = running
    return out
