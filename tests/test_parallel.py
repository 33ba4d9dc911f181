"""Shards: probe, embed and evaluate give the single-process rows whatever the number of
workers, each shard loads its model once, and a probe journal survives a kill mid-line.

``PicklingMapper`` stands in for Ray here: every shard function and unit goes through pickle
(as they do to a Ray worker) and each shard runs apart from the others.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sparft import embed as embed_module
from sparft.arithmetic import ArithmeticConfig
from sparft.data import DataConfig, load_dataset
from sparft.embed import EmbedConfig, embed_questions
from sparft.evaluation import EvaluateConfig, evaluate
from sparft.generation import GenerationConfig, make_backend
from sparft.parallel import deal, map_shards, unit_seed, using_mapper, workers
from sparft.probe import Journal, ProbeConfig, fingerprint, probe_sharded, probe_with_model
from sparft.prompts import PromptConfig


@dataclass
class PicklingMapper:
    workers: int
    shards: list[int] = field(default_factory=list)  # units per call

    def __call__(self, fn: Callable[[Any], Any], units: Sequence[Any], label: str) -> list[Any]:
        self.shards.append(len(units))
        shipped = pickle.loads(pickle.dumps(fn))
        return [pickle.loads(pickle.dumps(shipped(pickle.loads(pickle.dumps(u))))) for u in units]


def test_deal_and_unit_seeds() -> None:
    assert deal(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert deal([1, 2], 5) == [[1], [2]]  # never an empty shard
    assert deal([], 3) == []
    assert unit_seed(0, "probe", 3) == unit_seed(0, "probe", 3)
    assert len({unit_seed(0, "probe", i) for i in range(100)}) == 100
    assert unit_seed(1, "probe", 3) != unit_seed(0, "probe", 3)
    assert 0 <= unit_seed(5, "x") < 2**31


def test_mapper_is_scoped_and_gets_every_shard() -> None:
    mapper = PicklingMapper(workers=4)
    assert workers() == 1
    with using_mapper(mapper):
        assert workers() == 4
        assert map_shards(abs, [-5], "one") == [5]  # shipped too: a worker may have the GPU
        assert map_shards(abs, [-1, -2], "two") == [1, 2]
        assert map_shards(abs, [], "none") == []
    assert mapper.shards == [1, 2] and workers() == 1


@pytest.fixture(scope="module")
def questions() -> pd.DataFrame:
    frame, _ = load_dataset(DataConfig(), ArithmeticConfig(per_grade=4, grades=[1, 2, 3]))
    return frame


def test_probe_shards_give_the_single_process_rows(
    tiny_lm_dir: Path, questions: pd.DataFrame, tmp_path: Path
) -> None:
    gen = GenerationConfig(model=str(tiny_lm_dir), max_new_tokens=8, num_threads=1)
    cfg = ProbeConfig(k=3, max_new_tokens=8, batch_questions=2, temperature=1.0)
    reference = probe_with_model(questions, make_backend(gen), cfg, PromptConfig(), gen.model)
    mapper = PicklingMapper(workers=3)
    with using_mapper(mapper):
        run = probe_sharded(questions, gen, cfg, PromptConfig(), tmp_path / "journal")
    assert mapper.shards == [3] and len(run.shards) == 3 and run.resumed == 0
    pd.testing.assert_frame_equal(run.probed, reference)
    # every batch is in the journal, under one file per shard
    assert len(list((tmp_path / "journal").glob("*.jsonl"))) == 3
    with using_mapper(PicklingMapper(workers=2)):
        again = probe_sharded(questions, gen, cfg, PromptConfig(), tmp_path / "journal")
    assert again.resumed == len(questions) and again.shards == []  # nothing left to probe
    pd.testing.assert_frame_equal(again.probed, reference)


def test_journal_ignores_a_line_cut_by_a_kill_and_other_settings(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "abc")
    row = {"id": "q1", "solve_rate": 0.5, "n_correct": 1, "k": 2}
    with journal.writer("shard") as append:
        append(0, [row])
        append(1, [row | {"id": "q2"}])
    (path,) = tmp_path.glob("*.jsonl")
    text = path.read_text()
    path.write_text(text[: len(text) - 5])  # the last line cut short, as by SIGKILL
    assert list(journal.done()) == [0]
    assert Journal(tmp_path, "other").done() == {}  # another fingerprint: not resumed
    (tmp_path / "garbage.jsonl").write_bytes(b"\xff\xfe not json\n")
    assert list(journal.done()) == [0]
    journal.clear()
    assert not tmp_path.exists()


def test_probe_resume_after_a_kill_matches_the_uninterrupted_run(
    tiny_lm_dir: Path, questions: pd.DataFrame, tmp_path: Path
) -> None:
    gen = GenerationConfig(model=str(tiny_lm_dir), max_new_tokens=8, num_threads=1)
    cfg = ProbeConfig(k=2, max_new_tokens=8, batch_questions=5)
    backend = make_backend(gen)
    reference = probe_with_model(questions, backend, cfg, PromptConfig(), gen.model)

    class Killed(Exception):
        pass

    def kill_after_two(done: int, total: int) -> None:
        if done >= 10:
            raise Killed

    with pytest.raises(Killed):
        probe_with_model(
            questions, backend, cfg, PromptConfig(), gen.model, tmp_path, kill_after_two
        )
    journal = Journal(tmp_path, fingerprint(questions, cfg, PromptConfig(), gen.model))
    assert journal.finished_rows() == 10
    with using_mapper(PicklingMapper(workers=2)):
        resumed = probe_sharded(questions, gen, cfg, PromptConfig(), tmp_path)
    assert resumed.resumed == 10
    pd.testing.assert_frame_equal(resumed.probed, reference)


class CountingEncoder:
    """Stands in for sentence-transformers; counts how many times a worker loads one."""

    loads = 0

    def __init__(self, dim: int = 3) -> None:
        type(self).loads += 1
        self.dim = dim

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        return np.asarray([[len(t), sum(map(ord, t)) % 17, 1.0] for t in texts], dtype=np.float32)


def test_embed_shards_load_once_each_and_keep_rows_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embed_module, "load_encoder", lambda cfg: CountingEncoder())
    texts = [f"q{'x' * (i * 5 % 11)} {i}" for i in range(30)]
    ids = [f"id{i}" for i in range(30)]
    cfg = EmbedConfig(batch_size=2, chunk_batches=2, normalize=False)
    single = embed_questions(ids, texts, cfg, progress=False)
    assert CountingEncoder.loads == 1
    mapper = PicklingMapper(workers=3)
    with using_mapper(mapper):
        sharded = embed_questions(ids, texts, cfg, progress=False)
    assert CountingEncoder.loads == 1 + 3 and mapper.shards == [3]  # once per worker
    np.testing.assert_array_equal(sharded.matrix, single.matrix)
    np.testing.assert_array_equal(sharded.ids, single.ids)


def test_evaluate_shards_give_the_single_process_results(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = EvaluateConfig(
        model=str(tiny_lm_dir), n=2, temperature=1.0, max_new_tokens=6, limit=7, batch_questions=2
    )
    gen = GenerationConfig(model=str(tiny_lm_dir), num_threads=1)
    args = (cfg, gen, PromptConfig(), DataConfig(), ArithmeticConfig(per_grade=3, grades=[1, 2]))
    single = evaluate(*args, progress=False)
    mapper = PicklingMapper(workers=3)
    with using_mapper(mapper):
        sharded = evaluate(*args, progress=False)
    assert mapper.shards == [3]  # 4 chunks of the one benchmark over 3 workers
    pd.testing.assert_frame_equal(sharded.results, single.results)
    assert sharded.metrics.keys() == single.metrics.keys()


def test_runner_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from flows.runners import RunnerSettings

    with pytest.raises(ValueError, match="unknown runner 'dask'"):
        RunnerSettings("dask")
    with pytest.raises(ValueError, match="ray_address is for runner 'ray'"):
        RunnerSettings("local", ray_address="auto")
    with pytest.raises(ValueError, match="workers must be at least 1"):
        RunnerSettings("ray", workers=0)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "ray" else real(name)
    )
    with pytest.raises(ValueError, match=r"needs ray, .*pip install -e '\.\[ray\]'"):
        RunnerSettings("ray")
