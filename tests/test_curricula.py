"""Curricula and allocators on simulated prompts with known solve rates: what they pick, how
they split the budget, what they learn, and that a restored state makes the same choices."""

from __future__ import annotations

import itertools
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sparft.bandit import BanditConfig
from sparft.curricula import Curriculum, Group, curricula, make_curriculum
from sparft.curricula.allocation import (
    AllocationConfig,
    fixed_run_note,
    group_value,
    knapsack_counts,
    need,
    proportional_counts,
)
from sparft.curricula.base import load_state, save_state
from sparft.curricula.cures import CuresConfig
from sparft.curricula.dots import DotsConfig
from sparft.curricula.dots.predictor import TrainSettings, save_predictor, train_predictor
from sparft.curricula.dump import DumpConfig
from sparft.curricula.dynamic_sampling import DynamicSamplingConfig
from sparft.curricula.mopps import MoppsConfig
from sparft.training import TrainConfig

DIM = 8
PREDICTOR = Path(tempfile.mkdtemp(prefix="sparft-test-dots-")) / "predictor.pt"


def _embedding(i: int) -> np.ndarray:
    return np.random.default_rng(i).normal(size=DIM).astype(np.float32)


def _predictor() -> str:
    """A small DOTS predictor on random embeddings (trained once per test session)."""
    if not PREDICTOR.exists():
        x = np.stack([_embedding(i) for i in range(64)])
        rates = 1 / (1 + np.exp(-2 * x[:, 0]))
        model, _ = train_predictor(x, rates, np.zeros(64), TrainSettings(hidden=16, epochs=3))
        save_predictor(model, PREDICTOR)
    return str(PREDICTOR)


def frame(n: int = 12, clusters: int = 3, probe: list[int] | None = None) -> pd.DataFrame:
    data = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "cluster": [i % clusters for i in range(n)],
            "source": [f"s{i % 2}" for i in range(n)],
            "embedding": [_embedding(i) for i in range(n)],
        }
    )
    if probe is not None:
        data["probe_rollouts"] = 4
        data["probe_correct"] = probe
    return data


def params(**train: Any) -> SimpleNamespace:
    """The sections ``make_curriculum`` reads, as ``sparft.config.Params`` holds them."""
    return SimpleNamespace(
        train=TrainConfig(**{"prompts_per_step": 4, "num_generations": 4, **train}),
        bandit=BanditConfig(seed=0),
        cures=CuresConfig(),
        dump=DumpConfig(),
        dots=DotsConfig(predictor=_predictor(), reference_questions=6, reference_rollouts=4),
        allocation=AllocationConfig(),
        mopps=MoppsConfig(candidate_ratio=2),
        dynamic_sampling=DynamicSamplingConfig(),
    )


def groups_for(plan: list[Any], rate: Any, rng: np.random.Generator) -> list[Group]:
    """Rollouts of each planned prompt, correct with the prompt's solve rate; the reward is
    the correctness and the advantage GRPO's group-normalised one."""
    out = []
    for prompt_id, n in plan:
        correct = (rng.random(n) < rate(prompt_id)).astype(float)
        adv = (correct - correct.mean()) / (correct.std(ddof=1) + 1e-4) if n > 1 else correct * 0
        out.append(Group(prompt_id, correct, correct, adv))
    return out


def simulated_rollout(rate: Any) -> Any:
    """What the trainer's reference rollouts (DOTS) do, simulated: deterministic in the ids
    asked for, so a restored curriculum sees the same outcomes."""

    def rollout(ids: list[str], k: int, temperature: float) -> list[np.ndarray]:
        rng = np.random.default_rng(zlib.crc32(",".join(ids).encode()))
        return [(rng.random(k) < rate(i)).astype(float) for i in ids]

    return rollout


def run(cur: Curriculum, steps: int, rate: Any, seed: int = 0, n: int = 4, budget: int = 16):
    rng = np.random.default_rng(seed)
    if cur.rollout is None:
        cur.bind_rollout(simulated_rollout(rate))
    plans = []
    for _ in range(steps):
        plan = cur.plan(n, budget)
        groups = groups_for(plan, rate, rng)
        while more := cur.more(groups):  # the trainer's loop: further rounds of the same step
            plan += more
            groups += groups_for(more, rate, rng)
        plans.append(plan)
        cur.observe(groups)
    return plans


