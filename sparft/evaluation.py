"""Accuracy of a fine-tuned model (and of the base model it started from) on math benchmarks.

The model answers each benchmark question ``n`` times through the same generation backend and
prompt template as training and probing, every completion is scored by ``sparft.answers``
(answer extraction + math-verify; model text is never evaluated), and the per-question rows are
aggregated into pass@1 with its standard error, unbiased pass@k and throughput figures.

A plain library: the ``evaluate`` stage and ``sparft eval`` write its results to disk.

Benchmarks (``evaluate.benchmarks``):

* ``gsm8k``, ``math500``, ``aime24``, ``aime25``: the built-in test splits in ``data.shared_dir``.
* ``arithmetic-heldout``: the generated arithmetic grades drawn with another seed
  (``heldout_seed``, default ``arithmetic.seed + 1000``), skipping every question whose id is in
  the training set (``data.out`` when it exists) or in the set the ``arithmetic`` section
  generates. Each grade draws from the generator's own stream for that seed until it has
  ``heldout_per_grade`` questions left after the exclusion, so the held-out set is reproducible
  and disjoint from training by construction.
* a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file with ``question`` and ``answer``
  fields (a parquet written by ``sparft data load`` is read as is, so any field mapping can be
  applied there first).

``limit`` keeps a seeded random sample of that many questions per benchmark (``seed``), in the
benchmark's own order, so quick looks on different models see the same questions.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparft import answers
from sparft.arithmetic import GRADES, ArithmeticConfig
from sparft.data import (
    COLUMNS,
    DataConfig,
    DataError,
    FieldMap,
    build_frame,
    load_dataset,
    question_id,
    read_dataset,
)
from sparft.generation import (
    GenerationBackend,
    GenerationConfig,
    PromptResult,
    make_backend,
    progress_bar,
)
from sparft.generation.server import serving
from sparft.models import ModelNotAvailableError, resolve_model
from sparft.parallel import deal, in_process, map_shards, unit_seed, workers
from sparft.prompts import PromptConfig, build_messages

logger = logging.getLogger(__name__)

TRAINED = "trained"

BASE_LABEL = "base"
HELDOUT = "arithmetic-heldout"
BUILTIN_BENCHMARKS = ("gsm8k", "math500", "aime24", "aime25")
BENCHMARK_NAMES = (*BUILTIN_BENCHMARKS, HELDOUT)
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
HELDOUT_SEED_OFFSET = 1000

RESULT_COLUMNS = [
    "benchmark",
    "model",
    "id",
    "question",
    "answer",
    "difficulty_label",
    "completions",
    "extracted",
    "correct",
    "n",
    "n_correct",
    "completion_tokens",
    "finish_reasons",
]


class EvaluateConfig(BaseModel):
    """The ``evaluate`` section: which model on which benchmarks, and how it is sampled."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        TRAINED,
        description=f"'{TRAINED}' (the train stage's model: a model folder or a LoRA adapter "
        "folder), a preset, a local model or LoRA adapter folder, or a Hugging Face id (online "
        "use only).",
    )
    benchmarks: list[str] = Field(
        default_factory=lambda: [HELDOUT],
        description=f"Any of {', '.join(BENCHMARK_NAMES)}, or a local "
        f"{'/'.join(s[1:] for s in FILE_SUFFIXES)} file with question and answer fields.",
    )
    n: int = Field(1, ge=1, le=1024, description="Completions sampled per question.")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy decoding.")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens generated per completion.")
    k: list[int] = Field(
        default_factory=lambda: [1],
        description="pass@k values to report (unbiased estimator); those above n are skipped.",
    )
    limit: int | None = Field(
        None, ge=1, description="Seeded random sample of at most this many questions per benchmark."
    )
    include_base: bool = Field(
        True, description="Also evaluate generation.model, the model training started from."
    )
    heldout_seed: int | None = Field(
        None, description=f"Seed of {HELDOUT}; null is arithmetic.seed + {HELDOUT_SEED_OFFSET}."
    )
    heldout_per_grade: int | None = Field(
        None, ge=1, le=100_000, description=f"{HELDOUT} questions per grade; null: arithmetic's."
    )
    seed: int = Field(0, description="Seed of the sampling stream and of the limit sample.")
    batch_questions: int = Field(
        64,
        ge=1,
        description="Questions per generate call: each such chunk samples with a seed of its "
        "own and is the unit workers share.",
    )

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, benchmarks: list[str]) -> list[str]:
        if not benchmarks:
            raise ValueError(f"name at least one benchmark ({allowed_benchmarks()})")
        for name in benchmarks:
            if name not in BENCHMARK_NAMES and Path(name).suffix.lower() not in FILE_SUFFIXES:
                raise ValueError(f"unknown benchmark {name!r} ({allowed_benchmarks()})")
        return list(dict.fromkeys(benchmarks))

    @field_validator("k")
    @classmethod
    def _positive_k(cls, k: list[int]) -> list[int]:
        if any(v < 1 for v in k):
            raise ValueError(f"every k must be >= 1, got {k}")
        return sorted(set(k) | {1})


