"""Probe and evaluate through a real vLLM server that sparft starts itself (vLLM's CPU build
from ``make vllm-env``, serving the offline SmolLM2 folder): results as the ``hf`` backend's,
a server killed mid-probe named in the error, and the probe resumed by the next run; held-out
checks through a server whose weights are replaced in place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from conftest import SHARED_DATA, WORKER_THREADS, needs_shared

from sparft.generation.config import PYTHON_ENV, GenerationConfig, ServerConfig
from sparft.generation.server import ServerStartError, vllm_python

ROOT = Path(__file__).resolve().parents[1]
CPU_CHUNK = 2048  # the CPU build's server: tokens per engine step under chunked prefill
BIN = Path(sys.executable).parent
try:
    VLLM_PYTHON: Path | None = vllm_python(ServerConfig(), ROOT)
    NO_VLLM = ""
except ServerStartError as err:
    VLLM_PYTHON, NO_VLLM = None, str(err)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.server,
    pytest.mark.skipif(VLLM_PYTHON is None, reason=NO_VLLM),
]


def _project(root: Path, smollm2_dir: Path, backend: str) -> Path:
    """32 arithmetic questions probed greedily (so both backends must agree), 8 held out."""
    root.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["arithmetic"].update(per_grade=8)  # 32 questions over grades 1-4
    params["generation"].update(
        backend=backend,
        model=str(smollm2_dir),
        dtype="float32",
        batch_size=16,
        num_threads=WORKER_THREADS,
    )
    # eager: the server is up in ~35 s here instead of ~2.5 min of graph compilation
    params["generation"]["server"] = {"extra_args": ["--enforce-eager"], "max_model_len": 1024}
    params["probe"].update(k=2, temperature=0.0, max_new_tokens=48, batch_questions=4)
    params["evaluate"].update(
        model=str(smollm2_dir), include_base=False, limit=8, max_new_tokens=48, batch_questions=4
    )
    params["tracking"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        PYTHON_ENV: str(VLLM_PYTHON),
        "OMP_NUM_THREADS": str(WORKER_THREADS),
    }


def _stage(root: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sparft", "stage", name],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _journal_batches(root: Path) -> int:
    """Finished batches in the probe's journal (each file starts with a header line)."""
    files = list((root / "data" / "probe.progress").glob("*.jsonl"))
    return sum(max(p.read_text().count("\n") - 1, 0) for p in files)


