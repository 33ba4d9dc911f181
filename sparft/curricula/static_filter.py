"""Static filter: uniform GRPO over the questions the probe found neither always nor never solved.

The offline filtering most papers run as a baseline: before training, drop every question whose
measured pass rate is 0 or 1 (no group of it can have a gradient unless the policy changes),
then train uniformly on the rest, in a seeded shuffled order reshuffled after each pass. The
pass rates are the probe stage's (``probe_correct`` / ``probe_rollouts``, its k answers per
question); the filter is fixed for the run, so a question that becomes learnable later is never
seen, and one that becomes trivial keeps being trained on. That is the baseline's known
weakness, and what the online methods (DOTS, MoPPS, dynamic sampling) answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from sparft.checks import Check, ok, pending, warn
from sparft.curricula.base import PROBE_CORRECT, PROBE_ROLLOUTS, Curriculum, shuffled
from sparft.curricula.registry import Method, Strategy

if TYPE_CHECKING:
    import pandas as pd


def learnable(frame: pd.DataFrame) -> np.ndarray:
    """Which rows the probe solved sometimes but not always (a mask over ``frame``)."""
    k = frame[PROBE_ROLLOUTS].fillna(0).to_numpy(dtype=float)
    correct = frame[PROBE_CORRECT].fillna(0).to_numpy(dtype=float)
    return (k > 0) & (correct > 0) & (correct < k)


class StaticFilterCurriculum(Curriculum):
    """Every probe-learnable question once per pass, in a fresh seeded order each pass."""

    def __init__(self, frame: pd.DataFrame, cfg: None = None, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        if PROBE_ROLLOUTS not in self.frame or PROBE_CORRECT not in self.frame:
            raise ValueError(
                "the static-filter curriculum needs the probe stage's answers "
                "(data/probe.parquet with k and n_correct): run the probe with probe.source=model"
            )
        keep = learnable(self.frame)
        if not keep.any():
            raise ValueError(
                f"static-filter: none of the {len(self.ids)} training questions has a probe "
                "solve rate strictly between 0 and 1: nothing to train on"
            )
        self.kept = [qid for qid, k in zip(self.ids, keep, strict=True) if k]
        self.queue: list[str] = []

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        picked: list[str] = []
        while len(picked) < n:
            if not self.queue:
                self.queue = shuffled(self.kept, self.rng)
            picked.append(self.queue.pop())
        return picked, {"kept_questions": len(self.kept)}

    def _method_state(self) -> dict[str, Any]:
        return {"queue": self.queue}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.queue = list(state["queue"])


def preflight(cfg: None, params: Any, probe: pd.DataFrame | None) -> list[Check]:
    """The filter needs the probe's answers, and enough kept questions for a step's prompts."""
    name = "static-filter pool"
    if params.probe.source == "label":
        return [
            warn(
                name,
                "probe.source=label gives no answers to filter on: the run stops at training",
                {"probe.source": "model"},
            )
        ]
    if probe is None or not {"k", "n_correct"} <= set(probe.columns):
        return [pending(name)]
    k = probe["k"].fillna(0).to_numpy(dtype=float)
    c = probe["n_correct"].fillna(0).to_numpy(dtype=float)
    kept = int(((k > 0) & (c > 0) & (c < k)).sum())
    per_step = params.train.prompts_per_step
    if kept >= per_step:
        return [ok(name, f"{kept} of {len(probe)} probed questions strictly between 0 and 1")]
    return [
        warn(
            name,
            f"{kept} of {len(probe)} probed questions have a solve rate strictly between 0 and "
            f"1, fewer than train.prompts_per_step={per_step}: the same questions repeat "
            "within a step (raise probe.k, or choose easier data)",
            {"probe.k": 2 * params.probe.k},
        )
    ]


METHOD: Method[BaseModel] = Method(
    name="static-filter",
    title="Static filter",
    paper="offline pass-rate filtering, the baseline of e.g. DAPO and MoPPS (no single paper)",
    summary="Uniform over the questions whose probe solve rate is strictly between 0 and 1.",
    curriculum=StaticFilterCurriculum,
    preflight=preflight,
    strategies={
        "static-filter": Strategy(
            {"train.curriculum": "static-filter", "train.data": "full"},
            True,
            "uniform over the probe's learnable questions (0 < solve rate < 1)",
        )
    },
    page="static-filter",
)
