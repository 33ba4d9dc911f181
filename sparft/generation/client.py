"""The ``vllm-server`` backend: an HTTP client of an OpenAI-compatible server (``vllm serve``,
``transformers serve``, or the one ``server.py`` starts). When a server sparft started dies
under it, its errors say so with the server's log (``server.death_notice``); httpx is imported
when a backend is made, not when this module is.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from sparft.generation.base import (
    Completion,
    GenerationBackend,
    GenerationError,
    Prompt,
    PromptResult,
    _check_prompt,
    _copies,
    encode_prompts,
    progress_bar,
)
from sparft.generation.server import death_notice

if TYPE_CHECKING:
    import httpx
    from transformers import PreTrainedTokenizerBase

    from sparft.generation.config import GenerationConfig


class ServerError(GenerationError):
    """The OpenAI-compatible server could not be reached or answered with an error."""


class ServerResponseError(ServerError):
    """The server was reached but answered with an HTTP error or something not JSON."""


def _normalise_base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class VLLMServerBackend(GenerationBackend):
    """A client of an OpenAI-compatible server (``vllm serve``, ``transformers serve``, ...).

    Chat prompts go to ``/chat/completions``, raw text (``chat_template`` off) to
    ``/completions``. Each sample is its own request with ``n=1`` (up to ``batch_size`` in
    flight): the response's ``usage`` then gives that sample's exact token counts on every
    server, some servers ignore ``n`` anyway (``transformers serve`` does), and vLLM's
    prefix cache shares the prompt's work between the requests. Token counts fall back to
    re-tokenising with ``tokenizer`` when a server reports no usage.
    """

    def __init__(
        self,
        cfg: GenerationConfig,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        timeout: float = 600.0,
        served_model: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        if not cfg.server_url:
            raise ValueError(
                "generation.backend 'vllm-server' needs generation.server_url, "
                "e.g. http://127.0.0.1:8000/v1"
            )
        self.cfg = cfg
        self.base_url = _normalise_base_url(cfg.server_url)
        self.tokenizer = tokenizer
        self.timeout = timeout
        self._served_model = served_model
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )
        self._calls = 0
        self._lock = threading.Lock()
        self.owned: ExitStack | None = None  # a server make_backend started for this backend

    def close(self) -> None:
        self._client.close()
        if self.owned is not None:
            self.owned.close()
            self.owned = None

    def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        import httpx

        url = f"{self.base_url}{path}"
        try:
            try:
                response = self._client.request(method, path, json=payload, headers=headers)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A kept-alive connection the server had just dropped: one fresh try.
                # Generation requests are safe to repeat.
                response = self._client.request(method, path, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            notice = death_notice(self.base_url)
            if notice:
                raise ServerError(notice) from exc
            if isinstance(exc, httpx.ConnectError):
                raise ServerError(
                    f"cannot connect to the OpenAI-compatible server at {url} ({exc}). Start "
                    "one (e.g. `vllm serve MODEL`, `trl vllm-serve --model MODEL`), fix "
                    "generation.server_url, or unset it to let sparft start a vLLM server."
                ) from exc
            if isinstance(exc, httpx.TimeoutException):
                raise ServerError(
                    f"no answer from {url} within {self.timeout:g} s ({exc})"
                ) from exc
            raise ServerError(f"request to {url} failed: {exc}") from exc
        if response.status_code >= 400:
            raise ServerResponseError(
                f"{url} answered HTTP {response.status_code}: {response.text[:500]}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ServerResponseError(
                f"{url} answered with non-JSON: {response.text[:200]!r}"
            ) from exc

    def served_model(self) -> str:
        """The model name to send: ``cfg.model`` if the server lists it, else its only model."""
        with self._lock:
            if self._served_model is None:
                self._served_model = self._pick_model()
            return self._served_model

    def _pick_model(self) -> str:
        try:
            # Own connection: servers that fail this request (transformers serve without a
            # hub cache answers 500) may then drop the connection under the next request.
            listed = self._request("GET", "/models", headers={"Connection": "close"})
            ids = [m["id"] for m in listed.get("data", [])]
        except ServerResponseError:
            return self.cfg.model  # some servers (transformers serve offline) fail to list
        if self.cfg.model in ids or not ids:
            return self.cfg.model
        if len(ids) == 1:
            return ids[0]
        raise ServerError(
            f"{self.base_url} serves {ids}; set generation.model to one of them "
            f"(it is {self.cfg.model!r})"
        )

    def _request_body(self, prompt: Prompt) -> tuple[str, dict[str, Any]]:
        _check_prompt(prompt)
        if isinstance(prompt, str) and not self.cfg.chat_template:
            return "/completions", {"prompt": prompt}
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return "/chat/completions", {"messages": [dict(m) for m in messages]}

    def _one_sample(
        self, prompt: Prompt, temperature: float, max_new: int, seed: int
    ) -> tuple[int | None, Completion]:
        """One request, one choice: ``usage`` then counts exactly this sample's tokens."""
        path, body = self._request_body(prompt)
        body.update(
            model=self.served_model(),
            n=1,
            max_tokens=max_new,
            temperature=temperature,
            top_p=self.cfg.top_p if temperature > 0 else 1.0,
        )
        if self.cfg.request_seed:
            body["seed"] = seed
        data = self._request("POST", path, body)
        choices = data.get("choices") or []
        if not choices:
            raise ServerError(f"{self.base_url}{path} answered with no choices: {data!r}")
        choice = choices[0]
        if "message" in choice:
            text = choice["message"].get("content") or ""
        else:
            text = choice.get("text") or ""
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = data.get("usage") or {}
        count = usage.get("completion_tokens")
        if count is None and self.tokenizer is not None:
            count = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            count += reason == "stop"
        prompt_tokens = usage.get("prompt_tokens")
        return (
            int(prompt_tokens) if prompt_tokens is not None else None,
            Completion(text=text, completion_tokens=int(count or 0), finish_reason=reason),
        )

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
        temp, max_new = self._settings(n, temperature, max_new_tokens)
        if not prompts:
            return []
        for prompt in prompts:
            _check_prompt(prompt)
        self.served_model()
        if seed is None:
            seed = self.cfg.seed * 1_000_003 + self._calls * 100_003
        base_seed = seed % 2**31
        self._calls += 1
        rows = n if temp > 0 else 1
        samples: list[list[Completion | None]] = [[None] * rows for _ in prompts]
        prompt_tokens: list[int | None] = [None] * len(prompts)
        workers = min(self.cfg.batch_size, len(prompts) * rows)
        with (
            progress_bar(progress, len(prompts) * rows, "generating (server)") as advance,
            ThreadPoolExecutor(max_workers=workers) as pool,
        ):
            futures = {
                pool.submit(
                    self._one_sample, prompt, temp, max_new, (base_seed + 1009 * i + k) % 2**31
                ): (i, k)
                for i, prompt in enumerate(prompts)
                for k in range(rows)
            }
            for future in as_completed(futures):
                i, k = futures[future]
                prompt_tokens[i], samples[i][k] = future.result()
                advance(1)
        results = []
        for i, prompt in enumerate(prompts):
            count = prompt_tokens[i]
            if count is None and self.tokenizer is not None:
                count = len(encode_prompts(self.tokenizer, [prompt], self.cfg.chat_template)[0])
            completions = [c for c in samples[i] if c is not None]
            results.append(_copies(PromptResult(count or 0, completions), n))
        return results