# --- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(curricula()))
def test_every_method_meets_the_budget_and_records_the_common_fields(name: str) -> None:
    cur = make_curriculum(name, frame(probe=[0, 1, 2, 3] * 3), params(num_generations=8))
    plans = run(cur, 6, lambda i: 0.5, budget=32)
    assert all(sum(n for _, n in plan) == 32 for plan in plans)
    record = cur.history[-1]
    for key in ("step", "prompts", "rollouts", "solve_rate", "effective_prompt_ratio"):
        assert key in record
    extra = sum(r.get("extra_rollouts", 0) for r in cur.history)  # DOTS's reference rollouts
    assert record["rollouts_total"] == 6 * 32 + extra and record["unique_seen"] == len(cur.seen)
    assert all(isinstance(v, float) for v in cur.metrics().values())


def test_plan_and_observe_guard_their_order() -> None:
    cur = make_curriculum("uniform", frame(), params())
    plan = cur.plan(2, 8)
    with pytest.raises(RuntimeError, match="plan called twice"):
        cur.plan(2, 8)
    with pytest.raises(RuntimeError, match="cannot save"):
        cur.state_dict()
    wrong = [Group(plan[0].prompt_id, np.zeros(3), np.zeros(3), np.zeros(3))]
    with pytest.raises(RuntimeError, match="observe got groups"):
        cur.observe(wrong)
    with pytest.raises(ValueError, match="unknown curriculum 'nope'"):
        make_curriculum("nope", frame(), params())
    with pytest.raises(ValueError, match="needs a 'cluster' column"):
        make_curriculum("sparft", frame().drop(columns="cluster"), params())


def test_effective_prompt_ratio_counts_groups_with_unequal_rewards() -> None:
    cur = make_curriculum("uniform", frame(), params())
    plan = cur.plan(2, 8)
    mixed = np.array([1.0, 0.0, 1.0, 1.0])
    record = cur.observe(
        [
            Group(plan[0].prompt_id, mixed, mixed, mixed - mixed.mean()),
            Group(plan[1].prompt_id, np.ones(4), np.ones(4), np.zeros(4)),
        ]
    )
    assert record["effective_prompt_ratio"] == 0.5
    assert record["solve_rate"] == pytest.approx(7 / 8)


# --- allocators ----------------------------------------------------------------------------------


def _brute_force(rates: np.ndarray, spare: int, floor: int, cap: int) -> float:
    """Best summed value over every allocation of at most ``spare`` extra rollouts."""
    items = [p for p in rates if 0 < p < 1]
    ranges = [range(floor, min(cap, max(floor, need(p, cap))) + 1) for p in items]
    best = 0.0
    for combo in itertools.product(*ranges):
        if sum(combo) - floor * len(combo) <= spare:
            value = sum(float(group_value(p, n)) for p, n in zip(items, combo, strict=True))
            best = max(best, value)
    return best


@pytest.mark.parametrize("seed", range(30))
def test_knapsack_matches_brute_force_and_meets_the_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5))
    rates = rng.choice([0.0, 1.0, 0.05, 0.2, 0.5, 0.7, 0.95], size=n)
    floor, cap = 2, int(rng.integers(4, 9))
    budget = int(rng.integers(n * floor, n * cap + 1))
    counts = knapsack_counts(rates, budget, floor, cap)
    assert counts.sum() == budget and counts.min() >= floor and counts.max() <= cap
    caps = [min(cap, max(floor, need(p, cap))) if 0 < p < 1 else cap for p in rates]
    dp_counts = [min(c, k) for c, k in zip(counts, caps, strict=True)]  # the DP's, no surplus
    dp_value = sum(
        float(group_value(p, c)) for p, c in zip(rates, dp_counts, strict=True) if 0 < p < 1
    )
    assert dp_value == pytest.approx(_brute_force(rates, budget - n * floor, floor, cap))


def test_knapsack_moves_rollouts_to_informative_prompts_and_surplus_to_unsolved() -> None:
    counts = knapsack_counts(np.array([0.5, 0.1, 0.0, 1.0]), 40, 2, 128)
    assert counts.tolist()[3] == 2  # always solved: the floor
    assert counts[1] > counts[0] > 2  # p = 0.1 needs more rollouts than p = 0.5 for a gradient
    assert counts.sum() == 40 and counts[2] > 2  # what the others do not need goes to p = 0


