"""Plots: PNG files written atomically, for few and many clusters, noise, 1-D input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparft.cluster import ClusterConfig, run_clustering
from sparft.plots import (
    cluster_colours,
    map_coordinates,
    plot_arm_choices,
    plot_cluster_bars,
    plot_cluster_map,
    plot_solve_rate_histogram,
    plot_training_curves,
)

PNG = b"\x89PNG\r\n\x1a\n"


def clustered(n: int = 300, k: int = 5, dims: int = 6) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(0)
    reduced = rng.normal(size=(n, dims)) + 4 * rng.normal(size=(k, dims))[np.arange(n) % k]
    difficulty = rng.uniform(size=n)
    table, _, _, summary = run_clustering(
        np.arange(n).astype(str), reduced, difficulty, ClusterConfig(k=k)
    )
    return reduced, table["cluster"].to_numpy(), summary


@pytest.mark.parametrize("k", [4, 25])
def test_map_and_bars_are_pngs(tmp_path: Path, k: int) -> None:
    reduced, labels, summary = clustered(k=k)
    coords, axis_labels = map_coordinates(reduced)
    assert coords.shape == (300, 2) and "variance" in axis_labels[0]
    selected = np.zeros(300, dtype=bool)
    selected[::30] = True
    difficulty = np.array([0.5] * 300)
    path = plot_cluster_map(coords, labels, difficulty, tmp_path / "m.png", axis_labels, selected)
    bars = plot_cluster_bars(summary["per_cluster"], tmp_path / "b.png", title="t")
    for written in (path, bars):
        assert written.read_bytes()[:8] == PNG and written.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "m.png"]  # no temp files


def test_noise_cluster_is_grey_and_one_dimensional_input(tmp_path: Path) -> None:
    cmap = cluster_colours(4, noise_cluster=3)
    assert cmap(3)[:3] == pytest.approx((0x9E / 255,) * 3)
    coords, _ = map_coordinates(np.arange(10, dtype=float)[:, None])
    assert coords.shape == (10, 2) and (coords[:, 1] == 0).all()
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
    path = plot_cluster_map(
        coords, labels, np.linspace(0, 1, 10), tmp_path / "n.png", noise_cluster=3
    )
    assert path.read_bytes()[:8] == PNG


def test_failed_plot_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plot_cluster_map(np.zeros((3, 2)), np.array([0, 1]), np.zeros(3), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_solve_rate_histogram_counts_every_question(tmp_path: Path) -> None:
    from PIL import Image

    rates = np.array([0, 0, 0.25, 1.0, 0.5, 0.5, 0.5])
    out = plot_solve_rate_histogram(rates, 4, tmp_path / "h.png")
    assert Image.open(out).size[0] > 300
    labels = plot_solve_rate_histogram(np.array([0.0, 0.25, 0.25, 1.0]), None, tmp_path / "l.png")
    assert labels.stat().st_size > 5_000


def test_arm_choices_and_training_curves(tmp_path: Path) -> None:
    steps = np.arange(1, 21)
    arms = np.array([0, 1, 2] * 6 + [2, 2])
    out = plot_arm_choices(steps, arms, np.linspace(0, 1, 20), 3, tmp_path / "arms.png")
    assert out.stat().st_size > 10_000
    curves = {"reward": (steps, np.sin(steps)), "empty": (np.array([]), np.array([]))}
    assert plot_training_curves(curves, tmp_path / "c.png").stat().st_size > 5_000
