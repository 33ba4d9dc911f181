"""One generation interface over transformers, an in-process vLLM engine and an HTTP server.

Training, evaluation and benchmarks all sample completions for prompts; they go through
``GenerationBackend.generate`` so that the engine is a setting (``generation.backend``)
rather than code. Heavy imports (torch, transformers, vllm, httpx) happen lazily so that
importing this module, e.g. for ``GenerationConfig`` in the params schema, stays cheap.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from sparft.generation.server import ServerConfig, death_notice, serving

if TYPE_CHECKING:
    import httpx
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Message = Mapping[str, str]
Prompt = str | Sequence[Message]
"""A plain string (a user message when ``chat_template`` is on) or a list of chat messages."""


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
        "Turn off for a server on vLLM's CPU build, whose engine dies on seeded requests; "
        "sparft does that itself for a CPU server it starts.",
    )
    seed: int = Field(0, description="Seed of the sampling random stream.")
    chat_template: bool = Field(
        True,
        description="Apply the tokenizer's chat template to prompts given as plain strings "
        "(as one user message); off sends them as raw text.",
    )


@dataclass
class Completion:
    """One sampled continuation.

    ``completion_tokens`` counts generated tokens up to and including the end-of-sequence
    token (padding excluded), as vLLM and OpenAI-compatible servers report it.
    ``finish_reason`` is ``"stop"`` (an end-of-sequence token) or ``"length"``.
    """

    text: str
    completion_tokens: int
    finish_reason: str


@dataclass
class PromptResult:
    """The samples for one prompt."""

    prompt_tokens: int
    completions: list[Completion] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]


def _copies(result: PromptResult, n: int) -> PromptResult:
    """``n`` samples from one greedy completion: greedy samples are all the same."""
    if len(result.completions) == n:
        return result
    return PromptResult(result.prompt_tokens, [replace(result.completions[0]) for _ in range(n)])


class GenerationError(RuntimeError):
    """Generation could not be carried out."""


class BackendNotAvailableError(GenerationError):
    """The chosen backend's engine is not installed in this environment."""


class ServerError(GenerationError):
    """The OpenAI-compatible server could not be reached or answered with an error."""


class ServerResponseError(ServerError):
    """The server was reached but answered with an HTTP error or something not JSON."""


def _check_prompt(prompt: Prompt) -> None:
    if isinstance(prompt, str):
        return
    if not prompt or not all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in prompt
    ):
        raise ValueError(
            "a prompt must be a string or a non-empty list of {'role': ..., 'content': ...} "
            f"messages, got {prompt!r}"
        )


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, chat_template: bool = True
) -> tuple[str, bool]:
    """The text to tokenize, and whether it came from the chat template."""
    _check_prompt(prompt)
    if isinstance(prompt, str) and not chat_template:
        return prompt, False
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template: pass plain-string prompts with "
            "generation.chat_template set to false"
        )
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )
    return str(text), True


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], chat_template: bool = True
) -> list[list[int]]:
    """Token ids of each prompt, as every backend feeds them to the model.

    A chat template writes its own special tokens (e.g. BOS), so templated text is
    tokenized without adding them again; raw text gets the tokenizer's usual ones.
    """
    encoded = []
    for prompt in prompts:
        text, templated = render_prompt(tokenizer, prompt, chat_template)
        ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
        encoded.append(list(ids))
    return encoded


@contextmanager
def progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over prompts; a no-op callable when disabled."""
    if not enabled or total == 0:
        yield lambda _k: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda k: bar.advance(task, k)


class GenerationBackend(ABC):
    """Samples ``n`` completions per prompt; results come back in input order."""

    cfg: GenerationConfig

    @abstractmethod
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
        """Generate; ``temperature`` / ``max_new_tokens`` override the config for this call.

        ``seed`` seeds this call alone: the same prompts and seed sample the same completions
        whatever came before (how shards and resumed runs reproduce a run). Without it the
        stream is ``generation.seed`` advanced by one per call."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release engine resources (connections, processes); the default has none."""

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _settings(
        self, n: int, temperature: float | None, max_new_tokens: int | None
    ) -> tuple[float, int]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        temp = self.cfg.temperature if temperature is None else temperature
        max_new = self.cfg.max_new_tokens if max_new_tokens is None else max_new_tokens
        if temp < 0:
            raise ValueError(f"temperature must be >= 0, got {temp}")
        if max_new < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new}")
        return temp, max_new


