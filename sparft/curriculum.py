"""Curricula: which prompts the GRPO trainer generates for at the next step.

One interface for every strategy, so the trainer never knows which it runs: ``next_batch`` gives
the prompt ids of the next generation batch, ``observe`` receives each prompt's per-rollout
correctness right after scoring (no lag). State is JSON-serialisable so a checkpoint can hold it
and a resumed run continues with the same choices.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from sparft.bandit import Bandit, BanditConfig, make_bandit

Strategy = Literal["uniform", "sparft"]


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _shuffled(ids: Sequence[str], rng: np.random.Generator) -> list[str]:
    return [ids[i] for i in rng.permutation(len(ids))]


class Curriculum(ABC):
    """Chooses each step's prompts and learns from their rewards."""

    def __init__(self, ids: Sequence[str], seed: int) -> None:
        if not ids:
            raise ValueError("a curriculum needs at least one training prompt")
        self.ids = list(ids)
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.seen: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self._pending: list[str] | None = None

    @abstractmethod
    def _choose(self, n: int) -> tuple[list[str], dict[str, Any]]:
        """The next ``n`` prompt ids and what to record about the choice (e.g. the arm)."""

    def next_batch(self, n: int) -> list[str]:
        """Prompt ids for the next generation batch (each is then rolled out G times)."""
        if n < 1:
            raise ValueError(f"batch size must be >= 1, got {n}")
        if self._pending is not None:
            raise RuntimeError("next_batch called twice without observe: rewards were lost")
        ids, record = self._choose(n)
        self._pending = ids
        self._record = record
        return ids

    def observe(self, ids: Sequence[str], correct: np.ndarray) -> dict[str, Any]:
        """Per-rollout correctness of the batch ``next_batch`` returned, shape (prompts, G)."""
        if self._pending is None or list(ids) != self._pending:
            raise RuntimeError("observe must receive exactly the ids of the last next_batch")
        correct = np.asarray(correct, dtype=float)
        if correct.ndim != 2 or correct.shape[0] != len(ids):
            raise ValueError(f"correct must have shape ({len(ids)}, G), got {correct.shape}")
        per_prompt = correct.mean(axis=1)
        record = {
            "step": self.step,
            **self._record,
            "solve_rate": float(per_prompt.mean()),
            "effective_prompt_ratio": float((correct.std(axis=1) > 0).mean()),
        }
        record.update(self._learn(ids, per_prompt))
        self.seen.update(ids)
        record["unique_seen"] = len(self.seen)
        self.history.append(record)
        self.step += 1
        self._pending = None
        return record

    def _learn(self, ids: Sequence[str], per_prompt: np.ndarray) -> dict[str, Any]:
        """Update from the batch's per-prompt solve rates; returns extra fields to record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:
            raise RuntimeError("cannot save a curriculum between next_batch and observe")
        return {
            "rng": _rng_state(self.rng),
            "step": self.step,
            "seen": sorted(self.seen),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.step = int(state["step"])
        self.seen = set(state["seen"])
        self.history = list(state["history"])
        self._pending = None


class UniformCurriculum(Curriculum):
    """Plain GRPO: prompts in a seeded shuffled order, reshuffled after each pass (epoch)."""

    def __init__(self, ids: Sequence[str], seed: int = 0) -> None:
        super().__init__(ids, seed)
        self.queue: list[str] = []

    def _choose(self, n: int) -> tuple[list[str], dict[str, Any]]:
        picked: list[str] = []
        while len(picked) < n:
            if not self.queue:
                self.queue = _shuffled(self.ids, self.rng)
            picked.append(self.queue.pop())
        return picked, {"arm": -1}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "queue": self.queue}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.queue = list(state["queue"])


class SparftCurriculum(Curriculum):
    """SPaRFT phase 2: a bandit picks a cluster per step; the step's prompts come from it.

    Within a cluster prompts are drawn from a shuffled queue, so a small cluster is cycled
    through rather than one prompt repeated; the arm's reward is the step's observed solve rate.
    """

    def __init__(
        self, ids: Sequence[str], clusters: Sequence[int], bandit: BanditConfig, seed: int = 0
    ) -> None:
        super().__init__(ids, seed)
        if len(clusters) != len(self.ids):
            raise ValueError(f"{len(self.ids)} prompt ids but {len(clusters)} cluster ids")
        labels = sorted(set(int(c) for c in clusters))
        self.arm_labels = labels
        self.members: list[list[str]] = [
            [i for i, c in zip(self.ids, clusters, strict=True) if int(c) == label]
            for label in labels
        ]
        self.queues: list[list[str]] = [[] for _ in labels]
        self.bandit: Bandit = make_bandit(bandit, len(labels))

    def _choose(self, n: int) -> tuple[list[str], dict[str, Any]]:
        arm = self.bandit.select()
        picked: list[str] = []
        while len(picked) < n:
            if not self.queues[arm]:
                self.queues[arm] = _shuffled(self.members[arm], self.rng)
            picked.append(self.queues[arm].pop())
        return picked, {"arm": arm, "cluster": self.arm_labels[arm]}

    def _learn(self, ids: Sequence[str], per_prompt: np.ndarray) -> dict[str, Any]:
        reward = self.bandit.update(self._record["arm"], float(per_prompt.mean()))
        return {"bandit_reward": reward}

    def arm_metrics(self) -> dict[str, float]:
        """Per-arm pulls, last solve rate and bandit score, flattened for a metrics logger."""
        out: dict[str, float] = {}
        for arm, stats in enumerate(self.bandit.arm_stats()):
            for key in ("pulls", "last_solve_rate", "score"):
                value = float(stats.get(key, math.nan))
                if math.isfinite(value):  # never-pulled arms have no rate (nan), UCB index inf
                    out[f"arm{arm}/{key}"] = value
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "queues": self.queues, "bandit": self.bandit.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.queues = [list(q) for q in state["queues"]]
        self.bandit.load_state_dict(state["bandit"])


def make_curriculum(
    strategy: Strategy, frame: pd.DataFrame, bandit: BanditConfig, seed: int = 0
) -> Curriculum:
    """The curriculum for ``strategy`` over ``frame`` (needs ``id``; ``cluster`` for sparft)."""
    ids = frame["id"].astype(str).tolist()
    if strategy == "uniform":
        return UniformCurriculum(ids, seed)
    if strategy == "sparft":
        if "cluster" not in frame:
            raise ValueError(
                "the sparft curriculum needs a 'cluster' column: train on the select stage's "
                "output (data/selected.parquet)"
            )
        return SparftCurriculum(ids, frame["cluster"].astype(int).tolist(), bandit, seed)
    raise ValueError(f"unknown curriculum {strategy!r} (allowed: uniform, sparft)")
