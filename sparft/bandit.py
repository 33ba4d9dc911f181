"""Multi-armed bandits that pick the cluster (arm) of training questions for each GRPO step.

SPaRFT treats each cluster of the selected subset as an arm. After every step the trainer reports
the arm's solve rate (mean correctness of the step's rollouts) and the bandit turns it into a
reward:

- ``negated-solve-rate`` (SPaRFT Eq. 3): the less the current policy solves an arm, the more it is
  worth, so training moves to the hardest clusters the policy has not yet mastered. Thompson
  sampling uses ``-solve_rate`` (its posterior mean is then the negated empirical solve rate, as
  in the paper); EXP3 and UCB1 assume rewards in [0, 1] and use ``1 - solve_rate``, which ranks
  arms the same way.
- ``learning-progress`` (SPaRFT v2 / SPaCe): the absolute change of the arm's solve rate between
  its previous observation and this one. Arms the policy never solves (too hard) or always solves
  (too easy) give no reward; arms whose solve rate moves, up while learning or down while
  forgetting, do. The first observation of an arm has nothing to compare with and gives
  ``first_progress`` (0 by default: no evidence of progress; exploring unseen arms is the
  algorithm's job, not the reward's). The change between two noisy observations also contains
  sampling noise (about 0.14 for a solve rate near 0.5 measured on 16 rollouts), so an arm of
  moderate difficulty earns some reward even when it is not improving: this tilts the bandit
  towards moderately difficult clusters, which the paper reports as the behaviour it learns.
- ``target``: highest at the solve rate ``target`` (default 0.5), falling linearly to the worst
  reward at the farther end of [0, 1]: ``offset - |solve_rate - target| / max(target,
  1 - target)``. Eq. 3 maximises at solve rate 0, so on a weak model it chases the clusters the
  policy never solves (no gradient); this reward sends the bandit where groups have one.

Thompson sampling can start from an informed prior (``prior_weight`` > 0): each arm gets
``prior_weight`` pseudo-observations of the reward its probe solve rate would give, so the first
picks already prefer the arms the reward favours instead of trying every arm in turn.

Every bandit owns a seeded numpy Generator, and ``state_dict`` / ``load_state_dict`` carry it with
all counters, so a restored bandit (e.g. from a training checkpoint) makes the same choices.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# null prior_weight: pseudo-observations per arm, measured on the simulated learner
# (docs/methods/sparft.md)
DEFAULT_PRIOR_WEIGHT = 4.0


class BanditConfig(BaseModel):
    """The ``bandit`` section: which algorithm picks the arm and what it is rewarded for."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["thompson", "exp3", "ucb1"] = Field(
        "thompson", description="Gaussian Thompson sampling (SPaRFT), EXP3 or UCB1."
    )
    reward: Literal["negated-solve-rate", "learning-progress", "target"] = Field(
        "target",
        description="Reward per observation: closeness to bandit.target (the default: Eq. 3 "
        "chases the clusters a weak model never solves), the negated solve rate (SPaRFT's Eq. "
        "3, as the paper writes it), or the absolute change of the arm's solve rate since its "
        "previous observation (SPaRFT v2).",
    )
    target: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="target reward: the solve rate rewarded most (0.5: where a group of any "
        "size is likeliest to have unequal rewards).",
    )
    prior_weight: float | None = Field(
        None,
        ge=0.0,
        description="thompson: pseudo-observations per arm of the reward its probe solve rate "
        "gives (an informed prior); 0: the paper's uninformed prior; null: "
        f"{DEFAULT_PRIOR_WEIGHT:g} where one applies (thompson with a reward a solve rate "
        "gives), else 0.",
    )
    first_progress: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="learning-progress reward of an arm's first observation, which has no "
        "previous solve rate to compare with.",
    )
    prior_mean: float = Field(
        0.0,
        description="thompson: prior mean of every arm's mean reward. 0 is optimistic for "
        "negated-solve-rate (a solve rate of 0), so every arm gets tried early.",
    )
    prior_std: float = Field(
        1.0,
        gt=0.0,
        description="thompson: prior standard deviation; wide against rewards in [-1, 1], so the "
        "first observations dominate.",
    )
    noise_std: float = Field(
        0.1,
        gt=0.0,
        description="thompson: known standard deviation of one observed reward. A step's solve "
        "rate over 64 rollouts (8 questions x 8) has binomial noise of at most 0.06, plus the "
        "spread between the cluster's questions; a learning-progress reward (change between two "
        "such rates) is of the same order.",
    )
    discount: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="thompson: every update multiplies all arms' past evidence by this factor, "
        "so old observations of a changing policy fade; 1 keeps everything (stationary).",
    )
    gamma: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="exp3: share of uniform exploration, also the learning rate; about "
        "sqrt(K ln K / ((e - 1) T)) for K arms and T steps, 0.1 for a few arms and a few "
        "hundred steps. Weights move by gamma * reward / K per step, so the small "
        "learning-progress rewards need many hundreds of steps to tell arms apart.",
    )
    c: float = Field(
        math.sqrt(2.0),
        ge=0.0,
        description="ucb1: exploration constant of mean + c * sqrt(ln t / n); sqrt(2) is Auer "
        "et al.'s UCB1 for rewards spread over [0, 1]. learning-progress rewards are about 0.1, "
        "for which sqrt(2) explores almost uniformly: use about 0.2 there.",
    )
    seed: int = Field(0, description="Seed of the bandit's own random generator.")

    @property
    def informed_weight(self) -> float:
        """The prior weight in use: ``prior_weight``, or its default where it is null."""
        if self.prior_weight is not None:
            return self.prior_weight
        applies = self.algorithm == "thompson" and self.reward != "learning-progress"
        return DEFAULT_PRIOR_WEIGHT if applies else 0.0

    @model_validator(mode="after")
    def _informed_prior(self) -> BanditConfig:
        weight = self.prior_weight or 0.0
        if weight > 0 and self.algorithm != "thompson":
            raise ValueError("prior_weight: an informed prior is Thompson sampling's only")
        if weight > 0 and self.reward == "learning-progress":
            raise ValueError(
                "prior_weight: a probe solve rate gives no learning-progress reward (a change "
                "needs two observations); use negated-solve-rate or target"
            )
        return self


