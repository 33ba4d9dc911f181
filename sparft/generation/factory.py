"""``make_backend``: the backend that ``generation.backend`` names, built from the settings.
It is the one module that knows every engine: callers hand it a ``GenerationConfig`` and get a
``GenerationBackend``; for ``vllm-server`` without a ``server_url`` it also starts a server,
which the backend stops when it is closed.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.generation.base import GenerationBackend
from sparft.generation.client import VLLMServerBackend
from sparft.generation.config import GenerationConfig
from sparft.generation.hf import HFBackend
from sparft.generation.server import serving
from sparft.generation.vllm import VLLMBackend

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def make_backend(
    cfg: GenerationConfig,
    model: Any = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> GenerationBackend:
    """The backend ``cfg.backend`` names; ``model`` is a transformers model for 'hf' or a
    ``vllm.LLM`` for 'vllm'; ``tokenizer`` also serves 'vllm-server' for token counts."""
    if cfg.backend == "hf":
        return HFBackend(cfg, model=model, tokenizer=tokenizer)
    if cfg.backend == "vllm":
        return VLLMBackend(cfg, llm=model)
    if model is not None:
        raise ValueError("backend 'vllm-server' runs the model in the server; pass no model")
    stack = ExitStack()
    if not cfg.server_url:  # a server of our own, which the backend stops when it is closed
        cfg = stack.enter_context(serving(cfg))
    try:
        if tokenizer is None and Path(cfg.model).is_dir():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        backend = VLLMServerBackend(cfg, tokenizer=tokenizer)
    except BaseException:
        stack.close()
        raise
    backend.owned = stack
    return backend
