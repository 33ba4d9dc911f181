"""Stage ``reduce``: PCA/UMAP of the embeddings to ``data/reduced.npz``; the fitted reducer
to ``data/reducer.joblib`` for projecting new questions later."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.embed import OUT as EMBEDDINGS
from sparft.stages.stage import Stage

if TYPE_CHECKING:
    from sparft.config import Params

OUT = Path("data/reduced.npz")
REDUCER = Path("data/reducer.joblib")
SUMMARY = Path("data/reduce_summary.json")


def run(params: Params) -> dict[str, Any]:
    from sparft.embed import Embeddings, load_embeddings, save_embeddings
    from sparft.io import write_json
    from sparft.reduce import fit_reduce, save_reducer

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


STAGE = Stage(
    name="reduce",
    module=__name__,
    description="reduce the embeddings (PCA or UMAP)",
    inputs=(str(EMBEDDINGS),),
    outs=(str(OUT), str(REDUCER)),
    metrics=(str(SUMMARY),),
    params=("reduce",),
    mlflow=(str(SUMMARY),),
)