class Bandit(ABC):
    """Base of the bandits: input checks, reward conversion, per-arm statistics, state.

    The trainer calls ``select`` for the arm of a step, then ``update`` with that arm's observed
    solve rate. ``select`` only draws from the generator; all learning happens in ``update``.
    """

    algorithm: ClassVar[str]
    reward_offset: ClassVar[float]
    """negated-solve-rate reward is ``reward_offset - solve_rate``."""

    def __init__(self, cfg: BanditConfig, n_arms: int) -> None:
        if isinstance(n_arms, bool) or not isinstance(n_arms, int | np.integer) or n_arms < 1:
            raise ValueError(f"n_arms must be an integer >= 1, got {n_arms!r}")
        self.cfg = cfg
        self.n_arms = int(n_arms)
        self._rng = np.random.default_rng(cfg.seed)
        self._pulls = np.zeros(self.n_arms, dtype=np.int64)
        self._last_solve = np.full(self.n_arms, np.nan)
        self._sum_solve = np.zeros(self.n_arms)
        self._sum_reward = np.zeros(self.n_arms)

    @abstractmethod
    def select(self) -> int:
        """The arm to pull now."""

    @abstractmethod
    def _observe(self, arm: int, reward: float) -> None:
        """Learn from one reward of ``arm`` (the base has already counted the pull)."""

    @abstractmethod
    def _scores(self) -> np.ndarray:
        """Per-arm score for logging: what the algorithm ranks arms by."""

    @abstractmethod
    def _algo_state(self) -> dict[str, Any]:
        """The algorithm's own state, JSON-serialisable."""

    @abstractmethod
    def _load_algo_state(self, state: dict[str, Any]) -> None:
        """Restore what ``_algo_state`` saved."""

    def _check_arm(self, arm: Any) -> int:
        try:
            if isinstance(arm, bool):
                raise TypeError
            index = operator.index(arm)
        except TypeError:
            raise ValueError(f"arm must be an integer, got {arm!r}") from None
        if not 0 <= index < self.n_arms:
            raise ValueError(f"arm {index} out of range for {self.n_arms} arms")
        return index

    @staticmethod
    def _check_solve_rate(solve_rate: Any) -> float:
        try:
            value = float(solve_rate)
        except (TypeError, ValueError):
            raise ValueError(f"solve_rate must be a number in [0, 1], got {solve_rate!r}") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"solve_rate must be a number in [0, 1], got {solve_rate!r}")
        return value

    def _reward(self, arm: int, solve_rate: float) -> float:
        """The reward this observation converts to; read before the arm's last solve rate moves."""
        if self.cfg.reward == "learning-progress":
            previous = self._last_solve[arm]
            if math.isnan(previous):
                return float(self.cfg.first_progress)
            return abs(solve_rate - float(previous))
        return self.rate_reward(solve_rate)

    def rate_reward(self, solve_rate: float) -> float:
        """The reward one observed solve rate gives under ``negated-solve-rate`` or ``target``."""
        if self.cfg.reward == "target":
            t = self.cfg.target
            return self.reward_offset - abs(solve_rate - t) / max(t, 1.0 - t)
        return self.reward_offset - solve_rate

    def update(self, arm: int, solve_rate: float) -> float:
        """Record ``arm``'s observed solve rate in [0, 1]; returns the reward it converts to."""
        arm = self._check_arm(arm)
        value = self._check_solve_rate(solve_rate)
        reward = self._reward(arm, value)
        self._pulls[arm] += 1
        self._last_solve[arm] = value
        self._sum_solve[arm] += value
        self._sum_reward[arm] += reward
        self._observe(arm, reward)
        return reward

    def arm_stats(self) -> list[dict[str, float]]:
        """Per arm: pulls, last and mean solve rate (nan if never pulled), mean reward, score."""
        scores = self._scores()
        stats = []
        for arm in range(self.n_arms):
            pulls = int(self._pulls[arm])
            stats.append(
                {
                    "pulls": float(pulls),
                    "last_solve_rate": float(self._last_solve[arm]),
                    "mean_solve_rate": float(self._sum_solve[arm] / pulls) if pulls else math.nan,
                    "mean_reward": float(self._sum_reward[arm] / pulls) if pulls else math.nan,
                    "score": float(scores[arm]),
                }
            )
        return stats

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this bandit is; plain JSON types only."""
        return {
            "algorithm": self.algorithm,
            "reward": self.cfg.reward,
            "n_arms": self.n_arms,
            "rng": _jsonable(self._rng.bit_generator.state),
            "pulls": [int(p) for p in self._pulls],
            "last_solve_rate": [None if math.isnan(v) else float(v) for v in self._last_solve],
            "sum_solve_rate": [float(v) for v in self._sum_solve],
            "sum_reward": [float(v) for v in self._sum_reward],
            "algo": self._algo_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s output; refuses a state of another algorithm, reward or size."""
        for key, expected in (
            ("algorithm", self.algorithm),
            ("reward", self.cfg.reward),
            ("n_arms", self.n_arms),
        ):
            if state.get(key) != expected:
                found = state.get(key)
                raise ValueError(f"bandit state has {key}={found!r}, expected {expected!r}")
        self._rng.bit_generator.state = state["rng"]
        self._pulls = np.asarray(state["pulls"], dtype=np.int64)
        self._last_solve = np.array(
            [math.nan if v is None else v for v in state["last_solve_rate"]], dtype=float
        )
        self._sum_solve = np.asarray(state["sum_solve_rate"], dtype=float)
        self._sum_reward = np.asarray(state["sum_reward"], dtype=float)
        self._load_algo_state(state["algo"])


