"""Clustering: the difficulty weight's variance share, known structure recovered, difficulty
ordering, HDBSCAN noise both ways, alignment with the probe results, bad input, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from sparft.cluster import (
    ClusterConfig,
    align_difficulty,
    build_features,
    cluster_features,
    difficulty_between_share,
    run_clustering,
)
from sparft.config import Params
from sparft.data import DataError
from sparft.embed import Embeddings, save_embeddings
from sparft.io import write_parquet


def two_by_two(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two meaning blobs in 8-D crossed with two difficulty levels (easy 0.1, hard 0.9)."""
    rng = np.random.default_rng(seed)
    topic = np.arange(n) % 2
    hard = (np.arange(n) // 2) % 2
    centres = np.zeros((2, 8))
    centres[1, 0] = 3.0
    reduced = centres[topic] + rng.normal(scale=0.4, size=(n, 8))
    difficulty = np.where(hard == 1, 0.9, 0.1) + rng.normal(scale=0.02, size=n)
    return reduced.astype(np.float32), difficulty, topic * 2 + hard


@pytest.mark.parametrize("scaling", ["block", "columns"])
@pytest.mark.parametrize("n_components", [2, 8, 64])
@pytest.mark.parametrize("w", [0.0, 0.6, 1.0, 3.0])
def test_difficulty_share_is_w2_over_1_plus_w2(n_components: int, w: float, scaling: str) -> None:
    rng = np.random.default_rng(1)
    reduced = rng.normal(size=(300, n_components)) * rng.uniform(0.1, 5, size=n_components)
    feats = build_features(reduced, rng.uniform(size=300), w, scaling)
    assert feats.matrix.shape == (300, n_components + 1)
    assert feats.difficulty_share == pytest.approx(w**2 / (1 + w**2), abs=1e-6)
    assert feats.notes == []


def test_kmeans_recovers_structure_and_weight_makes_difficulty_count() -> None:
    reduced, difficulty, truth = two_by_two()
    meaning_only = run_clustering(
        np.arange(200).astype(str), reduced, difficulty, ClusterConfig(k=2, difficulty_weight=0)
    )
    assert adjusted_rand_score(truth // 2, meaning_only[0]["cluster"]) == 1.0  # split by topic
    assert meaning_only[3]["difficulty_between_cluster_share"] < 0.05
    weighted = run_clustering(
        np.arange(200).astype(str), reduced, difficulty, ClusterConfig(k=4, difficulty_weight=1)
    )
    table, _, _, summary = weighted
    assert adjusted_rand_score(truth, table["cluster"]) == 1.0  # topic x difficulty
    assert summary["difficulty_between_cluster_share"] > 0.99
    means = [row["mean_difficulty"] for row in summary["per_cluster"]]
    assert means == sorted(means)  # numbered easiest first
    assert [row["size"] for row in summary["per_cluster"]] == [50] * 4
    assert all(row["std_difficulty"] < 0.05 for row in summary["per_cluster"])


def test_seeded_kmeans_is_deterministic() -> None:
    reduced, difficulty, _ = two_by_two(seed=3)
    feats = build_features(reduced, difficulty, 0.6).matrix
    a = cluster_features(feats, ClusterConfig(k=5, seed=7)).labels
    b = cluster_features(feats, ClusterConfig(k=5, seed=7)).labels
    np.testing.assert_array_equal(a, b)


def hdbscan_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    dense = centres[np.arange(90) % 3] + rng.normal(scale=0.5, size=(90, 2))
    outliers = np.array([[30.0, 30.0], [-30.0, 25.0], [25.0, -30.0], [9.0, 3.0]])
    return np.vstack([dense, outliers]), np.full(94, 0.5)


@pytest.mark.parametrize("mode", ["own", "nearest"])
def test_hdbscan_noise_own_cluster_or_nearest(mode: str) -> None:
    reduced, difficulty = hdbscan_data()
    cfg = ClusterConfig(method="hdbscan", min_cluster_size=10, noise=mode, difficulty_weight=0)
    table, _, clustering, summary = run_clustering(
        np.arange(94).astype(str), reduced, difficulty, cfg
    )
    assert clustering.noise[90:93].all() and clustering.noise.sum() <= 6
    assert set(table["cluster"]) == set(range(clustering.n_clusters))
    if mode == "own":
        assert clustering.n_clusters == 4 and clustering.noise_cluster == 3
        assert (table["cluster"][clustering.noise] == 3).all()
        assert json.loads(json.dumps(summary["per_cluster"]))[-1]["noise"] is True
    else:
        assert clustering.n_clusters == 3 and clustering.noise_cluster is None
        near_blob = table["cluster"].iloc[93]  # (9, 3) joins the blob at (10, 0)
        assert near_blob == table["cluster"].iloc[1]
        assert "joined their nearest cluster" in summary["notes"][0]


@pytest.mark.parametrize("mode", ["own", "nearest"])
def test_hdbscan_finds_nothing_falls_back_to_one_cluster(mode: str) -> None:
    rng = np.random.default_rng(0)
    reduced = rng.uniform(-50, 50, size=(25, 2))
    cfg = ClusterConfig(method="hdbscan", min_cluster_size=20, noise=mode)
    table, _, clustering, summary = run_clustering(
        np.arange(25).astype(str), reduced, rng.uniform(size=25), cfg
    )
    assert clustering.noise.all() and clustering.n_clusters == 1
    assert (table["cluster"] == 0).all()
    assert "HDBSCAN found no cluster: all 25 questions form one cluster" in summary["notes"]


def test_bad_input() -> None:
    reduced, difficulty, _ = two_by_two(20)
    ids = np.arange(20).astype(str)
    with pytest.raises(DataError, match=r"cluster.k=30 but only 20 questions"):
        run_clustering(ids, reduced, difficulty, ClusterConfig(k=30))
    with pytest.raises(DataError, match=r"min_cluster_size=25 but only 20"):
        run_clustering(
            ids, reduced, difficulty, ClusterConfig(method="hdbscan", min_cluster_size=25)
        )
    with pytest.raises(DataError, match=r"empty"):
        run_clustering(ids[:0], reduced[:0], difficulty[:0], ClusterConfig())
    bad = reduced.copy()
    bad[0, 0] = np.inf
    with pytest.raises(DataError, match=r"non-finite"):
        run_clustering(ids, bad, difficulty, ClusterConfig(k=2))


def test_one_difficulty_for_all_falls_back_to_meaning() -> None:
    reduced, _, truth = two_by_two()
    table, feats, _, summary = run_clustering(
        np.arange(200).astype(str), reduced, np.full(200, 0.25), ClusterConfig(k=2)
    )
    assert "all 200 questions have difficulty 0.25" in summary["notes"][0]
    assert (feats.matrix[:, -1] == 0).all() and summary["difficulty_variance_share"] == 0
    assert adjusted_rand_score(truth // 2, table["cluster"]) == 1.0


def test_between_share() -> None:
    d = np.array([0.0, 0.0, 1.0, 1.0])
    assert difficulty_between_share(np.array([0, 0, 1, 1]), d) == 1.0
    assert difficulty_between_share(np.array([0, 1, 0, 1]), d) == 0.0
    assert difficulty_between_share(np.array([0, 1, 0, 1]), np.ones(4)) == 0.0


def test_align_difficulty() -> None:
    ids = np.array(["a", "b", "c"])
    rows, difficulty, notes = align_difficulty(
        ids, pd.DataFrame({"id": ["c", "a"], "solve_rate": [0.25, 1.0]}), "p.parquet"
    )
    assert rows.tolist() == [0, 2] and difficulty.tolist() == [0.0, 0.75]
    assert "1 of 3 questions were not probed" in notes[0]
    with pytest.raises(DataError, match=r"p.parquet: field 'solve_rate' missing"):
        align_difficulty(ids, pd.DataFrame({"id": ["a"]}), "p.parquet")
    with pytest.raises(DataError, match=r"not finite for 1 questions \(first: b\)"):
        align_difficulty(ids, pd.DataFrame({"id": ["a", "b"], "solve_rate": [0.5, None]}))
    with pytest.raises(DataError, match=r"have no embedding \(e.g. z\).*rerun embed"):
        align_difficulty(ids, pd.DataFrame({"id": ["a", "z"], "solve_rate": [0.5, 0.5]}))
    with pytest.raises(DataError, match=r"no probed questions"):
        align_difficulty(ids, pd.DataFrame({"id": [], "solve_rate": []}))


def test_stage_outputs_and_stale_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparft.stages import STAGES

    monkeypatch.chdir(tmp_path)
    reduced, difficulty, _ = two_by_two()
    ids = np.array([f"q{i}" for i in range(200)])
    save_embeddings(Embeddings(ids, reduced, "fake"), "data/reduced.npz", key="reduced")
    write_parquet(pd.DataFrame({"id": ids, "solve_rate": 1 - difficulty}), "data/probe.parquet")
    summary = STAGES["cluster"].run(Params.model_validate({"cluster": {"k": 4}}))
    assert summary["clusters"] == 4 and summary["questions"] == 200
    table = pd.read_parquet("data/clusters.parquet")
    assert list(table.columns) == ["id", "cluster", "difficulty", "noise"]
    for name in ("features.npz", "cluster_summary.json", "plots/cluster_map.png"):
        assert (tmp_path / "data" / name).exists()
    assert (tmp_path / "data/plots/cluster_bars.png").read_bytes()[:4] == b"\x89PNG"
    before = Path("data/clusters.parquet").read_bytes()
    write_parquet(pd.DataFrame({"id": ["new"], "solve_rate": [0.5]}), "data/probe.parquet")
    with pytest.raises(DataError, match=r"data/probe.parquet: 1 probed questions have no emb"):
        STAGES["cluster"].run(Params())
    assert Path("data/clusters.parquet").read_bytes() == before
