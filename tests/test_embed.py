"""Embedding: input order kept through length sorting and chunking, npz round trip, bad input.

A fake encoder stands in for sentence-transformers here; the real minilm preset runs in the
slow end-to-end test of ``test_selection.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparft.config import Params
from sparft.data import COLUMNS, DataError
from sparft.embed import (
    EmbedConfig,
    Embeddings,
    embed_questions,
    encode_texts,
    load_embeddings,
    save_embeddings,
)
from sparft.io import write_parquet


class FakeEncoder:
    """Deterministic per-text vectors; records each encode call's batch."""

    def __init__(self, dim: int = 4, bad: str | None = None) -> None:
        self.dim, self.bad, self.calls = dim, bad, []

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            rng = np.random.default_rng(sum(map(ord, text)) + len(text))
            vec = rng.normal(size=self.dim)
            if kwargs.get("normalize_embeddings"):
                vec /= np.linalg.norm(vec)
            if text == self.bad:
                vec[0] = np.nan
            rows.append(vec)
        return np.asarray(rows, dtype=np.float32)


TEXTS = [f"question {'x' * (i * 7 % 13)} number {i}" for i in range(23)]


def test_encode_keeps_input_order_across_chunks() -> None:
    fake = FakeEncoder()
    chunked = encode_texts(fake, TEXTS, EmbedConfig(batch_size=2, chunk_batches=2), False)
    single = FakeEncoder().encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(chunked, single, rtol=1e-6)
    assert chunked.dtype == np.float32
    assert np.allclose(np.linalg.norm(chunked, axis=1), 1.0, atol=1e-5)
    assert len(fake.calls) == 6  # 23 texts in chunks of 4
    lengths = [len(t) for call in fake.calls for t in call]
    assert lengths == sorted(lengths, reverse=True)  # longest first, as encode sorts


def test_embed_questions_ids_beside_rows_and_round_trip(tmp_path: Path) -> None:
    ids = [f"id{i}" for i in range(len(TEXTS))]
    emb = embed_questions(ids, TEXTS, EmbedConfig(), model=FakeEncoder(), progress=False)
    assert emb.ids.tolist() == ids and emb.matrix.shape == (len(TEXTS), 4)
    path = save_embeddings(emb, tmp_path / "e.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]
    back = load_embeddings(path)
    assert back.ids.tolist() == ids and back.model == "minilm"
    np.testing.assert_array_equal(back.matrix, emb.matrix)


def test_empty_and_non_finite_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no questions to embed"):
        embed_questions([], [], EmbedConfig(), model=FakeEncoder())
    with pytest.raises(DataError, match=r"1 of 23 embedding rows are not finite.*id5"):
        embed_questions(
            [f"id{i}" for i in range(23)], TEXTS, EmbedConfig(), FakeEncoder(bad=TEXTS[5]), False
        )
    matrix = np.ones((3, 2), dtype=np.float32)
    matrix[1, 1] = np.inf
    save_embeddings(Embeddings(np.array(["a", "b", "c"]), matrix), tmp_path / "bad.npz")
    with pytest.raises(DataError, match=r"bad.npz field 'embeddings'.*question ids b"):
        load_embeddings(tmp_path / "bad.npz")
    save_embeddings(Embeddings(np.array([], dtype=str), np.zeros((0, 2))), tmp_path / "empty.npz")
    with pytest.raises(DataError, match=r"empty.npz: field 'embeddings' has no rows"):
        load_embeddings(tmp_path / "empty.npz")
    with pytest.raises(DataError, match=r"field 'reduced' missing"):
        load_embeddings(tmp_path / "bad.npz", key="reduced")
    with pytest.raises(FileNotFoundError, match=r"run the stage"):
        load_embeddings(tmp_path / "nothing.npz")


def _train(tmp_path: Path, questions: list[str]) -> None:
    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(len(questions))],
            "question": questions,
            "answer": "1",
            "source": "test",
            "difficulty_label": 1.0,
            "meta": "{}",
        },
        columns=COLUMNS,
    )
    write_parquet(frame, tmp_path / "data" / "train.parquet")


def test_stage_writes_npz_and_refuses_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparft.stages import STAGES

    monkeypatch.chdir(tmp_path)
    bad = TEXTS[3]
    monkeypatch.setattr("sparft.embed.load_encoder", lambda cfg: FakeEncoder(bad=bad))
    _train(tmp_path, TEXTS[:3])
    summary = STAGES["embed"].run(Params())
    assert summary["questions"] == 3 and summary["dimensions"] == 4
    assert load_embeddings("data/embeddings.npz").ids.tolist() == ["q0", "q1", "q2"]
    before = Path("data/embeddings.npz").read_bytes()
    _train(tmp_path, TEXTS[:5])
    with pytest.raises(DataError, match=r"not finite.*q3"):
        STAGES["embed"].run(Params())
    assert Path("data/embeddings.npz").read_bytes() == before  # old output left whole
    _train(tmp_path, [])
    with pytest.raises(DataError, match=r"data/train.parquet: no questions to embed \(stage embed"):
        STAGES["embed"].run(Params())
