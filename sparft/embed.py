"""Sentence embeddings of the questions: one L2-normalised float32 row per question id.

The texts are sorted by length once and encoded in length-sorted chunks, so each batch pads
to similar lengths (as ``SentenceTransformer.encode`` does inside one call) while a progress
bar advances chunk by chunk. The chunks are also the unit workers share (``embed_questions``
under a mapper with several workers), so the rows do not depend on how many there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from sparft.data import DataError
from sparft.io import atomic_path
from sparft.models import prepare_model, resolve_device
from sparft.parallel import in_process, map_shards, workers

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class EmbedConfig(BaseModel):
    """The ``embed`` section: which sentence-transformers model embeds the questions, and how."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "minilm",
        description="Embedding preset (minilm: all-MiniLM-L6-v2, offline), a local folder, "
        "or any sentence-transformers model id (online).",
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Questions per forward pass.")
    max_seq_length: int | None = Field(
        None, ge=8, description="Truncate questions to this many tokens; null: the model's own."
    )
    normalize: bool = Field(True, description="L2-normalise rows (cosine = dot product).")
    device: str = Field(
        "auto", description="'auto' (first CUDA GPU, else CPU), 'cpu', 'cuda:1', ..."
    )
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads; null leaves torch's default."
    )
    chunk_batches: int = Field(
        16, ge=1, description="Batches per encode call, i.e. per progress-bar step."
    )


@dataclass(frozen=True)
class Embeddings:
    """Question ids and their embedding rows, in the same order."""

    ids: np.ndarray
    matrix: np.ndarray
    model: str = ""

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or len(self.ids) != self.matrix.shape[0]:
            raise ValueError(
                f"{len(self.ids)} ids for an embedding matrix of shape {self.matrix.shape}"
            )


def load_encoder(cfg: EmbedConfig) -> SentenceTransformer:
    """The configured model, resolved through the offline presets first."""
    import torch
    from sentence_transformers import SentenceTransformer

    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    model = SentenceTransformer(prepare_model(cfg.model), device=str(resolve_device(cfg.device)))
    if cfg.max_seq_length is not None:
        model.max_seq_length = cfg.max_seq_length
    return model


def chunk_plan(texts: Sequence[str], cfg: EmbedConfig) -> list[np.ndarray]:
    """Positions of the texts in each encode call, longest texts first: the same cut in one
    process and over many workers, so every row is computed in the same company."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    chunk = cfg.batch_size * cfg.chunk_batches
    return [order[start : start + chunk] for start in range(0, len(order), chunk)]


def _encode(model: SentenceTransformer, texts: list[str], cfg: EmbedConfig) -> np.ndarray:
    return np.asarray(
        model.encode(
            texts,
            batch_size=cfg.batch_size,
            normalize_embeddings=cfg.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        ),
        dtype=np.float32,
    )


def encode_texts(
    model: SentenceTransformer, texts: Sequence[str], cfg: EmbedConfig, progress: bool = True
) -> np.ndarray:
    """Embed ``texts`` as a float32 matrix in input order, chunk by chunk (``chunk_plan``)."""
    if not texts:
        return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
    chunks = chunk_plan(texts, cfg)
    parts: list[np.ndarray] = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("embedding", total=len(texts))
        for positions in chunks:
            parts.append(_encode(model, [texts[i] for i in positions], cfg))
            bar.advance(task, len(positions))
    return _place(chunks, parts, len(texts))


def _place(chunks: Sequence[np.ndarray], parts: Sequence[np.ndarray], rows: int) -> np.ndarray:
    matrix = np.empty((rows, parts[0].shape[1]), dtype=np.float32)
    for positions, part in zip(chunks, parts, strict=True):
        matrix[positions] = part
    return matrix


@dataclass(frozen=True)
class EmbedShard:
    """Chunks of texts one worker embeds, loading the encoder once."""

    chunks: tuple[tuple[str, ...], ...]
    cfg: EmbedConfig


def embed_shard(shard: EmbedShard) -> list[np.ndarray]:
    encoder = load_encoder(shard.cfg)
    return [_encode(encoder, list(texts), shard.cfg) for texts in shard.chunks]


def embed_questions(
    ids: Sequence[str],
    questions: Sequence[str],
    cfg: EmbedConfig,
    model: SentenceTransformer | None = None,
    progress: bool = True,
) -> Embeddings:
    """Embed every question with ``model``, or else with ``load_encoder(cfg)`` once per worker
    of the current mapper (``sparft.parallel``: one in this process unless a flow set more);
    the chunks are dealt round-robin so every worker gets long and short texts."""
    if len(ids) != len(questions):
        raise ValueError(f"{len(ids)} ids but {len(questions)} questions")
    if not questions:
        raise DataError("embed: no questions to embed (the data set is empty)")
    texts = list(questions)
    chunks = chunk_plan(texts, cfg)
    if model is not None or in_process():
        matrix = encode_texts(model or load_encoder(cfg), texts, cfg, progress)
    else:
        share = min(workers(), len(chunks))
        dealt = [list(range(w, len(chunks), share)) for w in range(share)]
        units = [
            EmbedShard(tuple(tuple(texts[i] for i in chunks[c]) for c in run), cfg) for run in dealt
        ]
        parts: list[np.ndarray | None] = [None] * len(chunks)
        for run, encoded in zip(dealt, map_shards(embed_shard, units, "embed"), strict=True):
            for c, part in zip(run, encoded, strict=True):
                parts[c] = part
        matrix = _place(chunks, [p for p in parts if p is not None], len(texts))
    id_array = np.asarray(ids, dtype=str)
    check_finite(matrix, id_array, f"embed ({cfg.model})")
    return Embeddings(id_array, matrix, cfg.model)


def check_finite(matrix: np.ndarray, ids: np.ndarray, where: str) -> None:
    """Raise ``DataError`` naming the first rows with NaN or infinite values."""
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        shown = ", ".join(str(i) for i in ids[bad][:5])
        raise DataError(
            f"{where}: {int(bad.sum())} of {len(ids)} embedding rows are not finite "
            f"(question ids {shown}{', ...' if bad.sum() > 5 else ''})"
        )


def save_embeddings(emb: Embeddings, path: str | Path, key: str = "embeddings") -> Path:
    """Write ``ids``, the matrix under ``key`` and ``model`` to an ``.npz`` file, atomically.

    Reduced coordinates and cluster features use the same layout under their own key.
    """
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(
            handle,
            ids=np.asarray(emb.ids, dtype=str),
            model=np.asarray(emb.model),
            **{key: emb.matrix},  # type: ignore[arg-type]  # numpy's stubs: allow_pickle
        )
    return Path(path)


def load_embeddings(path: str | Path, key: str = "embeddings") -> Embeddings:
    """Read an ``.npz`` written by ``save_embeddings``; errors name the file and the field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (run the stage that writes it first)")
    with np.load(path, allow_pickle=False) as payload:
        fields: dict[str, Any] = {name: payload[name] for name in payload.files}
    for name in ("ids", key):
        if name not in fields:
            raise DataError(f"{path}: field '{name}' missing (has {sorted(fields)})")
    matrix = np.asarray(fields[key], dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(fields["ids"]):
        raise DataError(
            f"{path}: field '{key}' has shape {matrix.shape}, expected ({len(fields['ids'])}, d)"
        )
    if matrix.shape[0] == 0:
        raise DataError(f"{path}: field '{key}' has no rows (empty data set)")
    check_finite(matrix, fields["ids"], f"{path} field '{key}'")
    model = str(fields["model"]) if "model" in fields else ""
    return Embeddings(fields["ids"].astype(str), matrix, model)
