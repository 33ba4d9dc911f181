"""What every generation backend shares: the prompt and result types, prompt encoding, the
errors and the ``GenerationBackend`` contract. Training, evaluation and benchmarks sample
through ``GenerationBackend.generate`` so that the engine is a setting (``generation.backend``)
rather than code; each engine subclasses the contract and encodes prompts with
``encode_prompts``, so every backend feeds the model the same tokens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from sparft.generation.config import GenerationConfig

Message = Mapping[str, str]
Prompt = str | Sequence[Message]
"""A plain string (a user message when ``chat_template`` is on) or a list of chat messages."""


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
