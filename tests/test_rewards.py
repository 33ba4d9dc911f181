"""The TRL reward functions: values, shapes and the keywords TRL passes."""

from __future__ import annotations

import pytest

from sparft.rewards import correctness_reward, format_reward


def test_correctness_reward_values_and_shape() -> None:
    completions = [
        r"So the answer is \boxed{18}.",
        [{"role": "assistant", "content": "She makes 9 * 2 = 18 dollars."}],
        r"\boxed{17}",
        "I do not know.",
    ]
    rewards_out = correctness_reward(
        prompts=["q"] * 4,
        completions=completions,
        completion_ids=[[1], [2], [3], [4]],
        answer=["18", "18", "18", "18"],
        question=["q"] * 4,
        trainer_state=None,
        log_metric=lambda name, value: None,
        log_extra=lambda column, values: None,
    )
    assert rewards_out == [1.0, 1.0, 0.0, 0.0]
    assert all(isinstance(r, float) for r in rewards_out)


def test_correctness_reward_length_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        correctness_reward(["a", "b"], ["1"])


def test_format_reward() -> None:
    completions = [
        r"so \boxed{3}",
        [{"role": "assistant", "content": r"$\boxed{\frac{1}{2}}$"}],
        "the answer is 3",
        r"\boxed{}",
        r"truncated \boxed{3",
    ]
    out = format_reward(completions, prompts=["p"] * 5, answer=["3"] * 5, trainer_state=None)
    assert out == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_reward_names() -> None:
    assert correctness_reward.__name__ == "correctness_reward"
    assert format_reward.__name__ == "format_reward"


def test_gold_may_be_a_number() -> None:
    assert correctness_reward([r"\boxed{588}"], [588]) == [1.0]
