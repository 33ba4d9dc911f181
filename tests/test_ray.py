"""Ray through Prefect, for real: a local Ray instance on 127.0.0.1 only, and ``sparft run
--runner ray`` giving the local run's artifacts, resuming its probe after a SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from sparft.testing import tiny_project

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_local_ray_instance_listens_on_loopback_only() -> None:
    """Shards become Prefect task runs on Ray workers; nothing Ray starts listens beyond
    127.0.0.1."""
    import psutil
    import ray
    from prefect import flow

    from flows.runners import RunnerSettings, shard_runner
    from sparft.parallel import map_shards

    # this test module is not importable on the workers: ship _square by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    @flow
    def shards() -> dict[str, Any]:
        with shard_runner(RunnerSettings("ray", workers=2)) as mapper:
            results = map_shards(_square, [1, 2, 3, 4], "square")
            addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
            ours = {p.pid for p in psutil.Process().children(recursive=True)}
            listening = {
                c.laddr.ip
                for c in psutil.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.pid in ours
            }
        return {
            "results": results,
            "workers": mapper.workers,
            "addresses": addresses,
            "listening": listening,
        }

    out = shards()
    assert [r for r, _ in out["results"]] == [1, 4, 9, 16]
    assert len({pid for _, pid in out["results"]} - {os.getpid()}) >= 1  # ran elsewhere
    assert out["workers"] == 2
    assert out["addresses"] == {"127.0.0.1"}
    assert out["listening"] and out["listening"] <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, out[
        "listening"
    ]
    assert not ray.is_initialized()  # the local instance stopped with the block


def _project(root: Path, tiny_lm_dir: Path) -> Path:
    """A project with the tiny settings, cut so that probe, embed and evaluate have several
    shards, and enough questions that the probe can be killed half way."""
    settings: dict[str, dict[str, Any]] = {
        "arithmetic": {"per_grade": 40},
        "generation": {"num_threads": 1},
        "probe": {"batch_questions": 3, "max_new_tokens": 24},
        "embed": {"batch_size": 4, "chunk_batches": 2, "num_threads": 1},
        "evaluate": {"batch_questions": 2},
        "tracking": {"enabled": False},
    }
    return tiny_project(root, tiny_lm_dir, ROOT, settings, with_code=False)


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        PREFECT_HOME=str(root / ".prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        OMP_NUM_THREADS="1",
    )
    return env


def _run(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["sparft", "run", *args],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def _journal_lines(root: Path) -> int:
    folder = root / "data" / "probe.progress"
    return sum(p.read_text().count("\n") for p in folder.glob("*.jsonl")) if folder.is_dir() else 0


def test_ray_run_equals_local_run_and_resumes_a_killed_probe(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    local = _project(tmp_path / "local", tiny_lm_dir)
    ray_root = _project(tmp_path / "ray", tiny_lm_dir)
    _run(local)

    killed = subprocess.Popen(
        ["sparft", "run", "--runner", "ray", "--workers", "2"],
        cwd=ray_root,
        env=_env(ray_root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while _journal_lines(ray_root) < 4 and killed.poll() is None:  # 2 headers, 2 batches
        assert time.monotonic() < deadline, "the probe never started"
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (ray_root / "data" / "probe.parquet").exists()  # killed mid-probe
    assert _journal_lines(ray_root) >= 4

    out = _run(ray_root, "--runner", "ray", "--workers", "2")
    assert "2 Ray workers" in out
    summary = yaml.safe_load((ray_root / "data" / "probe_summary.json").read_text())
    assert summary["resumed_questions"] > 0  # finished batches were not probed again
    assert not (ray_root / "data" / "probe.progress").exists()

    for name in ("probe.parquet", "subset.parquet", "eval/results.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(ray_root / "data" / name), pd.read_parquet(local / "data" / name)
        )
    with (
        np.load(ray_root / "data/embeddings.npz") as a,
        np.load(local / "data/embeddings.npz") as b,
    ):
        np.testing.assert_array_equal(a["embeddings"], b["embeddings"])
    shutil.rmtree(tmp_path, ignore_errors=True)
