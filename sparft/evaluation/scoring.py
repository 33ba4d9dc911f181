"""Scoring an evaluation: every completion's extracted answer and verdict against the gold
one (``score_results``, through ``sparft.answers``, the same path as rewards and probing), and
the numbers reported from those rows: unbiased pass@k, pass@1 with its standard error across
questions, truncation and throughput (``aggregate``, ``metrics_dict``). Also used on their own
by the held-out check during training and by the benchmarks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sparft import answers
from sparft.generation import PromptResult

logger = logging.getLogger(__name__)

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


def paired_difference(
    results: pd.DataFrame, model: str, base: str, level: float = 0.95
) -> dict[str, dict[str, Any]]:
    """Per benchmark, ``model``'s pass@1 minus ``base``'s over the questions both answered:
    the mean paired difference, its t interval and p (``scipy.stats.ttest_rel``), and how many
    questions each got right where the other did not.

    The interval covers the sampling of questions only; a training run's seed-to-seed spread
    is not in it (``sparft compare-strategies`` measures that over seeds).
    """
    from scipy import stats

    out: dict[str, dict[str, Any]] = {}
    for benchmark, group in results.groupby("benchmark", sort=False):
        rate = group.assign(rate=group["n_correct"] / group["n"])
        wide = rate.pivot_table(index="id", columns="model", values="rate", aggfunc="mean")
        if model not in wide or base not in wide:
            continue
        pairs = wide[[model, base]].dropna()
        a, b = pairs[model].to_numpy(), pairs[base].to_numpy()
        diff = a - b
        entry: dict[str, Any] = {
            "difference": float(diff.mean()) if len(diff) else math.nan,
            "questions": len(diff),
            "better": int(np.sum(diff > 0)),
            "worse": int(np.sum(diff < 0)),
            "level": level,
        }
        if len(diff) > 1 and np.ptp(diff) > 0:
            test = stats.ttest_rel(a, b)
            low, high = test.confidence_interval(level)
            entry |= {"ci_low": float(low), "ci_high": float(high), "p_value": float(test.pvalue)}
        elif len(diff) > 1:  # every question the same difference: no spread, so a sign test
            entry |= {"ci_low": entry["difference"], "ci_high": entry["difference"]}
            entry["p_value"] = 1.0 if entry["difference"] == 0 else min(1.0, 2 * 0.5 ** len(diff))
        out[str(benchmark)] = entry
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
