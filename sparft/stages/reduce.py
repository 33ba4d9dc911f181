"""Stage ``reduce``: PCA/UMAP of the embeddings to ``data/reduced.npz``; the fitted reducer
to ``data/reducer.joblib`` for projecting new questions later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparft.config import Params
from sparft.embed import Embeddings, load_embeddings, save_embeddings
from sparft.io import write_json
from sparft.reduce import fit_reduce, save_reducer
from sparft.stages.embed import OUT as EMBEDDINGS

OUT = Path("data/reduced.npz")
REDUCER = Path("data/reducer.joblib")
SUMMARY = Path("data/reduce_summary.json")
ARTIFACTS = (SUMMARY,)


def run(params: Params) -> dict[str, Any]:
    cfg = params.reduce
    emb = load_embeddings(EMBEDDINGS)
    reduction = fit_reduce(emb.matrix, cfg)
    save_reducer(reduction, REDUCER, emb.model)
    save_embeddings(Embeddings(emb.ids, reduction.reduced, emb.model), OUT, key="reduced")
    summary = {
        "method": reduction.method,
        "questions": int(reduction.reduced.shape[0]),
        "input_dimensions": reduction.input_dim,
        "n_components": reduction.n_components,
        "explained_variance": reduction.explained_variance,
        "notes": reduction.notes,
    }
    write_json(summary, SUMMARY)
    return summary
