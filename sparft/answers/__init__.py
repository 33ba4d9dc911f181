"""Answer checking: the final answer a completion states, and whether it equals the gold answer.
One path serves rewards, probing, evaluation and ``sparft verify``, so every number the project
reports is scored the same way, and model text is never evaluated (``math-verify`` parses it
into sympy objects). ``grading`` is that path (``extract_answer``, ``answers_match``,
``grade``), ``rules`` holds sparft's own extraction and normalisation rules, ``verify`` the
math-verify adapter, and ``limits`` the time limits on every call into math-verify, in any
thread. The package imports nothing else from sparft, so a ``limits`` worker process loads it
alone.
"""

from __future__ import annotations

from sparft.answers.grading import (
    Completion,
    Grade,
    Message,
    answers_match,
    check_gold,
    completion_text,
    extract_answer,
    grade,
    is_correct,
)
from sparft.answers.limits import BATCH_BUDGET_S, UNCHECKED_NOTE, Budget, batch_budget
from sparft.answers.rules import last_boxed

__all__ = [
    "BATCH_BUDGET_S",
    "UNCHECKED_NOTE",
    "Budget",
    "Completion",
    "Grade",
    "Message",
    "answers_match",
    "batch_budget",
    "check_gold",
    "completion_text",
    "extract_answer",
    "grade",
    "is_correct",
    "last_boxed",
]
