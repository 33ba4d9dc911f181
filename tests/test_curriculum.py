"""Curricula: what they pick, what they learn from, and that their state round-trips."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sparft.bandit import BanditConfig
from sparft.curriculum import SparftCurriculum, UniformCurriculum, make_curriculum


def frame(n: int = 12, clusters: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [f"q{i}" for i in range(n)], "cluster": [i % clusters for i in range(n)]}
    )


def test_uniform_sees_every_prompt_once_per_pass() -> None:
    cur = UniformCurriculum([f"q{i}" for i in range(10)], seed=1)
    first: list[str] = []
    for _ in range(5):
        ids = cur.next_batch(2)
        cur.observe(ids, np.zeros((2, 4)))
        first += ids
    assert sorted(first) == sorted(f"q{i}" for i in range(10))
    assert cur.history[-1]["unique_seen"] == 10
    assert all(r["arm"] == -1 for r in cur.history)


def test_sparft_draws_the_step_from_one_cluster() -> None:
    data = frame()
    cur = make_curriculum("sparft", data, BanditConfig(seed=0), seed=0)
    assert isinstance(cur, SparftCurriculum)
    members = dict(zip(data["id"], data["cluster"], strict=True))
    for _ in range(10):
        ids = cur.next_batch(3)
        assert len({members[i] for i in ids}) == 1
        record = cur.observe(ids, np.ones((3, 4)))
        assert cur.arm_labels[record["arm"]] == members[ids[0]]
        assert record["solve_rate"] == 1.0 and record["effective_prompt_ratio"] == 0.0


def test_sparft_moves_to_the_cluster_it_solves_least() -> None:
    """Negated solve rate as reward: the always-failed cluster gets most steps."""
    data = frame(30, 3)
    members = dict(zip(data["id"], data["cluster"], strict=True))
    cur = make_curriculum("sparft", data, BanditConfig(seed=0), seed=0)
    rates = {0: 0.9, 1: 0.5, 2: 0.0}
    rng = np.random.default_rng(0)
    for _ in range(60):
        ids = cur.next_batch(4)
        rate = rates[members[ids[0]]]
        cur.observe(ids, (rng.random((4, 8)) < rate).astype(float))
    late = [r["cluster"] for r in cur.history[30:]]
    assert late.count(2) >= 25


def test_small_cluster_cycles_through_its_members() -> None:
    data = pd.DataFrame({"id": ["a", "b", "c"], "cluster": [0, 0, 0]})
    cur = make_curriculum("sparft", data, BanditConfig(), seed=0)
    ids = cur.next_batch(6)
    assert sorted(ids) == ["a", "a", "b", "b", "c", "c"]


@pytest.mark.parametrize("strategy", ["uniform", "sparft"])
def test_state_round_trip_gives_the_same_future(strategy: str) -> None:
    data = frame(20, 4)
    rng = np.random.default_rng(5)
    outcomes = [(rng.random((2, 4)) < 0.4).astype(float) for _ in range(30)]
    a = make_curriculum(strategy, data, BanditConfig(seed=2), seed=7)
    for out in outcomes[:10]:
        a.observe(a.next_batch(2), out)
    b = make_curriculum(strategy, data, BanditConfig(seed=99), seed=99)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for out in outcomes[10:]:
        assert a.next_batch(2) == b.next_batch(2)
        a.observe(a._pending, out)
        b.observe(b._pending, out)
    assert a.history == b.history


def test_misuse_is_refused() -> None:
    cur = make_curriculum("uniform", frame(), BanditConfig(), seed=0)
    ids = cur.next_batch(2)
    with pytest.raises(RuntimeError, match="twice"):
        cur.next_batch(2)
    with pytest.raises(RuntimeError, match="cannot save"):
        cur.state_dict()
    with pytest.raises(RuntimeError, match="exactly the ids"):
        cur.observe(["nope", "no"], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="shape"):
        cur.observe(ids, np.zeros(2))
    with pytest.raises(ValueError, match="cluster"):
        make_curriculum("sparft", frame().drop(columns="cluster"), BanditConfig(), seed=0)
    with pytest.raises(ValueError, match="at least one"):
        UniformCurriculum([], seed=0)
