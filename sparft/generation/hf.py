"""The ``hf`` backend: transformers ``generate`` in this process, on CPU or GPU. It is the
default engine, and the one training uses on the model it trains (``HFBackend`` takes a model
and tokenizer already in memory); torch and transformers are imported when a backend is made,
not when this module is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from sparft.generation.base import (
    Completion,
    GenerationBackend,
    Prompt,
    PromptResult,
    _copies,
    encode_prompts,
    progress_bar,
)
from sparft.generation.config import GenerationConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
