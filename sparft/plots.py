"""PNG pictures of the clustering: a 2-D map of the questions and per-cluster bars.

matplotlib runs on the Agg backend (no display); files are written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from sparft.io import atomic_path

NOISE_COLOUR = "#9e9e9e"


def map_coordinates(reduced: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """2-D coordinates of each question: a 2-component PCA of the reduced embedding.

    After a PCA reduction this is its first two components (up to sign); after UMAP, the
    plane that shows most of its spread. One-dimensional input gets a zero second axis.
    """
    if reduced.shape[1] == 1:
        return np.column_stack([reduced[:, 0], np.zeros(len(reduced))]), ("component 1", "")
    if len(reduced) < 2:
        return np.zeros((len(reduced), 2)), ("map axis 1", "map axis 2")
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(reduced)
    share = pca.explained_variance_ratio_
    coords = pca.transform(reduced)
    return coords, (f"map axis 1 ({share[0]:.0%} of variance)", f"map axis 2 ({share[1]:.0%})")


def cluster_colours(n_clusters: int, noise_cluster: int | None = None) -> ListedColormap:
    """Distinct colours per cluster (tab10/tab20, else evenly spaced hues); noise in grey."""
    if n_clusters <= 10:
        colours = list(plt.get_cmap("tab10").colors)[:n_clusters]
    elif n_clusters <= 20:
        colours = list(plt.get_cmap("tab20").colors)[:n_clusters]
    else:
        colours = list(plt.get_cmap("turbo")(np.linspace(0.05, 0.95, n_clusters)))
    if noise_cluster is not None and 0 <= noise_cluster < n_clusters:
        colours[noise_cluster] = NOISE_COLOUR
    return ListedColormap(colours)


def _marker_size(n: int) -> float:
    return float(np.clip(8000 / max(n, 1), 3.0, 30.0))


def plot_cluster_map(
    coords: np.ndarray,
    clusters: np.ndarray,
    difficulty: np.ndarray,
    path: str | Path,
    axis_labels: tuple[str, str] = ("map axis 1", "map axis 2"),
    selected: np.ndarray | None = None,
    noise_cluster: int | None = None,
    title: str = "",
) -> Path:
    """Two panels over the same 2-D map: colour by cluster, colour by difficulty.

    Up to 20 clusters are named in a legend with their size and mean difficulty, more are
    numbered at their median point. ``selected`` (a boolean mask) draws the picked questions
    as larger outlined markers on top.
    """
    if not len(coords) == len(clusters) == len(difficulty):
        raise ValueError(
            f"{len(coords)} points, {len(clusters)} cluster ids, {len(difficulty)} difficulties"
        )
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 1
    cmap = cluster_colours(n_clusters, noise_cluster)
    size = _marker_size(len(coords))
    picked = selected if selected is not None and selected.any() else None
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.8), constrained_layout=True)
    ax = axes[0]
    style = {"s": size, "alpha": 0.5, "linewidths": 0, "rasterized": True}
    scale = {"cmap": cmap, "vmin": -0.5, "vmax": n_clusters - 0.5}
    ax.scatter(coords[:, 0], coords[:, 1], c=clusters, **scale, **style)
    if picked is not None:
        ax.scatter(
            coords[picked, 0], coords[picked, 1], c=clusters[picked], **scale, **_picked_style()
        )
    if n_clusters <= 20:
        handles = []
        for c in range(n_clusters):
            inside = clusters == c
            name = "noise" if c == noise_cluster else str(c)
            label = f"{name}: {int(inside.sum())} q, d={difficulty[inside].mean():.2f}"
            handles.append(
                plt.Line2D([], [], ls="", marker="o", ms=7, mfc=cmap(c), mec=cmap(c), label=label)
            )
        ax.legend(
            handles=handles,
            title="cluster: size, mean difficulty",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            title_fontsize=8,
        )
    else:
        for c in range(n_clusters):
            inside = clusters == c
            if inside.any():
                ax.annotate(
                    "noise" if c == noise_cluster else str(c),
                    (np.median(coords[inside, 0]), np.median(coords[inside, 1])),
                    ha="center",
                    va="center",
                    fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": cmap(c)},
                )
    ax.set_title("clusters (numbered by rising mean difficulty)")
    ax = axes[1]
    heat = {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0}
    points = ax.scatter(coords[:, 0], coords[:, 1], c=difficulty, **heat, **style)
    if picked is not None:
        ax.scatter(
            coords[picked, 0], coords[picked, 1], c=difficulty[picked], **heat, **_picked_style()
        )
    fig.colorbar(points, ax=ax, label="difficulty (1 - solve rate)")
    ax.set_title("difficulty")
    for ax in axes:
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
    if picked is not None:
        axes[1].legend(
            handles=[
                plt.Line2D(
                    [],
                    [],
                    ls="",
                    marker="o",
                    ms=7,
                    mfc="white",
                    mec="black",
                    label=f"selected ({int(picked.sum())})",
                )
            ],
            loc="lower right",
            fontsize=8,
        )
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _picked_style() -> dict[str, Any]:
    return {"s": 42, "edgecolors": "black", "linewidths": 0.9, "zorder": 3}


def plot_cluster_bars(
    per_cluster: Sequence[dict[str, Any]], path: str | Path, title: str = ""
) -> Path:
    """Per cluster: size (left), mean difficulty with its std and min-max range (right)."""
    ids = [row["cluster"] for row in per_cluster]
    names = ["noise" if row.get("noise") else str(row["cluster"]) for row in per_cluster]
    cmap = cluster_colours(
        max(ids, default=0) + 1,
        next((row["cluster"] for row in per_cluster if row.get("noise")), None),
    )
    colours = [cmap(c) for c in ids]
    x = np.arange(len(per_cluster))
    width = max(6.0, min(0.45 * len(per_cluster) + 3, 24.0))
    fig, axes = plt.subplots(1, 2, figsize=(2 * width, 4.5), constrained_layout=True)
    sizes = [row["size"] for row in per_cluster]
    axes[0].bar(x, sizes, color=colours)
    if len(per_cluster) <= 30:
        for xi, s in zip(x, sizes, strict=True):
            axes[0].annotate(str(s), (xi, s), ha="center", va="bottom", fontsize=8)
    axes[0].set_ylabel("questions")
    axes[0].set_title("cluster size")
    means = np.array([row["mean_difficulty"] for row in per_cluster])
    stds = np.array([row["std_difficulty"] for row in per_cluster])
    below, above = np.minimum(stds, means), np.minimum(stds, 1.0 - means)  # stay in [0, 1]
    axes[1].bar(x, means, yerr=[below, above], color=colours, capsize=3, label="mean ± std")
    axes[1].scatter(x, [row["min_difficulty"] for row in per_cluster], marker="_", c="k", s=80)
    axes[1].scatter(
        x, [row["max_difficulty"] for row in per_cluster], marker="_", c="k", s=80, label="min/max"
    )
    axes[1].set_ylim(0, 1.05)
    axes[1].set_ylabel("difficulty (1 - solve rate)")
    axes[1].set_title("difficulty per cluster")
    axes[1].legend(loc="upper left", fontsize=8)
    for ax in axes:
        ax.set_xticks(x, names, rotation=90 if len(x) > 30 else 0, fontsize=8)
        ax.set_xlabel("cluster")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)
    return Path(path)
