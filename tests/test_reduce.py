"""Reduction: PCA shapes and determinism, clamping with a reason, saved reducer projects new
questions, bad input, the stage. UMAP only in one slow test (numba compiles for ~1-2 min)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparft.config import Params
from sparft.data import DataError
from sparft.embed import Embeddings, load_embeddings, save_embeddings
from sparft.reduce import (
    ReduceConfig,
    effective_components,
    fit_reduce,
    load_reducer,
    project,
    save_reducer,
)


def blobs(n: int = 60, dims: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, dims))
    return (centres[np.arange(n) % 3] + rng.normal(size=(n, dims))).astype(np.float32)


def test_pca_shape_determinism_and_explained_variance() -> None:
    x = blobs()
    a = fit_reduce(x, ReduceConfig(n_components=5))
    b = fit_reduce(x, ReduceConfig(n_components=5))
    assert a.reduced.shape == (60, 5) and a.reduced.dtype == np.float32
    np.testing.assert_array_equal(a.reduced, b.reduced)
    assert 0.5 < a.explained_variance <= 1.0  # three blobs: two components carry most
    assert a.notes == []


@pytest.mark.parametrize(
    ("n", "dims", "expected"), [(6, 20, 6), (60, 4, 4)], ids=["few-samples", "few-dims"]
)
def test_components_clamped_with_a_reason(n: int, dims: int, expected: int) -> None:
    reduction = fit_reduce(blobs(n, dims), ReduceConfig(n_components=32))
    assert reduction.n_components == expected == reduction.reduced.shape[1]
    assert "reduce.n_components=32 exceeds" in reduction.notes[0]
    assert f"using {expected}" in reduction.notes[0]


def test_umap_limits_and_too_few_samples() -> None:
    n_components, notes = effective_components(10, 8, 384, "umap")
    assert n_components == 6 and "umap can fit on 8 questions" in notes[0]
    assert effective_components(5, 100, 384, "umap") == (5, [])
    with pytest.raises(DataError, match=r"too few to fit umap"):
        effective_components(2, 2, 384, "umap")


def test_saved_reducer_projects_new_questions(tmp_path: Path) -> None:
    x = blobs(80)
    reduction = fit_reduce(x[:60], ReduceConfig(n_components=3))
    save_reducer(reduction, tmp_path / "r.joblib", embed_model="minilm")
    saved = load_reducer(tmp_path / "r.joblib")
    assert saved["input_dim"] == 20 and saved["embed_model"] == "minilm"
    np.testing.assert_allclose(project(saved, x[:60]), reduction.reduced, atol=1e-5)
    assert project(saved, x[60:]).shape == (20, 3)
    with pytest.raises(DataError, match=r"do not match the reducer's input dimension 20"):
        project(saved, np.zeros((2, 7), dtype=np.float32))


def test_bad_input() -> None:
    with pytest.raises(DataError, match=r"non-empty"):
        fit_reduce(np.zeros((0, 4), dtype=np.float32), ReduceConfig())
    x = blobs()
    x[3, 2] = np.nan
    with pytest.raises(DataError, match=r"non-finite"):
        fit_reduce(x, ReduceConfig())


def test_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparft.stages import STAGES

    monkeypatch.chdir(tmp_path)
    ids = np.array([f"q{i}" for i in range(60)])
    save_embeddings(Embeddings(ids, blobs(), "fake"), "data/embeddings.npz")
    summary = STAGES["reduce"].run(Params.model_validate({"reduce": {"n_components": 4}}))
    assert summary["n_components"] == 4 and summary["input_dimensions"] == 20
    reduced = load_embeddings("data/reduced.npz", key="reduced")
    assert reduced.ids.tolist() == ids.tolist() and reduced.matrix.shape == (60, 4)
    assert load_reducer("data/reducer.joblib")["embed_model"] == "fake"
    assert Path("data/reduce_summary.json").exists()


@pytest.mark.slow
def test_umap_fits_and_projects(tmp_path: Path) -> None:
    x = blobs(90, 16)
    reduction = fit_reduce(x[:80], ReduceConfig(method="umap", n_components=2, umap_neighbors=10))
    assert reduction.reduced.shape == (80, 2) and np.isfinite(reduction.reduced).all()
    save_reducer(reduction, tmp_path / "u.joblib")
    new = project(load_reducer(tmp_path / "u.joblib"), x[80:])
    assert new.shape == (10, 2) and np.isfinite(new).all()
    labels = np.arange(90) % 3
    centres = np.stack([reduction.reduced[labels[:80] == c].mean(axis=0) for c in range(3)])
    nearest = np.argmin(((new[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest == labels[80:]).mean() >= 0.9  # new points land beside their own blob
