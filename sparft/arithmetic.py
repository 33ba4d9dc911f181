"""Seeded arithmetic problems with graded, known difficulty: the offline default training set.

Grades rise by what makes small models fail: more digits, more operands, multiplication and
division, then word problems that need several steps. Each row carries its grade as
``difficulty_label`` and a worked solution ending in ``\\boxed{answer}``, so the set can be
verified like any benchmark. See ``benchmarks/generation.py`` for the measured solve rates.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

Problem = tuple[str, int, str]  # question, answer, worked steps

NAMES = [
    "Ava",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Kira",
    "Luis",
]
ITEMS = ["apples", "books", "marbles", "stickers", "pencils", "coins", "cards", "shells", "stamps"]
CONTAINERS = ["boxes", "bags", "crates", "packs", "baskets"]


def _grade1(rng: random.Random) -> Problem:
    """Plain "What is a + b?" only: reworded forms ("Add 3 and 4.") were solved less often."""
    a, b = rng.randint(0, 5), rng.randint(0, 5)
    question = f"What is {a} + {b}?" if rng.random() < 0.5 else f"What is {a}+{b}?"
    return question, a + b, f"{a} + {b} = {a + b}"


def _grade2(rng: random.Random) -> Problem:
    a, b = rng.randint(0, 9), rng.randint(6, 9)
    if rng.random() < 0.5:
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        return f"What is {a} + {b}?", a + b, f"{a} + {b} = {a + b}"
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", a - b, f"{a} - {b} = {a - b}"


def _grade3(rng: random.Random) -> Problem:
    a, b = rng.randint(10, 99), rng.randint(1, 9)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", a + b, f"{a} + {b} = {a + b}"
    return f"What is {a} - {b}?", a - b, f"{a} - {b} = {a - b}"


def _grade4(rng: random.Random) -> Problem:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", a + b, f"{a} + {b} = {a + b}"
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", a - b, f"{a} - {b} = {a - b}"


def _grade5(rng: random.Random) -> Problem:
    if rng.random() < 0.5:
        a, b = rng.randint(2, 9), rng.randint(11, 99)
        return f"What is {a} * {b}?", a * b, f"{a} * {b} = {a * b}"
    a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(2, 9)
    return (
        f"What is {a} + {b} - {c}?",
        a + b - c,
        f"{a} + {b} = {a + b}, and {a + b} - {c} = {a + b - c}",
    )


def _grade6(rng: random.Random) -> Problem:
    name, item, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    start, boxes, per_box = rng.randint(5, 60), rng.randint(2, 9), rng.randint(3, 15)
    total = start + boxes * per_box
    question = (
        f"{name} has {start} {item}. {name} buys {boxes} {box} with {per_box} {item} in each. "
        f"How many {item} does {name} have now?"
    )
    return (
        question,
        total,
        f"{boxes} * {per_box} = {boxes * per_box}, and {start} + {boxes * per_box} = {total}",
    )


def _grade7(rng: random.Random) -> Problem:
    if rng.random() < 0.5:
        a, b = rng.randint(101, 999), rng.randint(11, 99)
        return f"What is {a} * {b}?", a * b, f"{a} * {b} = {a * b}"
    a, b, c, d = rng.randint(10, 99), rng.randint(10, 99), rng.randint(3, 19), rng.randint(10, 99)
    value = (a + b) * c - d
    return (
        f"What is ({a} + {b}) * {c} - {d}?",
        value,
        f"{a} + {b} = {a + b}, {a + b} * {c} = {(a + b) * c}, and {(a + b) * c} - {d} = {value}",
    )


def _grade8(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    per_day, days, friends = rng.randint(12, 99), rng.randint(3, 14), rng.randint(3, 9)
    collected = per_day * days
    each, left = divmod(collected, friends)
    question = (
        f"{name} collects {per_day} {item} every day for {days} days, then shares them "
        f"equally among {friends} friends and keeps the {left} left over. "
        f"How many {item} does each friend get?"
    )
    steps = f"{per_day} * {days} = {collected}, and ({collected} - {left}) / {friends} = {each}"
    return question, each, steps


GRADES: dict[int, Callable[[random.Random], Problem]] = {
    1: _grade1,
    2: _grade2,
    3: _grade3,
    4: _grade4,
    5: _grade5,
    6: _grade6,
    7: _grade7,
    8: _grade8,
}


class ArithmeticConfig(BaseModel):
    """The ``arithmetic`` section: size and seed of the generated default data set."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Same seed, same questions.")
    per_grade: int = Field(
        8, ge=1, le=100_000, description="Distinct questions per grade (grade 1 has 72)."
    )
    grades: list[int] = Field(
        default_factory=lambda: list(GRADES), description="Grades to include."
    )

    @field_validator("grades")
    @classmethod
    def _known_grades(cls, grades: list[int]) -> list[int]:
        unknown = sorted(set(grades) - set(GRADES))
        if unknown or not grades:
            raise ValueError(f"grades must be a non-empty subset of {sorted(GRADES)}, got {grades}")
        return sorted(set(grades))


def generate(cfg: ArithmeticConfig) -> pd.DataFrame:
    """Return ``per_grade`` distinct questions per grade: question, answer, solution, grade.

    Each grade draws from its own RNG stream so adding a grade leaves the others unchanged.
    """
    rows: list[dict[str, object]] = []
    for grade in cfg.grades:
        rng = random.Random(f"{cfg.seed}:{grade}")
        seen: set[str] = set()
        attempts = 0
        while len(seen) < cfg.per_grade:
            attempts += 1
            if attempts > 50 * cfg.per_grade + 1000:
                raise ValueError(
                    f"arithmetic.per_grade={cfg.per_grade}: grade {grade} has fewer distinct "
                    f"questions than that (found {len(seen)}); lower per_grade"
                )
            question, answer, steps = GRADES[grade](rng)
            if question in seen:
                continue
            seen.add(question)
            rows.append(
                {
                    "question": question,
                    "answer": str(answer),
                    "solution": f"{steps}. The answer is \\boxed{{{answer}}}.",
                    "grade": float(grade),
                }
            )
    return pd.DataFrame(rows)
