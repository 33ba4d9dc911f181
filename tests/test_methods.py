"""One real training run per method on the offline default: SmolLM2-135M-Instruct on generated
arithmetic, through the pipeline's own stages (load, embed, reduce, probe, cluster, select) and
then ``sparft stage train`` once per curriculum and allocation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import shared_tmp

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
BUDGET = 12  # 2 prompts x 6 rollouts per step


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "SPARFT_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _stage(root: Path, cache: Path, name: str, *overrides: str) -> None:
    sets = [a for o in overrides for a in ("--set", o)]
    done = subprocess.run(
        [str(BIN / "sparft"), "stage", name, *sets],
        cwd=root,
        env=_env(cache),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (name, done.stdout[-2000:], done.stderr[-3000:])


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, sparft_cache: Path) -> Path:
    """The project up to the trained stage's inputs, built once for the whole run: the first
    pytest-xdist worker to get here builds it under a lock, the others wait and reuse it."""
    from filelock import FileLock

    root = shared_tmp(tmp_path_factory) / "methods-project"
    with FileLock(f"{root}.lock"):
        if not (root / ".built").exists():
            _build(root, sparft_cache)
            (root / ".built").touch()
    return root


@pytest.fixture
def project(built: Path, sparft_cache: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the built project of this test's own: methods train side by side."""
    root = tmp_path / "methods"
    shutil.copytree(built, root)
    return root, sparft_cache


def _build(root: Path, cache: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)  # a build cut short
    root.mkdir(parents=True)
    params = {
        "arithmetic": {"per_grade": 4, "grades": [1, 2, 3, 4]},
        "generation": {"model": "smollm2-135m"},
        "probe": {"k": 4, "max_new_tokens": 32},
        "cluster": {"k": 4},
        "select": {"budget": 12},
        "allocation": {"knapsack_min_observed": 4},
        "dots": {"reference_questions": 4, "reference_rollouts": 4, "hidden": 32},
        "tracking": {"log_model": False},
        "train": {
            "max_steps": 3,
            "prompts_per_step": 2,
            "num_generations": BUDGET // 2,
            "max_completion_length": 32,
            "save_steps": 100,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("load", "embed", "reduce", "probe", "cluster", "select", "dots_predictor"):
        _stage(root, cache, stage)


@pytest.mark.parametrize(
    ("curriculum", "allocation", "replay"),
    [
        ("uniform", "auto", False),
        ("sparft", "auto", False),
        ("cures", "auto", False),
        ("dump", "auto", False),
        ("uniform", "knapsack", False),
        ("dots", "auto", True),  # DOTS+RR
    ],
)
def test_method_trains_smollm2_on_arithmetic(
    project: tuple[Path, Path], curriculum: str, allocation: str, replay: bool
) -> None:
    root, cache = project
    _stage(
        root, cache, "train", f"train.curriculum={curriculum}",
        f"train.allocation={allocation}", f"train.replay.enabled={str(replay).lower()}",
    )  # fmt: skip
    history = pd.read_parquet(root / "data/train/history.parquet")
    metrics = json.loads((root / "data/train/metrics.json").read_text())
    assert list(history["step"]) == [0, 1, 2]
    replayed = history["replay/rows"].fillna(0) if "replay/rows" in history else 0 * history["step"]
    assert (history["rollouts"] + replayed == BUDGET).all()
    references = history["extra_rollouts"].fillna(0).sum() if "extra_rollouts" in history else 0
    assert history["rollouts_total"].iloc[-1] == history["rollouts"].sum() + references
    sizes = [list(s) for s in history["group_sizes"]]
    assert all(sum(s) == n for s, n in zip(sizes, history["rollouts"], strict=True))
    if curriculum == "dots":
        assert references == 2 * 4 * 4  # reference rollouts at steps 0 and 2 (mu = 2)
        assert replayed.sum() > 0 or history["effective_prompt_ratio"].iloc[0] == 0
    if curriculum == "cures":
        assert metrics["allocation"] == "variance"
        assert all(4 <= n <= 16 for s in sizes for n in s)
    if allocation == "knapsack":
        assert metrics["allocation"] == "knapsack" and all(n >= 2 for s in sizes for n in s)
    if curriculum in ("sparft", "dump"):
        assert sum(metrics["arm_picks"].values()) == 3
    assert metrics["curriculum"] == curriculum and metrics["steps"] == 3
    assert 0.0 <= metrics["effective_prompt_ratio"] <= 1.0
    assert (root / "data/train/model/config.json").exists()