def test_knapsack_allocator_gives_unknown_prompts_the_default() -> None:
    data = frame(8, probe=[2, 2, 0, 4, 2, 2, 0, 4])
    data.loc[4:, "probe_rollouts"] = 0
    data.loc[4:, "probe_correct"] = 0
    cur = make_curriculum("uniform", data, params(allocation="knapsack"))
    cur.allocator.cfg = AllocationConfig(knapsack_min_observed=4)
    counts = cur.allocator.allocate(cur, [f"q{i}" for i in range(8)], 32)
    assert counts.sum() == 32
    assert counts[4:].tolist() == [4, 4, 4, 4]  # no estimate yet: num_generations each
    assert counts[3] == 2  # probed 4/4: the floor


def test_knapsack_that_never_had_an_estimate_says_it_ran_as_fixed() -> None:
    """Probed with 4 rollouts a question, under knapsack_min_observed=8: every group gets
    num_generations, and the run says so."""
    data = frame(8, probe=[2, 2, 0, 4, 2, 2, 0, 4])
    cur = make_curriculum("uniform", data, params(allocation="knapsack"))
    cur.allocator.cfg = AllocationConfig(knapsack_min_observed=8)
    sizes = [cur.allocator.allocate(cur, [f"q{i}" for i in range(j, j + 4)], 16).tolist()
             for j in (0, 4)]  # fmt: skip
    assert sizes == [[4] * 4] * 2
    note = fixed_run_note("knapsack", cur.allocator.cfg, 4, sizes)
    assert note is not None and "knapsack_min_observed=8" in note
    assert fixed_run_note("knapsack", cur.allocator.cfg, 4, [[2, 6, 4, 4]]) is None
    assert fixed_run_note("fixed", cur.allocator.cfg, 4, sizes) is None


