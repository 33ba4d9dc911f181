"""Generation: one interface over transformers, an in-process vLLM engine and a vLLM server.

``client`` holds the config and the backends, ``server`` the vLLM server sparft starts itself;
this package hands their public names on, so ``from sparft.generation import X`` is the way in.
"""

from __future__ import annotations

from sparft.generation.client import (
    BackendNotAvailableError,
    Completion,
    GenerationBackend,
    GenerationConfig,
    GenerationError,
    HFBackend,
    Message,
    Prompt,
    PromptResult,
    ServerError,
    ServerResponseError,
    VLLMBackend,
    VLLMServerBackend,
    encode_prompts,
    make_backend,
    progress_bar,
    render_prompt,
)
from sparft.generation.server import (
    PYTHON_ENV,
    RUNNING,
    UNSEEDED_NOTE,
    ServerConfig,
    ServerStartError,
    VLLMServer,
    WeightLoadError,
    free_port,
    load_weights,
    serving,
    vllm_python,
    wait_healthy,
)

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
