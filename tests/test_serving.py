"""The vLLM server sparft starts itself (``sparft.generation.server``), against a stand-in
server run the way the real one is (``python -m vllm.entrypoints.openai.api_server ...`` from a
separate environment): started on 127.0.0.1 and stopped, whole prefills and per-request seeds on
a CPU build, a clear error and a resumable probe when it dies mid-batch, its log when it fails
to start."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import fake_vllm_python

from sparft.arithmetic import ArithmeticConfig
from sparft.config import load_params
from sparft.data import DataConfig, load_dataset
from sparft.generation import GenerationConfig, ServerError, make_backend
from sparft.generation.config import ServerConfig
from sparft.generation.server import (
    RUNNING,
    UNSEEDED_NOTE,
    ServerStartError,
    VLLMServer,
    WeightLoadError,
    load_weights,
    serving,
)
from sparft.probe import Journal, ProbeConfig, fingerprint, probe_sharded
from sparft.prompts import PromptConfig
from sparft.training.heldout import SERVER_ENV, HeldoutCurve, ServedChecks, SharedServer


def _config(tmp_path: Path, python: Path, tiny_lm_dir: Path) -> GenerationConfig:
    server = ServerConfig(
        python=str(python), startup_timeout_s=60, log_file=str(tmp_path / "server.log")
    )
    return GenerationConfig(
        backend="vllm-server", model=str(tiny_lm_dir), server=server, batch_size=2
    )


def _requests(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    ("cpu", "extra_args", "seeded", "added"),
    [
        (False, [], True, []),
        # the CPU build prefills whole prompts, where seeded requests do not kill its engine
        (True, [], True, ["--no-enable-chunked-prefill"]),
        (True, ["--no-enable-chunked-prefill"], True, []),  # added once
        # chunked prefill asked for: no seeds, and the user is told
        (True, ["--enable-chunked-prefill"], False, []),
    ],
)
def test_started_on_loopback_seeded_unless_cpu_chunked_and_stopped(
    tmp_path: Path,
    tiny_lm_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cpu: bool,
    extra_args: list[str],
    seeded: bool,
    added: list[str],
) -> None:
    requests = tmp_path / "requests.jsonl"
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(requests))
    cfg = _config(tmp_path, fake_vllm_python(tmp_path, cpu), tiny_lm_dir)
    cfg.server.extra_args = extra_args
    with serving(cfg) as served:
        assert served.server_url and served.server_url.startswith("http://127.0.0.1:")
        assert served.request_seed is seeded
        server = RUNNING[served.server_url]
        with make_backend(served) as backend:
            (result,) = backend.generate(["What is 2+2?"], n=3, temperature=1.0, progress=False)
        assert [c.text for c in result.completions] == ["The answer is \\boxed{4}."] * 3
    assert server.exit_code() is not None  # stopped with the block
    assert served.server_url not in RUNNING
    argv = _started_with(Path(cfg.server.log_file))["argv"]
    seed_at = argv.index("--seed")
    assert argv[seed_at + 2 :] == added + extra_args
    sent = _requests(requests)
    assert len(sent) == 3
    assert all(("seed" in body) is seeded for body in sent)
    assert len({body.get("seed") for body in sent}) == (3 if seeded else 1)
    assert (UNSEEDED_NOTE in " ".join(capsys.readouterr().err.split())) is not seeded


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
    import sparft.generation.server as server_module

    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    monkeypatch.delenv(server_module.RESERVED_ENV, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(server_module, "CPUINFO", cpuinfo)
    monkeypatch.setattr(server_module, "available_cores", lambda: cores)
    cfg = _config(tmp_path, fake_vllm_python(tmp_path, cpu), tiny_lm_dir)
    with serving(cfg):
        pass
    started = _started_with(Path(cfg.server.log_file))
    assert started["argv"][started["argv"].index("--dtype") + 1] == dtype
    assert started["reserved"] == reserved


def test_reserved_cores_set_in_params_win(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sparft.generation.server as server_module

    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    monkeypatch.setenv(server_module.RESERVED_ENV, "0")
    cfg = _config(tmp_path, fake_vllm_python(tmp_path, True), tiny_lm_dir)
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
    backend = make_backend(_config(tmp_path, fake_vllm_python(tmp_path, True), tiny_lm_dir))
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
    cfg = _config(tmp_path, fake_vllm_python(tmp_path, True), tiny_lm_dir)
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
    generation = _config(tmp_path, fake_vllm_python(tmp_path, True), tiny_lm_dir)
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


# ------------------------------------------------ weights replaced in place: held-out checks


def test_load_weights_reloads_then_empties_the_prefix_cache(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = tmp_path / "requests.jsonl"
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(requests))
    cfg = _config(tmp_path, fake_vllm_python(tmp_path, True), tiny_lm_dir)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"")
    server = VLLMServer(str(tiny_lm_dir), cfg.server, dev_mode=True)
    url = server.start(progress=False)
    try:
        assert _started_with(Path(cfg.server.log_file))["dev_mode"] == "1"
        assert load_weights(url, weights) >= 0
    finally:
        server.stop()
    reload, reset = _requests(requests)
    assert reload["body"]["method"] == "reload_weights" and reload["weights"]
    assert reload["body"]["kwargs"] == {"weights_path": str(weights.resolve())}
    assert reset["endpoint"] == "/reset_prefix_cache"
    plain = VLLMServer(str(tiny_lm_dir), cfg.server)  # no dev mode: no reload endpoint
    url = plain.start(progress=False)
    try:
        with pytest.raises(WeightLoadError, match="VLLM_SERVER_DEV_MODE=1"):
            load_weights(url, weights)
    finally:
        plain.stop()


def test_dev_mode_binds_to_loopback_only(tmp_path: Path, tiny_lm_dir: Path) -> None:
    cfg = ServerConfig(python=str(fake_vllm_python(tmp_path, True)), host="0.0.0.0")
    with pytest.raises(ServerStartError, match="loopback"):
        VLLMServer(str(tiny_lm_dir), cfg, dev_mode=True).start(progress=False)


def _served_curve(tmp_path: Path, checks: ServedChecks) -> HeldoutCurve:
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    questions = pd.DataFrame(
        {"id": ["q1", "q2"], "question": ["1+1", "2+2"], "answer": ["2", "4"]}
    ).assign(difficulty_label=None)
    curve = HeldoutCurve(questions, PromptConfig(), 5, 16, 8, tmp_path / "h.jsonl", server=checks)
    path = checks.model
    curve.trainer = SimpleNamespace(
        model=AutoModelForCausalLM.from_pretrained(path),
        processing_class=AutoTokenizer.from_pretrained(path),
        curriculum=None,
    )
    return curve


def test_served_checks_load_the_live_weights_before_each_check(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each check writes the policy's weights, loads them into the server it started, empties
    the prefix cache, then asks one greedy request per question; closing stops the server and
    removes the weights."""
    requests = tmp_path / "requests.jsonl"
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(requests))
    monkeypatch.delenv(SERVER_ENV, raising=False)
    cfg = _config(tmp_path, fake_vllm_python(tmp_path, True), tiny_lm_dir)
    checks = ServedChecks(str(tiny_lm_dir), cfg.server, tmp_path / "ckpt" / "heldout-weights")
    curve = _served_curve(tmp_path, checks)
    for step in (0, 5):
        point = curve.check(step)
        assert point["accuracy"] == 0.5 and point["tokens"] == [9, 9]  # the fake says 4
    assert checks.owned is not None
    server = checks.owned.server
    assert server is not None and "--dtype float32" in " ".join(server.command(Path("p"), 1))
    curve.close()
    assert server.exit_code() is not None and not checks.weights_dir.exists()
    sent = _requests(requests)
    endpoints = [r.get("endpoint", "completion") for r in sent]
    assert endpoints == ["/collective_rpc", "/reset_prefix_cache", "completion", "completion"] * 2
    assert all(r["weights"] for r in sent if r.get("endpoint") == "/collective_rpc")
    answers = [r for r in sent if "messages" in r]
    assert all(r["temperature"] == 0 and r["max_tokens"] == 16 for r in answers)
    assert all("seed" not in r for r in answers)


