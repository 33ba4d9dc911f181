"""One generation interface over transformers, an in-process vLLM engine and a vLLM server.

One job per module: ``config`` holds the ``generation`` settings, ``base`` the prompt and
result types and the ``GenerationBackend`` contract, ``hf``, ``vllm`` and ``client`` the three
engines, ``server`` the vLLM server sparft starts itself, and ``factory`` picks the backend the
settings name. This package hands their public names on, so ``from sparft.generation import X``
is the way in; importing it stays cheap (torch, transformers, vllm and httpx load when a backend
is made), so ``sparft.config`` can take ``GenerationConfig`` from here.
"""

from __future__ import annotations

from sparft.generation.base import (
    BackendNotAvailableError,
    Completion,
    GenerationBackend,
    GenerationError,
    Message,
    Prompt,
    PromptResult,
    encode_prompts,
    progress_bar,
    render_prompt,
)
from sparft.generation.client import ServerError, ServerResponseError, VLLMServerBackend
from sparft.generation.config import PYTHON_ENV, GenerationConfig, ServerConfig
from sparft.generation.factory import make_backend
from sparft.generation.hf import HFBackend
from sparft.generation.server import (
    RUNNING,
    UNSEEDED_NOTE,
    ServerStartError,
    VLLMServer,
    WeightLoadError,
    free_port,
    load_weights,
    serving,
    vllm_python,
    wait_healthy,
)
from sparft.generation.vllm import VLLMBackend

__all__ = [
    "PYTHON_ENV",
    "RUNNING",
    "UNSEEDED_NOTE",
    "BackendNotAvailableError",
    "Completion",
    "GenerationBackend",
    "GenerationConfig",
    "GenerationError",
    "HFBackend",
    "Message",
    "Prompt",
    "PromptResult",
    "ServerConfig",
    "ServerError",
    "ServerResponseError",
    "ServerStartError",
    "VLLMBackend",
    "VLLMServer",
    "VLLMServerBackend",
    "WeightLoadError",
    "encode_prompts",
    "free_port",
    "load_weights",
    "make_backend",
    "progress_bar",
    "render_prompt",
    "serving",
    "vllm_python",
    "wait_healthy",
]
