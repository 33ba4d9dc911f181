"""DOTS (Sun et al. 2025): difficulty-targeted online data selection.

Every ``every`` steps (the paper's mu = 2) a sample of ``reference_questions`` training
questions is rolled out ``reference_rollouts`` times at ``reference_temperature`` under the
current policy; their solve rates are the references of the attention-based predictor
(``predictor.py``, trained by the ``dots_predictor`` stage on probed solve rates), which then
predicts every training question. As the released code does, the predictions are recalibrated
by a linear regression from predicted to measured rates on the reference questions (a
reference never attends to itself), and are not clipped. The step's prompts are drawn without
replacement with ``p_i ∝ exp(-|d_i - alpha| / tau)``: alpha = 0.5 targets a 50% solve rate;
the paper leaves tau open and sparft uses the code's 1e-3 (the questions closest to alpha).
Within a re-estimate window the draw is also without replacement across steps: a question
trained on since the last re-estimate waits for the next one (until every question has been
trained on), so a tiny tau does not train the same few questions at every step of a window.
The reference rollouts count in the run's rollout total (``extra_rollouts`` in the step's
record) and their time in the step's generation time.

Rollout replay is the trainer's (``train`` section's ``replay``, ``sparft.training.replay``) and
works with any curriculum; DOTS+RR is ``train.curriculum: dots`` with ``replay.enabled: true``.
"""

from __future__ import annotations

import math
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from sparft.checks import Check, ok, pending, warn
from sparft.curricula.base import Curriculum
from sparft.curricula.registry import Method, Strategy

if TYPE_CHECKING:
    from sparft.config import Params

EMBEDDING = "embedding"
MIN_REFERENCES = 32  # below this the recalibration line rests on a handful of noisy rates