@pytest.mark.parametrize("seed", range(20))
def test_proportional_counts_respect_bounds_and_total(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    lo, hi = int(rng.integers(1, 5)), int(rng.integers(5, 20))
    total = int(rng.integers(n * lo, n * hi + 1))
    counts = proportional_counts(rng.random(n), total, lo, hi)
    assert counts.sum() == total and counts.min() >= lo and counts.max() <= hi


def test_infeasible_budget_is_a_clear_error() -> None:
    section = params(num_generations=3)
    section.allocation = AllocationConfig(variance_min=4)
    with pytest.raises(ValueError, match=r"4 prompts x \[4, 16\] rollouts cannot make"):
        make_curriculum("cures", frame(), section)


# --- CurES ---------------------------------------------------------------------------------------


def test_cures_posterior_sampling_and_allocation_by_hand() -> None:
    cur = make_curriculum("cures", frame(4, probe=[2, 0, 0, 2]), params(num_generations=8))
    # Beta(correct + 1, wrong + 1) from the probe's 4 answers each: means 3/6, 1/6, 1/6, 3/6.
    assert cur.posterior() == pytest.approx([0.5, 1 / 6, 1 / 6, 0.5])
    sigma = np.sqrt(np.array([0.5 * 0.5, 5 / 36, 5 / 36, 0.5 * 0.5]))
    expected = np.exp(sigma / 0.1) / np.exp(sigma / 0.1).sum()
    assert cur.weights() == pytest.approx(expected)
    # Budget 32 over the four by sigma: shares 9.17, 6.83, 6.83, 9.17 -> 9, 7, 7, 9.
    counts = cur.allocator.allocate(cur, ["q0", "q1", "q2", "q3"], 32)
    assert counts.tolist() == [9, 7, 7, 9]
    plan = cur.plan(4, 32)
    correct = {a.prompt_id: np.array([1.0] * 3 + [0.0] * (a.rollouts - 3)) for a in plan}
    cur.observe([Group(a.prompt_id, correct[a.prompt_id], correct[a.prompt_id],
                       correct[a.prompt_id]) for a in plan])  # fmt: skip
    q1 = next(a.rollouts for a in plan if a.prompt_id == "q1")
    assert cur.alpha[1] == 1 + 0 + 3 and cur.beta[1] == 1 + 4 + q1 - 3


def test_cures_code_settings_freeze_the_posterior_and_flatten_sampling() -> None:
    p = params(num_generations=8)
    p.cures = CuresConfig(update_posterior=False, temperature_rule="code")
    cur = make_curriculum("cures", frame(4, probe=[2, 0, 0, 4]), p)
    assert cur.weights().max() / cur.weights().min() < 1.01
    before = cur.posterior().copy()
    run(cur, 2, lambda i: 1.0, n=4, budget=32)
    assert cur.posterior() == pytest.approx(before)


# --- DUMP ----------------------------------------------------------------------------------------


def test_dump_moves_to_the_distribution_whose_advantages_grow() -> None:
    p = params()
    p.dump = DumpConfig(window=40)
    cur = make_curriculum("dump", frame(20, clusters=2), p)
    arm_of = cur.arm_of

    def step(t: int) -> None:
        plan = cur.plan(4, 16)
        groups = []
        for prompt_id, n in plan:
            size = 0.1 if arm_of[prompt_id] == 0 else min(2.0, 0.02 * t)
            adv = np.tile([size, -size], n // 2)
            groups.append(Group(prompt_id, adv, (adv > 0).astype(float), adv))
        cur.observe(groups)

    picks = []
    for t in range(150):
        step(t)
        picks.append(cur.history[-1]["arm"])
    assert np.mean(np.array(picks[:20]) == 1) < 0.7
    assert np.mean(np.array(picks[-50:]) == 1) > 0.9


def test_dump_arms_can_be_sources() -> None:
    p = params()
    p.dump = DumpConfig(arms="source")
    cur = make_curriculum("dump", frame(), p)
    assert cur.arm_labels == ["s0", "s1"]


# --- resume --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "allocation"),
    [
        ("uniform", "knapsack"),
        ("sparft", "auto"),
        ("cures", "auto"),
        ("dump", "variance"),
        ("dots", "auto"),
    ],
)
def test_restored_state_makes_the_same_choices(name: str, allocation: str, tmp_path: Path) -> None:
    data = frame(16, 4, probe=[0, 1, 2, 3] * 4)
    settings = params(num_generations=8, allocation=allocation)

    def rate(prompt_id: str) -> float:
        return (int(prompt_id[1:]) % 5) / 4

    whole = make_curriculum(name, data, settings)
    expected = run(whole, 10, rate, budget=32)
    first = make_curriculum(name, data, settings)
    head = run(first, 4, rate, budget=32)
    save_state(first.state_dict(), tmp_path)
    resumed = make_curriculum(name, data, settings)
    resumed.bind_rollout(simulated_rollout(rate))
    resumed.load_state_dict(load_state(tmp_path))
    # The simulated rollouts continue from the same random stream as the uninterrupted run.
    rng = np.random.default_rng(0)
    for plan in head:
        groups_for(plan, rate, rng)
    tail = []
    for _ in range(6):
        plan = resumed.plan(4, 32)
        tail.append(plan)
        resumed.observe(groups_for(plan, rate, rng))
    assert head + tail == expected

    def untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in history]

    assert untimed(resumed.history) == untimed(whole.history)
    if allocation != "auto" or name == "cures":
        assert any(len({n for _, n in plan}) > 1 for plan in expected), "no unequal groups"


# --- the field's baselines ------------------------------------------------------------------


def test_static_filter_trains_only_on_questions_the_probe_sometimes_solved() -> None:
    probe = [0, 4, 2, 1] * 3  # of 4 answers: never, always, half, a quarter
    cur = make_curriculum("static-filter", frame(probe=probe), params())
    plans = run(cur, 6, lambda i: 0.5)
    picked = {a.prompt_id for plan in plans for a in plan}
    assert picked == {f"q{i}" for i in range(12) if probe[i] in (1, 2)}
    assert cur.history[-1]["kept_questions"] == 6
    with pytest.raises(ValueError, match="needs the probe stage's answers"):
        make_curriculum("static-filter", frame(), params())
    with pytest.raises(ValueError, match="nothing to train on"):
        make_curriculum("static-filter", frame(probe=[0, 4] * 6), params())


