"""Curricula: which prompts each GRPO step trains on, and how many rollouts each gets.

One file per method: its config class, its curriculum class and its ``Method`` entry
(``registry.py`` says what an entry holds and what is derived from it). ``base.py`` holds the
contract, ``allocation.py`` the rollout allocators any curriculum can use. To add a built-in
method, write its file and add it to ``BUILT_IN``; a method of your own needs no edit here (see
``sparft.curricula.registry``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparft.curricula import (
    allocation,
    cures,
    dots,
    dump,
    dynamic_sampling,
    mopps,
    static_filter,
    uniform,
)
from sparft.curricula import sparft as sparft_curriculum
from sparft.curricula.allocation import Allocator, check_budget
from sparft.curricula.allocation_checks import allocation_checks
from sparft.curricula.base import Assignment, Curriculum, Group
from sparft.curricula.registry import METHODS, Method, curricula, method, register

if TYPE_CHECKING:
    import pandas as pd

    from sparft.checks import Check

# registration order is the order of strategies, docs tables and params sections
BUILT_IN: tuple[Method[Any], ...] = (
    uniform.METHOD,
    sparft_curriculum.METHOD,
    cures.METHOD,
    dump.METHOD,
    dots.METHOD,
    allocation.METHOD,
    static_filter.METHOD,
    mopps.METHOD,
    dynamic_sampling.METHOD,
)
for _method in BUILT_IN:
    register(_method)

__all__ = [
    "METHODS",
    "Assignment",
    "Curriculum",
    "Group",
    "curricula",
    "frame_columns",
    "make_curriculum",
    "preflight_checks",
]


def frame_columns(name: str, params: Any) -> tuple[str, ...]:
    """The training-frame columns curriculum ``name`` needs under ``params`` (``cluster``, say)."""
    found = method(name)
    return found.columns(found.settings_or_none(params))


def preflight_checks(name: str, params: Any, probe: pd.DataFrame | None) -> list[Check]:
    """What curriculum ``name`` and the allocator ``params`` give it declare must hold before
    training (its entry's ``preflight``, ``allocation_checks.ALLOCATION_CHECKS``)."""
    found = method(name)
    assert found.curriculum is not None
    alloc = found.curriculum.allocation_method(params.train)
    own = found.preflight(found.settings_or_none(params), params, probe)
    return [*own, *allocation_checks(alloc, params, probe)]


def make_curriculum(name: str, frame: pd.DataFrame, params: Any) -> Curriculum:
    """The curriculum ``name`` over ``frame`` with its settings and allocator from ``params``
    (a ``sparft.config.Params``: its ``train`` section, the method's own section and
    ``allocation``)."""
    found = method(name)
    assert found.curriculum is not None
    train = params.train
    curriculum = found.curriculum(frame, found.settings_or_none(params), train.seed)
    alloc = found.curriculum.allocation_method(train)
    budget = train.prompts_per_step * train.num_generations
    check_budget(alloc, params.allocation, train.prompts_per_step, train.num_generations, budget)
    curriculum.allocator = Allocator(alloc, params.allocation, train.num_generations)
    return curriculum
