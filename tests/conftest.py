"""Shared fixtures: a tiny causal LM built from scratch, and the real SmolLM2 preset.

Nothing may come from a model hub here, so the hub is switched off before anything
imports transformers.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="sparft-test-prefect-"))


def pytest_configure(config: pytest.Config) -> None:
    """Prefect keeps its database in PREFECT_HOME: tests use a fresh one, never ~/.prefect,
    and never a server the user's environment points at. Set before test modules import it."""
    os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_mlflow_uri() -> Any:
    """``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI in the environment, which
    sparft honours as an override: without this, one test's store leaks into the next."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


SHARED_DATA = Path(
    os.environ.get(
        "SPARFT_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)
needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"shared benchmark data not found at {SHARED_DATA}"
)

# Pipeline settings small enough for a test run with the tiny model (tests and the CI-size
# orchestration benchmark): 9 questions, 3 clusters, 2 training steps.
TINY_SETTINGS: dict[str, dict[str, Any]] = {
    "arithmetic": {"per_grade": 3, "grades": [1, 2, 3]},
    "probe": {"k": 2, "max_new_tokens": 8},
    "cluster": {"k": 3},
    "select": {"budget": 6},
    "train": {"max_steps": 2, "num_generations": 2, "max_completion_length": 8, "num_threads": 1},
    "evaluate": {"max_new_tokens": 8, "limit": 4},
}


def tiny_overrides() -> list[str]:
    """``TINY_SETTINGS`` as ``section.key=value`` overrides (``--set``)."""
    return [
        f"{section}.{key}={json.dumps(value)}"
        for section, values in TINY_SETTINGS.items()
        for key, value in values.items()
    ]


TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "an old man", "the robot", "she"]
_VERBS = ["eats", "sees", "likes", "builds", "counts", "adds", "writes", "finds"]
_OBJECTS = ["an apple", "two numbers", "a small house", "the answer", "seven stones", "the sum"]


def tiny_sentences(count: int, seed: int = 0) -> list[str]:
    """Short varied sentences: the BPE corpus, and prompts of different lengths for tests."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        if rng.random() < 0.6:
            words.append(f"{rng.randint(0, 99)} + {rng.randint(0, 99)} = ?")
        out.append(" ".join(words))
    return out


def build_tiny_lm(folder: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained here, saved to ``folder``.

    The weights are random, so the end-of-sequence row of the output layer is tied to a
    token the model often predicts: greedy outputs then stop after a few tokens for some
    prompts and run to the length limit for others, which the tests need.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tiny_sentences(400), trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        chat_template=TINY_CHAT_TEMPLATE,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend with other processes
    try:
        probe_eos_token(model, tokenizer)
    finally:
        torch.set_num_threads(threads)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def probe_eos_token(model: Any, tokenizer: Any) -> None:
    """Point the end-of-sequence row at the third most frequent greedy token."""
    import torch

    eos = tokenizer.eos_token_id
    with torch.no_grad():
        model.lm_head.weight.mul_(5.0)  # sharper logits: near-ties (numeric flakiness) unlikely
        seen: Counter[int] = Counter()
        for text in tiny_sentences(40, seed=1):
            ids = tokenizer(text, return_tensors="pt")
            out = model.generate(
                **ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            seen.update(out[0, ids["input_ids"].shape[1] :].tolist())
        common = [tok for tok, _ in seen.most_common() if tok != eos]
        model.lm_head.weight[eos] = 1.2 * model.lm_head.weight[common[2]]


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random causal LM with a real offline tokenizer and chat template."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def sparft_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$SPARFT_CACHE`` when set (conversions reused across runs), else a session tmp dir."""
    env = os.environ.get("SPARFT_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("sparft-cache")


@pytest.fixture(scope="session")
def smollm2_dir(sparft_cache: Path) -> Path:
    """The real SmolLM2-135M-Instruct, converted from its GGUF (about 30 s the first time)."""
    from sparft.models import prepare_model

    return Path(prepare_model("smollm2-135m", sparft_cache))
