"""One comparison from several runs of the same design: parts merged only where they agree.

A design too large for one machine's window (or spread over several machines) runs in parts:
``sparft compare-strategies --part --strategy ... --seed ...`` on each, ``compare.strategies``
and ``compare.seeds`` staying the design (``settings.part_of``). Every report keeps its runs
(``runs``: each strategy x seed's per-question correctness at every check and its per-step
record) and what they read (``design``: the digest of every file a strategy's training reads,
and each strategy's params but the per-run ones), so ``merge`` can summarise the union as if
one flow had trained it. It refuses what would not be one design:

- other settings (model, data, budgets, steps, checks, ``compare.scale``, statistics);
- a file read by runs of two parts with other contents (another probe draw gives other
  clusters, and the probe's solve rates themselves are what several methods read);
- a params key two strategies share with other values, unless a strategy sets it itself;
- a strategy x seed in two parts whose checks differ: a repeat must reproduce, so two parts
  that both ran uniform also show that training is deterministic across their machines.

Parts that ran other source code merge, with the files listed (``merged.code_differs``):
a comment changes a file as much as a fix does, so only the user can judge. Wall times stay
each part's own and each part's machine is kept (``merged.parts``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sparft.checks import Check
from sparft.comparison import RunCurve, as_bits, strategy_overrides
from sparft.config import dotted

# keys that change from one run of a strategy to the next, or from one machine to the next,
# without changing the design: the seeds, where the step-0 check is cached, and (as the train
# stage's resume fingerprint leaves them out) how often to save, where, with how many threads
PER_RUN_KEYS = (
    "train.seed",
    "bandit.seed",
    "train.heldout.cache_dir",
    *(f"train.{k}" for k in ("resume", "save_steps", "save_total_limit", "checkpoint_dir")),
    "train.num_threads",
)
# settings a merged report takes from its parts instead of asking them to agree
PART_SETTINGS = ("strategies", "seeds", "pairs", "wall_seconds", "machine", "part_of")
CHECK_FIELDS = ("rollouts", "unique_seen", "train_seconds")
HISTORY_FIELDS = ("step", "effective_prompt_ratio")


def design_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy's params as a report keeps them: dotted, without the per-run keys."""
    flat = dotted(values)
    return {k: v for k, v in sorted(flat.items()) if not any(k.startswith(p) for p in PER_RUN_KEYS)}


def run_record(run: RunCurve) -> dict[str, Any]:
    """One run as the report keeps it: what ``summarise`` reads of it, in JSON."""
    checks = [
        {
            "step": int(row["step"]),
            "correct": as_bits(np.asarray(row["correct"], dtype=bool)),
            **{k: float(row[k]) for k in CHECK_FIELDS},
        }
        for row in run.points.to_dict("records")
    ]
    history = run.history[list(HISTORY_FIELDS)].astype(float)
    return {
        "strategy": run.strategy,
        "seed": run.seed,
        "probe_rollouts": int(run.probe_rollouts),
        "arm_picks": {str(k): int(v) for k, v in run.arm_picks.items()},
        "checks": checks,
        "history": [[int(s), None if np.isnan(v) else v] for s, v in history.to_numpy()],
    }


def run_from_record(record: Mapping[str, Any], where: str) -> RunCurve:
    """The inverse of ``run_record``; a missing or malformed field names ``where`` and itself."""
    try:
        points = pd.DataFrame(
            [
                {
                    "step": int(check["step"]),
                    "correct": [c == "1" for c in check["correct"]],
                    **{k: float(check[k]) for k in CHECK_FIELDS},
                }
                for check in record["checks"]
            ]
        )
        history = pd.DataFrame(
            [(int(s), np.nan if v is None else float(v)) for s, v in record["history"]],
            columns=list(HISTORY_FIELDS),
        )
        return RunCurve(
            strategy=str(record["strategy"]),
            seed=int(record["seed"]),
            points=points,
            history=history,
            probe_rollouts=int(record["probe_rollouts"]),
            arm_picks={str(k): int(v) for k, v in record["arm_picks"].items()},
        )
    except KeyError as err:
        raise ValueError(f"{where}: no {err.args[0]!r} field") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{where}: malformed run record ({err})") from None


def _short(digest: str | None) -> str:
    return "absent" if digest is None else digest.removeprefix("dir:")[:12]


def _design_settings(report: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.get("settings", {}).items() if k not in PART_SETTINGS}


def _own_keys(strategy: str) -> set[str]:
    return set(strategy_overrides(strategy)[0])


def _differing_checks(a: RunCurve, b: RunCurve) -> str | None:
    """Where two runs of one strategy x seed differ: the first check's step and how many
    answers, or None when every check agrees answer for answer."""
    left = {int(r["step"]): list(r["correct"]) for r in a.points.to_dict("records")}
    right = {int(r["step"]): list(r["correct"]) for r in b.points.to_dict("records")}
    if sorted(left) != sorted(right):
        return f"checks at steps {sorted(left)} against {sorted(right)}"
    for step, answers in left.items():
        other = right[step]
        if answers != other:
            if len(answers) != len(other):
                return f"step {step}: {len(answers)} held-out answers against {len(other)}"
            n = sum(x != y for x, y in zip(answers, other, strict=True))
            return f"step {step}: {n} of {len(answers)} held-out answers"
    return None


