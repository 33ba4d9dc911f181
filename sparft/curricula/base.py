"""The curriculum contract: which prompts a GRPO step generates for, how many rollouts each gets,
and what the curriculum learns from the scored groups.

One step, as ``CurriculumGRPOTrainer`` drives it:

1. ``plan(n_prompts, budget)`` returns ``Assignment(prompt_id, rollouts)`` entries whose rollouts
   sum to ``budget`` exactly: the curriculum picks the prompts (``_select``) and its allocator
   (``sparft.curricula.allocation``) splits the budget between them.
2. The trainer generates and scores every rollout, normalises advantages within each prompt's
   own group, and asks ``more(groups)`` for further prompts of the same step until it returns
   none (a method that filters groups, DAPO's dynamic sampling, asks for more; the rest never
   do). ``keep(groups)`` says which of the generated groups the step trains on (all, unless
   the method filters).
3. It hands back one ``Group`` per assignment, every round's: every rollout's reward,
   correctness and advantage (``observe``). ``observe`` returns the step's record: the method's
   own fields (an arm, say) beside the ones every method reports, of the groups trained on
   (prompts, rollouts, solve rate, effective prompt ratio, unique prompts seen) and of all
   generated (rollouts so far). ``metrics()`` gives further numbers to log each step.
4. ``state_dict()`` / ``load_state_dict()`` carry everything a resumed run needs to make the same
   choices: plain JSON values, with numpy arrays allowed anywhere (``save_state`` writes the
   arrays to an ``.npz`` beside the JSON).

The trainer knows no method by name. Every process of a multi-process run holds the same
curriculum with the same seed and observes the same gathered groups, so all make the same plan.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd

from sparft.io import atomic_path, write_json

STATE_JSON = "curriculum_state.json"
STATE_ARRAYS = "curriculum_arrays.npz"
# Frame columns the train stage adds from the probe stage: each question's k sampled answers
# and how many were right, a curriculum's evidence before training starts.
PROBE_ROLLOUTS = "probe_rollouts"
PROBE_CORRECT = "probe_correct"


# rollout(prompt_ids, n, temperature) -> per prompt, n correctness values
Rollout = Callable[[list[str], int, float], list[np.ndarray]]


class Assignment(NamedTuple):
    """One entry of a step's plan: a prompt and the number of rollouts it gets."""

    prompt_id: str
    rollouts: int


@dataclass(frozen=True)
class Group:
    """One prompt's scored rollouts: total rewards, correctness in [0, 1], GRPO advantages."""

    prompt_id: str
    rewards: np.ndarray
    correct: np.ndarray
    advantages: np.ndarray

    @property
    def informative(self) -> bool:
        """Whether the group's rewards differ, i.e. it gives GRPO a gradient."""
        finite = self.rewards[np.isfinite(self.rewards)]
        return finite.size > 1 and bool(np.ptp(finite) > 0)


