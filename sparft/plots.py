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
import pandas as pd
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


def _palette(name: str) -> list[Any]:
    """The colours of a qualitative colormap (tab10, tab20)."""
    cmap = plt.get_cmap(name)
    assert isinstance(cmap, ListedColormap)
    return list(np.asarray(cmap.colors))


def cluster_colours(n_clusters: int, noise_cluster: int | None = None) -> ListedColormap:
    """Distinct colours per cluster (tab10/tab20, else evenly spaced hues); noise in grey."""
    if n_clusters <= 10:
        colours = list(_palette("tab10"))[:n_clusters]
    elif n_clusters <= 20:
        colours = list(_palette("tab20"))[:n_clusters]
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
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """PNG written atomically; the figure is closed even when writing fails."""
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            fig.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(fig)
    return Path(path)


def plot_solve_rate_histogram(
    solve_rates: np.ndarray, k: int | None, path: str | Path, title: str = ""
) -> Path:
    """Questions per difficulty value: with k samples the solve rate takes k + 1 values; with
    ``k=None`` (a data set's own labels) each distinct value gets a bar."""
    rates = np.asarray(solve_rates, dtype=float)
    values = np.linspace(0.0, 1.0, k + 1) if k else np.unique(rates.round(6))
    counts = [int(np.isclose(rates, v).sum()) for v in values]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.bar(values, counts, width=0.8 / max(len(values) - 1, 1), color="#4c72b0")
    for v, c in zip(values, counts, strict=True):
        ax.annotate(str(c), (v, c), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(values, [f"{v:.2f}" for v in values])
    ax.set_xlabel(f"solve rate ({k} samples per question)" if k else "difficulty (from labels)")
    ax.set_ylabel("questions")
    ax.set_title(title or f"{len(rates)} questions, mean solve rate {rates.mean():.3f}")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_predicted_rates(
    measured: np.ndarray, predicted: np.ndarray, path: str | Path, title: str = ""
) -> Path:
    """Predicted against measured solve rates, one point per question, with the diagonal."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="#9e9e9e", linewidth=1, zorder=0)
    jitter = np.random.default_rng(0).uniform(-0.01, 0.01, len(measured))
    ax.scatter(np.asarray(measured) + jitter, predicted, s=_marker_size(len(measured)), alpha=0.6)
    ax.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), xlabel="measured solve rate")
    ax.set_ylabel("predicted solve rate")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_arm_choices(
    steps: np.ndarray, arms: np.ndarray, solve_rates: np.ndarray, n_arms: int, path: str | Path
) -> Path:
    """Which cluster the bandit picked at each step (coloured by the step's solve rate), and
    the running share of picks per arm: where the curriculum spent its steps."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.0), sharex=True, layout="constrained")
    points = top.scatter(steps, arms, c=solve_rates, cmap="viridis", vmin=0, vmax=1, s=30)
    fig.colorbar(points, ax=[top, bottom], label="step solve rate (top panel)", shrink=0.5,
                 anchor=(0.0, 1.0))  # fmt: skip
    top.set_yticks(range(n_arms))
    top.set_ylabel("arm (cluster)")
    top.set_title("Arm chosen per step")
    colours = cluster_colours(n_arms)
    picks = np.zeros((len(steps), n_arms))
    picks[np.arange(len(steps)), arms.astype(int)] = 1
    share = picks.cumsum(axis=0) / np.arange(1, len(steps) + 1)[:, None]
    labels = [f"arm {a}" for a in range(n_arms)]
    bottom.stackplot(steps, share.T, colors=colours.colors, labels=labels)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("share of picks so far")
    bottom.set_xlabel("step")
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(n_arms, 4), fontsize=8)
    return save_figure(fig, path)


def plot_prompt_coverage(
    steps: np.ndarray,
    unique_seen: np.ndarray,
    solve_rates: np.ndarray,
    title: str,
    path: str | Path,
) -> Path:
    """For a curriculum without arms: how many distinct prompts it has trained on so far, and
    each step's solve rate (where the picks sat between too easy and too hard)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 5.0), sharex=True, layout="constrained")
    top.plot(steps, unique_seen, color="#4c72b0", marker="o", markersize=3)
    top.set_ylabel("distinct prompts so far")
    top.set_title(title)
    bottom.scatter(steps, solve_rates, c=solve_rates, cmap="viridis", vmin=0, vmax=1, s=30)
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel("step solve rate")
    bottom.set_xlabel("step")
    return save_figure(fig, path)


def plot_training_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path
) -> Path:
    """One small panel per named curve (x = step), with a rolling mean over noisy values."""
    names = [n for n, (x, _) in curves.items() if len(x)]
    cols = 2
    rows = max(1, (len(names) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        x, y = curves[name]
        ax.plot(x, y, color="#9e9e9e", linewidth=1, label="per step")
        window = max(1, len(y) // 8)
        if window > 1:
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(
                x[window - 1 :], smooth, color="#c44e52", linewidth=2, label=f"mean of {window}"
            )
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_comparison(runs: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Held-out accuracy per strategy and benchmark: bars at the mean over runs (seeds), each
    run as a dot, so the spread is visible rather than summarised away."""
    benchmarks = [c[4:] for c in runs.columns if c.startswith("acc:")]
    strategies = sorted(runs["strategy"].unique())
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(strategies) * max(len(benchmarks), 1)), 4))
    width = 0.8 / max(len(benchmarks), 1)
    colours = _palette("tab10")
    for b, name in enumerate(benchmarks):
        for s, strategy in enumerate(strategies):
            values = runs.loc[runs["strategy"] == strategy, f"acc:{name}"].dropna().to_numpy()
            x = s + (b - (len(benchmarks) - 1) / 2) * width
            label = name if s == 0 else None
            ax.bar(x, values.mean() if len(values) else 0, width * 0.9, color=colours[b % 10],
                   alpha=0.6, label=label)  # fmt: skip
            ax.scatter(np.full(len(values), x), values, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(strategies)), strategies, rotation=15, ha="right")
    ax.set_ylabel("held-out pass@1 of the trained model")
    ax.set_ylim(0, 1)
    ax.legend(title="benchmark", fontsize=8)
    ax.set_title(title or f"{len(runs)} pipeline runs")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_accuracy(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Grouped bars: pass@1 per benchmark, one bar per model, standard-error whiskers."""
    benchmarks = list(dict.fromkeys(table["benchmark"]))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(benchmarks))
    colours = _palette("tab10")
    fig, ax = plt.subplots(
        figsize=(max(5.0, 1.6 * len(benchmarks) * max(1, len(models)) / 2 + 3), 4.2),
        constrained_layout=True,
    )
    for i, model in enumerate(models):
        rows = table[table["model"] == model].set_index("benchmark")
        values = np.array([rows["pass@1"].get(b, np.nan) for b in benchmarks], dtype=float)
        se = np.array([rows["pass@1_se"].get(b, np.nan) for b in benchmarks], dtype=float)
        se = np.nan_to_num(se)
        below, above = (
            np.minimum(se, np.nan_to_num(values)),
            np.minimum(se, 1 - np.nan_to_num(values)),
        )
        offset = (i - (len(models) - 1) / 2) * width
        ax.bar(
            x + offset,
            values,
            width,
            yerr=[below, above],
            capsize=3,
            color=colours[i % len(colours)],
            label=model if len(model) <= 40 else "..." + model[-37:],
        )
        for xi, v in zip(x + offset, values, strict=True):
            if not np.isnan(v):
                ax.annotate(f"{v:.2f}", (xi, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, benchmarks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass@1 (± standard error)")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


CURVE_AXES = (
    ("step", "GRPO steps"),
    ("rollouts", "rollouts generated (probe and references included)"),
    ("unique_seen", "unique training questions seen"),
    ("train_seconds", "training wall time (s, checks excluded)"),
)


def plot_strategy_curves(summary: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Held-out accuracy of every strategy against steps, rollouts, unique questions and wall
    time (line: mean over seeds; band: the seed-level interval, none with one seed), and the
    effective prompt ratio per step."""
    colours = _palette("tab10")
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    flat = axes.ravel()
    for i, (name, entry) in enumerate(summary.items()):
        colour = colours[i % 10]
        curve = entry["curve"]
        mean = np.array([p["mean"] for p in curve])
        banded = all(p["ci"] is not None for p in curve)
        for ax, (key, _) in zip(flat[:4], CURVE_AXES, strict=True):
            x = np.array([p[key] for p in curve], dtype=float)
            ax.plot(x, mean, marker="o", color=colour, label=f"{name} ({len(entry['seeds'])})")
            if banded:
                lo, hi = np.array([p["ci"] for p in curve], dtype=float).T
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15)
        epr = np.array(entry["effective_prompt_ratio"]["per_step"], dtype=float)
        if len(epr):
            flat[4].plot(epr[:, 0], epr[:, 1], color=colour, label=name)
    for ax, (_, label) in zip(flat[:4], CURVE_AXES, strict=True):
        ax.set_xlabel(label)
        ax.set_ylabel("held-out accuracy (greedy)")
        ax.grid(alpha=0.3)
    flat[0].legend(title="strategy (seeds)", fontsize=8)
    flat[4].set_xlabel("GRPO steps")
    flat[4].set_ylabel("effective prompt ratio (mean over seeds)")
    flat[4].set_ylim(-0.02, 1.02)
    flat[4].grid(alpha=0.3)
    _plot_arm_preference(summary, flat[5], colours)
    fig.suptitle(title or "strategy comparison")
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_arm_preference(summary: dict[str, Any], ax: Any, colours: list[Any]) -> None:
    """Share of picks per arm against the arm's probe solve rate, one marker set per strategy
    with arms: a bandit that prefers moderately difficult clusters peaks in the middle."""
    drawn = False
    for i, (name, entry) in enumerate(summary.items()):
        arms = [a for a in entry.get("arms", []) if a.get("probe_solve_rate") is not None]
        if not arms:
            continue
        arms.sort(key=lambda a: a["probe_solve_rate"])
        x = [a["probe_solve_rate"] for a in arms]
        y = [a["share"] for a in arms]
        ax.plot(x, y, marker="o", linestyle=":", color=colours[i % 10], label=name)
        drawn = True
    ax.set_xlabel("arm's probe solve rate")
    ax.set_ylabel("share of the arm's picks (all seeds)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no strategy with arms", ha="center", va="center", transform=ax.transAxes)


