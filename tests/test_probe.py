"""Probing: solve rates from a real (tiny) model, resumable after a crash, and label fallback."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sparft.arithmetic import ArithmeticConfig
from sparft.data import DataConfig, load_dataset
from sparft.generation import GenerationConfig, make_backend
from sparft.probe import (
    Journal,
    ProbeConfig,
    fingerprint,
    probe_with_labels,
    probe_with_model,
    sample_questions,
)
from sparft.prompts import PromptConfig


@pytest.fixture(scope="module")
def questions() -> pd.DataFrame:
    frame, _ = load_dataset(DataConfig(), ArithmeticConfig(per_grade=3, grades=[1, 2, 3]))
    return frame


def test_probe_counts_and_resumes(
    tiny_lm_dir: Path, questions: pd.DataFrame, tmp_path: Path
) -> None:
    backend = make_backend(GenerationConfig(model=str(tiny_lm_dir), max_new_tokens=8, seed=1))
    cfg = ProbeConfig(k=2, max_new_tokens=8, batch_questions=4, temperature=1.0)
    progress = tmp_path / "progress"
    full = probe_with_model(questions, backend, cfg, PromptConfig(), "tiny")
    assert list(full["id"]) == list(questions["id"])
    assert full["k"].eq(2).all() and full["solve_rate"].between(0, 1).all()
    assert (full["solve_rate"] == full["n_correct"] / 2).all()
    assert (full["mean_completion_tokens"] > 0).all()
    assert full["truncated"].isin([0.0, 0.5, 1.0]).all()
    # an answer shorter than the budget ended at eos, so not all k of that question were cut
    assert (full.loc[full["mean_completion_tokens"] < 8, "truncated"] < 1).all()

    class Killed(Exception):
        pass

    def crash_after_first(done: int, total: int) -> None:
        raise Killed

    with pytest.raises(Killed):
        probe_with_model(
            questions, backend, cfg, PromptConfig(), "tiny", progress, crash_after_first
        )
    journal = Journal(progress, fingerprint(questions, cfg, PromptConfig(), "tiny"))
    assert journal.finished_rows() == 4  # one batch saved before the crash

    calls: list[int] = []
    resumed = probe_with_model(
        questions, backend, cfg, PromptConfig(), "tiny", progress, lambda d, t: calls.append(d)
    )
    assert calls == [8, 9]  # only the two remaining batches ran
    pd.testing.assert_frame_equal(resumed, full)  # each batch seeded by its index alone

    other = cfg.model_copy(update={"k": 3})
    calls.clear()
    probe_with_model(
        questions, backend, other, PromptConfig(), "tiny", progress, lambda d, t: calls.append(d)
    )
    assert calls == [4, 8, 9]  # different settings: the saved progress is not reused


def test_label_probe_scales_and_inverts(questions: pd.DataFrame) -> None:
    probed = probe_with_labels(questions)
    by_grade = (
        probed.assign(grade=questions["difficulty_label"]).groupby("grade")["solve_rate"].mean()
    )
    assert by_grade.to_dict() == {1.0: 1.0, 2.0: 0.5, 3.0: 0.0}
    same = questions.assign(difficulty_label=2.0)
    assert probe_with_labels(same)["solve_rate"].eq(1.0).all()
    with pytest.raises(ValueError, match="has no difficulty_label"):
        probe_with_labels(questions.assign(difficulty_label=None))


def test_sample_is_stratified_and_seeded(questions: pd.DataFrame) -> None:
    picked = sample_questions(questions, ProbeConfig(max_questions=3, seed=5))
    assert sorted(picked["difficulty_label"]) == [1.0, 2.0, 3.0]
    assert picked.equals(sample_questions(questions, ProbeConfig(max_questions=3, seed=5)))
    assert sample_questions(questions, ProbeConfig()).equals(questions)
