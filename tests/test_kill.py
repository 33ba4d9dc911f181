"""Kill anywhere, rerun, lose at most the unfinished unit (slow).

One chain of ``sparft run`` attempts on the tiny model: each is SIGKILLed (the whole process
group) at its kill point, a little after the point is reached (a seeded random delay), and
the next attempt goes on from what the last one left. After each kill no half-written
artifact is where a stage reads, and the stage runs the kill left ``RUNNING`` in MLflow are
marked ``KILLED`` when the next attempt starts. The last attempt runs to the end, and its
results equal those of one uninterrupted run with the same seeds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sparft.testing import tiny_project
from sparft.training import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SETTINGS: dict[str, dict[str, Any]] = {
    "arithmetic": {"per_grade": 6},
    "generation": {"num_threads": 1},
    "probe": {"batch_questions": 2, "max_new_tokens": 16},
    "train": {"max_steps": 6, "save_steps": 2, "save_total_limit": 3},
    "tracking": {"log_model": False},
}
RESULTS = ("probe.parquet", "clusters.parquet", "subset.parquet", "eval/results.parquet")


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        PREFECT_HOME=str(root.parent / f"{root.name}-prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        OMP_NUM_THREADS="1",
    )
    return env


def _stage_runs(root: Path, stage: str) -> int:
    """How many MLflow runs ``stage`` has opened in the project (read from the store)."""
    db = root / "mlflow.db"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute(
                "SELECT count(*) FROM tags WHERE key = 'sparft.stage' AND value = ?", (stage,)
            ).fetchone()
    except sqlite3.Error:
        return 0  # the schema is still being created
    return int(row[0]) if row else 0


class Opened:
    """Reached once this attempt opens a run for ``stage`` (a cached stage opens none); a
    stage faster than the poll still counts: the kill then lands a little after it."""

    def __init__(self, root: Path, stage: str) -> None:
        self.root, self.stage = root, stage
        self.before = _stage_runs(root, stage)

    def __call__(self) -> bool:
        return _stage_runs(self.root, self.stage) > self.before


def _journal_batches(root: Path) -> int:
    folder = root / "data" / "probe.progress"
    if not folder.is_dir():
        return 0
    return sum(max(0, p.read_text().count("\n") - 1) for p in folder.glob("*.jsonl"))


def _checkpoint_started(root: Path, step: int) -> bool:
    return (root / "data/checkpoints/train" / f"checkpoint-{step}").exists()


def _has_checkpoint(root: Path) -> bool:
    return latest_checkpoint(root / "data/checkpoints/train") is not None


def _kill_points() -> list[tuple[str, Callable[[Path], Callable[[], bool]]]]:
    """Each kill point's name and, made when its attempt starts, the test of having reached it."""
    return [
        ("load", lambda r: Opened(r, "load")),
        ("embed", lambda r: Opened(r, "embed")),
        ("probe, mid-batch", lambda r: lambda: _journal_batches(r) >= 2),
        ("cluster", lambda r: Opened(r, "cluster")),
        ("select", lambda r: Opened(r, "select")),
        ("train, between checkpoints", lambda r: lambda: _has_checkpoint(r)),
        ("train, while a checkpoint is written", lambda r: lambda: _checkpoint_started(r, 4)),
        ("evaluate", lambda r: Opened(r, "evaluate")),
    ]