class HFBackend(GenerationBackend):
    """transformers ``generate`` with left padding, length-sorted batches and seeded sampling.

    Pass ``model`` and ``tokenizer`` to reuse objects already in memory (training does);
    otherwise ``cfg.model`` is prepared and loaded.
    """

    def __init__(
        self,
        cfg: GenerationConfig | None = None,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        import torch

        from sparft.models import load_causal_lm, prepare_tokenizer

        self.cfg = cfg or GenerationConfig()
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        if model is None:
            model, loaded = load_causal_lm(self.cfg.model, self.cfg.dtype, self.cfg.device)
            tokenizer = tokenizer or loaded
        elif tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model.name_or_path))
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = self._eos_ids()
        pad = tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else min(self.eos_ids)
        self._calls = 0

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(int(i) for i in source)
        if not ids:
            raise ValueError("neither the model's generation config nor the tokenizer has an eos")
        return ids

    def _generate_kwargs(self, temperature: float, max_new_tokens: int, n: int) -> dict[str, Any]:
        """Sampling fully set here (top_k off, like vLLM/OpenAI) so every engine matches."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "num_return_sequences": n,
            "pad_token_id": self.pad_id,
            "eos_token_id": sorted(self.eos_ids),
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=self.cfg.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _left_pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row) :] = 1
        device = self.model.device
        return input_ids.to(device), attention_mask.to(device)

    def _completion(self, tokens: list[int]) -> Completion:
        count, reason = len(tokens), "length"
        for i, tok in enumerate(tokens):
            if tok in self.eos_ids:
                count, reason = i + 1, "stop"
                break
        text = str(self.tokenizer.decode(tokens[:count], skip_special_tokens=True))
        return Completion(text=text, completion_tokens=count, finish_reason=reason)

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
        import torch

        temp, max_new = self._settings(n, temperature, max_new_tokens)
        encoded = encode_prompts(self.tokenizer, prompts, self.cfg.chat_template)
        if any(len(ids) == 0 for ids in encoded):
            raise ValueError("a prompt encodes to no tokens")
        # Longest first: similar lengths share a batch (little padding), and memory
        # trouble shows up on the first batch rather than the last.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        # Greedy samples are all the same: decode each prompt once and copy the result.
        rows = n if temp > 0 else 1
        per_batch = max(1, self.cfg.batch_size // rows)
        kwargs = self._generate_kwargs(temp, max_new, rows)
        results: list[PromptResult | None] = [None] * len(encoded)
        device = self.model.device
        fork_devices = [device] if device.type == "cuda" else []
        was_training = self.model.training
        self.model.eval()
        try:
            with (
                progress_bar(progress, len(encoded), "generating") as advance,
                torch.random.fork_rng(devices=fork_devices),
                torch.inference_mode(),
            ):
                torch.manual_seed(self.cfg.seed + self._calls if seed is None else seed)
                for start in range(0, len(order), per_batch):
                    idx = order[start : start + per_batch]
                    input_ids, attention_mask = self._left_pad([encoded[i] for i in idx])
                    out = cast(Any, self.model).generate(
                        input_ids=input_ids, attention_mask=attention_mask, **kwargs
                    )
                    new = out[:, input_ids.shape[1] :].tolist()
                    for j, i in enumerate(idx):
                        completions = [self._completion(t) for t in new[j * rows : (j + 1) * rows]]
                        results[i] = _copies(PromptResult(len(encoded[i]), completions), n)
                    advance(len(idx))
        finally:
            self._calls += 1
            self.model.train(was_training)
        return [r for r in results if r is not None]


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
            from sparft.models import prepare_model

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
