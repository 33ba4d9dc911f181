"""A small run of ``benchmarks/statistics.py``'s calibration, so CI sees it: simulated (seeds x
questions) runs through ``seed_stats.paired_test``, false positives under the null within a
Monte Carlo bound of 5%, coverage near 95%, and detection of a planted 5 points at 10 seeds
within a Monte Carlo band of the power ``power_of`` predicts. Deterministic (fixed seeds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import stats

from sparft.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "statistics.py"
COMPARISONS = 200


def _load() -> ModuleType:
    # not under the name `statistics`, which is the standard library's
    return load_script(SCRIPT, "benchmark_statistics")


calibration = _load()
# seed-to-seed spread small enough that +0.05 is found ~80% of the time at 10 seeds
MODEL = calibration.Model(seed_sd=0.15)


def _binomial_band(p: float, n: int = COMPARISONS) -> tuple[float, float]:
    """Where a share of ``n`` Bernoulli(p) draws lands 99.9% of the time."""
    lo, hi = stats.binom.interval(0.999, n, p)
    return lo / n, hi / n


def test_null_false_positives_and_coverage_at_six_seeds() -> None:
    row = calibration.calibrate(
        MODEL, 6, COMPARISONS, 0.05, np.random.default_rng(0), planted=False
    )
    null = row["null"]
    assert null["false_positive"]["of"] == COMPARISONS
    _, upper = _binomial_band(0.05)
    assert null["false_positive"]["rate"] <= upper
    assert null["interval_false_positive"]["rate"] <= upper
    assert 0.88 <= null["coverage"]["rate"] <= 0.995


def test_detection_at_ten_seeds_is_the_predicted_power() -> None:
    rng = np.random.default_rng(1)
    row = calibration.calibrate(MODEL, 10, COMPARISONS, 0.05, rng, null=False, truth_sets=30)
    planted = row["planted"]
    predicted = planted["predicted_power"]["from_truth"]
    assert 0.6 < predicted < 0.95
    lo, hi = _binomial_band(predicted)
    assert lo <= planted["detection"]["rate"] <= hi
    assert lo <= planted["interval_detection"]["rate"] <= hi
    assert 0.88 <= planted["coverage"]["rate"] <= 0.995
    # at 10 seeds the sign-flip test hardly binds: the verdict's power is nearly the interval's
    assert planted["predicted_interval_power"]["from_truth"] == pytest.approx(predicted, abs=0.03)


def test_planted_shift_gives_the_difference_on_the_population() -> None:
    shift = calibration.planted_shift(MODEL, 0.05)
    assert shift > 0
    gap = calibration._population_accuracy(MODEL, shift) - calibration._population_accuracy(
        MODEL, 0.0
    )
    assert gap == pytest.approx(0.05, abs=1e-9)
    # and on simulated runs: the mean difference over many seeds and question sets
    a, b = calibration.simulate(MODEL, 10, 400, shift, np.random.default_rng(3))
    assert a.mean() - b.mean() == pytest.approx(0.05, abs=0.005)


def test_the_percentile_bootstrap_undercovers_at_three_seeds() -> None:
    """Where seed spread dominates (the 8-step pilot's), the withdrawn bootstrap calls a
    difference between identical strategies far more often than 5%."""
    model = calibration.Model(seed_sd=1.0)
    out = calibration.bootstrap_contrast(model, 3, 100, 200, 0.05, np.random.default_rng(4))
    null = out["null"]
    assert null["bootstrap_false_positive"]["rate"] > 0.12
    assert null["bootstrap_coverage"]["rate"] < 0.88
    assert null["t_interval_false_positive"]["rate"] < null["bootstrap_false_positive"]["rate"]


def test_pilot_spread_pools_per_seed_differences(tmp_path: Path) -> None:
    curve = lambda acc: {"curve": [{"step": 8, "per_seed": acc}]}  # noqa: E731
    pilot = {
        "settings": {"heldout_questions": 256},
        "strategies": {
            "uniform": curve([0.5, 0.3, 0.4]),
            "x": curve([0.4, 0.3, 0.2]),
            "y": curve([0.6, 0.3, 0.5]),
        },
    }
    path = tmp_path / "pilot.json"
    path.write_text(json.dumps(pilot))
    out = calibration.pilot_spread(path)
    # differences x - uniform: -0.1, 0, -0.2; y - uniform: 0.1, 0, 0.1; each 2 df
    pooled = (np.var([-0.1, 0, -0.2], ddof=1) + np.var([0.1, 0, 0.1], ddof=1)) / 2
    assert out["difference_sd"] == pytest.approx(np.sqrt(pooled))
    assert out["difference_df"] == 4 and out["within_strategy_df"] == 6
    assert out["step"] == 8 and out["seeds"] == 3


def test_sibling_benchmarks_still_get_the_standard_librarys_statistics() -> None:
    """Run as scripts, the other benchmarks have this folder first on sys.path and do
    ``import statistics``: they must get the standard library's module, not this file."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import statistics; "
        "print(statistics.median([3, 1, 2]), statistics.NormalDist().cdf(0))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(SCRIPT.parent)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["2", "0.5"]