def _jsonable(value: Any) -> Any:
    """numpy scalars inside the generator state as plain Python values."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value


class ThompsonBandit(Bandit):
    """Gaussian Thompson sampling with known noise (SPaRFT Eqs. 3-7), optionally discounted.

    Each arm keeps the (discounted) number of observations ``n`` and sum of rewards ``s``; its
    posterior over the mean reward is normal with precision ``1/prior_std^2 + n/noise_std^2`` and
    mean ``(prior_mean/prior_std^2 + s/noise_std^2) / precision``. ``select`` draws once from
    every posterior and takes the highest draw.
    """

    algorithm = "thompson"
    reward_offset = 0.0

    def __init__(self, cfg: BanditConfig, n_arms: int) -> None:
        super().__init__(cfg, n_arms)
        self._n = np.zeros(self.n_arms)
        self._s = np.zeros(self.n_arms)

    def inform(self, solve_rates: np.ndarray) -> None:
        """Start each arm from ``prior_weight`` pseudo-observations of the reward its solve rate
        (the probe's, say) gives; an arm with no rate (NaN) keeps the uninformed prior. Counts
        as no pull: the arm's statistics stay those of training."""
        rates = np.asarray(solve_rates, dtype=float)
        if rates.shape != (self.n_arms,):
            raise ValueError(f"need one solve rate per arm ({self.n_arms}), got {rates.shape}")
        weight = self.cfg.informed_weight
        for arm, rate in enumerate(rates):
            if weight > 0 and math.isfinite(rate):
                self._n[arm] = weight
                self._s[arm] = weight * self.rate_reward(float(np.clip(rate, 0.0, 1.0)))

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of every arm's mean reward."""
        prior_precision = 1.0 / self.cfg.prior_std**2
        noise_precision = 1.0 / self.cfg.noise_std**2
        precision = prior_precision + self._n * noise_precision
        mean = (self.cfg.prior_mean * prior_precision + self._s * noise_precision) / precision
        return mean, 1.0 / np.sqrt(precision)

    def select(self) -> int:
        mean, std = self.posterior()
        return int(np.argmax(self._rng.normal(mean, std)))

    def _observe(self, arm: int, reward: float) -> None:
        if self.cfg.discount < 1.0:
            self._n *= self.cfg.discount
            self._s *= self.cfg.discount
        self._n[arm] += 1.0
        self._s[arm] += reward

    def _scores(self) -> np.ndarray:
        return self.posterior()[0]

    def arm_stats(self) -> list[dict[str, float]]:
        """Base statistics; score is the posterior mean, plus its ``posterior_std``."""
        stats = super().arm_stats()
        for row, std in zip(stats, self.posterior()[1], strict=True):
            row["posterior_std"] = float(std)
        return stats

    def _algo_state(self) -> dict[str, Any]:
        return {"n": [float(v) for v in self._n], "s": [float(v) for v in self._s]}

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        self._n = np.asarray(state["n"], dtype=float)
        self._s = np.asarray(state["s"], dtype=float)


class Exp3Bandit(Bandit):
    """EXP3 (Auer et al. 2002): exponential weights on importance-weighted rewards in [0, 1].

    Adversarial, so it makes no assumption that an arm's reward is stationary, at the cost of
    always spending ``gamma`` of the pulls on uniform exploration. Weights are kept as logarithms,
    shifted so the largest is 0, so long runs cannot overflow.
    """

    algorithm = "exp3"
    reward_offset = 1.0

    def __init__(self, cfg: BanditConfig, n_arms: int) -> None:
        super().__init__(cfg, n_arms)
        self._log_w = np.zeros(self.n_arms)

    def probabilities(self) -> np.ndarray:
        """The distribution ``select`` draws from."""
        w = np.exp(self._log_w - self._log_w.max())
        gamma = self.cfg.gamma
        return (1.0 - gamma) * w / w.sum() + gamma / self.n_arms

    def select(self) -> int:
        return int(self._rng.choice(self.n_arms, p=self.probabilities()))

    def _observe(self, arm: int, reward: float) -> None:
        p = self.probabilities()[arm]
        self._log_w[arm] += self.cfg.gamma * (reward / p) / self.n_arms
        self._log_w -= self._log_w.max()

    def _scores(self) -> np.ndarray:
        return self.probabilities()

    def _algo_state(self) -> dict[str, Any]:
        return {"log_w": [float(v) for v in self._log_w]}

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        self._log_w = np.asarray(state["log_w"], dtype=float)


class Ucb1Bandit(Bandit):
    """UCB1 (Auer et al. 2002): each arm once in order, then the highest mean + c*sqrt(ln t / n).

    Deterministic except that exact ties of the index are broken by the seeded generator.
    """

    algorithm = "ucb1"
    reward_offset = 1.0

    def indices(self) -> np.ndarray:
        """Upper confidence index per arm; inf for an arm never pulled."""
        pulls = self._pulls.astype(float)
        total = pulls.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            index = self._sum_reward / pulls + self.cfg.c * np.sqrt(
                math.log(max(total, 1.0)) / pulls
            )
        return np.where(pulls > 0, index, np.inf)

    def select(self) -> int:
        unpulled = np.flatnonzero(self._pulls == 0)
        if unpulled.size:
            return int(unpulled[0])
        index = self.indices()
        best = np.flatnonzero(index == index.max())
        return int(best[0] if best.size == 1 else self._rng.choice(best))

    def _observe(self, arm: int, reward: float) -> None:
        """Nothing beyond the base's pull counts and reward sums."""

    def _scores(self) -> np.ndarray:
        return self.indices()

    def _algo_state(self) -> dict[str, Any]:
        return {}

    def _load_algo_state(self, state: dict[str, Any]) -> None:
        """UCB1 has no state of its own."""


_ALGORITHMS: dict[str, type[Bandit]] = {
    "thompson": ThompsonBandit,
    "exp3": Exp3Bandit,
    "ucb1": Ucb1Bandit,
}


def make_bandit(cfg: BanditConfig, n_arms: int) -> Bandit:
    """The bandit ``cfg.algorithm`` names, over ``n_arms`` arms."""
    return _ALGORITHMS[cfg.algorithm](cfg, n_arms)


def reward_range(cfg: BanditConfig) -> tuple[float, float]:
    """Lowest and highest reward one observation can give under ``cfg``: ``reward_offset -
    solve_rate`` for negated-solve-rate (Thompson's offset is 0, so [-1, 0]; EXP3's and UCB1's
    1, so [0, 1]), an absolute change of a rate (or ``first_progress``) for learning-progress."""
    if cfg.reward == "learning-progress":
        return 0.0, 1.0
    offset = _ALGORITHMS[cfg.algorithm].reward_offset
    return offset - 1.0, offset  # target: also 1 below the offset, at the farther end