class DotsConfig(BaseModel):
    """The ``dots`` section: the predictor (stage ``dots_predictor``) and the selection."""

    model_config = ConfigDict(extra="forbid")

    predictor: str = Field("data/dots/predictor.pt", description="The trained predictor.")
    probes: list[str] = Field(
        default_factory=lambda: ["data/probe.parquet"],
        description="Probe results to train on, one file per probe model (each a group, as "
        "the paper trains on the pass rates of several models).",
    )
    hidden: int = Field(256, ge=8, description="Width of the query and reference projections.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    train_references: int = Field(256, ge=2, description="References drawn per training batch.")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    warmup_share: float = Field(0.1, ge=0.0, lt=1.0)
    val_share: float = Field(
        0.2, ge=0.0, lt=1.0, description="Questions held out to measure the predictor's error."
    )
    every: int = Field(2, ge=1, description="mu: steps between re-estimates.")
    reference_questions: int = Field(256, ge=2, description="Questions rolled out as references.")
    reference_rollouts: int = Field(8, ge=1, description="Rollouts per reference question.")
    reference_temperature: float = Field(0.6, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Target solve rate.")
    tau: float = Field(1e-3, gt=0.0, description="Temperature of exp(-|d - alpha| / tau).")
    recalibrate: bool = Field(True, description="Linear recalibration on the references.")
    seed: int = 0


def recalibrate(predicted: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of the least-squares line from predicted to measured rates
    (identity when the predictions do not vary)."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    if predicted.size < 2 or predicted.std() == 0:
        return 0.0, 1.0
    slope = float(np.cov(predicted, measured, bias=True)[0, 1] / predicted.var())
    return float(measured.mean() - slope * predicted.mean()), slope


def effective_questions(rates: np.ndarray, alpha: float, tau: float) -> float:
    """How many questions DOTS's draw really chooses between: exp(entropy) of
    ``softmax(-|rates - alpha| / tau)`` (n for a uniform draw, 1 for a single question)."""
    rates = np.asarray(rates, dtype=float)
    rates = rates[np.isfinite(rates)]
    if rates.size == 0:
        return 0.0
    logits = -np.abs(rates - alpha) / tau
    w = np.exp(logits - logits.max())
    p = w / w.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def tau_for(rates: np.ndarray, alpha: float, tau: float, needed: float) -> float | None:
    """The smallest ``tau`` (two significant figures, at least ``tau``) whose draw has at least
    ``needed`` effective questions; None when even a near-uniform draw has fewer. The effective
    number rises with tau, so a bisection on log(tau) finds it."""
    low, high = math.log(tau), math.log(1e6)
    if effective_questions(rates, alpha, math.exp(high)) + 1e-6 < needed:
        return None
    for _ in range(60):
        mid = (low + high) / 2
        if effective_questions(rates, alpha, math.exp(mid)) + 1e-6 < needed:
            low = mid
        else:
            high = mid
    value = math.exp(high)
    digits = 1 - math.floor(math.log10(value))
    rounded = math.ceil(value * 10**digits) / 10**digits
    return max(tau, round(rounded, digits + 1))


class DotsCurriculum(Curriculum):
    """Prompts whose predicted solve rate is closest to ``alpha``, re-estimated every mu steps."""

    def __init__(self, frame: pd.DataFrame, cfg: DotsConfig, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        if EMBEDDING not in self.frame:
            raise ValueError(
                "the dots curriculum needs an 'embedding' column (the embed stage's vectors)"
            )
        from sparft.curricula.dots.predictor import load_predictor

        self.cfg = cfg
        self.embeddings = np.stack(self.frame[EMBEDDING].to_numpy()).astype(np.float32)
        self.model = load_predictor(cfg.predictor)
        if self.model.dim != self.embeddings.shape[1]:
            raise ValueError(
                f"{cfg.predictor}: trained on {self.model.dim}-d embeddings, the training "
                f"questions have {self.embeddings.shape[1]}-d ones (rerun dots_predictor)"
            )
        self.predicted: np.ndarray | None = None
        self.refreshed_at = -1
        self.window: set[int] = set()  # trained on since the last re-estimate

    def _refresh(self) -> dict[str, Any]:
        """Roll out fresh references under the current policy and predict every question."""
        if self.rollout is None:
            raise RuntimeError("the dots curriculum needs the trainer's rollouts (bind_rollout)")
        from sparft.curricula.dots.predictor import predict

        started = perf_counter()
        n = len(self.ids)
        refs = np.sort(self.rng.choice(n, size=min(self.cfg.reference_questions, n), replace=False))
        results = self.rollout(
            [self.ids[i] for i in refs], self.cfg.reference_rollouts, self.cfg.reference_temperature
        )
        rates = np.array([float(np.mean(r)) for r in results])
        for i, correct in zip(refs, results, strict=True):
            self.stats.update(int(i), np.asarray(correct, dtype=float))
        predicted = predict(
            self.model, self.embeddings, self.embeddings[refs], rates, np.arange(n), refs
        ).astype(float)
        intercept, slope = recalibrate(predicted[refs], rates) if self.cfg.recalibrate else (0, 1)
        self.predicted = intercept + slope * predicted
        self.refreshed_at = self.step
        self.window = set()
        return {
            "extra_rollouts": len(refs) * self.cfg.reference_rollouts,
            "reference_solve_rate": float(rates.mean()),
            "reference_seconds": perf_counter() - started,
            "calibration_slope": slope,
        }

    def logits(self) -> np.ndarray:
        assert self.predicted is not None
        return -np.abs(self.predicted - self.cfg.alpha) / self.cfg.tau

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        record: dict[str, Any] = {}
        if self.predicted is None or self.step - self.refreshed_at >= self.cfg.every:
            record = self._refresh()
        logits = self.logits()
        picked: list[int] = []
        while len(picked) < n:
            # a window's steps train on distinct questions: those already trained on since the
            # re-estimate are out of the draw until every question has been
            if len(self.window) >= len(logits):
                self.window = set()
            used = np.zeros(len(logits), dtype=bool)
            used[list(self.window)] = True
            # Gumbel top-k: a draw without replacement with p ∝ exp(logits), exact even where
            # a tiny tau underflows exp() for all but the nearest questions
            keys = np.where(used, -np.inf, logits + self.rng.gumbel(size=len(logits)))
            take = np.argsort(-keys)[: min(n - len(picked), int((~used).sum()))].tolist()
            picked.extend(take)
            self.window.update(take)
        assert self.predicted is not None
        record["predicted_solve_rate"] = float(self.predicted[picked].mean())
        return [self.ids[i] for i in picked], record

    def metrics(self) -> dict[str, float]:
        if self.predicted is None:
            return {}
        return {
            "predicted/mean": float(self.predicted.mean()),
            "predicted/near_target_share": float(
                np.mean(np.abs(self.predicted - self.cfg.alpha) < 0.25)
            ),
        }

    def _method_state(self) -> dict[str, Any]:
        return {
            "predicted": self.predicted if self.predicted is not None else np.zeros(0),
            "refreshed_at": self.refreshed_at,
            "window": sorted(self.window),
        }

    def _load_method_state(self, state: dict[str, Any]) -> None:
        predicted = np.asarray(state["predicted"], dtype=float)
        self.predicted = predicted if predicted.size else None
        self.refreshed_at = int(state["refreshed_at"])
        self.window = {int(i) for i in state.get("window", [])}


def preflight(cfg: DotsConfig, params: Params, probe: pd.DataFrame | None) -> list[Check]:
    """Enough references for the recalibration, and enough distinct questions near alpha
    for the ``every x prompts_per_step`` prompts trained on between re-estimates; the
    probe's solve rates stand in for the predictor's until training has started."""
    per_step = params.train.prompts_per_step
    checks = [
        ok("dots references", f"dots.reference_questions={cfg.reference_questions}")
        if cfg.reference_questions >= MIN_REFERENCES
        else warn(
            "dots references",
            f"dots.reference_questions={cfg.reference_questions} < {MIN_REFERENCES}: the "
            "predictor's references and its recalibration rest on too few solve rates",
            {"dots.reference_questions": MIN_REFERENCES},
        )
    ]
    name = "dots questions"
    if probe is None or "solve_rate" not in probe:
        return [*checks, pending(name)]
    rates = probe["solve_rate"].to_numpy(dtype=float)
    needed = cfg.every * per_step
    found = effective_questions(rates, cfg.alpha, cfg.tau)
    if found + 1e-6 >= needed:
        return [*checks, ok(name, f"{found:.1f} effective questions >= {needed} per window")]
    every = min(cfg.every, max(1, int(rates.size // per_step)))
    tau = tau_for(rates, cfg.alpha, cfg.tau, every * per_step)
    fix: dict[str, Any] = {} if tau is None else {"dots.tau": tau}
    if tau is not None and every != cfg.every:
        fix["dots.every"] = every
    return [
        *checks,
        warn(
            name,
            f"softmax(-|p - dots.alpha| / dots.tau) over the probe's solve rates has "
            f"{found:.1f} effective questions (alpha={cfg.alpha:g}, tau={cfg.tau:g}), fewer "
            f"than the {needed} prompts trained on per re-estimate window (dots.every="
            f"{cfg.every} x train.prompts_per_step={per_step}): the window's other draws go "
            "to questions far from alpha",
            fix,
        ),
    ]


METHOD = Method(
    name="dots",
    title="DOTS + rollout replay",
    paper="Sun et al., 2025, arXiv 2506.05316",
    summary="Predicts every question's solve rate from a few reference rollouts; trains on "
    "those nearest 0.5; replays recent informative groups (`train.replay`).",
    curriculum=DotsCurriculum,
    config=DotsConfig,
    section="dots",
    columns=lambda cfg: (EMBEDDING,),
    inputs=lambda cfg: (cfg.predictor,),
    preflight=preflight,
    strategies={
        "dots": Strategy(
            {"train.curriculum": "dots", "train.data": "full", "train.replay.enabled": True},
            True,
            "DOTS: predicted solve rate near alpha, with rollout replay",
        )
    },
    page="dots",
)
