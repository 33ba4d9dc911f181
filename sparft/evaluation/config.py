"""The ``evaluate`` section of ``params.yaml`` (``EvaluateConfig``) and the names it accepts:
the built-in benchmarks, ``arithmetic-heldout``, local files by suffix, and ``trained`` for the
train stage's model: one home for the settings and the benchmark names, which
``sparft.config``, the benchmark loaders and the run all read.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

TRAINED = "trained"

HELDOUT = "arithmetic-heldout"
BUILTIN_BENCHMARKS = ("gsm8k", "math500", "aime24", "aime25")
BENCHMARK_NAMES = (*BUILTIN_BENCHMARKS, HELDOUT)
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
HELDOUT_SEED_OFFSET = 1000


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
