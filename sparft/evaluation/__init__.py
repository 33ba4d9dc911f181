"""Accuracy of a fine-tuned model (and of the base model it started from) on math benchmarks:
the model answers each benchmark question ``n`` times through the same generation backend and
prompt template as training and probing, every completion is scored by ``sparft.answers``
(answer extraction + math-verify; model text is never evaluated), and the per-question rows are
aggregated into pass@1 with its standard error, unbiased pass@k and throughput figures.
``config`` holds the ``evaluate`` section, ``benchmarks`` the question sets (which training's
held-out check loads too), ``scoring`` the verdicts and metrics, and ``run`` the evaluation
itself.
"""

from __future__ import annotations

from sparft.evaluation.benchmarks import (
    heldout_arithmetic,
    limit_questions,
    load_benchmark,
    training_ids,
)
from sparft.evaluation.config import (
    BENCHMARK_NAMES,
    BUILTIN_BENCHMARKS,
    FILE_SUFFIXES,
    HELDOUT,
    HELDOUT_SEED_OFFSET,
    TRAINED,
    EvaluateConfig,
    allowed_benchmarks,
)
from sparft.evaluation.run import (
    BASE_LABEL,
    BackendFactory,
    EvalChunk,
    EvalJob,
    EvalReport,
    ScoredChunk,
    benchmark_label,
    evaluate,
    locate_model,
    model_label,
    model_plan,
    run_chunks,
)
from sparft.evaluation.scoring import (
    RESULT_COLUMNS,
    aggregate,
    metrics_dict,
    paired_difference,
    pass_at_k,
    score_results,
)

__all__ = [
    "BASE_LABEL",
    "BENCHMARK_NAMES",
    "BUILTIN_BENCHMARKS",
    "FILE_SUFFIXES",
    "HELDOUT",
    "HELDOUT_SEED_OFFSET",
    "RESULT_COLUMNS",
    "TRAINED",
    "BackendFactory",
    "EvalChunk",
    "EvalJob",
    "EvalReport",
    "EvaluateConfig",
    "ScoredChunk",
    "aggregate",
    "allowed_benchmarks",
    "benchmark_label",
    "evaluate",
    "heldout_arithmetic",
    "limit_questions",
    "load_benchmark",
    "locate_model",
    "metrics_dict",
    "model_label",
    "model_plan",
    "paired_difference",
    "pass_at_k",
    "run_chunks",
    "score_results",
    "training_ids",
]