def check_params(parts: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Every params key two strategies share has one value across all parts, unless a
    strategy sets it itself (``ValueError`` naming the key, both values and both parts)."""
    seen: dict[str, tuple[Any, str, str]] = {}
    for name, report in parts:
        for strategy, values in report["design"]["params"].items():
            own = _own_keys(strategy)
            for key, value in values.items():
                if key in own:
                    continue
                first = seen.setdefault(key, (value, name, strategy))
                if first[0] != value:
                    raise ValueError(
                        f"{name}: {strategy} ran with {key}={value!r}, {first[2]} in {first[1]} "
                        f"with {key}={first[0]!r}: not one design"
                    )


def check_inputs(parts: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Every file read by runs of two parts has one digest (``ValueError`` naming it)."""
    seen: dict[str, tuple[str | None, str]] = {}
    for name, report in parts:
        for path, digest in report["design"]["inputs"].items():
            first = seen.setdefault(path, (digest, name))
            if first[0] != digest:
                raise ValueError(
                    f"{name}: its runs read another {path} than {first[1]}'s (sha256 "
                    f"{_short(digest)} against {_short(first[0])}): not one design (a probe "
                    "drawn again gives other solve rates and clusters; rerun the part on the "
                    "other's inputs)"
                )


def code_differs(parts: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The source files the parts' training read with other contents (or in one part only):
    the parts ran other code, which the merge reports rather than refuses (a comment or a
    docstring changes a file too); ``reproduced`` runs show whether training changed."""
    codes = [report["design"].get("code", {}) for _, report in parts]
    paths = {path for code in codes for path in code}
    return sorted(p for p in paths if len({code.get(p) for code in codes}) > 1)


def merged_preflight(parts: Sequence[tuple[str, Mapping[str, Any]]], seeds: list[int]) -> dict:
    """The parts' checks once each, and the seeds check again over the merged seeds."""
    from sparft.preflight import report, seed_power

    checks: dict[tuple[Any, ...], Check] = {}
    for name, part in parts:
        preflight = part.get("preflight")
        if not preflight:
            raise ValueError(f"{name}: no preflight checks in this report")
        for data in preflight["checks"]:
            check = Check.from_dict(data)
            if check.name != "seeds":
                checks.setdefault((check.name, check.strategy, check.status, check.message), check)
    return report([*checks.values(), seed_power(seeds)])


def merge(
    parts: Sequence[tuple[str, Mapping[str, Any]]],
) -> tuple[list[RunCurve], dict[str, Any]]:
    """The runs of ``parts`` (``(file name, report)``), each strategy x seed once, and what the
    merged report says of its parts; ``ValueError`` where they are not one design."""
    if len(parts) < 2:
        raise ValueError("merging needs two reports or more")
    for name, report in parts:
        absent = [k for k in ("settings", "runs", "design") if k not in report]
        if absent:
            raise ValueError(
                f"{name}: no {', '.join(repr(k) for k in absent)} (a report written before "
                "reports kept their runs: rerun its compare-strategies, whose variants come from "
                "the cache, to write it again)"
            )
    first_name, first = parts[0]
    base = _design_settings(first)
    for name, report in parts[1:]:
        settings = _design_settings(report)
        differ = sorted(k for k in base.keys() | settings.keys() if base.get(k) != settings.get(k))
        if differ:
            said = "; ".join(f"{k}: {settings.get(k)!r} against {base.get(k)!r}" for k in differ)
            raise ValueError(f"{name}: other settings than {first_name}: {said}")
    designs = [r["settings"]["part_of"] for _, r in parts if r["settings"].get("part_of")]
    if any(d != designs[0] for d in designs):
        raise ValueError(f"parts of two designs (--part under other compare sections): {designs}")
    check_inputs(parts)
    check_params(parts)
    runs: dict[tuple[str, int], tuple[str, RunCurve]] = {}
    reproduced: list[dict[str, Any]] = []
    for name, report in parts:
        for i, record in enumerate(report["runs"]):
            run = run_from_record(record, f"{name}: runs[{i}]")
            key = (run.strategy, run.seed)
            if key not in runs:
                runs[key] = (name, run)
                continue
            other_name, other = runs[key]
            where = _differing_checks(other, run)
            if where is not None:
                raise ValueError(
                    f"{name}: {run.strategy} seed {run.seed} differs from {other_name}'s "
                    f"({where}): a run in two parts must reproduce; leave it out of one part "
                    "(--strategy/--seed) or find why it did not"
                )
            reproduced.append({"strategy": run.strategy, "seed": run.seed})
    described = [
        {
            "file": name,
            "sha256": hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest(),
            "strategies": report["settings"].get("strategies"),
            "seeds": report["settings"].get("seeds"),
            "machine": report["settings"].get("machine"),
            "wall_seconds": report["settings"].get("wall_seconds"),
            "power": report.get("power"),
        }
        for name, report in parts
    ]
    design: dict[str, Any] = designs[0] if designs else {"strategies": [], "seeds": []}
    missing: list[dict[str, Any]] = [
        {"strategy": strategy, "seed": seed}
        for strategy in design["strategies"]
        for seed in design["seeds"]
        if (strategy, seed) not in runs
    ]
    info = {
        "parts": described,
        "code_differs": code_differs(parts),
        "reproduced": reproduced,
        "design": designs[0] if designs else None,
        "missing": missing,
    }
    return [run for _, run in runs.values()], info
