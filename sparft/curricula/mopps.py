"""MoPPS (arXiv 2507.04632, thu-rllab): model-predictive prompt selection from Beta
posteriors, without extra rollouts.

Every prompt has a posterior ``Beta(alpha, beta)`` on its solve rate, from the prior ``(1, 1)``
(the paper's headline runs) or, with ``warm_start``, from the probe's answers as well. A step
takes the next ``candidate_ratio x n`` prompts of a seeded shuffled pass over the data (the
candidate batch, at most all questions), draws one Thompson sample of each candidate's solve
rate, and trains on the ``n`` candidates whose samples are closest to ``target`` (the released
code's ``topk`` rule; the rest wait for a later pass). After the step, each trained prompt's
posterior takes its ``s`` correct of ``m`` rollouts, with the released code's decay applied only
when the prompt is observed: ``alpha <- decay * alpha + (1 - decay) * 1 + s``, likewise
``beta`` with ``m - s``. ``decay: 1`` (the code's default for math) never forgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sparft.checks import Check, ok, warn
from sparft.curricula.base import Curriculum, Group, shuffled
from sparft.curricula.registry import Method, Strategy

if TYPE_CHECKING:
    import pandas as pd


class MoppsConfig(BaseModel):
    """The ``mopps`` section."""

    model_config = ConfigDict(extra="forbid")

    target: float = Field(0.5, gt=0.0, lt=1.0, description="gamma*: the solve rate sought.")
    candidate_ratio: int = Field(
        16, ge=1, description="Candidates per trained prompt (the code: 16 on math)."
    )
    decay: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="lambda: the share of a posterior kept at each observation (1: no forgetting).",
    )
    warm_start: bool = Field(
        False,
        description="Start each posterior from the probe's answers (true) or Beta(1, 1), as the "
        "paper's headline runs (false).",
    )


class MoppsCurriculum(Curriculum):
    """Thompson samples of each candidate's solve rate; the ones nearest the target are trained."""

    def __init__(self, frame: pd.DataFrame, cfg: MoppsConfig, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        self.cfg = cfg
        n = len(self.ids)
        if cfg.warm_start:  # the probe's answers (PromptStats starts from them)
            self.alpha = self.stats.correct + 1.0
            self.beta = (self.stats.rollouts - self.stats.correct) + 1.0
        else:
            self.alpha, self.beta = np.ones(n), np.ones(n)
        self.queue: list[str] = []

    def posterior(self, index: np.ndarray | int | None = None) -> np.ndarray:
        at: np.ndarray | int | slice = slice(None) if index is None else index
        return self.alpha[at] / (self.alpha[at] + self.beta[at])

    def _candidates(self, count: int) -> list[int]:
        """The next ``count`` prompts of the shuffled pass (distinct, at most all of them)."""
        count = min(count, len(self.ids))
        picked: list[int] = []
        while len(picked) < count:
            if not self.queue:
                self.queue = shuffled(self.ids, self.rng)
            i = self.index[self.queue.pop()]
            if i not in picked:
                picked.append(i)
        return picked

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        candidates = np.array(self._candidates(self.cfg.candidate_ratio * n))
        sampled = self.rng.beta(self.alpha[candidates], self.beta[candidates])
        order = np.argsort((sampled - self.cfg.target) ** 2, kind="stable")
        chosen = candidates[order[:n]].tolist()
        while len(chosen) < n:  # fewer questions than a step's prompts: take them again
            chosen.append(chosen[len(chosen) % len(candidates)])
        picked = np.array(chosen)
        return [self.ids[i] for i in chosen], {
            "candidates": int(candidates.size),
            "sampled_mean": float(np.mean(sampled[order[:n]])),
            "posterior_mean": float(self.posterior(picked).mean()),
        }

    def _learn(self, groups: Sequence[Group]) -> dict[str, Any]:
        lam = self.cfg.decay
        for group in groups:
            i = self.index[group.prompt_id]
            correct = float(np.sum(group.correct))
            self.alpha[i] = lam * self.alpha[i] + (1.0 - lam) + correct
            self.beta[i] = lam * self.beta[i] + (1.0 - lam) + (len(group.correct) - correct)
        return {}

    def metrics(self) -> dict[str, float]:
        p = self.posterior()
        observed = (self.alpha + self.beta) > 2.0
        return {
            "posterior/mean": float(p.mean()),
            "posterior/observed_share": float(observed.mean()),
        }

    def _method_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "queue": self.queue}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.alpha = np.asarray(state["alpha"], dtype=float)
        self.beta = np.asarray(state["beta"], dtype=float)
        self.queue = list(state["queue"])


def preflight(cfg: MoppsConfig, params: Any, probe: pd.DataFrame | None) -> list[Check]:
    """A posterior says something only after its prompt was trained once: a run should cover
    the data (``max_steps x prompts_per_step`` trained prompts) before it can prefer any."""
    name = "mopps coverage"
    train = params.train
    trained = train.max_steps * train.prompts_per_step
    questions = len(probe) if probe is not None else None
    if questions is None or cfg.warm_start:
        return [ok(name, "warm start from the probe" if cfg.warm_start else "known after probe")]
    if trained >= questions:
        return [ok(name, f"{trained} trained prompts over {questions} questions")]
    steps = -(-questions // train.prompts_per_step)
    return [
        warn(
            name,
            f"{trained} trained prompts (train.max_steps={train.max_steps} x "
            f"prompts_per_step={train.prompts_per_step}) over {questions} questions: most "
            "posteriors stay at the prior, so the choice is close to uniform (or mopps.warm_start)",
            {"train.max_steps": steps},
        )
    ]


METHOD: Method[MoppsConfig] = Method(
    name="mopps",
    title="MoPPS",
    paper="MoPPS, 2025, arXiv 2507.04632",
    summary="Beta posterior per prompt from training rollouts; of a candidate batch, trains on "
    "the prompts whose Thompson-sampled solve rate is nearest 0.5. No extra rollouts.",
    curriculum=MoppsCurriculum,
    config=MoppsConfig,
    section="mopps",
    preflight=preflight,
    strategies={
        "mopps": Strategy(
            {"train.curriculum": "mopps", "train.data": "full"},
            False,
            "MoPPS: Thompson-sampled posteriors, prompts nearest solve rate 0.5",
        )
    },
    page="mopps",
)