def allowed_benchmarks() -> str:
    suffixes = "/".join(s[1:] for s in FILE_SUFFIXES)
    return f"allowed: {', '.join(BENCHMARK_NAMES)}, or a local {suffixes} file"


# ---------------------------------------------------------------------------------------------
# pass@k and aggregation
# ---------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``c`` correct of ``n`` samples: ``1 - C(n-c, k) / C(n, k)``.

    The chance that ``k`` samples drawn without replacement from the ``n`` hold at least one
    correct one (Chen et al. 2021); exact integer binomials, so no rounding for small ``n``.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def aggregate(
    results: pd.DataFrame, ks: Sequence[int] = (1,), timings: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (model, benchmark): accuracy, its spread across questions, and speed.

    ``pass@1`` is the mean over questions of ``n_correct / n``; ``pass@1_se`` its standard error
    across questions (sample std / sqrt(questions); null for a single question), the number that
    says whether two models differ. ``pass@k`` is reported for each ``k <= n``.
    ``truncated_share`` is the share of completions cut by ``max_new_tokens``. With ``timings``
    (model, benchmark, generate_s, score_s): ``wall_s`` = generation + scoring,
    ``questions_per_s`` over wall time, ``tokens_per_s`` completion tokens over generation time.
    """
    rows = []
    for (model, benchmark), group in results.groupby(["model", "benchmark"], sort=False):
        n = int(group["n"].min())
        per_question = group["n_correct"] / group["n"]
        tokens = np.concatenate([np.asarray(t, dtype=float) for t in group["completion_tokens"]])
        reasons = [r for rs in group["finish_reasons"] for r in rs]
        row: dict[str, Any] = {
            "model": model,
            "benchmark": benchmark,
            "questions": len(group),
            "n": n,
            "pass@1": float(per_question.mean()),
            "pass@1_se": float(per_question.std(ddof=1) / math.sqrt(len(group)))
            if len(group) > 1
            else None,
        }
        for k in ks:
            if 1 < k <= n:
                row[f"pass@{k}"] = float(
                    np.mean(
                        [
                            pass_at_k(int(m), int(c), k)
                            for m, c in zip(group["n"], group["n_correct"], strict=True)
                        ]
                    )
                )
        row["mean_completion_tokens"] = float(tokens.mean()) if len(tokens) else 0.0
        row["completion_tokens"] = int(tokens.sum())
        row["truncated_share"] = float(np.mean([r == "length" for r in reasons]))
        rows.append(row)
    table = pd.DataFrame(rows)
    if timings is not None and not table.empty:
        table = table.merge(timings, on=["model", "benchmark"], how="left")
        table["wall_s"] = table["generate_s"] + table["score_s"]
        table["questions_per_s"] = table["questions"] / table["wall_s"]
        table["tokens_per_s"] = table["completion_tokens"] / table["generate_s"]
    return table


def metrics_dict(table: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {benchmark: {metric: value}}}`` for DVC metrics and the printed table."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for record in table.to_dict(orient="records"):
        model, benchmark = record.pop("model"), record.pop("benchmark")
        clean: dict[str, Any] = {}
        for key, value in record.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                clean[key] = None
            elif isinstance(value, float | np.floating):
                clean[key] = round(float(value), 6)
            else:
                clean[key] = int(value) if isinstance(value, np.integer) else value
        out.setdefault(str(model), {})[str(benchmark)] = clean
    return out


# ---------------------------------------------------------------------------------------------
# Scoring: the one path from completions to verdicts
# ---------------------------------------------------------------------------------------------


def score_results(
    questions: pd.DataFrame, results: Sequence[PromptResult], benchmark: str, model: str
) -> pd.DataFrame:
    """Per-question rows: every completion's extracted answer and verdict against the gold one.

    Identical texts (greedy copies) are checked once per question.
    """
    if len(questions) != len(results):
        raise ValueError(f"{len(questions)} questions but {len(results)} results")
    rows = []
    with answers.batch_budget() as budget:
        graded = []
        for row, result in zip(questions.itertuples(index=False), results, strict=True):
            verdicts: dict[str, tuple[str | None, bool]] = {}
            for text in result.texts:
                if text not in verdicts:
                    verdicts[text] = answers.grade(text, str(row.answer))
            graded.append(verdicts)
    if budget.skipped:
        logger.warning(answers.UNCHECKED_NOTE, budget.skipped, budget.seconds)
    for row, result, verdicts in zip(
        questions.itertuples(index=False), results, graded, strict=True
    ):
        extracted_list = [verdicts[t][0] for t in result.texts]
        correct = [verdicts[t][1] for t in result.texts]
        rows.append(
            {
                "benchmark": benchmark,
                "model": model,
                "id": row.id,
                "question": row.question,
                "answer": str(row.answer),
                "difficulty_label": row.difficulty_label,
                "completions": result.texts,
                "extracted": extracted_list,
                "correct": correct,
                "n": len(correct),
                "n_correct": int(sum(correct)),
                "completion_tokens": [c.completion_tokens for c in result.completions],
                "finish_reasons": [c.finish_reason for c in result.completions],
            }
        )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------------------------


def heldout_arithmetic(
    arithmetic: ArithmeticConfig, seed: int, per_grade: int, exclude: set[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Arithmetic questions from seed ``seed`` whose ids are not in ``exclude``.

    Uses the generator's per-grade streams (``random.Random(f"{seed}:{grade}")``), so with no
    exclusion it equals ``generate(ArithmeticConfig(seed=seed, ...))``; excluded draws are
    skipped and replaced by the next distinct ones. A grade with too few distinct questions left
    (grade 1 has 72) comes back short, with a note.
    """
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for grade in arithmetic.grades:
        rng = random.Random(f"{seed}:{grade}")
        seen: set[str] = set()
        kept = skipped = attempts = 0
        while kept < per_grade and attempts < 50 * (per_grade + len(exclude)) + 1000:
            attempts += 1
            question, answer, steps = GRADES[grade](rng)
            if question in seen:
                continue
            seen.add(question)
            if question_id(question) in exclude:
                skipped += 1
                continue
            kept += 1
            records.append(
                {
                    "question": question,
                    "answer": str(answer),
                    "solution": f"{steps}. The answer is \\boxed{{{answer}}}.",
                    "grade": float(grade),
                }
            )
        if kept < per_grade:
            notes.append(
                f"{HELDOUT}: grade {grade} has only {kept} questions outside the training set "
                f"(asked for {per_grade}, {skipped} skipped as training questions)"
            )
    frame, _ = build_frame(
        enumerate(records, start=1),
        HELDOUT,
        HELDOUT,
        FieldMap(solution="solution", difficulty="grade"),
    )
    return frame, notes


def training_ids(data: DataConfig, arithmetic: ArithmeticConfig) -> set[str]:
    """Ids a held-out set must avoid: the training file (if written) and the arithmetic set."""
    ids: set[str] = set()
    if Path(data.out).exists():
        ids.update(read_dataset(data.out)["id"].astype(str))
    generated, _ = load_dataset(DataConfig(spec="arithmetic"), arithmetic)
    ids.update(generated["id"])
    return ids


def load_benchmark(
    name: str, cfg: EvaluateConfig, data: DataConfig, arithmetic: ArithmeticConfig
) -> tuple[pd.DataFrame, list[str]]:
    """The questions of one benchmark in the data schema (``limit`` applied), and notes."""
    notes: list[str] = []
    if name == HELDOUT:
        seed = cfg.heldout_seed
        if seed is None:
            seed = arithmetic.seed + HELDOUT_SEED_OFFSET
        if seed == arithmetic.seed:
            raise DataError(
                f"evaluate.heldout_seed={seed} equals arithmetic.seed: the held-out set must "
                "come from another seed"
            )
        per_grade = cfg.heldout_per_grade or arithmetic.per_grade
        frame, notes = heldout_arithmetic(
            arithmetic, seed, per_grade, training_ids(data, arithmetic)
        )
    elif name in BUILTIN_BENCHMARKS:
        spec = DataConfig(spec=name, split="test", shared_dir=data.shared_dir)
        frame, _ = load_dataset(spec)
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise DataError(f"benchmark {name!r}: no such file ({allowed_benchmarks()})")
        frame = _schema_file(path)
    return limit_questions(frame, cfg.limit, cfg.seed), notes


def _schema_file(path: Path) -> pd.DataFrame:
    """A local benchmark file: a sparft-schema parquet as is, else question/answer fields."""
    if path.suffix.lower() == ".parquet":
        frame = pd.read_parquet(path)
        if all(c in frame.columns for c in COLUMNS):
            return frame[COLUMNS]
    frame, _ = load_dataset(DataConfig(spec=str(path)))
    return frame


def limit_questions(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A seeded random sample of ``limit`` questions, kept in the benchmark's order."""
    if limit is None or limit >= len(frame):
        return frame.reset_index(drop=True)
    return frame.sample(n=limit, random_state=seed).sort_index().reset_index(drop=True)


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
