"""Reduce question embeddings to a few components (PCA by default, UMAP on request).

The fitted reducer is saved with joblib so questions added later can be projected into the
same space (``project``) without refitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sparft.data import DataError
from sparft.io import atomic_path


class ReduceConfig(BaseModel):
    """The ``reduce`` section: how embeddings become the clustering's meaning coordinates."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["pca", "umap"] = Field(
        "pca",
        description="pca: linear, fast, deterministic. umap: non-linear, about 60-100 s of "
        "numba compilation on its first call in a process.",
    )
    n_components: int = Field(
        32,
        ge=1,
        le=4096,
        description="Output dimensions; clamped to what the data allow (the summary says so).",
    )
    umap_neighbors: int = Field(15, ge=2, description="UMAP n_neighbors (local vs global).")
    umap_min_dist: float = Field(0.0, ge=0.0, le=1.0, description="UMAP min_dist.")
    umap_metric: str = Field("cosine", description="UMAP metric on the input embeddings.")
    seed: int = 0


@dataclass
class Reduction:
    """The fitted reducer, the reduced matrix and what was clamped or explained on the way."""

    reducer: Any
    reduced: np.ndarray
    method: str
    n_components: int
    input_dim: int
    explained_variance: float | None = None
    notes: list[str] = field(default_factory=list)


def effective_components(
    requested: int, n_samples: int, dims: int, method: str
) -> tuple[int, list[str]]:
    """Clamp ``requested`` to what ``method`` can fit on ``n_samples`` x ``dims``, with reasons.

    PCA has at most min(n_samples, dims) components. UMAP's spectral layout needs
    n_components < n_samples - 1, and more output than input dimensions adds nothing.
    """
    if n_samples < (3 if method == "umap" else 1):
        raise DataError(f"reduce: {n_samples} embeddings are too few to fit {method}")
    limit = min(n_samples, dims) if method == "pca" else min(dims, n_samples - 2)
    if requested <= limit:
        return requested, []
    return limit, [
        f"reduce.n_components={requested} exceeds what {method} can fit on {n_samples} "
        f"questions x {dims} dimensions; using {limit}"
    ]


def fit_reduce(x: np.ndarray, cfg: ReduceConfig) -> Reduction:
    """Fit the configured reducer on ``x`` (rows = questions) and return it with ``x`` reduced."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"reduce: expected a non-empty 2-D embedding matrix, got {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("reduce: the embedding matrix has non-finite values")
    n_samples, dims = x.shape
    n_components, notes = effective_components(cfg.n_components, n_samples, dims, cfg.method)
    if cfg.method == "pca":
        from sklearn.decomposition import PCA

        reducer: Any = PCA(n_components=n_components, random_state=cfg.seed)
        reduced = reducer.fit_transform(x)
        explained = float(reducer.explained_variance_ratio_.sum())
    else:
        import umap

        neighbors = min(cfg.umap_neighbors, n_samples - 1)
        if neighbors < cfg.umap_neighbors:
            notes.append(f"reduce.umap_neighbors={cfg.umap_neighbors} lowered to {neighbors}")
        reducer = umap.UMAP(
            n_components=n_components,
            n_neighbors=neighbors,
            min_dist=cfg.umap_min_dist,
            metric=cfg.umap_metric,
            random_state=cfg.seed,
            n_jobs=1,
        )
        reduced = reducer.fit_transform(x)
        explained = None
    reduced = np.asarray(reduced, dtype=np.float32)
    if not np.isfinite(reduced).all():
        raise DataError(f"reduce: {cfg.method} produced non-finite coordinates")
    return Reduction(reducer, reduced, cfg.method, n_components, dims, explained, notes)


def save_reducer(reduction: Reduction, path: str | Path, embed_model: str = "") -> Path:
    """Pickle the fitted reducer with what ``project`` needs to check its input."""
    payload = {
        "reducer": reduction.reducer,
        "method": reduction.method,
        "n_components": reduction.n_components,
        "input_dim": reduction.input_dim,
        "embed_model": embed_model,
    }
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        joblib.dump(payload, handle)
    return Path(path)


def load_reducer(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (run the reduce stage first)")
    payload = joblib.load(path)
    if not isinstance(payload, dict) or "reducer" not in payload:
        raise DataError(f"{path}: not a reducer saved by sparft.reduce.save_reducer")
    return payload


def project(saved: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Project new embeddings (same embedding model) with a reducer from ``load_reducer``."""
    if x.ndim != 2 or x.shape[1] != saved["input_dim"]:
        raise DataError(
            f"project: embeddings of shape {x.shape} do not match the reducer's input "
            f"dimension {saved['input_dim']} (model {saved.get('embed_model') or 'unknown'})"
        )
    return np.asarray(saved["reducer"].transform(x), dtype=np.float32)
