"""The ``vllm`` backend: an in-process ``vllm.LLM`` engine, for code run from a vLLM
environment. vLLM cannot be installed beside Prefect, so the main environment reaches it through
a server instead (``client.py`` and ``server.py``); vllm is imported when a backend is made, not
when this module is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sparft.generation.base import (
    BackendNotAvailableError,
    Completion,
    GenerationBackend,
    Prompt,
    PromptResult,
    _copies,
    encode_prompts,
)
from sparft.generation.config import GenerationConfig


class VLLMBackend(GenerationBackend):
    """An in-process ``vllm.LLM`` engine, for code run from a vLLM environment.

    Prompts are tokenized here, exactly as for ``HFBackend``, and passed as token ids so
    that no special token is added twice.
    """

    def __init__(
        self, cfg: GenerationConfig | None = None, llm: Any = None, **engine_kwargs: Any
    ) -> None:
        """``engine_kwargs`` go to ``vllm.LLM`` (``gpu_memory_utilization``,
        ``max_model_len``, ``tensor_parallel_size``, ...) when no ``llm`` is given."""
        self.cfg = cfg or GenerationConfig()
        try:
            import vllm
        except ImportError as exc:
            raise BackendNotAvailableError(
                "generation.backend 'vllm' needs vLLM in this process, and vLLM is not installed "
                "here: it pins a fastapi (<0.137) that conflicts with prefect's, so it cannot "
                "share sparft's environment. Use backend 'vllm-server': sparft starts a vLLM "
                "server from the separate environment that `make vllm-env` builds (or set "
                "generation.server_url to a running one)."
            ) from exc
        if llm is None:
            from vllm.platforms import current_platform

            from sparft.models import prepare_model

            if current_platform.is_cpu():
                # the CPU engine dies on a seeded request prefilled in chunks (server.py)
                engine_kwargs.setdefault("enable_chunked_prefill", False)
            llm = vllm.LLM(
                model=prepare_model(self.cfg.model),
                dtype=self.cfg.dtype,
                seed=self.cfg.seed,
                **engine_kwargs,
            )
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        *,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        progress: bool = True,
        seed: int | None = None,
    ) -> list[PromptResult]:
        from vllm import SamplingParams

        temp, max_new = self._settings(n, temperature, max_new_tokens)
        encoded = encode_prompts(self.tokenizer, prompts, self.cfg.chat_template)
        params = SamplingParams(
            n=n if temp > 0 else 1,
            temperature=temp,
            top_p=self.cfg.top_p if temp > 0 else 1.0,
            max_tokens=max_new,
            seed=seed,
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=progress
        )
        # vLLM's token_ids include the end-of-sequence token, as HFBackend counts it.
        return [
            _copies(
                PromptResult(
                    prompt_tokens=len(out.prompt_token_ids),
                    completions=[
                        Completion(
                            text=c.text,
                            completion_tokens=len(c.token_ids),
                            finish_reason="length" if c.finish_reason == "length" else "stop",
                        )
                        for c in out.outputs
                    ],
                ),
                n,
            )
            for out in outputs
        ]
