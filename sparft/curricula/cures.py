"""CurES (Zeng et al. 2025): a Beta posterior on every prompt's solve rate drives both which
prompts are trained on and how many rollouts each gets.

* Posterior: ``Beta(correct + 1, wrong + 1)`` per prompt, started from the probe stage's k
  answers (CurES's initial rollouts) and, as in the paper, updated from every training rollout.
  The released code leaves it fixed within an iteration (``update_posterior: false``).
* Sampling: ``P(i) ∝ exp(sqrt(p_i (1 - p_i)) / t_i)`` with ``p_i`` the posterior mean, drawn
  without replacement. The paper leaves ``t`` open: sparft uses one temperature for all prompts
  (``temperature``, default 0.1). The posterior mean never reaches 0 or 1: after k probe answers it
  lies in [1/(k+2), (k+1)/(k+2)], so at k = 4 a 2/4 prompt is e^1.27 (about 3.6) times likelier
  than a 0/4 one (sqrt(1/4) against sqrt(5/36)); the ratio sharpens as training rollouts add up;
  ``temperature_rule: code`` takes the released code's ``t_i = (correct_i + 1) / 0.01``, which
  keeps every probability within about 0.5% of uniform.
* Rollouts: the ``variance`` allocator (``sparft.curricula.allocation``), counts proportional to
  ``sqrt(p_i (1 - p_i))`` within ``[allocation.variance_min, allocation.variance_max]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from sparft.checks import Check, ok, warn
from sparft.curricula.base import Curriculum, Group
from sparft.curricula.registry import Method, Strategy

if TYPE_CHECKING:
    from sparft.config import Params


class CuresConfig(BaseModel):
    """The ``cures`` section."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.1, gt=0.0, description="t of exp(sqrt(p(1-p)) / t).")
    temperature_rule: Literal["constant", "code"] = Field(
        "constant",
        description="constant: t for every prompt; code: t_i = (correct_i + 1) / 0.01 as in the "
        "released code (near-uniform sampling).",
    )
    update_posterior: bool = Field(
        True, description="Update the posterior from training rollouts (paper); false: code."
    )


class CuresCurriculum(Curriculum):
    """Samples prompts by their posterior informativeness; rollouts by the variance allocator."""

    default_allocation = "variance"

    def __init__(self, frame: pd.DataFrame, cfg: CuresConfig, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        self.cfg = cfg
        self.alpha = self.stats.correct + 1.0
        self.beta = (self.stats.rollouts - self.stats.correct) + 1.0

    def posterior(self, index: np.ndarray | int | None = None) -> np.ndarray:
        at: np.ndarray | int | slice = slice(None) if index is None else index
        return self.alpha[at] / (self.alpha[at] + self.beta[at])

    def weights(self) -> np.ndarray:
        """Sampling probability of every prompt."""
        p = self.posterior()
        if self.cfg.temperature_rule == "code":
            t = self.alpha / 0.01  # alpha = correct + 1
        else:
            t = np.full(len(p), self.cfg.temperature)
        logits = np.sqrt(p * (1.0 - p)) / t
        w = np.exp(logits - logits.max())
        return w / w.sum()

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        w = self.weights()
        picked: list[int] = []
        while len(picked) < n:  # more prompts than the data: draw again, without replacement
            take = min(n - len(picked), len(w))
            picked.extend(self.rng.choice(len(w), size=take, replace=False, p=w).tolist())
        p = self.posterior(np.array(picked))
        return [self.ids[i] for i in picked], {"posterior_mean": float(p.mean())}

    def _learn(self, groups: Sequence[Group]) -> dict[str, Any]:
        if self.cfg.update_posterior:
            for group in groups:
                i = self.index[group.prompt_id]
                correct = float(np.sum(group.correct))
                self.alpha[i] += correct
                self.beta[i] += len(group.correct) - correct
        return {}

    def metrics(self) -> dict[str, float]:
        p = self.posterior()
        w = self.weights()
        return {
            "posterior/mean": float(p.mean()),
            "posterior/informative_share": float(np.mean((p > 0.1) & (p < 0.9))),
            "sampling/max_weight_ratio": float(w.max() * len(w)),
        }

    def _method_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.alpha = np.asarray(state["alpha"], dtype=float)
        self.beta = np.asarray(state["beta"], dtype=float)


def preflight(cfg: CuresConfig, params: Params, probe: pd.DataFrame | None) -> list[Check]:
    """CurES's posteriors start from the probe's answers (its initial rollouts), and its
    rollouts follow the variance allocator (whose own check is the allocator's)."""
    method = CuresCurriculum.allocation_method(params.train)
    checks = [
        ok("cures allocation", "variance")
        if method == "variance"
        else warn(
            "cures allocation",
            f"train.allocation={method}: CurES's rollouts follow the variance allocator",
            {"train.allocation": "auto"},
        )
    ]
    if params.probe.source == "label":
        checks.append(
            warn(
                "cures probe answers",
                "probe.source=label gives no answers: every posterior starts at Beta(1, 1)",
                {"probe.source": "model"},
            )
        )
    else:
        checks.append(ok("cures probe answers", f"probe.k={params.probe.k} answers each"))
    return checks


METHOD = Method(
    name="cures",
    title="CurES",
    paper="Zeng et al., 2025, arXiv 2510.01037",
    summary="Beta posterior per prompt; samples prompts by `sqrt(p(1-p))`, gives rollouts in "
    "proportion to it.",
    curriculum=CuresCurriculum,
    config=CuresConfig,
    section="cures",
    preflight=preflight,
    strategies={
        "cures": Strategy(
            {"train.curriculum": "cures", "train.data": "full"},
            True,
            "CurES: prompts by solve-rate variance, rollouts by variance (auto allocation)",
        )
    },
    page="cures",
)
