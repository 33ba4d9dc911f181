"""Small things tests and benchmarks share: pipeline settings small enough for a run on a tiny
model, that tiny model (a 2-layer Llama with a byte-level BPE tokenizer trained on the spot),
built from a config with nothing downloaded, and loading a benchmark script as a module."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from sparft.config import as_overrides

# Pipeline settings small enough for a run with the tiny model (tests and the CI-size
# orchestration benchmark): 9 questions, 3 clusters, 2 training steps.
TINY_SETTINGS: dict[str, dict[str, Any]] = {
    "arithmetic": {"per_grade": 3, "grades": [1, 2, 3]},
    "probe": {"k": 2, "max_new_tokens": 8},
    "cluster": {"k": 3},
    "select": {"budget": 6},
    "train": {"max_steps": 2, "num_generations": 2, "max_completion_length": 8, "num_threads": 1},
    "evaluate": {"max_new_tokens": 8, "limit": 4},
    "compare": {"scale": {}},
}


def load_script(path: Path, name: str) -> ModuleType:
    """The script at ``path`` imported as module ``name`` (a benchmark is no package): registered
    in ``sys.modules`` first, since its dataclasses look their module up while being built."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_project(
    root: Path,
    model: Path,
    source: Path,
    settings: dict[str, dict[str, Any]] | None = None,
    with_code: bool = True,
) -> Path:
    """A project folder at ``root``: ``source``'s params.yaml with ``TINY_SETTINGS``, the model
    ``model`` and then ``settings`` section by section, and (``with_code``) a copy of the
    ``sparft`` package and ``dvc.yaml``, which the stages' cache keys read."""
    import shutil

    import yaml

    root.mkdir(parents=True, exist_ok=True)
    if with_code:
        shutil.copytree(
            source / "sparft", root / "sparft", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(source / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((source / "params.yaml").read_text())
    params["generation"]["model"] = str(model)
    for section, values in [*TINY_SETTINGS.items(), *(settings or {}).items()]:
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def tiny_overrides() -> list[str]:
    """``TINY_SETTINGS`` as ``section.key=value`` overrides (``--set``)."""
    return as_overrides(
        {
            f"{section}.{key}": value
            for section, values in TINY_SETTINGS.items()
            for key, value in values.items()
        }
    )


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


def tiny_llama_config(tokenizer: Any) -> Any:
    """The tiny model's shape (2 layers of width 64) for any tokenizer."""
    from transformers import LlamaConfig

    return LlamaConfig(
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


def build_tiny_lm(folder: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained here, saved to ``folder``.

    The weights are random, so the end-of-sequence row of the output layer is tied to a
    token the model often predicts: greedy outputs then stop after a few tokens for some
    prompts and run to the length limit for others, which the tests need.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

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
    config = tiny_llama_config(tokenizer)
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


def supervised_steps(model: Any, tokenizer: Any, questions: Any, steps: int, lr: float) -> None:
    """``steps`` AdamW steps on "question -> \\boxed{answer}" for the first questions: weights
    that answer differently from the base, without any GRPO machinery."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rows = questions.head(8)
    texts = [
        tokenizer.apply_chat_template(
            [
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"The answer is \\boxed{{{a}}}."},
            ],
            tokenize=False,
        )
        for q, a in zip(rows["question"], rows["answer"], strict=True)
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def sum_questions(count: int, plus: int) -> Any:
    """``count`` questions "What is i + plus?" with their answers, as a training frame."""
    import pandas as pd

    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(count)],
            "question": [f"What is {i} + {plus}?" for i in range(count)],
            "answer": [str(i + plus) for i in range(count)],
        }
    )


def parity_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1 for a completion of odd length: a reward the untrained tiny model earns in some rows
    of a group and not others, so its groups carry a gradient (correctness never would)."""
    from sparft.answers import completion_text

    return [float(len(completion_text(c)) % 2) for c in completions]


def tiny_trainer(cfg: Any, model_dir: Path, frame: Any, informative: bool = False) -> Any:
    """The curriculum trainer on ``frame`` with ``cfg``'s curriculum; ``informative`` rewards
    ``parity_reward`` (and format) in place of correctness."""
    from sparft.config import Params
    from sparft.curricula import make_curriculum
    from sparft.prompts import PromptConfig
    from sparft.rewards import format_reward
    from sparft.training.setup import build_trainer

    curriculum = make_curriculum(cfg.curriculum, frame, Params(train=cfg))
    rewards = [parity_reward, format_reward] if informative else None
    return build_trainer(
        cfg, str(model_dir), frame, curriculum, PromptConfig(), reward_funcs=rewards
    )
