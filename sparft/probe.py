"""Difficulty of each question as a probe model's solve rate over k sampled answers.

Probing is the expensive stage, so it saves finished batches to a progress file as it goes and a
rerun with the same settings picks up after the last saved batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from sparft.answers import is_correct
from sparft.generation import GenerationBackend
from sparft.io import write_json, write_parquet
from sparft.prompts import PromptConfig, build_messages

# ``truncated``: share of the k answers cut at max_new_tokens (scored wrong, so a budget too small
# for the data shows up as difficulty).
PROBE_COLUMNS = ["id", "solve_rate", "n_correct", "k", "mean_completion_tokens", "truncated"]


class ProbeConfig(BaseModel):
    """The ``probe`` section: how difficulty is measured."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["model", "label"] = Field(
        "model", description="Solve rate of a probe model, or the data set's own difficulty label."
    )
    model: str | None = Field(None, description="Probe model; null uses generation.model.")
    k: int = Field(4, ge=1, le=256, description="Sampled answers per question.")
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    max_new_tokens: int = Field(256, ge=1)
    batch_questions: int = Field(16, ge=1, description="Questions per saved batch.")
    max_questions: int | None = Field(
        None, ge=1, description="Probe a seeded sample of at most this many questions."
    )
    seed: int = 0


def sample_questions(frame: pd.DataFrame, cfg: ProbeConfig) -> pd.DataFrame:
    """A seeded sample, stratified by difficulty label when there is one, in original order."""
    if cfg.max_questions is None or cfg.max_questions >= len(frame):
        return frame
    if frame["difficulty_label"].notna().all():
        groups = frame.groupby("difficulty_label", group_keys=False)
        share = cfg.max_questions / len(frame)
        picked = groups.apply(
            lambda g: g.sample(max(1, round(len(g) * share)), random_state=cfg.seed)
        )
    else:
        picked = frame.sample(cfg.max_questions, random_state=cfg.seed)
    return frame.loc[sorted(picked.index)]


def _fingerprint(frame: pd.DataFrame, cfg: ProbeConfig, prompt: PromptConfig, model: str) -> str:
    """What a progress file must match to be resumed: same questions, settings, prompt, model."""
    payload = json.dumps(
        [list(frame["id"]), cfg.model_dump(mode="json"), prompt.model_dump(mode="json"), model]
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def probe_with_model(
    frame: pd.DataFrame,
    backend: GenerationBackend,
    cfg: ProbeConfig,
    prompt: PromptConfig,
    model_name: str,
    progress_path: Path | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Solve rate and mean completion length per question; resumable through ``progress_path``."""
    fingerprint = _fingerprint(frame, cfg, prompt, model_name)
    done = _load_progress(progress_path, fingerprint)
    todo = frame[~frame["id"].isin(done["id"])]
    batches = [
        todo.iloc[i : i + cfg.batch_questions] for i in range(0, len(todo), cfg.batch_questions)
    ]
    with Progress(transient=True) as bar:
        task = bar.add_task("probing", total=len(frame), completed=len(done))
        for batch in batches:
            results = backend.generate(
                [build_messages(q, prompt) for q in batch["question"]],
                n=cfg.k,
                temperature=cfg.temperature,
                max_new_tokens=cfg.max_new_tokens,
                progress=False,
            )
            rows = []
            for (_, row), result in zip(batch.iterrows(), results, strict=True):
                correct = sum(is_correct(c.text, row["answer"]) for c in result.completions)
                tokens = [c.completion_tokens for c in result.completions]
                rows.append(
                    {
                        "id": row["id"],
                        "solve_rate": correct / cfg.k,
                        "n_correct": correct,
                        "k": cfg.k,
                        "mean_completion_tokens": float(np.mean(tokens)),
                        "truncated": float(
                            np.mean([c.finish_reason == "length" for c in result.completions])
                        ),
                    }
                )
            done = pd.concat([done, pd.DataFrame(rows, columns=PROBE_COLUMNS)], ignore_index=True)
            if progress_path is not None:
                _save_progress(progress_path, done, fingerprint)
            bar.advance(task, len(batch))
            if on_batch is not None:
                on_batch(len(done), len(frame))
    return frame[["id"]].merge(done, on="id", how="left")


def probe_with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Difficulty from the data set's label, min-max scaled to [0, 1] and turned into a solve rate.

    A higher label means harder, so the solve-rate stand-in is ``1 - scaled label``.
    """
    labels = frame["difficulty_label"]
    if labels.isna().any():
        missing = frame.loc[labels.isna(), "id"].iloc[0]
        raise ValueError(f"probe.source=label, but question {missing} has no difficulty_label")
    low, high = labels.min(), labels.max()
    scaled = (labels - low) / (high - low) if high > low else labels * 0.0
    return pd.DataFrame(
        {
            "id": frame["id"],
            "solve_rate": 1.0 - scaled,
            "n_correct": np.nan,
            "k": 0,
            "mean_completion_tokens": np.nan,
            "truncated": np.nan,
        }
    )


def _load_progress(path: Path | None, fingerprint: str) -> pd.DataFrame:
    empty = pd.DataFrame(columns=PROBE_COLUMNS)
    if path is None or not path.exists():
        return empty
    meta_path = path.with_suffix(".json")
    if (
        not meta_path.exists()
        or json.loads(meta_path.read_text()).get("fingerprint") != fingerprint
    ):
        return empty
    done = pd.read_parquet(path)
    return done if list(done.columns) == PROBE_COLUMNS else empty


def _save_progress(path: Path, done: pd.DataFrame, fingerprint: str) -> None:
    """Rows first, then the fingerprint: a crash between the two leaves a file that is ignored."""
    path.with_suffix(".json").unlink(missing_ok=True)
    write_parquet(done, path)
    write_json({"fingerprint": fingerprint, "rows": len(done)}, path.with_suffix(".json"))
