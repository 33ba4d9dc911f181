"""A simulated learner: every curriculum and allocator through the same contract as training
(``plan``, then the observed groups), without TRL or a language model, so hundreds of steps over
many seeds take seconds.

The world: ``clusters`` clusters of ``per_cluster`` training questions (and as many held-out ones
per cluster), each question's difficulty its cluster's plus a little of its own. Cluster
difficulties spread over ``spread`` logits around ``centre``, so some clusters start near solve
rate 0 and some near 1, as on real data for a small model. The learner has one skill per cluster;
a question's solve probability is ``sigmoid(skill - difficulty)``. Rollouts are Bernoulli draws
at that probability. Training on a group whose rewards differ (a GRPO gradient) raises the
skill of the question's cluster by ``learning_rate / group`` per informative rollout pair (more
rollouts, more signal, with diminishing returns), and every other cluster's by ``transfer`` times
that; an uninformative group teaches nothing. The probe is ``probe_k`` draws per question at the
start. Accuracy is the mean solve probability over the held-out questions.

What it is evidence of: whether a method's mechanism does what its paper says under these
assumptions (a bandit finds the clusters that teach, a selector raises the share of groups with a
gradient, an allocator puts rollouts where they are informative). What it is not: evidence that
a method trains a language model faster. Real learning transfers unevenly, forgets, and
changes difficulty in ways one skill per cluster does not; only runs on a model say that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sparft.curricula import make_curriculum
from sparft.curricula.base import PROBE_CORRECT, PROBE_ROLLOUTS, Curriculum, Group
from sparft.curricula.sparft import METHOD as SPARFT
from sparft.seed_stats import mean_test, paired_test

if TYPE_CHECKING:
    from sparft.config import Params

BASELINE = "uniform"
# what the simulation cannot provide: DOTS needs its trained predictor over real embeddings
NOT_SIMULATED = {"dots": "DOTS predicts solve rates from a trained predictor over embeddings"}


@dataclass(frozen=True)
class World:
    """The simulated data and learner (see the module docstring)."""

    clusters: int = 8
    per_cluster: int = 32
    centre: float = 1.0  # logit of the middle cluster's difficulty against the start skill
    spread: float = 8.0  # logits between the easiest and the hardest cluster
    jitter: float = 0.5  # sd of a question's own difficulty within its cluster
    learning_rate: float = 0.04
    transfer: float = 0.1
    probe_k: int = 4

    @classmethod
    def parse(cls, items: Sequence[str]) -> World:
        """A world from ``KEY=VALUE`` strings (the CLI's ``--world``), each cast to its field's
        type; an unknown key or a bad value names itself."""
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or key not in types:
                raise ValueError(
                    f"--world {item!r}: expected KEY=VALUE, KEY one of {sorted(types)}"
                )
            cast = int if types[key] in (int, "int") else float
            try:
                values[key] = cast(text)
            except ValueError:
                raise ValueError(f"--world {key}: {text!r} is not {cast.__name__}") from None
        world = cls(**values)
        if world.clusters < 1 or world.per_cluster < 1 or world.probe_k < 1:
            raise ValueError("--world: clusters, per_cluster and probe_k must be at least 1")
        return world


@dataclass
class Run:
    """One strategy x seed: the per-step curve and what the curriculum recorded."""

    strategy: str
    seed: int
    accuracy: list[float] = field(default_factory=list)  # before step 1, then after each step
    effective: list[float] = field(default_factory=list)
    gradient: list[float] = field(default_factory=list)  # share of rollouts with a gradient
    rollouts: list[int] = field(default_factory=list)
    picks: np.ndarray | None = None  # training prompts per cluster


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Learner:
    """One seed's world: questions, their clusters and difficulties, and the learner's skills."""

    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        rng = np.random.default_rng(seed)
        k, m = world.clusters, world.per_cluster
        levels = world.centre + world.spread * (np.arange(k) / max(1, k - 1) - 0.5)
        self.cluster = np.repeat(np.arange(k), m)
        self.difficulty = levels[self.cluster] + rng.normal(0, world.jitter, k * m)
        self.heldout_cluster = np.repeat(np.arange(k), m)
        self.heldout = levels[self.heldout_cluster] + rng.normal(0, world.jitter, k * m)
        self.skill = np.zeros(k)
        self.ids = [f"s{i}" for i in range(k * m)]
        self.row = {qid: i for i, qid in enumerate(self.ids)}
        self.rng = np.random.default_rng(10_000 + seed)

    def p(self, rows: np.ndarray | int) -> np.ndarray:
        return _sigmoid(self.skill[self.cluster[rows]] - self.difficulty[rows])

    def accuracy(self) -> float:
        return float(_sigmoid(self.skill[self.heldout_cluster] - self.heldout).mean())

    def frame(self) -> pd.DataFrame:
        """The training questions as a curriculum sees them: id, cluster, the probe's answers."""
        k = self.world.probe_k
        correct = self.rng.binomial(k, self.p(np.arange(len(self.ids))))
        return pd.DataFrame(
            {
                "id": self.ids,
                "question": self.ids,
                "answer": "",
                "cluster": self.cluster,
                PROBE_ROLLOUTS: k,
                PROBE_CORRECT: correct,
            }
        )

    def draw(self, prompt_id: str, n: int) -> np.ndarray:
        """``n`` rollouts' correctness of one question under the current skill."""
        return (self.rng.random(n) < self.p(self.row[prompt_id])).astype(float)

    def rollout(self, ids: list[str], n: int, temperature: float) -> list[np.ndarray]:
        """The curriculum's own rollouts (``Curriculum.bind_rollout``), e.g. references."""
        return [self.draw(q, n) for q in ids]

    def train(self, groups: Sequence[Group]) -> None:
        """One step's update: each informative group teaches its cluster, a little the rest."""
        gain = np.zeros_like(self.skill)
        for g in groups:
            if not g.informative:
                continue
            c = self.cluster[self.row[g.prompt_id]]
            s = float(np.sum(g.correct))
            pairs = s * (len(g.correct) - s) / max(1, len(g.correct))
            gain[c] += self.world.learning_rate * math.sqrt(pairs)
        total = gain.sum()
        self.skill += gain + self.world.transfer * (total - gain)


def _group(prompt_id: str, correct: np.ndarray) -> Group:
    std = correct.std()
    adv = (correct - correct.mean()) / (std + 1e-4) if correct.size > 1 else correct * 0
    return Group(prompt_id, correct.copy(), correct, adv)


def simulate_run(strategy: str, params: Params, world: World, seed: int, steps: int) -> Run:
    """``steps`` steps of ``params.train.curriculum`` (with its allocator) on seed ``seed``'s
    world; the same seed gives every strategy the same world."""
    learner = Learner(world, seed)
    train = params.train.model_copy(update={"seed": seed})
    bandit = SPARFT.settings(params).model_copy(update={"seed": seed})  # as compare-strategies
    seeded = params.model_copy(update={"train": train, "bandit": bandit})
    curriculum: Curriculum = make_curriculum(train.curriculum, learner.frame(), seeded)
    curriculum.bind_rollout(learner.rollout)
    run = Run(strategy, seed, accuracy=[learner.accuracy()])
    picks = np.zeros(world.clusters, dtype=np.int64)
    for _ in range(steps):
        plan = curriculum.plan(train.prompts_per_step, train.rollouts_per_step)
        groups: list[Group] = []
        while plan:
            groups += [_group(a.prompt_id, learner.draw(a.prompt_id, a.rollouts)) for a in plan]
            plan = curriculum.more(groups)
        trained = [groups[i] for i in curriculum.keep(groups)]
        record = curriculum.observe(groups)
        learner.train(trained)
        for g in trained:
            picks[learner.cluster[learner.row[g.prompt_id]]] += 1
        run.accuracy.append(learner.accuracy())
        run.effective.append(float(record["effective_prompt_ratio"]))
        run.gradient.append(float(record["gradient_rollout_share"]))
        run.rollouts.append(int(record["rollouts_total"]))
    run.picks = picks
    return run


def start_difficulty(world: World) -> np.ndarray:
    """Each cluster's mean solve probability at the start (seed 0's world)."""
    learner = Learner(world, 0)
    p = learner.p(np.arange(len(learner.ids)))
    return np.array([p[learner.cluster == c].mean() for c in range(world.clusters)])


def summarise(runs: dict[str, list[Run]], world: World, level: float = 0.95) -> dict[str, Any]:
    """Per strategy: final accuracy (seed-level interval), effective prompt ratio, rollouts,
    picks per cluster against its start solve rate; against uniform, the paired difference of
    the final accuracy and of the mean effective prompt ratio over the same seeds."""
    out: dict[str, Any] = {}
    base = runs.get(BASELINE)
    for name, seeds in runs.items():
        final = np.array([r.accuracy[-1] for r in seeds])
        ratio = np.array([np.mean(r.effective) for r in seeds])
        share = np.array([np.mean(r.gradient) for r in seeds])
        picks = np.sum([r.picks for r in seeds if r.picks is not None], axis=0)
        entry: dict[str, Any] = {
            "final_accuracy": mean_test(final, level),
            "start_accuracy": float(np.mean([r.accuracy[0] for r in seeds])),
            "effective_prompt_ratio": mean_test(ratio, level),
            "gradient_rollout_share": mean_test(share, level),
            "rollouts": float(np.mean([r.rollouts[-1] for r in seeds])),
            "picks_by_cluster": picks.tolist(),
            "curve": np.mean([r.accuracy for r in seeds], axis=0).tolist(),
        }
        if base is not None and name != BASELINE:
            b_final = np.array([r.accuracy[-1] for r in base])
            # matched compute: each seed's accuracy once it had spent uniform's rollouts
            matched = np.array(
                [r.accuracy[int(np.sum(np.asarray(r.rollouts) <= b.rollouts[-1]))]
                 for r, b in zip(seeds, base, strict=True)]
            )  # fmt: skip
            entry["vs_uniform"] = {
                "final_accuracy": paired_test(final, b_final, level),
                "accuracy_at_uniform_rollouts": paired_test(matched, b_final, level),
                "effective_prompt_ratio": paired_test(
                    ratio, np.array([np.mean(r.effective) for r in base]), level
                ),
                "gradient_rollout_share": paired_test(
                    share, np.array([np.mean(r.gradient) for r in base]), level
                ),
            }
        out[name] = entry
    return {
        "world": world.__dict__,
        "cluster_start_solve_rate": start_difficulty(world).tolist(),
        "strategies": out,
    }


def simulate(
    params: Params,
    strategies: Sequence[str],
    steps: int,
    seeds: Sequence[int],
    world: World | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Every strategy (``compare-strategies`` names, modifiers included) x seed on the simulated
    learner, under ``params`` with each strategy's overrides; the pool overrides (``+subset``,
    ``train.data``) do not apply: every strategy sees the whole simulated data set.
    ``progress(strategy, seed)`` is called after each run (a progress bar)."""
    from sparft.preflight import strategy_params

    world = world or World()
    runs: dict[str, list[Run]] = {}
    for name in strategies:
        p = strategy_params(params, name)
        reason = NOT_SIMULATED.get(p.train.curriculum)
        if reason is not None:
            raise ValueError(f"strategy {name}: not simulated ({reason})")
        runs[name] = []
        for seed in seeds:
            runs[name].append(simulate_run(name, p, world, seed, steps))
            if progress is not None:
                progress(name, seed)
    report = summarise(runs, world, params.compare.level)
    report |= {"steps": steps, "seeds": list(seeds)}
    return report
