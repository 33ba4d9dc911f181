"""Cluster questions on meaning and difficulty together (SPaRFT phase 1, step 5).

Feature of a question = [standardised reduced embedding ; difficulty column]. The embedding
block is centred and scaled to a total variance of n (its number of columns): by default as a
whole, which keeps PCA's ranking of components (``columns`` z-scores each column instead,
lifting the low-variance tail to the weight of the leading components). One difficulty column
of unit variance would then carry 1/(n+1) of the variance and barely move k-means. So the
difficulty column is the z-scored difficulty (1 - solve rate) times ``w * sqrt(n)``: its
variance is w² n, its share of the total w² / (1 + w²) whatever n is. w = 0 clusters on
meaning only; w = 1 gives difficulty half of the variance.

Default w = 0.6 (a 26% share), measured by ``benchmarks/cluster_quality.py`` on DeepScaleR's
MATH set (7469 questions, level labels, PCA 32, K = 10, 3 seeds): the between-cluster share of
the difficulty variance rises from 0.05 (w = 0) to 0.84 and the AMI with the level from 0.01 to
0.44, while the clusters keep three quarters of their agreement with the subject (AMI 0.25
against 0.32 at w = 0). Of the weights tried (0 to 2), 0.6 maximises that between-cluster
share plus the kept share of subject AMI. At w >= 1 the clusters become pure difficulty levels
(share 0.99) and the subject AMI halves (0.15): arms would differ in difficulty only.
``columns`` scaling loses more meaning at every w (subject AMI 0.10 at w = 0.6).

Clusters are numbered by rising mean difficulty (0 = easiest); with HDBSCAN the noise points
either form one more cluster of their own (numbered last) or join the nearest cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from sparft.data import DataError

CLUSTER_COLUMNS = ["id", "cluster", "difficulty", "noise"]


class ClusterConfig(BaseModel):
    """The ``cluster`` section: features and algorithm of the question clustering."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["kmeans", "hdbscan"] = Field(
        "kmeans", description="kmeans: exactly k clusters. hdbscan: as many as the density finds."
    )
    k: int = Field(10, ge=1, le=10_000, description="Number of k-means clusters (bandit arms).")
    difficulty_weight: float = Field(
        0.6,
        ge=0.0,
        le=100.0,
        description="w: the difficulty column is w * sqrt(n_components) * z-scored difficulty, "
        "so it carries w²/(1+w²) of the feature variance (0: meaning only; 1: half).",
    )
    embedding_scaling: Literal["block", "columns"] = Field(
        "block",
        description="Scale the reduced embedding to unit mean column variance as a whole "
        "(block, keeps PCA's component ranking) or z-score each column (columns).",
    )
    n_init: int = Field(4, ge=1, le=100, description="k-means restarts; the best one is kept.")
    min_cluster_size: int = Field(20, ge=2, description="HDBSCAN smallest cluster.")
    min_samples: int | None = Field(
        None, ge=1, description="HDBSCAN core-point neighbourhood; null: min_cluster_size."
    )
    noise: Literal["own", "nearest"] = Field(
        "nearest",
        description="HDBSCAN noise points: their own cluster (one more arm), or each joins the "
        "cluster whose centroid is nearest in feature space.",
    )
    seed: int = 0


@dataclass
class Features:
    """The clustering features and how they were scaled."""

    matrix: np.ndarray
    difficulty: np.ndarray
    difficulty_scale: float
    difficulty_share: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Clustering:
    """Per-question cluster ids (0..n_clusters-1), noise flags and notes on fallbacks."""

    labels: np.ndarray
    noise: np.ndarray
    n_clusters: int
    noise_cluster: int | None = None
    notes: list[str] = field(default_factory=list)


