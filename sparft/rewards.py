"""TRL reward functions for GRPO on math; the answer checking they rely on is ``sparft.answers``.

TRL calls a reward function with ``prompts``, ``completions``, ``completion_ids``, every other
dataset column, ``trainer_state``, ``log_extra`` and ``log_metric`` as keywords; these accept
what they need and ignore the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sparft.answers import Completion, batch_budget, completion_text, is_correct, last_boxed


def correctness_reward(
    completions: Sequence[Completion], answer: Sequence[str | int | float], **kwargs: Any
) -> list[float]:
    """1.0 for a correct final answer, else 0.0 (``answer`` is the gold column). The batch
    shares one math-verify budget, so hostile completions cannot stall a step; the checks it
    skipped are logged as ``answers/unchecked`` when TRL passes ``log_metric``."""
    with batch_budget() as budget:
        rewards = [
            1.0 if is_correct(c, a) else 0.0 for c, a in zip(completions, answer, strict=True)
        ]
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        log_metric("answers/unchecked", float(budget.skipped))
    return rewards


def format_reward(completions: Sequence[Completion], **kwargs: Any) -> list[float]:
    """1.0 when the completion puts a non-empty final answer in ``\\boxed{}``."""
    return [1.0 if last_boxed(completion_text(c)) else 0.0 for c in completions]
