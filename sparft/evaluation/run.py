"""The evaluation run: ``evaluate`` asks ``cfg.model`` (and the base model it started from)
every benchmark question ``n`` times through the same generation backend and prompt template
as training and probing, in seeded chunks shared out to workers, scores the completions
(``sparft.evaluation.scoring``) and aggregates them into an ``EvalReport``. A plain library:
the ``evaluate`` stage and ``sparft eval`` write its results to disk.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from sparft.arithmetic import ArithmeticConfig
from sparft.data import DataConfig
from sparft.evaluation.benchmarks import load_benchmark
from sparft.evaluation.config import BENCHMARK_NAMES, TRAINED, EvaluateConfig
from sparft.evaluation.scoring import aggregate, metrics_dict, score_results
from sparft.generation import (
    GenerationBackend,
    GenerationConfig,
    make_backend,
    progress_bar,
)
from sparft.generation.server import serving
from sparft.models import ModelNotAvailableError, resolve_model
from sparft.parallel import deal, in_process, map_shards, unit_seed, workers
from sparft.prompts import PromptConfig, build_messages

BASE_LABEL = "base"


# ---------------------------------------------------------------------------------------------
# Models: the trained folder, or anything ``sparft.models.resolve_model`` takes
# ---------------------------------------------------------------------------------------------


def locate_model(name: str, trained: Path | None) -> str:
    """What a backend can load: ``trained`` is the train stage's folder (``trained``, passed in
    by whoever knows it), anything else goes to ``resolve_model``."""
    if name == TRAINED:
        if trained is None or not Path(trained).is_dir():
            raise ModelNotAvailableError(
                f"{trained}: no trained model; run the train stage first or set evaluate.model "
                "(a preset, a model or LoRA adapter folder, or a Hugging Face id)"
            )
        name = str(trained)
    return resolve_model(name)


# ---------------------------------------------------------------------------------------------
# The evaluation run
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalReport:
    """Everything one evaluation produced; ``metrics`` is ``metrics_dict(aggregates)``."""

    results: pd.DataFrame
    aggregates: pd.DataFrame
    models: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, dict[str, dict[str, Any]]]:
        return metrics_dict(self.aggregates)


BackendFactory = Callable[[GenerationConfig], GenerationBackend]


def model_label(name: str) -> str:
    """Short name of a model in tables and metrics: a folder's own name, else the name given."""
    if name == TRAINED:
        return TRAINED
    label = Path(name).resolve().name if Path(name).exists() else name
    return "model" if label == BASE_LABEL else label


def benchmark_label(name: str) -> str:
    return name if name in BENCHMARK_NAMES else Path(name).name


def model_plan(cfg: EvaluateConfig, generation: GenerationConfig) -> list[tuple[str, str]]:
    """(label, model name) pairs to evaluate: the model, then the base unless it is the same."""
    plan = [(model_label(cfg.model), cfg.model)]
    if cfg.include_base and generation.model != cfg.model:
        plan.append((BASE_LABEL, generation.model))
    return plan


@dataclass(frozen=True)
class EvalChunk:
    """``batch_questions`` questions of one benchmark: the unit that is seeded and shared out."""

    benchmark: str
    index: int
    questions: pd.DataFrame


@dataclass(frozen=True)
class EvalJob:
    """What every chunk of one model's evaluation needs, wherever it runs."""

    generation: GenerationConfig
    cfg: EvaluateConfig
    prompt: PromptConfig
    label: str
    backend_factory: BackendFactory


@dataclass
class ScoredChunk:
    benchmark: str
    rows: pd.DataFrame
    generate_s: float
    score_s: float


def run_chunks(
    job: EvalJob, chunks: Sequence[EvalChunk], progress: bool = False
) -> list[ScoredChunk]:
    """Load the model once, then generate and score each chunk with its own seed (the same
    chunk samples the same completions in one process or on any worker)."""
    cfg = job.cfg
    out = []
    backend = job.backend_factory(job.generation)
    try:
        total = sum(len(c.questions) for c in chunks)
        with progress_bar(progress, total, f"evaluating {job.label}") as advance:
            for chunk in chunks:
                began = time.perf_counter()
                results = backend.generate(
                    [build_messages(q, job.prompt) for q in chunk.questions["question"]],
                    n=cfg.n,
                    temperature=cfg.temperature,
                    max_new_tokens=cfg.max_new_tokens,
                    progress=False,
                    seed=unit_seed(cfg.seed, "evaluate", chunk.benchmark, chunk.index),
                )
                generated = time.perf_counter()
                rows = score_results(chunk.questions, results, chunk.benchmark, job.label)
                out.append(
                    ScoredChunk(
                        chunk.benchmark, rows, generated - began, time.perf_counter() - generated
                    )
                )
                advance(len(chunk.questions))
    finally:
        backend.close()
    return out


