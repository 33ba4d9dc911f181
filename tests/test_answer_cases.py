"""The answer-equivalence case table (``tests/data/answer_cases.yaml``): every case must get its
stated verdict, through ``answers_match`` for extracted answers and ``is_correct`` for
completions (an answer-only completion is checked both ways)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparft.answers import answers_match, is_correct

CASES_FILE = Path(__file__).parent / "data" / "answer_cases.yaml"
FIELDS = ("kind", "via", "gold", "prediction", "equivalent")


def load_cases(path: Path = CASES_FILE) -> list[dict[str, Any]]:
    """The table's rows as dicts, whichever of its two forms (list or mapping) a row uses."""
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]
    cases = []
    for i, row in enumerate(rows):
        case = dict(zip(FIELDS, row, strict=True)) if isinstance(row, list) else dict(row)
        if set(case) != set(FIELDS) or case["via"] not in ("answer", "completion"):
            raise ValueError(f"{path}: case {i} is malformed: {row!r}")
        cases.append(case)
    return cases


CASES = load_cases()


def _id(case: dict[str, Any]) -> str:
    verdict = "eq" if case["equivalent"] else "ne"
    return f"{case['kind']}-{verdict}-{case['gold']}|{case['prediction'][:40]}"


def test_table_covers_every_kind_both_ways() -> None:
    assert len(CASES) >= 150
    kinds = Counter((c["kind"], c["equivalent"]) for c in CASES)
    for kind in {c["kind"] for c in CASES} - {"bare"}:
        assert kinds[(kind, True)] > 0, f"no equivalent case of kind {kind}"
        assert kinds[(kind, False)] > 0, f"no different case of kind {kind}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_case(case: dict[str, Any]) -> None:
    gold, prediction, expected = case["gold"], case["prediction"], case["equivalent"]
    if case["via"] == "answer":
        assert answers_match(prediction, gold) is expected
    assert is_correct(prediction, gold) is expected
