"""The vLLM server sparft starts itself (``sparft.serving``), against a stand-in server run the
way the real one is (``python -m vllm.entrypoints.openai.api_server ...`` from a separate
environment): started on 127.0.0.1 and stopped, no per-request seed to a CPU build, a clear
error and a resumable probe when it dies mid-batch, its log when it fails to start."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from sparft.arithmetic import ArithmeticConfig
from sparft.data import DataConfig, load_dataset
from sparft.generation import GenerationConfig, ServerError, make_backend
from sparft.probe import Journal, ProbeConfig, fingerprint, probe_sharded
from sparft.prompts import PromptConfig
from sparft.serving import RUNNING, UNSEEDED_NOTE, ServerConfig, ServerStartError, serving

FAKE = Path(__file__).parent / "scripts" / "fake_vllm_server.py"


def _environment(tmp_path: Path, cpu: bool) -> Path:
    """A 'vLLM environment' whose interpreter answers sparft's build check (CPU build or not)
    and runs the stand-in in place of the vLLM module."""
    python = tmp_path / ("cpu" if cpu else "gpu") / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ]; then exit {0 if cpu else 1}; fi\n'
        "shift 2  # -m vllm.entrypoints.openai.api_server\n"
        f'exec "{sys.executable}" "{FAKE}" "$@"\n'
    )
    python.chmod(0o755)
    return python


def _config(tmp_path: Path, python: Path, tiny_lm_dir: Path) -> GenerationConfig:
    server = ServerConfig(
        python=str(python), startup_timeout_s=60, log_file=str(tmp_path / "server.log")
    )
    return GenerationConfig(
        backend="vllm-server", model=str(tiny_lm_dir), server=server, batch_size=2
    )


def _requests(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("cpu", [True, False])
def test_started_on_loopback_seeded_unless_cpu_and_stopped(
    tmp_path: Path,
    tiny_lm_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cpu: bool,
) -> None:
    requests = tmp_path / "requests.jsonl"
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(requests))
    cfg = _config(tmp_path, _environment(tmp_path, cpu), tiny_lm_dir)
    with serving(cfg) as served:
        assert served.server_url and served.server_url.startswith("http://127.0.0.1:")
        assert served.request_seed is not cpu
        server = RUNNING[served.server_url]
        with make_backend(served) as backend:
            (result,) = backend.generate(["What is 2+2?"], n=3, temperature=1.0, progress=False)
        assert [c.text for c in result.completions] == ["The answer is \\boxed{4}."] * 3
    assert server.exit_code() is not None  # stopped with the block
    assert served.server_url not in RUNNING
    sent = _requests(requests)
    assert len(sent) == 3
    assert all(("seed" in body) is not cpu for body in sent)
    assert (UNSEEDED_NOTE in " ".join(capsys.readouterr().err.split())) is cpu


@pytest.mark.parametrize(
    ("cpu", "flags", "cores", "dtype", "reserved"),
    [
        (True, "fpu avx2 fma", 2, "float32", "0"),  # this machine's kind: no bf16, two cores
        (True, "avx512f avx512_bf16 amx_bf16", 2, "auto", "0"),
        (True, "avx512f amx_bf16", 32, "auto", None),  # vLLM's own reservation
        (False, "fpu avx2", 2, "auto", "0"),  # a GPU build keeps the model's dtype
    ],
)
def test_cpu_server_dtype_and_cores_follow_the_machine(
    tmp_path: Path,
    tiny_lm_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    cpu: bool,
    flags: str,
    cores: int,
    dtype: str,
    reserved: str | None,
) -> None:
    import sparft.serving as serving_module

    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    monkeypatch.delenv(serving_module.RESERVED_ENV, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(serving_module, "CPUINFO", cpuinfo)
    monkeypatch.setattr(serving_module, "available_cores", lambda: cores)
    cfg = _config(tmp_path, _environment(tmp_path, cpu), tiny_lm_dir)
    with serving(cfg):
        pass
    started = _started_with(Path(cfg.server.log_file))
    assert started["argv"][started["argv"].index("--dtype") + 1] == dtype
    assert started["reserved"] == reserved


def test_reserved_cores_set_in_params_win(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sparft.serving as serving_module

    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    monkeypatch.setenv(serving_module.RESERVED_ENV, "0")
    cfg = _config(tmp_path, _environment(tmp_path, True), tiny_lm_dir)
    cfg.server.cpu_reserved_cores = 1
    with serving(cfg):
        pass
    assert _started_with(Path(cfg.server.log_file))["reserved"] == "1"
    with pytest.raises(ValueError, match="cpu_reserved_cores"):
        ServerConfig(cpu_reserved_cores=-1)


def _started_with(log: Path) -> dict:
    (line,) = [x for x in log.read_text().splitlines() if x.startswith("fake vllm started")]
    return json.loads(line.removeprefix("fake vllm started "))


def test_make_backend_owns_the_server_it_starts(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    backend = make_backend(_config(tmp_path, _environment(tmp_path, True), tiny_lm_dir))
    (server,) = RUNNING.values()
    assert backend.generate(["hi"], progress=False)[0].completions[0].completion_tokens == 9
    backend.close()
    assert server.exit_code() is not None and not RUNNING


def test_no_vllm_environment_says_how_to_make_one(tiny_lm_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "nowhere" / "python", tiny_lm_dir)
    with pytest.raises(ServerStartError, match=r"make vllm-env"), serving(cfg):
        pass


def test_failed_start_shows_the_server_log(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    monkeypatch.setenv("FAKE_VLLM_FAIL_START", "1")
    cfg = _config(tmp_path, _environment(tmp_path, True), tiny_lm_dir)
    with (
        pytest.raises(ServerStartError, match=r"exited with code 3(.|\n)*no such model"),
        serving(cfg),
    ):
        pass


def test_server_dying_mid_probe_is_named_and_the_probe_resumes(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame, _ = load_dataset(DataConfig(), ArithmeticConfig(per_grade=2, grades=[1, 2, 3, 4, 5]))
    cfg = ProbeConfig(k=1, batch_questions=2, max_new_tokens=8)
    generation = _config(tmp_path, _environment(tmp_path, True), tiny_lm_dir)
    journal = tmp_path / "probe.progress"
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    monkeypatch.setenv("FAKE_VLLM_DIE_AFTER", "5")  # two batches of two, then mid-batch
    with (
        pytest.raises(ServerError, match=r"exited with code 17(.|\n)*fake engine died"),
        serving(generation) as served,
    ):
        probe_sharded(frame, served, cfg, PromptConfig(), journal)
    saved = Journal(journal, fingerprint(frame, cfg, PromptConfig(), generation.model))
    assert saved.finished_rows() == 4

    monkeypatch.delenv("FAKE_VLLM_DIE_AFTER")
    with serving(generation) as served:
        run = probe_sharded(frame, served, cfg, PromptConfig(), journal)
    assert run.resumed == 4
    assert list(run.probed["id"]) == list(frame["id"])
    assert isinstance(run.probed, pd.DataFrame) and run.probed["solve_rate"].notna().all()
