"""SPaRFT phase 2: a bandit picks a cluster (arm) per step; the step's prompts come from it.

The bandit and its settings are ``sparft.bandit`` (section ``bandit``). Within a cluster the
prompts are drawn from a shuffled queue, so a small cluster is cycled through rather than one
prompt repeated; the arm's observation is the step's solve rate over all its rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sparft.bandit import Bandit, BanditConfig, ThompsonBandit, make_bandit, reward_range
from sparft.checks import Check, ok, pending, warn
from sparft.curricula.base import Curriculum, Group, shuffled
from sparft.curricula.registry import Method, Strategy
from sparft.selection import allocate

if TYPE_CHECKING:
    from sparft.config import Params

# a bandit needs some pulls of every arm before its estimates, not its exploration, choose
PULLS_PER_ARM = 3


def arm_members(frame: pd.DataFrame, column: str, method: str) -> tuple[list[Any], list[list[str]]]:
    """The distinct values of ``column`` (the arms) and each arm's prompt ids."""
    if column not in frame:
        raise ValueError(
            f"the {method} curriculum needs a '{column}' column: train on the select stage's "
            "output (data/subset.parquet) or the clustered questions"
        )
    labels = sorted(frame[column].dropna().unique().tolist())
    ids = frame["id"].astype(str)
    return labels, [ids[frame[column] == label].tolist() for label in labels]


def arm_sizes(probe: pd.DataFrame | None, column: str) -> list[int]:
    """The questions in each arm of a curriculum over ``column``, from the current cluster (or
    load) stage's output joined onto the probe's rows; empty before that stage has run."""
    if probe is None or column not in probe:
        return []
    return probe[column].dropna().value_counts().sort_index().tolist()


def arm_count(params: Params, column: str, probe: pd.DataFrame | None) -> tuple[int | None, str]:
    """How many arms a curriculum over ``column`` will have, and where that comes from: the
    arms in the data (``arm_sizes``), else ``cluster.k`` for k-means; None (with when it will
    be known) for HDBSCAN before the cluster stage."""
    if sizes := arm_sizes(probe, column):
        return len(sizes), f"{column}s in the data"
    if column == "cluster" and params.cluster.method == "kmeans":
        return params.cluster.k, "cluster.k"
    return None, "known after the cluster stage" if column == "cluster" else "known after load"


def arm_pulls_check(
    params: Params,
    column: str,
    probe: pd.DataFrame | None,
    per_step: int = 1,
    informed: bool = False,
) -> Check:
    """Fewer than ``PULLS_PER_ARM`` pulls per arm over the run: the bandit has barely finished
    trying every arm when training ends. ``per_step`` is the arms pulled per step (DUMP draws
    one per prompt). An ``informed`` prior (arms start from the probe) needs no trial pulls."""
    name = "arm pulls"
    arms, where = arm_count(params, column, probe)
    if arms is None:
        return pending(name, where)
    if informed:
        return ok(name, f"arms start from the probe's solve rates: no trial pulls ({arms} arms)")
    steps = params.train.max_steps
    pulls, need = steps * per_step, PULLS_PER_ARM * arms
    if pulls >= need:
        return ok(name, f"{pulls} pulls over {arms} arms ({where})")
    steps_needed = math.ceil(need / per_step)
    fewer = pulls // PULLS_PER_ARM  # the arms these pulls can afford (a bandit needs two)
    kmeans = column == "cluster" and params.cluster.method == "kmeans"
    alternative = f"; or cluster.k={fewer}" if kmeans and fewer >= 2 else ""
    return warn(
        name,
        f"{pulls} arm pulls (train.max_steps={steps}"
        + (f" x {per_step} prompts" if per_step > 1 else "")
        + f") over {arms} arms ({where}): fewer than {PULLS_PER_ARM} per arm, so the choices are"
        f" mostly the bandit trying unpulled arms{alternative}",
        {"train.max_steps": steps_needed},
    )