def _kill_when(
    command: list[str], root: Path, reached: Callable[[], bool], name: str, delay: float
) -> None:
    """Start ``command`` in ``root``, and SIGKILL its process group ``delay`` seconds after
    ``reached()`` first holds."""
    process = subprocess.Popen(
        command,
        cwd=root,
        env=_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not reached():
        assert process.poll() is None, f"the attempt ended before {name}"
        assert time.monotonic() < deadline, f"{name} was never reached"
        time.sleep(0.02)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _readable(root: Path) -> list[str]:
    """Every artifact where a stage reads: parquet and JSON files load (journals, checkpoints
    and temporary files aside). Returns the files checked."""
    checked = []
    for path in sorted((root / "data").rglob("*")):
        rel = path.relative_to(root / "data")
        if not path.is_file() or rel.parts[0] in ("checkpoints", "probe.progress", "compare"):
            continue
        if path.name.startswith("."):
            continue  # a write the kill cut short: under a temporary name no stage reads
        if path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            continue
        checked.append(str(rel))
    return checked


def _statuses(root: Path) -> list[str]:
    with sqlite3.connect(root / "mlflow.db") as con:
        return [row[0] for row in con.execute("SELECT status FROM runs")]


@pytest.mark.slow
def test_kill_anywhere_then_rerun_equals_an_uninterrupted_run(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    reference = tiny_project(tmp_path / "reference", tiny_lm_dir, ROOT, SETTINGS)
    done = subprocess.run(
        ["sparft", "run"], cwd=reference, env=_env(reference), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]

    root = tiny_project(tmp_path / "killed", tiny_lm_dir, ROOT, SETTINGS)
    rng = random.Random(0)
    tried = []
    for name, point in _kill_points():
        _kill_when(["sparft", "run"], root, point(root), name, rng.uniform(0.0, 0.3))
        tried.append((name, _readable(root)))
    assert any("probe.parquet" not in files for name, files in tried if name.startswith("probe"))
    assert "RUNNING" in _statuses(root)  # what the last kill left open

    final = subprocess.run(["sparft", "run"], cwd=root, env=_env(root), capture_output=True)
    assert final.returncode == 0, final.stderr[-4000:]
    statuses = _statuses(root)
    assert "RUNNING" not in statuses and statuses.count("KILLED") >= len(tried)
    for name in RESULTS:
        pd.testing.assert_frame_equal(
            pd.read_parquet(root / "data" / name), pd.read_parquet(reference / "data" / name)
        )
    columns = ["step", "prompt_ids", "group_sizes", "solve_rate", "arm"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(root / "data/train/history.parquet")[columns],
        pd.read_parquet(reference / "data/train/history.parquet")[columns],
    )
    with (
        np.load(root / "data/embeddings.npz") as a,
        np.load(reference / "data/embeddings.npz") as b,
    ):
        np.testing.assert_array_equal(a["embeddings"], b["embeddings"])
    summary = json.loads((root / "data/train/metrics.json").read_text())
    assert summary["resumed_from"] is not None  # the last attempt continued a checkpoint


COMPARE_SETTINGS = {
    **SETTINGS,
    "compare": {"eval_every": 2, "bootstrap": 200},
}
COMPARE = ["sparft", "compare-strategies", "--strategy", "uniform", "--strategy", "sparft"]
COMPARE += ["--seed", "0"]


def _variant_checkpoint(root: Path, variant: str) -> Callable[[], bool]:
    folder = root / "data/compare" / variant / "data/checkpoints/train"
    return lambda: latest_checkpoint(folder) is not None


@pytest.mark.slow
def test_killed_comparison_resumes_its_variants(tmp_path: Path, tiny_lm_dir: Path) -> None:
    """``sparft compare-strategies`` killed inside each variant's training: the reruns take the
    shared stages and every finished variant from the cache, continue the killed variant's
    checkpoint, and end with the report of an uninterrupted comparison."""
    reference = tiny_project(tmp_path / "reference", tiny_lm_dir, ROOT, COMPARE_SETTINGS)
    done = subprocess.run(COMPARE, cwd=reference, env=_env(reference), capture_output=True)
    assert done.returncode == 0, done.stderr[-4000:]

    root = tiny_project(tmp_path / "killed", tiny_lm_dir, ROOT, COMPARE_SETTINGS)
    rng = random.Random(1)
    for variant in ("uniform_seed-0", "sparft_seed-0"):
        reached = _variant_checkpoint(root, variant)
        _kill_when(COMPARE, root, reached, f"{variant}'s checkpoint", rng.uniform(0.0, 0.3))
        assert "RUNNING" in _statuses(root)

    final = subprocess.run(COMPARE, cwd=root, env=_env(root), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-4000:]
    statuses = _statuses(root)
    assert "RUNNING" not in statuses and statuses.count("KILLED") >= 2
    cached = [
        line
        for line in final.stdout.splitlines() + final.stderr.splitlines()
        if "Cached(type=COMPLETED)" in line
    ]
    assert any("uniform seed=0" in line for line in cached), "the finished variant trained again"
    for variant in ("uniform_seed-0", "sparft_seed-0"):
        summary = root / "data/compare" / variant / "data/train/metrics.json"
        assert json.loads(summary.read_text())["resumed_from"] is not None
    got, want = (
        json.loads((r / "data/compare/strategies.json").read_text())["strategies"]
        for r in (root, reference)
    )
    for name in ("uniform", "sparft"):
        for a, b in zip(got[name]["curve"], want[name]["curve"], strict=True):
            assert (a["step"], a["mean"], a["rollouts"]) == (b["step"], b["mean"], b["rollouts"])
    assert got["sparft"]["arms"] == want["sparft"]["arms"]