def evaluate(
    cfg: EvaluateConfig,
    generation: GenerationConfig,
    prompt: PromptConfig,
    data: DataConfig,
    arithmetic: ArithmeticConfig,
    backend_factory: BackendFactory = make_backend,
    progress: bool = True,
    trained: Path | None = None,
) -> EvalReport:
    """Evaluate ``cfg.model`` (and the base model) on every benchmark in ``cfg.benchmarks``;
    ``trained`` is the folder ``cfg.model: trained`` means (the train stage's).

    Benchmarks are loaded (and the trained model located) before any model is, so a bad name
    fails in a second rather than after minutes of loading. The questions go in chunks of
    ``batch_questions``, each sampled with its own seed; each model is loaded once per worker
    (``sparft.parallel``: one, in this process, unless a flow set more), runs its chunks of
    every benchmark, and is released before the next model. Generation and scoring times are
    summed over workers.
    """
    from rich.console import Console

    console = Console(stderr=True)
    benchmarks: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for name in cfg.benchmarks:
        benchmarks[benchmark_label(name)], found = load_benchmark(name, cfg, data, arithmetic)
        notes.extend(found)
    plan = model_plan(cfg, generation)
    resolved: dict[str, str] = {}
    for label, name in plan:
        located = locate_model(name, trained)
        # absolute: the chunks may run on workers started in another folder
        resolved[label] = str(Path(located).resolve()) if Path(located).exists() else located
    if len(plan) == 2 and resolved[plan[0][0]] == resolved[BASE_LABEL]:
        notes.append(f"{plan[0][1]} is the base model itself: evaluated once")
        plan = plan[:1]
        del resolved[BASE_LABEL]

    frames: list[pd.DataFrame] = []
    timings: list[dict[str, Any]] = []
    for label, _ in plan:
        gen = generation.model_copy(
            update={
                "model": resolved[label],
                "temperature": cfg.temperature,
                "max_new_tokens": cfg.max_new_tokens,
                "seed": cfg.seed,
            }
        )
        chunks = [
            EvalChunk(name, index, questions.iloc[start : start + cfg.batch_questions])
            for name, questions in benchmarks.items()
            for index, start in enumerate(range(0, len(questions), cfg.batch_questions))
        ]
        if progress:
            sizes = ", ".join(f"{name} {len(q)}" for name, q in benchmarks.items())
            console.print(f"evaluating {label} ({resolved[label]}): {sizes} questions x {cfg.n}")
        with serving(gen, progress) as served:
            job = EvalJob(served, cfg, prompt, label, backend_factory)
            # one run per worker; a progress bar only where this process does the work
            each = partial(run_chunks, job, progress=progress and in_process())
            shards = map_shards(each, deal(chunks, workers()), f"evaluate {label}")
            scored = [part for shard in shards for part in shard]
        frames.extend(part.rows for part in scored)
        for name in benchmarks:
            mine = [part for part in scored if part.benchmark == name]
            timings.append(
                {
                    "model": label,
                    "benchmark": name,
                    "generate_s": sum(part.generate_s for part in mine),
                    "score_s": sum(part.score_s for part in mine),
                }
            )
        gc.collect()
    results_frame = pd.concat(frames, ignore_index=True)
    skipped = [k for k in cfg.k if k > cfg.n]
    if skipped:
        notes.append(f"pass@k for k={skipped} skipped: only n={cfg.n} samples per question")
    table = aggregate(results_frame, cfg.k, pd.DataFrame(timings))
    settings = {
        "n": cfg.n,
        "temperature": cfg.temperature,
        "max_new_tokens": cfg.max_new_tokens,
        "limit": cfg.limit,
        "seed": cfg.seed,
        "backend": generation.backend,
    }
    return EvalReport(results_frame, table, resolved, notes, settings)
