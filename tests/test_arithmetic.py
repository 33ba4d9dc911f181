"""The generated default set: seeded, distinct, correct answers, grades independent."""

from __future__ import annotations

import re

import pytest

from sparft.arithmetic import GRADES, ArithmeticConfig, generate


def test_seeded_and_distinct() -> None:
    cfg = ArithmeticConfig(per_grade=30, seed=3)
    first, second = generate(cfg), generate(cfg)
    assert first.equals(second)
    assert first["question"].is_unique
    assert first.groupby("grade").size().tolist() == [30] * len(GRADES)
    assert not first.equals(generate(ArithmeticConfig(per_grade=30, seed=4)))


def test_grades_do_not_shift_each_other() -> None:
    all_grades = generate(ArithmeticConfig(per_grade=10))
    only_five = generate(ArithmeticConfig(per_grade=10, grades=[5]))
    assert list(all_grades[all_grades["grade"] == 5]["question"]) == list(only_five["question"])


def test_answers_follow_from_the_worked_steps() -> None:
    """Every expression in a solution evaluates to what it claims, and ends in the answer."""
    frame = generate(ArithmeticConfig(per_grade=30))
    for row in frame.itertuples():
        assert row.solution.endswith(f"\\boxed{{{row.answer}}}.")
        for lhs, rhs in re.findall(r"([\d\s()+\-*/]+?)\s*=\s*(-?\d+)", row.solution):
            tokens = re.findall(r"\d+|[+\-*/()]", lhs)
            value = _evaluate(tokens)
            assert value == int(rhs), (row.question, lhs, rhs)


def _evaluate(tokens: list[str]) -> int:
    """Tiny recursive-descent evaluator for + - * / and parentheses on integers (floor division)."""
    pos = 0

    def expr() -> int:
        nonlocal pos
        value = term()
        while pos < len(tokens) and tokens[pos] in "+-":
            op = tokens[pos]
            pos += 1
            value = value + term() if op == "+" else value - term()
        return value

    def term() -> int:
        nonlocal pos
        value = atom()
        while pos < len(tokens) and tokens[pos] in "*/":
            op = tokens[pos]
            pos += 1
            value = value * atom() if op == "*" else value // atom()
        return value

    def atom() -> int:
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "(":
            value = expr()
            pos += 1
            return value
        return int(token)

    return expr()


def test_too_many_per_grade_is_explained() -> None:
    with pytest.raises(ValueError, match="grade 1 has fewer distinct questions"):
        generate(ArithmeticConfig(per_grade=100, grades=[1]))
