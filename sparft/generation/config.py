"""The ``generation`` section of ``params.yaml`` and its ``server`` subsection. They live
apart from the backends and the server code because ``sparft.config`` builds the params schema
from them: reading the settings then imports pydantic and nothing heavier, and every other
module of this package can import them without importing one another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

VLLM_VENV = Path(".venv-vllm")
PYTHON_ENV = "SPARFT_VLLM_PYTHON"
SMALL_MACHINE_CORES = 4  # at most this many: vLLM keeps no core for its scheduler


class ServerConfig(BaseModel):
    """``generation.server``: the vLLM server sparft starts when ``server_url`` is not set."""

    model_config = ConfigDict(extra="forbid")

    python: str | None = Field(
        None,
        description=f"Interpreter of the vLLM environment; null: ${PYTHON_ENV}, else "
        f"{VLLM_VENV}/bin/python in the project (`make vllm-env` builds it).",
    )
    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(0, ge=0, le=65535, description="Port; 0 picks a free one.")
    startup_timeout_s: float = Field(
        900.0, gt=0, description="Most seconds to wait for /health (CPU: 2-4 min to compile)."
    )
    max_model_len: int = Field(2048, ge=64, description="Longest prompt + completion, tokens.")
    memory_fraction: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="--gpu-memory-utilization: share of GPU memory, or on the CPU build of "
        "host memory, that vLLM reserves.",
    )
    cpu_kv_cache_gib: int = Field(
        4, ge=1, description="VLLM_CPU_KVCACHE_SPACE for the CPU build: KV cache size in GiB."
    )
    cpu_reserved_cores: int | None = Field(
        None,
        ge=0,
        description="CPU build: cores vLLM keeps for its scheduler, off the model's threads "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU); null: none on a machine of at most "
        f"{SMALL_MACHINE_CORES} cores, where vLLM's one reserved core is a large share of "
        "its compute, else vLLM's own choice.",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="More `vllm serve` arguments, passed as they are."
    )
    log_file: str = Field(
        "data/logs/vllm-server.log", description="Where the server's output goes."
    )


class GenerationConfig(BaseModel):
    """The ``generation`` section of params.yaml: which engine samples, and how."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["hf", "vllm", "vllm-server"] = Field(
        "hf",
        description="Engine: 'hf' (transformers, CPU or GPU), 'vllm' (in-process vLLM engine, "
        "GPU environment with the vllm extra), 'vllm-server' (an OpenAI-compatible HTTP server).",
    )
    model: str = Field(
        "smollm2-135m",
        description="A model preset (see `sparft models list`), a local folder, or a Hugging Face "
        "id (online use only). For 'vllm-server', the served model's name (a server that "
        "lists a single model under another name gets that one).",
    )
    max_new_tokens: int = Field(256, ge=1, description="Most tokens generated per completion.")
    temperature: float = Field(
        0.7, ge=0.0, description="Sampling temperature; 0 means greedy decoding."
    )
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1 keeps the full distribution."
    )
    batch_size: int = Field(
        32,
        ge=1,
        description="Sequences (prompts x samples) generated together by 'hf'; concurrent "
        "requests for 'vllm-server'. At least one prompt per batch.",
    )
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads (torch.set_num_threads); unset keeps torch's."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' is float32 on CPU, bfloat16/float16 on GPU."
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    server_url: str | None = Field(
        None,
        description="Base URL of the OpenAI-compatible server for 'vllm-server', e.g. "
        "http://127.0.0.1:8000/v1 (a URL without /v1 gets it appended). Unset: sparft starts "
        "a vLLM server from the vLLM environment (generation.server) and stops it afterwards.",
    )
    server: ServerConfig = Field(
        default_factory=ServerConfig, description="The vLLM server sparft starts itself."
    )
    request_seed: bool = Field(
        True,
        description="Send each 'vllm-server' request its own seed (reproducible sampling). "
        "Turn off for a server on vLLM's CPU build started with chunked prefill, whose engine "
        "dies on seeded requests (start it with --no-enable-chunked-prefill to keep seeds); "
        "sparft does either itself for a CPU server it starts.",
    )
    seed: int = Field(0, description="Seed of the sampling random stream.")
    chat_template: bool = Field(
        True,
        description="Apply the tokenizer's chat template to prompts given as plain strings "
        "(as one user message); off sends them as raw text.",
    )
