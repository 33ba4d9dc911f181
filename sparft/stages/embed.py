"""Stage ``embed``: one normalised embedding per question, to ``data/embeddings.npz``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.stage import Stage

if TYPE_CHECKING:
    from sparft.config import Params

OUT = Path("data/embeddings.npz")
SUMMARY = Path("data/embed_summary.json")


def run(params: Params) -> dict[str, Any]:
    from sparft.data import DataError, read_dataset
    from sparft.embed import embed_questions, save_embeddings
    from sparft.io import write_json

    cfg = params.embed
    frame = read_dataset(params.data.out)
    if frame.empty:
        raise DataError(f"{params.data.out}: no questions to embed (stage embed)")
    start = time.perf_counter()
    emb = embed_questions(frame["id"].tolist(), frame["question"].tolist(), cfg)
    seconds = time.perf_counter() - start
    save_embeddings(emb, OUT)
    summary = {
        "model": cfg.model,
        "questions": int(emb.matrix.shape[0]),
        "dimensions": int(emb.matrix.shape[1]),
        "normalized": cfg.normalize,
        "seconds": round(seconds, 2),
        "questions_per_s": round(emb.matrix.shape[0] / seconds, 1),
    }
    write_json(summary, SUMMARY)
    return summary


STAGE = Stage(
    name="embed",
    module=__name__,
    description="embed every question",
    inputs=("${data.out}",),
    outs=(str(OUT),),
    metrics=(str(SUMMARY),),
    params=("embed",),
    mlflow=(str(SUMMARY),),
)
