"""Selection: budget allocation, k-center greedy spreads, nearest-centroid is typical, seeds,
bad input, the stage chain reduce -> probe -> cluster -> select, and (slow) the whole phase on
real MATH questions with the real minilm preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA as SHARED
from conftest import WORKER_THREADS, needs_shared
from scipy.spatial.distance import cdist, pdist

from sparft.arithmetic import ArithmeticConfig
from sparft.config import Params
from sparft.data import DataConfig, DataError, load_dataset
from sparft.embed import Embeddings, save_embeddings
from sparft.io import write_parquet
from sparft.selection import (
    SelectConfig,
    allocate,
    k_center_greedy,
    nearest_to_centroid,
    select_subset,
)


@pytest.mark.parametrize(
    ("sizes", "budget", "mode", "expected"),
    [
        ([50, 50, 50, 50], 100, "equal", [25, 25, 25, 25]),
        ([3, 50, 50, 50], 100, "equal", [3, 33, 32, 32]),  # small cluster's share moves on
        ([10, 30, 60], 12, "equal", [4, 4, 4]),
        ([10, 30, 60], 10, "proportional", [1, 3, 6]),
        ([1, 1, 98], 10, "proportional", [1, 1, 8]),  # every arm keeps one question
        ([5, 5], 30, "equal", [5, 5]),  # budget over the data: everything
        ([5, 5], 30, "proportional", [5, 5]),
    ],
)
def test_allocate(sizes: list[int], budget: int, mode: str, expected: list[int]) -> None:
    quotas = allocate(sizes, budget, mode)
    assert quotas == expected
    assert sum(quotas) == min(budget, sum(sizes))
    assert all(0 < q <= s for q, s in zip(quotas, sizes, strict=True))


def test_allocate_budget_below_cluster_count() -> None:
    with pytest.raises(DataError, match=r"select.budget=3 is smaller than the number of clusters"):
        allocate([10, 10, 10, 10], 3, "equal")


def test_k_center_greedy_spreads_and_starts_central() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(400, 2))
    picked = k_center_greedy(points, 8)
    assert len(set(picked)) == 8
    assert picked[0] == nearest_to_centroid(points, 1)[0]
    radius = cdist(points, points[picked]).min(axis=1).max()
    separation = pdist(points[picked]).min()
    for seed in range(20):  # spread wider and cover better than random picks of the same size
        other = np.random.default_rng(seed).choice(400, 8, replace=False)
        assert separation > pdist(points[other]).min()
        assert radius < cdist(points, points[other]).min(axis=1).max()
    # the farthest-point guarantee: covering radius <= the picks' smallest pairwise distance
    assert radius <= separation + 1e-9


def test_k_center_greedy_on_a_line() -> None:
    points = np.arange(11, dtype=float)[:, None]
    assert k_center_greedy(points, 3) == [5, 0, 10]
    assert k_center_greedy(points, 50) == k_center_greedy(points, 11)


def test_nearest_centroid_picks_the_closest() -> None:
    points = np.array([[0.0, 0.0], [10.0, 0.0], [4.0, 0.0], [6.0, 0.5], [5.0, 0.1]])
    assert nearest_to_centroid(points, 3) == [4, 2, 3]  # centroid (5, 0.12)


def test_select_subset_counts_methods_and_seeds() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 3))
    labels = np.repeat([0, 1, 2], [20, 80, 200])
    for method in ("k-center", "nearest-centroid", "random"):
        picked = select_subset(features, labels, SelectConfig(method=method, budget=30))
        assert picked.groupby("cluster").size().tolist() == [10, 10, 10]
        assert picked["position"].is_unique
        assert (labels[picked["position"]] == picked["cluster"]).all()
        assert picked.groupby("cluster")["rank"].apply(list).tolist() == [list(range(10))] * 3
    a = select_subset(features, labels, SelectConfig(method="random", seed=1))
    b = select_subset(features, labels, SelectConfig(method="random", seed=1))
    c = select_subset(features, labels, SelectConfig(method="random", seed=2))
    assert a.equals(b) and not a.equals(c)
    k1 = select_subset(features, labels, SelectConfig(seed=1))
    assert k1.equals(select_subset(features, labels, SelectConfig(seed=2)))  # no randomness
    with pytest.raises(DataError, match=r"no clustered questions"):
        select_subset(features[:0], labels[:0], SelectConfig())


def _prepare(tmp_path: Path, per_grade: int = 10) -> pd.DataFrame:
    """data/train.parquet (arithmetic) and data/embeddings.npz (grade-shifted random vectors)."""
    frame, _ = load_dataset(DataConfig(), ArithmeticConfig(per_grade=per_grade))
    write_parquet(frame, tmp_path / "data" / "train.parquet")
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(frame), 24)) + frame["difficulty_label"].to_numpy()[:, None]
    save_embeddings(
        Embeddings(frame["id"].to_numpy(), matrix.astype(np.float32), "fake"),
        tmp_path / "data" / "embeddings.npz",
    )
    return frame


def test_stage_chain_writes_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparft.stages import STAGES

    monkeypatch.chdir(tmp_path)
    frame = _prepare(tmp_path)
    params = Params.model_validate(
        {
            "probe": {"source": "label"},
            "reduce": {"n_components": 8},
            "cluster": {"k": 4},
            "select": {"budget": 12},
        }
    )
    for name in ("reduce", "probe", "cluster", "select"):
        STAGES[name].run(params)
    subset = pd.read_parquet("data/subset.parquet")
    assert len(subset) == 12 and subset["id"].is_unique
    assert set(frame.columns) | {"cluster", "difficulty", "rank"} == set(subset.columns)
    assert subset.groupby("cluster").size().tolist() == [3, 3, 3, 3]
    assert set(subset["id"]) <= set(frame["id"])
    summary = json.loads(Path("data/select_summary.json").read_text())
    assert summary["selected"] == 12 and summary["notes"] == []
    assert Path("data/plots/subset_map.png").read_bytes()[:4] == b"\x89PNG"

    params = params.model_copy(update={"select": SelectConfig(budget=500)})
    assert STAGES["select"].run(params)["selected"] == len(frame)  # budget over the data: all
    assert (
        "the subset is every question"
        in json.loads(Path("data/select_summary.json").read_text())["notes"][0]
    )
    before = Path("data/subset.parquet").read_bytes()
    params = params.model_copy(update={"select": SelectConfig(budget=2)})
    with pytest.raises(DataError, match=r"select.budget=2 is smaller than the number of clusters"):
        STAGES["select"].run(params)
    assert Path("data/subset.parquet").read_bytes() == before


def test_stage_chain_too_few_questions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparft.stages import STAGES

    monkeypatch.chdir(tmp_path)
    _prepare(tmp_path, per_grade=1)
    params = Params.model_validate({"probe": {"source": "label"}, "cluster": {"k": 10}})
    STAGES["reduce"].run(params)
    STAGES["probe"].run(params)
    with pytest.raises(DataError, match=r"cluster.k=10 but only 8 questions"):
        STAGES["cluster"].run(params)
    assert not Path("data/clusters.parquet").exists()


@pytest.mark.slow
@needs_shared
def test_phase_one_on_real_math_questions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~200 DeepScaleR MATH questions, real minilm, label difficulty, every stage in order."""
    from sparft.stages import STAGES

    monkeypatch.chdir(tmp_path)
    params = Params.model_validate(
        {
            "data": {
                "spec": "deepscaler:math",
                "on_bad_rows": "skip",
                "limit": 200,
                "shared_dir": str(SHARED),
            },
            "probe": {"source": "label"},
            "embed": {"num_threads": WORKER_THREADS},
            "reduce": {"n_components": 16},
            "cluster": {"k": 8},
            "select": {"budget": 40},
        }
    )
    phase_one = ("load", "embed", "reduce", "probe", "cluster", "select")
    summaries = {name: STAGES[name].run(params) for name in phase_one}
    assert summaries["embed"]["questions"] == 200 and summaries["embed"]["dimensions"] == 384
    assert summaries["reduce"]["n_components"] == 16
    assert summaries["cluster"]["clusters"] == 8
    assert summaries["cluster"]["difficulty_between_cluster_share"] > 0.3
    subset = pd.read_parquet("data/subset.parquet")
    assert len(subset) == 40 and subset.groupby("cluster").size().tolist() == [5] * 8
    means = [c["mean_difficulty"] for c in summaries["cluster"]["per_cluster"]]
    assert means == sorted(means) and means[-1] - means[0] > 0.3
    for name in ("cluster_map.png", "cluster_bars.png", "subset_map.png"):
        assert (tmp_path / "data" / "plots" / name).stat().st_size > 10_000
