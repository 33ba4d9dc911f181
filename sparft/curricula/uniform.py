"""Plain GRPO's data order: prompts in a seeded shuffled order, reshuffled after each pass."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import BaseModel

from sparft.curricula.base import Curriculum, shuffled
from sparft.curricula.registry import Method, Strategy


class UniformCurriculum(Curriculum):
    """Every prompt once per epoch, in a fresh seeded order each epoch."""

    def __init__(self, frame: pd.DataFrame, cfg: None = None, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        self.queue: list[str] = []

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        picked: list[str] = []
        while len(picked) < n:
            if not self.queue:
                self.queue = shuffled(self.ids, self.rng)
            picked.append(self.queue.pop())
        return picked, {}

    def _method_state(self) -> dict[str, Any]:
        return {"queue": self.queue}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.queue = list(state["queue"])


METHOD: Method[BaseModel] = Method(
    name="uniform",
    title="GRPO, uniform",
    paper="Shao et al., 2024, arXiv 2402.03300",
    summary="Every question once per pass, in a seeded shuffled order; `num_generations` "
    "rollouts each. The baseline.",
    curriculum=UniformCurriculum,
    strategies={
        "uniform": Strategy(
            {"train.curriculum": "uniform", "train.data": "full"},
            False,
            "plain GRPO, prompts drawn uniformly from every training question",
        )
    },
    page="uniform",
)
