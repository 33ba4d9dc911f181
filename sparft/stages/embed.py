"""Stage ``embed``: one normalised embedding per question, to ``data/embeddings.npz``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sparft.config import Params
from sparft.data import DataError, read_dataset
from sparft.embed import embed_questions, save_embeddings
from sparft.io import write_json

OUT = Path("data/embeddings.npz")
SUMMARY = Path("data/embed_summary.json")
ARTIFACTS = (SUMMARY,)


def run(params: Params) -> dict[str, Any]:
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
