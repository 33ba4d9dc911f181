"""`dvc repro` runs the declared stages for real, offline, and a second repro does nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_dvc_repro_runs_stages_then_is_a_no_op(tmp_path: Path, tiny_lm_dir: Path) -> None:
    shutil.copytree(
        ROOT / "sparft", tmp_path / "sparft", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["arithmetic"].update(per_grade=4, grades=[1, 2, 3])
    params["generation"].update(model=str(tiny_lm_dir))
    params["probe"].update(k=2, max_new_tokens=8)
    params["cluster"].update(k=3)
    params["select"].update(budget=6)
    params["train"].update(max_steps=2, num_generations=2, max_completion_length=8, num_threads=1)
    params["evaluate"].update(max_new_tokens=8, limit=4)
    params["tracking"].update(enabled=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], tmp_path)
    _run(["dvc", "init", "-q"], tmp_path)
    _run(["dvc", "config", "core.analytics", "false"], tmp_path)

    out = _run(["dvc", "repro"], tmp_path)
    for stage in ("load", "embed", "reduce", "probe", "cluster", "select", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out
    for artifact in (
        "train.parquet", "probe.parquet", "subset.parquet", "plots/cluster_map.png",
        "train/model/config.json", "train/metrics.json", "eval/metrics.json",
    ):  # fmt: skip
        assert (tmp_path / "data" / artifact).stat().st_size > 0
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], tmp_path)
    again = _run(["dvc", "repro"], tmp_path)
    assert "Running stage" not in again

    params["select"].update(budget=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _run(["dvc", "repro"], tmp_path)
    assert "Running stage 'select'" in changed and "Running stage 'train'" in changed
    assert "Running stage 'probe'" not in changed and "Running stage 'cluster'" not in changed
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], tmp_path)

    metrics = _run(["dvc", "metrics", "show"], tmp_path)
    assert "data/eval/metrics.json" in metrics and "data/train/metrics.json" in metrics
    _run(["dvc", "plots", "show", "-o", "plots-html"], tmp_path)
    html = (tmp_path / "plots-html" / "index.html").read_text()
    assert "train_arms.png" in html and "cluster_map.png" in html

    _run(["git", "add", "-A"], tmp_path)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"], tmp_path)
    experiment = _run(["dvc", "exp", "run", "-S", "bandit.algorithm=exp3"], tmp_path)
    # evaluate reruns only if the trained weights changed (the tiny model may learn nothing)
    assert "Running stage 'train'" in experiment and "Running stage 'probe'" not in experiment
    shown = _run(["dvc", "exp", "show", "--no-pager", "--csv"], tmp_path)
    assert "exp3" in shown