def build_features(
    reduced: np.ndarray,
    difficulty: np.ndarray,
    weight: float,
    embedding_scaling: Literal["block", "columns"] = "block",
) -> Features:
    """[standardised ``reduced`` ; ``weight * sqrt(n) *`` z-scored ``difficulty``].

    A constant difficulty (every question equally hard) cannot separate anything: its column
    is all zeros and a note says the clustering is on meaning only.
    """
    if reduced.ndim != 2 or reduced.shape[0] == 0:
        raise DataError(f"cluster: expected a non-empty 2-D reduced matrix, got {reduced.shape}")
    if len(difficulty) != reduced.shape[0]:
        raise DataError(
            f"cluster: {len(difficulty)} difficulties for {reduced.shape[0]} reduced rows"
        )
    if not np.isfinite(reduced).all():
        raise DataError("cluster: the reduced embeddings have non-finite values")
    difficulty = np.asarray(difficulty, dtype=np.float64)
    if not np.isfinite(difficulty).all():
        raise DataError("cluster: some difficulties are missing or not finite")
    x = reduced.astype(np.float64)
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    if embedding_scaling == "columns":
        embedding = x / np.where(std > 0, std, 1.0)
    else:
        mean_var = float((std**2).mean())
        embedding = x / np.sqrt(mean_var) if mean_var > 0 else x
    n = x.shape[1]
    notes: list[str] = []
    spread = float(difficulty.std())
    if spread < 1e-12:
        column = np.zeros_like(difficulty)
        scale = 0.0
        if weight > 0:
            notes.append(
                f"all {len(difficulty)} questions have difficulty {difficulty[0]:g}: "
                "difficulty cannot separate clusters, clustering on meaning only"
            )
    else:
        scale = weight * np.sqrt(n) / spread
        column = scale * (difficulty - difficulty.mean())
    matrix = np.column_stack([embedding, column])
    variances = matrix.var(axis=0)
    share = float(variances[-1] / variances.sum()) if variances.sum() > 0 else 0.0
    return Features(matrix.astype(np.float32), difficulty, float(scale), share, notes)


def cluster_features(features: np.ndarray, cfg: ClusterConfig) -> Clustering:
    """Cluster the rows of ``features`` with k-means or HDBSCAN, numbered easiest first."""
    n = features.shape[0]
    if cfg.method == "kmeans":
        if n < cfg.k:
            raise DataError(
                f"cluster: cluster.k={cfg.k} but only {n} questions to cluster; "
                "lower cluster.k or load more questions"
            )
        from sklearn.cluster import KMeans

        labels = KMeans(cfg.k, n_init=cfg.n_init, random_state=cfg.seed).fit_predict(features)
        return Clustering(labels.astype(np.int64), np.zeros(n, dtype=bool), cfg.k)
    return _hdbscan(features, cfg)


def _hdbscan(features: np.ndarray, cfg: ClusterConfig) -> Clustering:
    from sklearn.cluster import HDBSCAN

    n = features.shape[0]
    if n < cfg.min_cluster_size:
        raise DataError(
            f"cluster: cluster.min_cluster_size={cfg.min_cluster_size} but only {n} questions; "
            "lower it or load more questions"
        )
    raw = HDBSCAN(
        min_cluster_size=cfg.min_cluster_size, min_samples=cfg.min_samples, copy=True
    ).fit_predict(features)
    noise = raw < 0
    found = int(raw.max()) + 1 if (~noise).any() else 0
    notes: list[str] = []
    if found == 0:
        notes.append(f"HDBSCAN found no cluster: all {n} questions form one cluster")
        return Clustering(np.zeros(n, dtype=np.int64), noise, 1, 0 if noise.any() else None, notes)
    labels = raw.astype(np.int64)
    noise_cluster = None
    if noise.any():
        if cfg.noise == "own":
            labels[noise] = found
            noise_cluster = found
            notes.append(f"{int(noise.sum())} noise points form their own cluster {found}")
        else:
            centroids = np.stack([features[labels == c].mean(axis=0) for c in range(found)])
            labels[noise] = nearest(features[noise], centroids)
            notes.append(f"{int(noise.sum())} noise points joined their nearest cluster")
    total = found + (noise_cluster is not None)
    return Clustering(labels, noise, total, noise_cluster, notes)


def nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Euclidean) for each point."""
    d2 = (
        (points**2).sum(axis=1)[:, None]
        - 2.0 * points @ centres.T
        + (centres**2).sum(axis=1)[None, :]
    )
    return np.argmin(d2, axis=1)


def order_by_difficulty(clustering: Clustering, difficulty: np.ndarray) -> Clustering:
    """Renumber clusters by rising mean difficulty (ties: larger first); noise stays last."""
    regular = [c for c in range(clustering.n_clusters) if c != clustering.noise_cluster]
    keys = {
        c: (float(difficulty[clustering.labels == c].mean()), -int((clustering.labels == c).sum()))
        for c in regular
    }
    order = sorted(regular, key=lambda c: (keys[c], c))
    mapping = np.arange(clustering.n_clusters)
    for new, old in enumerate(order):
        mapping[old] = new
    if clustering.noise_cluster is not None:
        mapping[clustering.noise_cluster] = len(order)
    return Clustering(
        mapping[clustering.labels],
        clustering.noise,
        clustering.n_clusters,
        None if clustering.noise_cluster is None else len(order),
        clustering.notes,
    )


def difficulty_between_share(labels: np.ndarray, difficulty: np.ndarray) -> float:
    """Share of the difficulty variance that lies between clusters (eta squared, 0..1)."""
    total = float(((difficulty - difficulty.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    between = sum(
        (labels == c).sum() * (difficulty[labels == c].mean() - difficulty.mean()) ** 2
        for c in np.unique(labels)
    )
    return float(between / total)


def cluster_table(ids: np.ndarray, clustering: Clustering, difficulty: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ids.astype(str),
            "cluster": clustering.labels.astype(np.int64),
            "difficulty": difficulty.astype(np.float64),
            "noise": clustering.noise,
        },
        columns=CLUSTER_COLUMNS,
    )


def summarise(table: pd.DataFrame, noise_cluster: int | None = None) -> list[dict[str, Any]]:
    """Per cluster: size, mean difficulty, its spread (std, min, max), whether it is noise."""
    rows = []
    for cluster, group in table.groupby("cluster", sort=True):
        d = group["difficulty"]
        rows.append(
            {
                "cluster": int(cluster),
                "size": len(group),
                "mean_difficulty": float(d.mean()),
                "std_difficulty": float(d.std(ddof=0)),
                "min_difficulty": float(d.min()),
                "max_difficulty": float(d.max()),
                "noise": noise_cluster is not None and int(cluster) == noise_cluster,
            }
        )
    return rows


def run_clustering(
    ids: np.ndarray, reduced: np.ndarray, difficulty: np.ndarray, cfg: ClusterConfig
) -> tuple[pd.DataFrame, Features, Clustering, dict[str, Any]]:
    """Features, clusters, per-question table and summary in one call (the stage's work)."""
    if len(ids) == 0:
        raise DataError("cluster: no questions to cluster (the data set is empty)")
    feats = build_features(reduced, difficulty, cfg.difficulty_weight, cfg.embedding_scaling)
    clustering = order_by_difficulty(cluster_features(feats.matrix, cfg), feats.difficulty)
    clustering.notes = feats.notes + clustering.notes
    table = cluster_table(ids, clustering, feats.difficulty)
    summary = {
        "method": cfg.method,
        "questions": len(table),
        "clusters": clustering.n_clusters,
        "noise_points": int(clustering.noise.sum()),
        "noise_cluster": clustering.noise_cluster,
        "difficulty_weight": cfg.difficulty_weight,
        "difficulty_column_scale": feats.difficulty_scale,
        "difficulty_variance_share": feats.difficulty_share,
        "difficulty_between_cluster_share": difficulty_between_share(
            clustering.labels, feats.difficulty
        ),
        "per_cluster": summarise(table, clustering.noise_cluster),
        "notes": clustering.notes,
    }
    return table, feats, clustering, summary


def align_difficulty(
    ids: np.ndarray, probe: pd.DataFrame, where: str = "probe results"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of ``ids`` that were probed, and their difficulty ``1 - solve_rate``.

    The probe may cover a sample of the questions (``probe.max_questions``): only those are
    clustered. A probed id with no embedding means the artifacts are out of date.
    """
    for column in ("id", "solve_rate"):
        if column not in probe.columns:
            raise DataError(f"{where}: field '{column}' missing (has {list(probe.columns)})")
    if probe.empty:
        raise DataError(f"{where}: no probed questions")
    bad = probe.loc[~np.isfinite(probe["solve_rate"].astype(float)), "id"]
    if len(bad):
        raise DataError(
            f"{where}: field 'solve_rate' is missing or not finite for {len(bad)} questions "
            f"(first: {bad.iloc[0]})"
        )
    rate = dict(zip(probe["id"].astype(str), probe["solve_rate"].astype(float), strict=True))
    unknown = set(rate) - set(ids.tolist())
    if unknown:
        raise DataError(
            f"{where}: {len(unknown)} probed questions have no embedding (e.g. {min(unknown)}); "
            "the embeddings are older than the data set: rerun embed and reduce"
        )
    rows = np.flatnonzero([i in rate for i in ids.tolist()])
    notes = []
    if len(rows) < len(ids):
        notes.append(f"{len(ids) - len(rows)} of {len(ids)} questions were not probed: left out")
    difficulty = np.array([1.0 - rate[i] for i in ids[rows].tolist()], dtype=np.float64)
    return rows, difficulty, notes
