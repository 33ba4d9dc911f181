"""Training rollouts through a vLLM server (``train.rollouts: vllm-server``).

TRL's ``rollout_func`` hook hands each generation round's prompts (one row per rollout: the
curriculum's per-prompt counts are already spelled out as rows) to ``ServedRollouts``, which
samples them on a vLLM server and returns the prompt and completion token ids with the sampled
tokens' log-probabilities. Before the first round of each optimizer step the policy's weights
are loaded into the server in place, the held-out checks' mechanism
(``sparft.training.heldout``), so the server samples from the policy being trained.

The server reports log-probabilities after temperature (``--logprobs-mode
processed_logprobs``), and ``attach`` turns on TRL's importance-sampling correction for them:
TRL then weighs each token by the ratio of the trainer's probability to the server's, as in
its own vLLM modes. TRL's own vLLM modes need vLLM (and NCCL) in the training process, which
prefect's pins forbid; this path needs only HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter
from typing import Any


class ServedRollouts:
    """TRL's ``rollout_func`` on a vLLM server, with the policy's weights loaded into it at
    each new optimizer step. ``checks`` is the held-out checks' ``ServedChecks``: its server
    (named, shared by the compare flow, or started for the run) serves the rollouts too, so a
    run holds one server."""

    def __init__(
        self,
        checks: Any,
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        concurrency: int = 64,
        seed: int = 0,
    ) -> None:
        self.checks = checks
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.concurrency = concurrency
        self.seed = seed
        self.loaded_step = -1
        self._model: dict[str, str] = {}
        self.load_seconds = 0.0
        self._calls = 0

    def attach(self, trainer: Any) -> None:
        """Make ``trainer`` call this for its rollouts and correct for the sampler: TRL applies
        its importance-sampling correction only under ``use_vllm``, and calls
        ``vllm_generation.sync_weights`` before a rollout at a new step."""
        trainer.rollout_func = self
        trainer.use_vllm = True
        trainer.vllm_importance_sampling_correction = True
        trainer.vllm_generation = self
        trainer._last_loaded_step = -1

    def sync_weights(self) -> None:
        """TRL's call at a new optimizer step. Nothing to do here: each round compares the
        server's owner token with this step's and loads the weights where they differ."""

    def _token(self, step: int) -> str:
        """Names this run's weights at ``step``: the processes of one run share the weights
        folder, so they load once; another run (a parallel variant) or a check has another."""
        return f"rollouts {Path(self.checks.weights_dir).resolve()} step {step}"

    def _load(self, trainer: Any, policy: Any, url: str) -> None:
        """The policy's weights into the server, unless this run's weights of this step are
        already there (held under ``server_lock``)."""
        from sparft.training.heldout import weights_owner

        step = trainer.state.global_step
        token = self._token(step)
        if weights_owner(url) != token:
            started = perf_counter()
            self.checks.load(policy, url, token)
            spent = perf_counter() - started  # writing the file included
            self.load_seconds += spent
            trainer._metrics["train"]["time/weight_load_s"].append(spent)
        self.loaded_step = step

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        """Prompt ids as TRL tokenises them, one sampled completion per prompt row, and each
        completion token's log-probability under the served policy. The server is held for the
        round (``server_lock``): a parallel run sharing it loads its own weights only after."""
        from sparft.training.heldout import server_lock

        prompt_ids = trainer._tokenize_prompts(prompts)[0]
        policy = trainer.accelerator.unwrap_model(trainer.model)
        url = self.checks.connect(policy)
        base = self._seed_base()
        seeds = [None if base is None else base + i for i in range(len(prompt_ids))]
        workers = max(1, min(self.concurrency, len(prompts)))
        with server_lock(url), ThreadPoolExecutor(max_workers=workers) as pool:
            self._load(trainer, policy, url)
            answers = list(pool.map(self._sample, [url] * len(seeds), prompt_ids, seeds))
        return {
            "prompt_ids": [list(ids) for ids in prompt_ids],
            "completion_ids": [ids for ids, _ in answers],
            "logprobs": [lps for _, lps in answers],
        }

    def _seed_base(self) -> int | None:
        """Per-request seeds, different at every call and process; None where the server
        cannot take them (vLLM's CPU build with chunked prefill) or is not known (a server
        named by URL)."""
        self._calls += 1
        owned = self.checks.owned
        if owned is None or owned.server is None or not owned.server.seedable:
            return None
        rank = int(os.environ.get("RANK", "0"))
        return (self.seed * 1_000_003 + self._calls * 100_003 + rank * 10_007) % 2**31

    def _served_model(self, url: str) -> str:
        """The model name the server answers to (its folder, when sparft started it)."""
        if url not in self._model:
            from sparft.generation import GenerationConfig, VLLMServerBackend

            cfg = GenerationConfig(backend="vllm-server", model=self.checks.model, server_url=url)
            backend = VLLMServerBackend(cfg)
            try:
                self._model[url] = backend.served_model()
            finally:
                backend.close()
        return self._model[url]

    def _sample(
        self, url: str, prompt_ids: Sequence[int], seed: int | None
    ) -> tuple[list[int], list[float | None]]:
        import httpx

        from sparft.generation.client import ServerError, ServerResponseError
        from sparft.generation.server import death_notice

        body: dict[str, Any] = {
            "model": self._served_model(url),
            "prompt": list(prompt_ids),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "n": 1,
            "logprobs": 0,
            "return_token_ids": True,
            "skip_special_tokens": False,
        }
        if seed is not None:
            body["seed"] = seed
        endpoint = f"{url.rstrip('/')}/completions"
        timeout = self.checks.server_cfg.startup_timeout_s
        try:
            response = httpx.post(endpoint, json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            notice = death_notice(url) or f"the vLLM server at {endpoint} failed: {exc}"
            raise ServerError(f"training rollouts: {notice}") from exc
        if response.status_code >= 400:
            raise ServerResponseError(
                f"training rollouts: {endpoint} answered HTTP {response.status_code}: "
                f"{response.text[:500]}"
            )
        choice = response.json()["choices"][0]
        ids = choice.get("token_ids")
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        if ids is None or logprobs is None or len(ids) != len(logprobs):
            raise ServerResponseError(
                f"training rollouts: {endpoint} returned no token ids or log-probabilities "
                "(a vLLM server of 0.10.2 or later answers return_token_ids and logprobs)"
            )
        return [int(i) for i in ids], [None if lp is None else float(lp) for lp in logprobs]
