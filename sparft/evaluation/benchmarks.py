"""The benchmark sets, as question frames in the data schema: the built-in test splits, a
local file, and ``arithmetic-heldout``, generated arithmetic drawn with another seed and kept
disjoint from the training set by construction; ``limit`` keeps a seeded sample of each. The
train stage loads its held-out questions here too, so training and evaluation see the same
sets.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd

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
from sparft.evaluation.config import (
    BUILTIN_BENCHMARKS,
    HELDOUT,
    HELDOUT_SEED_OFFSET,
    EvaluateConfig,
    allowed_benchmarks,
)


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
    """The questions of one benchmark in the data schema (``limit`` applied), and notes.

    Benchmarks (``evaluate.benchmarks``):

    * ``gsm8k``, ``math500``, ``aime24``, ``aime25``: the built-in test splits in
      ``data.shared_dir``.
    * ``arithmetic-heldout``: the generated arithmetic grades drawn with another seed
      (``heldout_seed``, default ``arithmetic.seed + 1000``), skipping every question whose id
      is in the training set (``data.out`` when it exists) or in the set the ``arithmetic``
      section generates. Each grade draws from the generator's own stream for that seed until
      it has ``heldout_per_grade`` questions left after the exclusion, so the held-out set is
      reproducible and disjoint from training by construction.
    * a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file with ``question`` and ``answer``
      fields (a parquet written by ``sparft data load`` is read as is, so any field mapping can
      be applied there first).

    ``limit`` keeps a seeded random sample of that many questions per benchmark (``seed``), in
    the benchmark's own order, so quick looks on different models see the same questions.
    """
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
