"""Pick the small training subset: a few questions from every cluster (SPaRFT phase 1, step 6).

The budget (paper: about 100 questions) is spread over the clusters, then each cluster's share
is picked in feature space by

- ``k-center``: farthest-point (k-center greedy) selection: start at the question nearest the
  cluster centroid, then repeatedly add the question farthest from all picked so far, so the
  picks cover the cluster rather than repeat its centre (the paper's diversity step);
- ``nearest-centroid``: the questions closest to the centroid (most typical; an ablation);
- ``random``: a seeded uniform sample (the baseline).

Allocation ``equal`` gives every cluster the same count (the paper's l per cluster; a cluster
smaller than its share gives all it has and the rest goes to the others); ``proportional``
splits the budget in proportion to cluster size (largest remainders); a cluster whose share
rounds to zero still gets one question, taken from the largest share, so no bandit arm is
empty. A budget of at least the data set's size keeps every question; a budget below the
number of clusters is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from sparft.data import DataError

SelectMethod = Literal["k-center", "nearest-centroid", "random"]


class SelectConfig(BaseModel):
    """The ``select`` section: how many questions to keep and how to pick them per cluster."""

    model_config = ConfigDict(extra="forbid")

    method: SelectMethod = Field(
        "k-center", description="k-center (diverse), nearest-centroid (typical) or random."
    )
    budget: int = Field(100, ge=1, description="Questions in the training subset, in total.")
    allocation: Literal["equal", "proportional"] = Field(
        "equal", description="Spread the budget equally over clusters, or by cluster size."
    )
    seed: int = Field(0, description="Seed of the random method.")


def allocate(
    sizes: Sequence[int], budget: int, mode: Literal["equal", "proportional"]
) -> list[int]:
    """Questions to take from each cluster: never more than it has, summing to the budget."""
    sizes_arr = np.asarray(sizes, dtype=np.int64)
    if (sizes_arr < 1).any():
        raise DataError(f"select: every cluster needs at least one question, got sizes {sizes}")
    total = int(sizes_arr.sum())
    if budget >= total:
        return sizes_arr.tolist()
    k = len(sizes_arr)
    if budget < k:
        raise DataError(
            f"select: select.budget={budget} is smaller than the number of clusters ({k}); "
            "every cluster (bandit arm) needs a question: raise the budget or lower cluster.k"
        )
    if mode == "equal":
        return _water_fill(sizes_arr, budget)
    exact = sizes_arr * budget / total
    quota = np.floor(exact).astype(np.int64)
    by_remainder = sorted(range(k), key=lambda c: (-(exact[c] - quota[c]), -sizes_arr[c], c))
    for c in by_remainder[: budget - int(quota.sum())]:
        quota[c] += 1
    for empty in np.flatnonzero(quota == 0):
        quota[int(np.argmax(quota))] -= 1
        quota[empty] = 1
    return quota.tolist()


def _water_fill(sizes: np.ndarray, budget: int) -> list[int]:
    """Equal shares; a small cluster gives all it has and its unused share goes to the rest."""
    quota = np.zeros_like(sizes)
    remaining = budget
    while remaining > 0:
        open_ = np.flatnonzero(quota < sizes)
        share = remaining // len(open_)
        if share == 0:
            for c in sorted(open_, key=lambda c: (-sizes[c], c))[:remaining]:
                quota[c] += 1
            break
        add = np.minimum(share, sizes[open_] - quota[open_])
        quota[open_] += add
        remaining -= int(add.sum())
    return quota.tolist()


def k_center_greedy(points: np.ndarray, count: int) -> list[int]:
    """Farthest-point order of ``count`` rows: centroid-nearest first, then the farthest."""
    count = min(count, len(points))
    if count == 0:
        return []
    centre = points.mean(axis=0)
    first = int(np.argmin(((points - centre) ** 2).sum(axis=1)))
    picked = [first]
    dist = ((points - points[first]) ** 2).sum(axis=1)
    for _ in range(count - 1):
        nxt = int(np.argmax(dist))
        picked.append(nxt)
        dist = np.minimum(dist, ((points - points[nxt]) ** 2).sum(axis=1))
    return picked


def nearest_to_centroid(points: np.ndarray, count: int) -> list[int]:
    """The ``count`` rows closest to the mean row, closest first (ties by position)."""
    d2 = ((points - points.mean(axis=0)) ** 2).sum(axis=1)
    return np.argsort(d2, kind="stable")[:count].tolist()


def pick(
    points: np.ndarray, count: int, method: SelectMethod, rng: np.random.Generator
) -> list[int]:
    if method == "k-center":
        return k_center_greedy(points, count)
    if method == "nearest-centroid":
        return nearest_to_centroid(points, count)
    return sorted(rng.choice(len(points), size=min(count, len(points)), replace=False).tolist())


def select_subset(features: np.ndarray, labels: np.ndarray, cfg: SelectConfig) -> pd.DataFrame:
    """Rows picked: ``position`` (row of ``features``), ``cluster`` and ``rank`` in its cluster."""
    if len(labels) == 0:
        raise DataError("select: no clustered questions to select from")
    if features.shape[0] != len(labels):
        raise DataError(f"select: {features.shape[0]} feature rows for {len(labels)} labels")
    clusters = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in clusters]
    quotas = allocate([len(m) for m in members], cfg.budget, cfg.allocation)
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for cluster, member, quota in zip(clusters, members, quotas, strict=True):
        for rank, local in enumerate(pick(features[member], quota, cfg.method, rng)):
            rows.append({"position": int(member[local]), "cluster": int(cluster), "rank": rank})
    return pd.DataFrame(rows, columns=["position", "cluster", "rank"])