def plot_simulation(report: dict[str, Any], path: str | Path) -> Path:
    """The simulated learner (``sparft simulate``): mean held-out accuracy per step for every
    strategy, and where each put its training prompts, by the clusters' start solve rate."""
    strategies = report["strategies"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for name, entry in strategies.items():
        curve = entry["curve"]
        left.plot(range(len(curve)), curve, label=name, linewidth=1.6)
    left.set_xlabel("step")
    left.set_ylabel("simulated held-out accuracy (mean over seeds)")
    left.set_title(f"{len(report['seeds'])} seeds, {report['steps']} steps")
    left.legend(fontsize=8)
    rates = np.asarray(report["cluster_start_solve_rate"])
    order = np.argsort(rates)
    width = 0.8 / max(1, len(strategies))
    for i, (name, entry) in enumerate(strategies.items()):
        picks = np.asarray(entry["picks_by_cluster"], dtype=float)[order]
        share = picks / max(1.0, picks.sum())
        right.bar(np.arange(len(rates)) + i * width, share, width, label=name)
    right.set_xticks(np.arange(len(rates)) + 0.4 - width / 2)
    right.set_xticklabels([f"{r:.2f}" for r in rates[order]], fontsize=8)
    right.set_xlabel("cluster, by its solve rate at the start")
    right.set_ylabel("share of training prompts")
    right.set_title("where each strategy trained")
    return save_figure(fig, path)