def test_one_shared_server_serves_every_run(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs that find $SPARFT_HELDOUT_SERVER_URL start no server and do not stop that one."""
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    cfg = _config(tmp_path, fake_vllm_python(tmp_path, True), tiny_lm_dir)
    shared = SharedServer(str(tiny_lm_dir), cfg.server, "float32")
    url = shared.url()
    assert shared.url() == url
    monkeypatch.setenv(SERVER_ENV, url)
    try:
        for run in ("a", "b"):
            checks = ServedChecks(str(tiny_lm_dir), cfg.server, tmp_path / run / "weights")
            curve = _served_curve(tmp_path / run, checks)
            assert curve.check(0)["accuracy"] == 0.5
            curve.close()
            assert checks.owned is None
        log = Path(cfg.server.log_file).read_text()
        assert log.count("fake vllm started") == 1
        assert shared.server is not None and shared.server.exit_code() is None
    finally:
        shared.close()
    assert shared.server is None


def test_shared_server_only_where_runs_would_start_their_own(
    tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SERVER_ENV, raising=False)
    base = [f"train.model={tiny_lm_dir}", "train.heldout.every=2"]
    served = [*base, "train.heldout.backend=vllm-server"]
    root = Path(__file__).parents[1] / "params.yaml"
    assert SharedServer.for_params(load_params(root, base)) is None  # hf checks
    shared = SharedServer.for_params(load_params(root, served))
    assert shared is not None and (shared.model, shared.dtype) == (str(tiny_lm_dir), "float32")
    bf16 = SharedServer.for_params(load_params(root, [*served, "train.precision=bf16"]))
    assert bf16 is not None and bf16.dtype == "bfloat16" and bf16.key != shared.key
    named = [*served, "train.heldout.server_url=http://127.0.0.1:1/v1"]
    assert SharedServer.for_params(load_params(root, named)) is None
    monkeypatch.setenv(SERVER_ENV, "http://127.0.0.1:1/v1")
    assert SharedServer.for_params(load_params(root, served)) is None