def prior_check(cfg: BanditConfig) -> Check:
    """Thompson sampling with a prior mean at or above the best reward an arm can give: every
    unpulled arm's posterior mean beats every pulled arm's, so the bandit tries all arms before
    it exploits any (and an arm whose rewards are all at the top never falls behind one not yet
    tried)."""
    name = "bandit prior"
    if cfg.algorithm != "thompson":
        return ok(name, f"{cfg.algorithm} has no prior mean")
    low, high = reward_range(cfg)
    if cfg.informed_weight > 0:
        return ok(
            name, f"informed: {cfg.informed_weight:g} pseudo-observations per arm from the probe"
        )
    if cfg.prior_mean < high:
        return ok(name, f"bandit.prior_mean={cfg.prior_mean:g} below the best reward {high:g}")
    return warn(
        name,
        f"bandit.prior_mean={cfg.prior_mean:g} is at or above the best reward an arm can give "
        f"({high:g}; bandit.reward={cfg.reward} gives rewards in [{low:g}, {high:g}]): an "
        "unpulled arm's draw centres at or above every pulled arm's, so Thompson sampling keeps "
        "trying unpulled arms (or start arms from the probe: bandit.prior_weight)",
        {"bandit.prior_mean": (low + high) / 2},
    )


class SparftCurriculum(Curriculum):
    """A bandit over the clusters of the cluster stage; one cluster per step."""

    def __init__(self, frame: pd.DataFrame, cfg: BanditConfig, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        labels, self.members = arm_members(self.frame, "cluster", "sparft")
        self.arm_labels = [int(label) for label in labels]
        self.queues: list[list[str]] = [[] for _ in labels]
        self.bandit: Bandit = make_bandit(cfg, len(labels))
        if isinstance(self.bandit, ThompsonBandit) and cfg.informed_weight > 0:
            self.bandit.inform(self.probe_rates())

    def probe_rates(self) -> np.ndarray:
        """Each arm's solve rate over its questions' probe answers (NaN without any)."""
        rates = np.full(len(self.members), np.nan)
        for arm, ids in enumerate(self.members):
            index = np.array([self.index[i] for i in ids], dtype=np.int64)
            rollouts = float(self.stats.rollouts[index].sum())
            if rollouts > 0:
                rates[arm] = float(self.stats.correct[index].sum()) / rollouts
        return rates

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        arm = self.bandit.select()
        picked: list[str] = []
        while len(picked) < n:
            if not self.queues[arm]:
                self.queues[arm] = shuffled(self.members[arm], self.rng)
            picked.append(self.queues[arm].pop())
        return picked, {"arm": arm, "cluster": self.arm_labels[arm]}

    def _learn(self, groups: Sequence[Group]) -> dict[str, Any]:
        correct = np.concatenate([g.correct for g in groups])
        reward = self.bandit.update(self._record["arm"], float(correct.mean()))
        return {"bandit_reward": reward}

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for arm, stats in enumerate(self.bandit.arm_stats()):
            for key in ("pulls", "last_solve_rate", "score"):
                value = float(stats.get(key, math.nan))
                if math.isfinite(value):  # never-pulled arms have no rate (nan), UCB index inf
                    out[f"arm{arm}/{key}"] = value
        return out

    def _method_state(self) -> dict[str, Any]:
        return {"queues": self.queues, "bandit": self.bandit.state_dict()}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.queues = [list(q) for q in state["queues"]]
        self.bandit.load_state_dict(state["bandit"])


def arm_size(params: Params, probe: pd.DataFrame | None) -> Check:
    """An arm holding fewer questions than a step's prompts: a step on it cycles its queue, so
    the batch repeats questions, and every pick of the arm trains on the same few (their groups
    stop giving a gradient once they are learned). Arm sizes are the clusters in the probe's
    rows, cut to ``select.budget`` as the select stage allocates it when training on the subset;
    before the cluster stage, k-means with an equal allocation bounds the smallest arm by
    budget // k."""
    name = "arm size"
    per_step = params.train.prompts_per_step
    subset = params.train.data == "subset"
    select = params.select
    kmeans = params.cluster.method == "kmeans"
    fewer = select.budget // per_step  # the arms the budget fills at a step's prompts each
    data_sizes = arm_sizes(probe, "cluster")
    if data_sizes:
        sizes = data_sizes
        if subset and select.budget < sum(sizes) and select.budget >= len(sizes):
            sizes = allocate(sizes, select.budget, select.allocation)
        smallest, arms, where = min(sizes), len(sizes), "the clusters in the data"
    elif kmeans and subset and select.allocation == "equal":
        arms = params.cluster.k
        smallest, where = select.budget // arms, f"select.budget={select.budget} over cluster.k"
    else:
        return pending(name, "known after the cluster stage")
    if smallest >= per_step:
        return ok(name, f"the smallest of {arms} arms holds {smallest} questions ({where})")
    # fewer, larger clusters: only as a fix when that is still a bandit's choice and fewer arms
    fewer_k = kmeans and 2 <= fewer < arms
    message = (
        f"the smallest of {arms} arms holds {smallest} questions ({where}), fewer than "
        f"train.prompts_per_step={per_step}: a step on it repeats questions in its batch and "
        "every pick of it trains on the same few"
    )
    if not subset:
        return warn(name, message, {"train.prompts_per_step": smallest})
    if data_sizes and min(data_sizes) < per_step:
        # no budget fills a cluster the data has fewer questions in: fewer, larger clusters do
        if fewer_k:
            return warn(
                name, f"{message}; a cluster in the data is that small", {"cluster.k": fewer}
            )
        return warn(name, message, {"train.prompts_per_step": min(data_sizes)})
    budget = per_step * arms  # an equal share of per_step for every arm
    if data_sizes:  # the smallest budget select's allocation gives every arm per_step
        budgets = range(select.budget + 1, sum(data_sizes) + 1)
        shares = ((b, allocate(data_sizes, b, select.allocation)) for b in budgets)
        budget = next(b for b, share in shares if min(share) >= per_step)
    alternative = f"; or cluster.k={fewer}" if fewer_k else ""
    return warn(name, message + alternative, {"select.budget": budget})


def preflight(cfg: BanditConfig, params: Params, probe: pd.DataFrame | None) -> list[Check]:
    """Enough steps for every arm to be pulled a few times (unless the arms start from the
    probe), arms that hold a step's prompts, and a Thompson prior that does not rank every
    unpulled arm above the best arm there can be."""
    informed = cfg.algorithm == "thompson" and cfg.informed_weight > 0
    return [
        arm_pulls_check(params, "cluster", probe, informed=informed),
        arm_size(params, probe),
        prior_check(cfg),
    ]


METHOD = Method(
    name="sparft",
    title="SPaRFT",
    paper="Do, Nguyen, Venkatesh, Le, 2025, arXiv 2508.05015",
    summary="Clusters on meaning plus difficulty, keeps a small diverse subset, and a bandit "
    "picks one cluster per step.",
    curriculum=SparftCurriculum,
    config=BanditConfig,
    section="bandit",
    columns=lambda cfg: ("cluster",),
    preflight=preflight,
    strategies={
        "sparft": Strategy(
            {
                "train.curriculum": "sparft",
                "train.data": "subset",
                "bandit.reward": "target",
            },
            True,
            "SPaRFT as the project runs it: reward near bandit.target, arms informed by the probe",
        ),
        "sparft-eq3": Strategy(
            {
                "train.curriculum": "sparft",
                "train.data": "subset",
                "bandit.reward": "negated-solve-rate",
                "bandit.prior_weight": 0.0,
            },
            True,
            "SPaRFT as the paper writes it: reward 1 - solve rate (Eq. 3), uninformed prior",
        ),
        "sparft-lp": Strategy(
            {
                "train.curriculum": "sparft",
                "train.data": "subset",
                "bandit.reward": "learning-progress",
            },
            True,
            "SPaRFT with the learning-progress arm reward",
        ),
    },
    page="sparft",
)