class PromptStats:
    """What has been observed of each prompt: rollouts, correct rollouts, last visit's rate.

    Starts from the probe stage's k answers when the frame carries them (``probe_rollouts``,
    ``probe_correct``), so a prompt's first estimate is its probed solve rate.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        n = len(frame)
        self.rollouts = np.zeros(n, dtype=np.int64)
        self.correct = np.zeros(n, dtype=float)
        self.last_rate = np.full(n, np.nan)
        self.visits = np.zeros(n, dtype=np.int64)
        if PROBE_ROLLOUTS in frame and PROBE_CORRECT in frame:
            k = frame[PROBE_ROLLOUTS].fillna(0).to_numpy(dtype=np.int64)
            c = frame[PROBE_CORRECT].fillna(0).to_numpy(dtype=float)
            self.rollouts += k
            self.correct += c
            probed = k > 0
            self.last_rate[probed] = c[probed] / k[probed]

    def update(self, index: int, correct: np.ndarray) -> None:
        self.rollouts[index] += correct.size
        self.correct[index] += float(correct.sum())
        self.last_rate[index] = float(correct.mean()) if correct.size else np.nan
        self.visits[index] += 1

    def posterior_mean(self, index: np.ndarray | int | slice) -> np.ndarray:
        """Mean of the Beta(correct + 1, wrong + 1) posterior on the solve rate."""
        return (self.correct[index] + 1.0) / (self.rollouts[index] + 2.0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rollouts": self.rollouts,
            "correct": self.correct,
            "last_rate": self.last_rate,
            "visits": self.visits,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollouts = np.asarray(state["rollouts"], dtype=np.int64)
        self.correct = np.asarray(state["correct"], dtype=float)
        self.last_rate = np.asarray(state["last_rate"], dtype=float)
        self.visits = np.asarray(state["visits"], dtype=np.int64)


def shuffled(items: Sequence[str], rng: np.random.Generator) -> list[str]:
    return [items[i] for i in rng.permutation(len(items))]


class Curriculum(ABC):
    """Chooses each step's prompts and rollout counts, and learns from the scored groups."""

    #: The default allocator when ``train.allocation`` is ``auto``.
    default_allocation: ClassVar[str] = "fixed"

    @classmethod
    def allocation_method(cls, train: Any) -> str:
        """The allocator the ``train`` section gives this method (``auto``: its own)."""
        return cls.default_allocation if train.allocation == "auto" else str(train.allocation)

    def __init__(self, frame: pd.DataFrame, cfg: Any = None, seed: int = 0) -> None:
        """``cfg`` is the method's settings (its params section), None for a method with none."""
        if frame.empty:
            raise ValueError("a curriculum needs at least one training prompt")
        self.frame = frame.reset_index(drop=True)
        self.ids = self.frame["id"].astype(str).tolist()
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("training prompt ids must be unique")
        self.index = {qid: i for i, qid in enumerate(self.ids)}
        self.rng = np.random.default_rng(seed)
        self.stats = PromptStats(self.frame)
        self.allocator: Any = None  # set by make_curriculum (sparft.curricula)
        self.rollout: Rollout | None = None  # set by the trainer (bind_rollout)
        self.step = 0
        self.rollouts_total = 0
        self.seen: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self._pending: list[Assignment] | None = None
        self._record: dict[str, Any] = {}
        self._rounds = 0

    # --- what a method defines ----------------------------------------------------------------

    @abstractmethod
    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        """The next ``n`` prompt ids and what to record about the choice (an arm, say)."""

    def _learn(self, groups: Sequence[Group]) -> dict[str, Any]:
        """Update from the step's groups; returns extra fields for the step's record."""
        return {}

    def more(self, groups: Sequence[Group]) -> list[Assignment]:
        """Further prompts for this step given every group generated so far in it (they join
        the step's plan, and their rollouts count in its total); none: generation is done."""
        return []

    def keep(self, groups: Sequence[Group]) -> list[int]:
        """Which of the step's generated groups it trains on, by position; the rest only
        inform the curriculum. A pure function of ``groups`` (every process computes it)."""
        return list(range(len(groups)))

    def metrics(self) -> dict[str, float]:
        """Numbers to log every step beside the record (per-arm statistics, say)."""
        return {}

    def _method_state(self) -> dict[str, Any]:
        return {}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        return None

    # --- the contract -------------------------------------------------------------------------

    def estimates(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(last visit's solve rate, rollouts observed) per prompt, for allocators; the rate is
        NaN for a prompt never observed."""
        index = np.array([self.index[i] for i in ids], dtype=np.int64)
        return self.stats.last_rate[index], self.stats.rollouts[index]

    def bind_rollout(self, rollout: Rollout) -> None:
        """Give the curriculum a way to roll questions out under the current policy (DOTS's
        reference questions): ``rollout(prompt_ids, n, temperature)`` returns each prompt's n
        correctness values. Such rollouts count in the step's record (``extra_rollouts``)."""
        self.rollout = rollout

    def posterior(self, index: np.ndarray | int | None = None) -> np.ndarray:
        """Posterior mean solve rate of prompts by position (all when ``index`` is None)."""
        return self.stats.posterior_mean(slice(None) if index is None else index)

    def plan(self, n_prompts: int, budget: int) -> list[Assignment]:
        """This step's prompts and their rollout counts, summing to ``budget`` exactly."""
        if n_prompts < 1 or budget < n_prompts:
            raise ValueError(f"a step needs 1 <= prompts <= rollouts, got {n_prompts}, {budget}")
        if self._pending is not None:
            raise RuntimeError("plan called twice without observe: a step's groups were lost")
        if self.allocator is None:
            raise RuntimeError("the curriculum has no allocator (build it with make_curriculum)")
        ids, record = self._select(n_prompts)
        counts = self.allocator.allocate(self, ids, budget)
        if len(counts) != len(ids) or int(np.sum(counts)) != budget or min(counts) < 1:
            raise RuntimeError(f"allocator returned {list(counts)} for a budget of {budget}")
        self._pending = [Assignment(i, int(c)) for i, c in zip(ids, counts, strict=True)]
        self._record = record
        self._rounds = 1
        return list(self._pending)

    def _plan_more(self, n_prompts: int, budget: int) -> list[Assignment]:
        """Another round of the step's plan (for ``more``): ``n_prompts`` prompts sharing
        ``budget`` rollouts, appended to the pending plan."""
        if self._pending is None:
            raise RuntimeError("more called without a plan")
        ids, record = self._select(n_prompts)
        counts = self.allocator.allocate(self, ids, budget)
        extra = [Assignment(i, int(c)) for i, c in zip(ids, counts, strict=True)]
        self._pending.extend(extra)
        for key, value in record.items():
            if isinstance(value, int | float) and key in self._record:
                self._record[key] += value
        self._rounds += 1
        return extra

    def observe(
        self, groups: Sequence[Group], extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The scored groups of the last plan, in its order; returns the step's record, with
        ``extra`` (what the trainer adds: replayed rows, say) merged in."""
        if self._pending is None:
            raise RuntimeError("observe called without a plan")
        planned = [(a.prompt_id, a.rollouts) for a in self._pending]
        got = [(g.prompt_id, len(g.rewards)) for g in groups]
        if got != planned:
            raise RuntimeError(f"observe got groups {got} for the plan {planned}")
        for group in groups:
            self.stats.update(self.index[group.prompt_id], np.asarray(group.correct, dtype=float))
        generated = sum(len(g.rewards) for g in groups)
        self.rollouts_total += generated + int(self._record.get("extra_rollouts", 0))
        trained = [groups[i] for i in self.keep(groups)]
        correct = np.concatenate([np.asarray(g.correct, dtype=float) for g in trained])
        self.seen.update(g.prompt_id for g in trained)
        sizes = [len(g.rewards) for g in trained]
        record = {
            "step": self.step,
            **self._record,
            "prompt_ids": [g.prompt_id for g in trained],
            "group_sizes": sizes,
            "prompts": len(trained),
            "rollouts": sum(sizes),
            "min_group": min(sizes),
            "max_group": max(sizes),
            "solve_rate": float(correct.mean()),
            "effective_prompt_ratio": float(np.mean([g.informative for g in trained])),
            # Knapsack RL's measure: the share of rollouts in groups with a gradient
            "gradient_rollout_share": sum(
                n for g, n in zip(trained, sizes, strict=True) if g.informative
            )
            / sum(sizes),
        }
        if len(trained) != len(groups):
            record |= {
                "gen_batches": self._rounds,
                "generated_prompts": len(groups),
                "generated_rollouts": generated,
            }
        record.update(self._learn(groups))
        record.update(extra or {})
        record["unique_seen"] = len(self.seen)
        record["rollouts_total"] = self.rollouts_total
        self.history.append(record)
        self.step += 1
        self._pending = None
        return record

    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:
            raise RuntimeError("cannot save a curriculum between plan and observe")
        return {
            "rng": self.rng.bit_generator.state,
            "step": self.step,
            "rollouts_total": self.rollouts_total,
            "seen": sorted(self.seen),
            "history": self.history,
            "stats": self.stats.state_dict(),
            "method": self._method_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.step = int(state["step"])
        self.rollouts_total = int(state["rollouts_total"])
        self.seen = set(state["seen"])
        self.history = list(state["history"])
        self.stats.load_state_dict(state["stats"])
        self._load_method_state(state["method"])
        self._pending = None


# ---------------------------------------------------------------------------------------------
# State files: JSON with the arrays in an .npz beside it
# ---------------------------------------------------------------------------------------------


def _split_arrays(value: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key, "at": path}
    if isinstance(value, dict):
        return {k: _split_arrays(v, arrays, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split_arrays(v, arrays, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _join_arrays(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__", "at"}:
            return arrays[value["__array__"]]
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _join_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays) for v in value]
    return value


def save_state(state: dict[str, Any], folder: str | Path) -> None:
    """Write a curriculum state as strict JSON plus an ``.npz`` of its arrays, atomically."""
    folder = Path(folder)
    arrays: dict[str, np.ndarray] = {}
    plain = _split_arrays(state, arrays, "")
    with atomic_path(folder / STATE_ARRAYS) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stubs: allow_pickle
    write_json(plain, folder / STATE_JSON)


def load_state(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    plain = json.loads((folder / STATE_JSON).read_text())
    with np.load(folder / STATE_ARRAYS) as arrays:
        return _join_arrays(plain, {k: arrays[k] for k in arrays.files})
