"""Curricula: which prompts each GRPO step trains on, and how many rollouts each gets.

One file per method, its config class beside it; ``base.py`` holds the contract and
``allocation.py`` the rollout allocators any curriculum can use. To add a method, write its
file and add one line to ``CURRICULA`` (and, if it has settings, a section to ``Params``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sparft.checks import Check
from sparft.curricula.allocation import Allocator, allocation_checks, check_budget
from sparft.curricula.base import Assignment, Curriculum, Group
from sparft.curricula.cures import CuresCurriculum
from sparft.curricula.dots import DotsCurriculum
from sparft.curricula.dump import DumpCurriculum
from sparft.curricula.sparft import SparftCurriculum
from sparft.curricula.uniform import UniformCurriculum

# name -> (class, the params section holding its settings, or None)
CURRICULA: dict[str, tuple[type[Curriculum], str | None]] = {
    "uniform": (UniformCurriculum, None),
    "sparft": (SparftCurriculum, "bandit"),
    "cures": (CuresCurriculum, "cures"),
    "dump": (DumpCurriculum, "dump"),
    "dots": (DotsCurriculum, "dots"),
}

__all__ = [
    "CURRICULA",
    "Assignment",
    "Curriculum",
    "Group",
    "make_curriculum",
    "needs_column",
    "preflight_checks",
]


def needs_column(name: str, params: Any) -> str | None:
    """The frame column curriculum ``name`` needs under ``params`` (``cluster``, say), if any."""
    cls, section = CURRICULA[name]
    return cls.needs_column(getattr(params, section) if section else None)


def preflight_checks(name: str, params: Any, probe: pd.DataFrame | None) -> list[Check]:
    """What curriculum ``name`` and the allocator ``params`` give it declare must hold before
    training (``Curriculum.preflight``, ``allocation.ALLOCATION_CHECKS``)."""
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r} (allowed: {', '.join(CURRICULA)})")
    cls, _ = CURRICULA[name]
    method = cls.allocation_method(params.train)
    return [*cls.preflight(params, probe), *allocation_checks(method, params, probe)]


def make_curriculum(name: str, frame: pd.DataFrame, params: Any) -> Curriculum:
    """The curriculum ``name`` over ``frame`` with its settings and allocator from ``params``
    (a ``sparft.config.Params``: its ``train`` section, the method's own section and
    ``allocation``)."""
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r} (allowed: {', '.join(CURRICULA)})")
    cls, section = CURRICULA[name]
    train = params.train
    curriculum = cls(frame, getattr(params, section) if section else None, train.seed)
    method = cls.allocation_method(train)
    budget = train.prompts_per_step * train.num_generations
    check_budget(method, params.allocation, train.prompts_per_step, train.num_generations, budget)
    curriculum.allocator = Allocator(method, params.allocation, train.num_generations)
    return curriculum