def test_mopps_learns_to_pick_the_prompts_nearest_its_target() -> None:
    """Half the prompts are solved half the time, the rest never or always: once observed, the
    Thompson samples of the moderate ones sit near 0.5 and win the candidate batch."""
    rates = {f"q{i}": (0.5 if i % 2 else float(i % 4 == 0)) for i in range(12)}
    cur = make_curriculum("mopps", frame(), params())
    plans = run(cur, 40, lambda i: rates[i], n=2, budget=8)
    late = [a.prompt_id for plan in plans[-20:] for a in plan]
    moderate = sum(rates[i] == 0.5 for i in late) / len(late)
    assert moderate > 0.8, moderate
    assert all(r["candidates"] == 4 for r in cur.history)  # candidate_ratio 2 x 2 prompts


def test_mopps_posterior_update_decays_only_what_it_observes() -> None:
    cfg = MoppsConfig(decay=0.5)
    section = params()
    section.mopps = cfg
    cur = make_curriculum("mopps", frame(), section)
    plan = cur.plan(1, 4)
    (qid, n), i = plan[0], cur.index[plan[0].prompt_id]
    others = cur.alpha.copy()
    cur.observe([Group(qid, np.ones(n), np.array([1.0, 1.0, 1.0, 0.0]), np.zeros(n))])
    assert cur.alpha[i] == pytest.approx(0.5 * 1 + 0.5 + 3) and cur.beta[i] == pytest.approx(2)
    untouched = np.arange(12) != i
    assert (cur.alpha[untouched] == others[untouched]).all()


def test_dynamic_sampling_generates_until_enough_groups_teach_and_trains_on_those() -> None:
    """Half the prompts are never solved, half solved half the time: each step generates
    batches of 4 until 4 groups have differing rewards, trains on the first 4 of those, and
    counts every generated rollout."""
    rates = {f"q{i}": (0.5 if i % 2 else 0.0) for i in range(12)}
    cur = make_curriculum("dynamic-sampling", frame(), params())
    plans = run(cur, 10, lambda i: rates[i], n=4, budget=16)
    generated = sum(len(plan) for plan in plans)
    assert generated > 40  # more than one batch per step, on average
    for record in cur.history:
        assert record["prompts"] == 4 and record["rollouts"] == 16
        if record["effective_prompt_ratio"] < 1:  # short at the cap: filled
            assert record["gen_batches"] == 4
        else:
            assert all(rates[i] == 0.5 for i in record["prompt_ids"])
    assert cur.history[-1]["rollouts_total"] == 4 * generated
    assert np.mean([r["effective_prompt_ratio"] for r in cur.history]) > 0.9


def test_dynamic_sampling_at_its_cap_fills_or_stops_as_configured() -> None:
    section = params()
    section.dynamic_sampling = DynamicSamplingConfig(max_gen_batches=2)
    cur = make_curriculum("dynamic-sampling", frame(), section)
    (plan,) = run(cur, 1, lambda i: 0.0, n=4, budget=16)  # nothing ever teaches
    record = cur.history[-1]
    assert record["gen_batches"] == 2 and record["generated_rollouts"] == 32
    assert record["prompts"] == 4 and record["effective_prompt_ratio"] == 0
    assert record["prompt_ids"] == [a.prompt_id for a in plan[:4]]  # the earliest dropped
    section.dynamic_sampling = DynamicSamplingConfig(max_gen_batches=2, at_cap="error")
    cur = make_curriculum("dynamic-sampling", frame(), section)
    with pytest.raises(RuntimeError, match=r"0 of 8 generated groups.*max_gen_batches"):
        run(cur, 1, lambda i: 0.0, n=4, budget=16)
    with pytest.raises(ValueError, match="allocation=knapsack: not done"):
        make_curriculum("dynamic-sampling", frame(), params(allocation="knapsack"))


def test_sparft_bandit_starts_from_each_cluster_s_probe_rate() -> None:
    """Clusters 0, 1, 2 probed at 0, 1 and 1/2: with the target reward and an informed prior the
    first step already goes to the half-solved cluster, not to each cluster in turn."""
    probe = [[0, 4, 2][i % 3] for i in range(12)]
    firsts = []
    for seed in range(10):
        section = params(seed=seed)
        section.bandit = BanditConfig(seed=seed, reward="target", prior_weight=8)
        cur = make_curriculum("sparft", frame(probe=probe), section)
        assert cur.probe_rates().tolist() == [0.0, 1.0, 0.5]
        firsts.append(cur.plan(4, 16)[0].prompt_id)
    assert all(int(q[1:]) % 3 == 2 for q in firsts), firsts
