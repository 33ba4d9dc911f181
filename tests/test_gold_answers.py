"""Audit of answer checking on real benchmark files: every worked solution's final answer must
agree with the data set's own gold answer, and different answers must not match."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import SHARED_DATA as DATA
from conftest import needs_shared

from sparft.answers import answers_match, check_gold, extract_answer

MIN_AGREEMENT = 0.995

pytestmark = [
    pytest.mark.slow,
    needs_shared,
]


def _rows(relative: str) -> list[dict[str, Any]]:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _gsm8k_gold(solution: str) -> str:
    return solution.split("####")[-1].strip()


def _report(name: str, total: int, exceptions: list[tuple[Any, ...]]) -> float:
    share = 1 - len(exceptions) / total
    print(f"\n{name}: {total - len(exceptions)}/{total} agree ({share:.4f})")
    for exception in exceptions:
        print("  ", exception)
    return share


def test_gsm8k_solutions_agree_with_gold() -> None:
    rows = _rows("gsm8k/test.jsonl")
    assert len(rows) == 1319
    exceptions = []
    for i, row in enumerate(rows):
        gold = _gsm8k_gold(row["answer"])
        agrees, extracted = check_gold(row["answer"], gold)
        if not agrees:
            exceptions.append((i, extracted, gold))
    assert _report("GSM8K test", len(rows), exceptions) >= MIN_AGREEMENT


def test_math500_solutions_agree_with_gold() -> None:
    rows = _rows("math500/test.jsonl")
    assert len(rows) == 500
    exceptions = []
    for row in rows:
        agrees, extracted = check_gold(row["solution"], row["answer"])
        if not agrees:
            exceptions.append((row["unique_id"], extracted, row["answer"]))
    assert _report("MATH500", len(rows), exceptions) >= MIN_AGREEMENT


def test_aime_solutions_agree_with_gold() -> None:
    """AoPS-style AIME solutions (DeepScaleR's AIME train set and AIME 2024) box their answers
    in assorted styles (``\\textbf{(051)}``, zero padding), a harder test of the normalisation."""
    rows = _rows("deepscaler/train/aime.json") + _rows("aime24/test.jsonl")
    exceptions = []
    for i, row in enumerate(rows):
        agrees, extracted = check_gold(row["solution"], str(row["answer"]))
        if not agrees:
            exceptions.append((i, extracted, row["answer"]))
    assert _report("AIME solutions", len(rows), exceptions) >= MIN_AGREEMENT


@pytest.mark.parametrize("relative", ["aime24/test.jsonl", "aime25/test.jsonl"])
def test_aime_answers_match_their_integer_forms(relative: str) -> None:
    rows = _rows(relative)
    for row in rows:
        gold = str(row["answer"])
        value = int(gold)
        assert answers_match(str(value), gold), gold
        assert answers_match(f"{value:03d}", gold), gold
        assert answers_match(rf"\boxed{{{value}}}", gold), gold
        assert not answers_match(str(value + 1), gold), gold


def test_gsm8k_last_number_fallback() -> None:
    """Without its ``####`` line, the last number of a GSM8K solution is usually its answer; this
    measures the fallback tier that weak models (which rarely box) are scored by."""
    rows = _rows("gsm8k/test.jsonl")
    misses = []
    for i, row in enumerate(rows):
        body = row["answer"].rsplit("####", 1)[0]
        extracted = extract_answer(body)
        gold = _gsm8k_gold(row["answer"])
        if not answers_match(extracted, gold):
            misses.append((i, extracted, gold))
    assert _report("GSM8K last-number fallback", len(rows), misses) >= 0.95


def test_math500_different_answers_do_not_match() -> None:
    """Each MATH500 answer against the next row's (different) answer: matches must be rare and
    only between answers that math-verify considers equal (such as ``x=5`` and ``5``)."""
    rows = _rows("math500/test.jsonl")
    compared, matched = 0, []
    for row, other in zip(rows, rows[1:] + rows[:1], strict=True):
        gold, candidate = row["answer"], other["answer"]
        if "".join(gold.split()) == "".join(candidate.split()):
            continue
        compared += 1
        if answers_match(candidate, gold):
            matched.append((candidate, gold))
    print(f"\nMATH500 cross-row matches: {len(matched)}/{compared}: {matched}")
    assert len(matched) / compared <= 0.01