def _vllm_server(pid: int) -> psutil.Process | None:
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_probe_and_evaluate_through_a_managed_vllm_server(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    hf = _project(tmp_path / "hf", smollm2_dir, "hf")
    served = _project(tmp_path / "vllm", smollm2_dir, "vllm-server")
    for root in (hf, served):
        _ok(_stage(root, "load"))
    _ok(_stage(hf, "probe"))
    _ok(_stage(hf, "evaluate"))

    # the first run: its server killed once two batches are in the journal
    run = subprocess.Popen(
        ["sparft", "stage", "probe"],
        cwd=served,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 900
    while _journal_batches(served) < 2:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the probe never got going"
        time.sleep(0.2)
    server = _vllm_server(run.pid)
    assert server is not None
    os.killpg(server.pid, signal.SIGKILL)  # the API server and its engine process
    out, err = run.communicate(timeout=300)
    assert run.returncode != 0
    message = " ".join((out + err).split())
    assert "the vLLM server sparft started at http://127.0.0.1:" in message
    assert f"exited with code {-signal.SIGKILL}" in message
    assert not (served / "data" / "probe.parquet").exists()
    assert _journal_batches(served) >= 2
    assert not psutil.pid_exists(server.pid) or server.status() == psutil.STATUS_ZOMBIE

    _ok(_stage(served, "probe"))
    summary = json.loads((served / "data" / "probe_summary.json").read_text())
    assert summary["resumed_questions"] >= 8
    assert summary["sampling_seeded"] is True  # whole prefills: the CPU build takes seeds
    assert not (served / "data" / "probe.progress").exists()
    _ok(_stage(served, "evaluate"))

    # greedy float32 on both engines: the same answers, question by question
    a, b = (pd.read_parquet(root / "data" / "probe.parquet") for root in (hf, served))
    assert list(a["id"]) == list(b["id"]) and len(a) == 32
    agree = (a["n_correct"] == b["n_correct"]).mean()
    assert agree >= 0.9, pd.concat([a, b], axis=1)
    assert abs(a["mean_completion_tokens"].mean() - b["mean_completion_tokens"].mean()) < 3
    assert b["solve_rate"].sum() > 0  # SmolLM2 solves some first-grade sums

    x, y = (pd.read_parquet(root / "data" / "eval" / "results.parquet") for root in (hf, served))
    assert len(x) == len(y) == 8
    assert (x["question"].to_numpy() == y["question"].to_numpy()).all()
    matched = sum(
        json.dumps(list(p)) == json.dumps(list(q))
        for p, q in zip(x["extracted"], y["extracted"], strict=True)
    )
    assert matched >= 7, pd.concat([x["extracted"], y["extracted"]], axis=1)


@needs_shared
def test_seeded_sampling_through_the_cpu_build_repeats(tmp_path: Path, smollm2_dir: Path) -> None:
    """Sampled completions with per-request seeds from the server sparft starts: enough long
    GSM8K prompts in flight that a chunked prefill would split one (which, seeded, killed the CPU
    build's engine), the same seed twice gives the same completions, another seed others."""
    from sparft.generation import make_backend
    from sparft.generation.server import serving

    rows = (SHARED_DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:40]
    questions = [json.loads(row)["question"] for row in rows]
    server = ServerConfig(
        python=str(VLLM_PYTHON),
        extra_args=["--enforce-eager"],
        max_model_len=1024,
        log_file=str(tmp_path / "server.log"),
    )
    cfg = GenerationConfig(
        backend="vllm-server",
        model=str(smollm2_dir),
        dtype="float32",
        server=server,
        temperature=0.7,
        max_new_tokens=8,
        batch_size=32,
    )
    with serving(cfg) as served, make_backend(served) as backend:
        assert served.request_seed
        first, other, again = (
            backend.generate(questions, progress=False, seed=seed) for seed in (11, 12, 11)
        )
    in_flight = sorted(r.prompt_tokens for r in again)[: cfg.batch_size]
    assert sum(in_flight) > CPU_CHUNK  # one engine step could not hold them

    def texts(results: list) -> list[str]:
        return [c.text for r in results for c in r.completions]

    assert texts(first) == texts(again)
    assert sum(a != b for a, b in zip(texts(first), texts(other), strict=True)) > len(rows) // 2


def test_heldout_checks_follow_the_live_weights(tmp_path: Path, smollm2_dir: Path) -> None:
    """Greedy checks through a real vLLM server started on the untied serving copy give the
    texts transformers gives, on the base weights and, after the weights change, on the new
    ones: the reload reaches every layer, the output head included."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sparft.prompts import PromptConfig
    from sparft.testing import supervised_steps
    from sparft.training.heldout import HeldoutCurve, ServedChecks

    pairs = [(17, 25), (8, 5), (120, 33), (9, 9), (41, 58), (3, 14), (250, 250), (66, 7)]
    questions = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(len(pairs))],
            "question": [f"What is {a} + {b}?" for a, b in pairs],
            "answer": [str(a + b) for a, b in pairs],
            "difficulty_label": None,
        }
    )
    cfg = ServerConfig(
        python=str(VLLM_PYTHON),
        extra_args=["--enforce-eager"],
        max_model_len=1024,
        log_file=str(tmp_path / "server.log"),
    )
    served = ServedChecks(str(smollm2_dir), cfg, tmp_path / "weights")
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, padding_side="left")
    trainer = SimpleNamespace(model=model, processing_class=tokenizer)
    curves = {}
    for name, server in (("hf", None), ("served", served)):
        curves[name] = HeldoutCurve(
            questions, PromptConfig(), 1, 48, 8, tmp_path / f"{name}.jsonl", server=server
        )
        curves[name].trainer = trainer
    texts: dict[tuple[str, str], list[str]] = {}
    try:
        for policy in ("base", "trained"):
            if policy == "trained":
                supervised_steps(model, tokenizer, questions, steps=4, lr=1e-4)
            for name, curve in curves.items():
                texts[name, policy] = [r.completions[0].text for r in curve.generate(model)]
    finally:
        served.close()
    assert not (tmp_path / "weights").exists()

    def same(a: tuple[str, str], b: tuple[str, str]) -> int:
        return sum(x == y for x, y in zip(texts[a], texts[b], strict=True))

    n = len(pairs)
    assert same(("hf", "base"), ("served", "base")) >= n - 1
    assert same(("hf", "trained"), ("served", "trained")) >= n - 1
    assert same(("hf", "base"), ("hf", "trained")) <= n // 2  # the steps changed the answers


def test_training_rollouts_follow_the_live_weights(tmp_path: Path, smollm2_dir: Path) -> None:
    """``train.rollouts: vllm-server`` on SmolLM2 (fp32): the server's log-probabilities of its
    own samples agree with the trainer's (TRL's importance-sampling ratio near 1); after the
    weights change and before the next step loads them, they no longer agree (the server still
    samples the old policy); once the step loads them, they agree again."""
    import torch

    from sparft.config import Params
    from sparft.curricula import make_curriculum
    from sparft.prompts import PromptConfig
    from sparft.testing import supervised_steps
    from sparft.training import TrainConfig
    from sparft.training.heldout import ServedChecks, rollout_server
    from sparft.training.rollouts import ServedRollouts
    from sparft.training.setup import build_trainer

    pairs = [(17, 25), (8, 5), (120, 33), (9, 9)]
    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(len(pairs))],
            "question": [f"What is {a} + {b}?" for a, b in pairs],
            "answer": [str(a + b) for a, b in pairs],
        }
    )
    cfg = TrainConfig(
        curriculum="uniform", prompts_per_step=4, num_generations=4, max_completion_length=32,
        beta=0.0, precision="fp32", num_threads=WORKER_THREADS, checkpoint_dir=str(tmp_path / "c"),
        rollouts="vllm-server",
    )  # fmt: skip
    server = rollout_server(
        ServerConfig(
            python=str(VLLM_PYTHON),
            extra_args=["--enforce-eager"],
            max_model_len=1024,
            log_file=str(tmp_path / "server.log"),
        )
    )
    served = ServedChecks(str(smollm2_dir), server, tmp_path / "weights")
    curriculum = make_curriculum("uniform", frame, Params(train=cfg))
    trainer = build_trainer(cfg, str(smollm2_dir), frame, curriculum, PromptConfig())
    rollouts = ServedRollouts(served, cfg.max_completion_length, cfg.temperature)
    rollouts.attach(trainer)

    def gap() -> float:
        """Mean |trainer - server| log-probability over the sampled tokens of one step."""
        out = trainer._generate_and_score_completions([{}] * 16)
        mask = out["completion_mask"].bool()
        diff = (out["old_per_token_logps"] - out["sampling_per_token_logps"])[mask]
        return float(diff.abs().mean())

    try:
        trainer.model.train()
        base = gap()
        supervised_steps(trainer.model, trainer.processing_class, frame, steps=4, lr=1e-4)
        trainer.model.train()
        stale = gap()  # the same step: nothing loaded, the server samples the old weights
        trainer.state.global_step = 1
        live = gap()
    finally:
        served.close()
    assert rollouts.loaded_step == 1 and rollouts.load_seconds > 0
    assert base < 0.02 and live < 0.02, (base, stale, live)
    assert stale > 10 * max(base, live), (base, stale, live)
    assert torch.isfinite(torch.tensor([base, stale, live])).all()
