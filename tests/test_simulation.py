"""The simulated learner (``sparft simulate``): each method's mechanism claim that a latent-skill
learner can check, seed-level, in seconds; and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sparft.cli import app
from sparft.config import Params
from sparft.simulation import World, simulate

SEEDS = range(6)  # the fewest seeds the sign-flip test can separate at p < 0.05
STEPS = 200  # MoPPS needs every question trained once (256 / 4 per step) before it can choose


@pytest.fixture(scope="module")
def report() -> dict:
    names = ["uniform", "sparft-eq3", "sparft", "static-filter", "mopps", "knapsack"]
    names.append("dynamic-sampling")
    return simulate(Params(), names, steps=STEPS, seeds=SEEDS)


def _share(entry: dict, clusters: np.ndarray) -> float:
    picks = np.asarray(entry["picks_by_cluster"], dtype=float)
    return float(picks[clusters].sum() / picks.sum())


def test_eq3_chases_the_hardest_clusters_and_the_target_reward_the_moderate_ones(
    report: dict,
) -> None:
    rates = np.asarray(report["cluster_start_solve_rate"])
    hardest, moderate = rates < 0.1, (rates > 0.1) & (rates < 0.9)
    strategies = report["strategies"]
    assert _share(strategies["sparft-eq3"], hardest) > 0.7  # SPaRFT Eq. 3: solve rate 0 wins
    assert _share(strategies["sparft"], moderate) > 0.9
    assert _share(strategies["uniform"], moderate) < 0.6


@pytest.mark.parametrize("name", ["sparft", "static-filter", "mopps", "dynamic-sampling"])
def test_selection_raises_the_effective_prompt_ratio_over_uniform(report: dict, name: str) -> None:
    test = report["strategies"][name]["vs_uniform"]["effective_prompt_ratio"]
    assert test["verdict"] == "ahead" and test["ci"][0] > 0, test


def test_same_seed_same_world_and_every_count_is_kept(report: dict) -> None:
    uniform, knapsack = report["strategies"]["uniform"], report["strategies"]["knapsack"]
    # knapsack changes rollout counts, not which prompts uniform's queue gives
    assert uniform["picks_by_cluster"] == knapsack["picks_by_cluster"]
    assert uniform["curve"][0] == pytest.approx(knapsack["curve"][0])
    assert uniform["rollouts"] == STEPS * Params().train.rollouts_per_step
    assert report["seeds"] == list(SEEDS)
    assert uniform["final_accuracy"]["n_seeds"] == 6


def test_dynamic_sampling_pays_for_its_filter_in_rollouts(report: dict) -> None:
    """Every generated rollout counts: dropped groups cost what they cost (matched compute)."""
    uniform, dynamic = report["strategies"]["uniform"], report["strategies"]["dynamic-sampling"]
    assert dynamic["rollouts"] > 1.5 * uniform["rollouts"]
    assert dynamic["effective_prompt_ratio"]["difference"] > 0.8
    matched = dynamic["vs_uniform"]["accuracy_at_uniform_rollouts"]
    assert matched["difference"] < dynamic["vs_uniform"]["final_accuracy"]["difference"]


def test_knapsack_puts_more_rollouts_where_there_is_a_gradient(report: dict) -> None:
    """Knapsack RL's claim (20-40% more non-zero gradients) is about rollouts: it moves
    rollouts from prompts near 0 or 1 to moderate ones, so the share of rollouts in groups with
    a gradient rises, while the share of prompts (which it does not choose) stays put."""
    knapsack, uniform = report["strategies"]["knapsack"], report["strategies"]["uniform"]
    share = knapsack["vs_uniform"]["gradient_rollout_share"]
    assert share["verdict"] == "ahead"
    relative = share["difference"] / uniform["gradient_rollout_share"]["difference"]
    assert 0.1 < relative < 0.6, relative


def test_what_cannot_be_simulated_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="strategy dots: not simulated"):
        simulate(Params(), ["dots"], steps=2, seeds=[0])


def test_a_small_world_learns_only_from_informative_groups() -> None:
    from sparft.curricula.base import Group
    from sparft.simulation import Learner

    learner = Learner(World(clusters=2, per_cluster=4), seed=0)
    before = learner.skill.copy()
    qid = learner.ids[0]
    learner.train([Group(qid, np.ones(4), np.ones(4), np.zeros(4))])  # all correct: no gradient
    assert (learner.skill == before).all()
    mixed = np.array([1.0, 0.0, 1.0, 0.0])
    learner.train([Group(qid, mixed, mixed, mixed - 0.5)])
    gain = learner.skill - before
    assert gain[0] > 0 and gain[1] == pytest.approx(0.1 * gain[0])  # transfer 0.1


def test_the_command_prints_writes_and_plots(tmp_path: Path) -> None:
    out, plot = tmp_path / "sim.json", tmp_path / "sim.png"
    args = ["simulate", "--strategy", "uniform", "--strategy", "mopps", "--steps", "10"]
    done = CliRunner().invoke(app, [*args, "--seeds", "2", "--json", str(out), "--plot", str(plot)])
    assert done.exit_code == 0, done.output
    assert "not a model" in done.output and plot.stat().st_size > 0
    report = json.loads(out.read_text())
    assert set(report["strategies"]) == {"uniform", "mopps"} and report["steps"] == 10
    refused = CliRunner().invoke(app, ["simulate", "--strategy", "dots", "--steps", "2"])
    assert refused.exit_code == 2 and "not simulated" in refused.output


def test_world_settings_parse_from_the_command_line() -> None:
    world = World.parse(["centre=1.75", "spread=3.5", "per_cluster=4"])
    assert (world.centre, world.spread, world.per_cluster, world.clusters) == (1.75, 3.5, 4, 8)
    assert isinstance(world.per_cluster, int)
    with pytest.raises(ValueError, match="KEY one of"):
        World.parse(["temperature=1"])
    with pytest.raises(ValueError, match=r"per_cluster: '2\.5' is not int"):
        World.parse(["per_cluster=2.5"])
    with pytest.raises(ValueError, match="at least 1"):
        World.parse(["clusters=0"])


def test_a_harder_world_gives_the_target_bandit_the_moderate_clusters() -> None:
    """The offline default's regime (8 clusters of 4 questions solved 4-48% at the start, 20
    steps of 2 prompts x 4): the target reward with the informed prior raises the effective
    prompt ratio over uniform; Eq. 3 lowers it (benchmarks/results/simulate_offline_default)."""
    world = World.parse(["centre=1.75", "spread=3.5", "per_cluster=4"])
    report = simulate(Params(), ["uniform", "sparft", "sparft-eq3"], 20, range(12), world)
    ratio = {n: e["vs_uniform"]["effective_prompt_ratio"]
             for n, e in report["strategies"].items() if n != "uniform"}  # fmt: skip
    assert ratio["sparft"]["verdict"] == "ahead", ratio
    assert ratio["sparft-eq3"]["difference"] < 0, ratio
