"""Seed-level statistics (``sparft.seed_stats``) against values known in closed form or from
scipy: the t interval, the sign-flip floor, the verdict's seed minimum, the MDE and seeds
needed, the question term of a (seeds x questions) matrix, Holm, and the probability of
improvement. Their calibration on simulated runs is ``test_statistics_calibration.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sparft import seed_stats
from sparft.seed_stats import (
    NOT_SEPARABLE,
    holm,
    interval_power,
    mde,
    mean_test,
    min_p_value,
    min_seeds,
    paired_test,
    power_of,
    probability_of_improvement,
    seeds_needed,
    sign_flip_p,
)


def test_t_interval_is_scipys_one_sample_interval_on_per_seed_values() -> None:
    values = np.array([0.031, -0.012, 0.054, 0.020, 0.007])
    out = mean_test(values)
    expected = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert out["ci"] == pytest.approx([expected.low, expected.high], rel=1e-12)
    assert out["df"] == len(values) - 1
    assert out["difference"] == pytest.approx(values.mean())
    assert out["seed_sd"] == pytest.approx(values.std(ddof=1))


def test_sign_flip_p_reaches_its_floor_when_every_seed_agrees() -> None:
    assert sign_flip_p(np.array([0.05, 0.02, 0.08])) == pytest.approx(0.25)
    assert sign_flip_p(np.array([0.05, 0.02, 0.08, 0.01, 0.04, 0.03])) == pytest.approx(2 / 64)
    assert sign_flip_p(-np.array([0.05, 0.02, 0.08])) == pytest.approx(0.25)
    assert sign_flip_p(np.zeros(4)) == 1.0
    assert min_p_value(3) == 0.25 and min_p_value(6) == 2 / 64


def test_the_verdict_needs_six_seeds() -> None:
    assert min_seeds() == 6
    assert min_p_value(5) >= 0.05 > min_p_value(6)


def test_three_seeds_are_not_separable_however_large_the_difference() -> None:
    a, b = np.array([0.90, 0.91, 0.92]), np.array([0.10, 0.11, 0.10])
    out = paired_test(a, b, poi_reps=0)
    assert out["ci"][0] > 0  # the interval alone would call it
    assert out["p_value"] == pytest.approx(0.25)
    assert out["verdict"] == NOT_SEPARABLE


def test_eight_seeds_separate_a_clear_difference_either_way() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.25, 0.35, 8)
    a = b + 0.10 + rng.normal(0, 0.01, 8)
    assert paired_test(a, b, poi_reps=0)["verdict"] == "ahead"
    assert paired_test(b, a, poi_reps=0)["verdict"] == "behind"


def _mde(seed_sd: float, n: int, question_var: float = 0.0) -> float:
    value = mde(seed_sd, n, question_var)
    assert value is not None
    return value


def _needed(target: float, seed_sd: float) -> int:
    value = seeds_needed(target, seed_sd)
    assert value is not None
    return value


@pytest.mark.parametrize("n", [2, 3, 6, 10])
def test_mde_is_the_power_formula(n: int) -> None:
    sd = 0.04
    expected = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert _mde(sd, n) == pytest.approx(expected, rel=1e-12)
    assert _mde(sd, n, question_var=1e-4) > _mde(sd, n)
    assert mde(sd, 1) is None


def test_seeds_needed_grows_with_spread_and_never_falls_below_six() -> None:
    by_spread = [_needed(0.05, sd) for sd in (0.001, 0.02, 0.04, 0.06, 0.08)]
    assert min(by_spread) >= min_seeds()
    assert by_spread == sorted(by_spread) and by_spread[0] == 6
    by_target = [_needed(t, 0.05) for t in (0.10, 0.05, 0.03)]
    assert by_target == sorted(by_target)
    n = by_target[2]  # past 10 seeds the t interval's MDE decides alone
    assert n > 10 and _mde(0.05, n) <= 0.03 < _mde(0.05, n - 1)
    # below 11 seeds the verdict's own power decides: at least 80% at the target
    needed = _needed(0.05, 0.035)
    assert power_of(0.05, 0.035, needed) >= 0.8 > power_of(0.05, 0.035, needed - 1)
    assert _mde(0.035, needed - 1) <= 0.05  # the interval alone would have settled for fewer
    # a question part alone above the target: no number of seeds does it
    assert seeds_needed(0.03, 0.05, question_var=0.02**2) is None


def test_power_is_zero_below_six_seeds_and_finite_far_out() -> None:
    assert power_of(0.5, 0.01, 5) == 0.0
    for n in (11, 20):  # past 10 seeds the MDE is the difference found 80% of the time
        assert power_of(_mde(0.04, n), 0.04, n) == pytest.approx(0.8, abs=0.01)
    for n in (6, 8, 10):  # the interval's, and below it the verdict's (the sign flip binds)
        assert interval_power(_mde(0.04, n), 0.04, n) == pytest.approx(0.8, abs=0.01)
        assert power_of(_mde(0.04, n), 0.04, n) < 0.8
    # at 6 seeds the sign flip needs all six of one sign: P = Phi(d / sd)^6 (+ the other side)
    sign = stats.norm.cdf(0.05 / 0.04) ** 6 + stats.norm.cdf(-0.05 / 0.04) ** 6
    assert power_of(0.05, 0.04, 6, draws=20000) <= sign + 0.01
    # 10+ standard errors out: scipy's noncentral t cdf gives NaN there
    assert power_of(0.05, 0.01, 6) == pytest.approx(1.0)
    assert power_of(-0.05, 0.01, 6) == pytest.approx(1.0)
    assert interval_power(0.05, 0.001, 20) == pytest.approx(1.0)


def test_no_question_interaction_leaves_the_seed_interval() -> None:
    rng = np.random.default_rng(1)
    n, q = 6, 200
    question = rng.normal(0, 1, q)
    a = question + rng.normal(0.05, 0.03, (n, 1))  # seed effects only: same shift on every q
    b = question + rng.normal(0.0, 0.03, (n, 1))
    out = paired_test(a, b, poi_reps=0)
    assert out["question_se"] == pytest.approx(0.0, abs=1e-12)
    assert out["df"] == n - 1
    per_seed = paired_test(a.mean(axis=1), b.mean(axis=1), poi_reps=0)
    assert out["ci"] == pytest.approx(per_seed["ci"])


def test_question_by_strategy_differences_widen_the_interval() -> None:
    rng = np.random.default_rng(2)
    n, q = 6, 50
    b = rng.normal(0, 1, (n, q))
    # a's edge differs strongly by question, the same for every seed, plus a little noise
    a = b + rng.normal(0.05, 0.03, (n, 1)) + rng.normal(0, 0.5, q) + rng.normal(0, 0.01, (n, q))
    out = paired_test(a, b, poi_reps=0)
    seed_only = paired_test(a.mean(axis=1), b.mean(axis=1), poi_reps=0)
    assert out["question_se"] > 0
    assert out["ci"][1] - out["ci"][0] > 1.5 * (seed_only["ci"][1] - seed_only["ci"][0])
    assert out["difference"] == pytest.approx(seed_only["difference"])
    assert out["df"] >= n - 1


def test_holm_adjusts_as_known() -> None:
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx(
        {"a": 0.03, "b": 0.06, "c": 0.06}
    )
    assert holm({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}
    assert holm({"only": 0.02}) == {"only": 0.02}


def test_probability_of_improvement_and_its_interval() -> None:
    a, b = np.array([0.5, 0.6, 0.55, 0.65]), np.array([0.2, 0.25, 0.3, 0.22])
    assert probability_of_improvement(a, b, reps=0) == (1.0, None)
    assert probability_of_improvement(b, a, reps=0)[0] == 0.0
    assert probability_of_improvement(a, a, reps=0)[0] == 0.5
    x, y = np.array([0.5, 0.3, 0.45, 0.4]), np.array([0.35, 0.42, 0.3, 0.38])
    np.random.seed(123)
    untouched = np.random.random(3)
    np.random.seed(123)
    first = probability_of_improvement(x, y, reps=200, seed=7)
    assert np.array_equal(np.random.random(3), untouched)  # numpy's global generator put back
    assert probability_of_improvement(x, y, reps=200, seed=7) == first
    point, (lo, hi) = first  # type: ignore[misc]
    assert 0 <= lo <= point <= hi <= 1


def test_paired_runs_must_match_in_shape() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        paired_test(np.zeros((3, 4)), np.zeros((3, 5)), poi_reps=0)


def test_one_seed_gives_no_interval() -> None:
    out = mean_test(np.array([0.1]))
    assert out["ci"] is None and out["verdict"] == seed_stats.NOT_SEPARABLE and "note" in out
