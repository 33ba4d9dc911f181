"""Held-out accuracy while training: greedy answers of the live policy on one fixed question set
at step 0 and every ``every`` steps, what a learning curve is made of.

The questions are the evaluate stage's first benchmark (its ``limit``, ``seed`` and
``max_new_tokens``), so the curve measures what evaluation measures. Each point keeps every
question's verdict (a comparison pairs strategies question by question), the rollouts and unique
questions the curriculum had spent by then, and the training seconds (the checks' own time left
out). Points are journaled one line each beside the checkpoints, so a resumed run keeps those up
to its checkpoint; the step-0 point of a base model can be cached across runs (``cache_dir``,
keyed by the model's files and the question set), since every strategy starts from the same one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from sparft.io import write_json

if TYPE_CHECKING:
    import pandas as pd

    from sparft.prompts import PromptConfig

JOURNAL = "heldout.jsonl"


class HeldoutCurve(TrainerCallback):
    """Greedy held-out accuracy of ``trainer.model`` at step 0, every ``every`` steps and at the
    last step. ``points`` hold one dict per check; ``journal`` gets each as a JSON line."""

    def __init__(
        self,
        questions: pd.DataFrame,
        prompt: PromptConfig,
        every: int,
        max_new_tokens: int,
        batch_size: int,
        journal: str | Path,
        base_key: str | None = None,
        cache_dir: str | Path | None = None,
        bf16: bool = False,
    ) -> None:
        from sparft.prompts import build_messages

        self.questions = questions.reset_index(drop=True)
        self.prompts = [build_messages(q, prompt) for q in self.questions["question"]]
        self.every = every
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.journal = Path(journal)
        self.bf16 = bf16  # generate under bf16 autocast, as training does when it uses bf16
        self.cache = self._cache_file(base_key, cache_dir)
        self.points: list[dict[str, Any]] = []
        self.trainer: Any = None
        self.check_seconds = 0.0
        self._started = 0.0
        self._offset = 0.0

    def _cache_file(self, base_key: str | None, cache_dir: str | Path | None) -> Path | None:
        if base_key is None or cache_dir is None:
            return None
        blob = json.dumps(
            {
                "model": base_key,
                "ids": self.questions["id"].astype(str).tolist(),
                "answers": self.questions["answer"].astype(str).tolist(),
                "prompts": self.prompts,
                "max_new_tokens": self.max_new_tokens,
                "bf16": self.bf16,
            }
        ).encode()
        return Path(cache_dir) / f"step0-{hashlib.sha256(blob).hexdigest()[:32]}.json"

    def resume(self, step: int) -> None:
        """Keep the journaled points up to ``step`` (a resumed checkpoint's), drop the rest."""
        kept: list[dict[str, Any]] = []
        if self.journal.is_file():
            for line in self.journal.read_text().split("\n"):
                try:
                    point = json.loads(line)
                except json.JSONDecodeError:
                    continue  # empty, or cut off by a kill
                if isinstance(point, dict) and point.get("step", step + 1) <= step:
                    kept.append(point)
        self.points = kept
        self._offset = kept[-1]["train_seconds"] if kept else 0.0
        self._rewrite()

    def _rewrite(self) -> None:
        from sparft.io import write_text

        write_text("".join(json.dumps(p) + "\n" for p in self.points), self.journal)

    def _append(self, point: dict[str, Any]) -> None:
        self.points.append(point)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with self.journal.open("a") as fh:
            fh.write(json.dumps(point) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def measure(self, model: Any) -> tuple[list[bool], list[int]]:
        """Every question's greedy verdict and completion length. Batches group questions by
        their length at the previous check: a batch of short answers then stops early instead
        of waiting for one that runs to the limit. The RNG state is put back, so a check never
        changes what training samples next."""
        import torch

        from sparft.evaluation import score_results
        from sparft.generation import GenerationConfig, HFBackend

        n = len(self.prompts)
        order = list(range(n))
        if self.points and len(self.points[-1].get("tokens") or ()) == n:
            last = self.points[-1]["tokens"]
            order.sort(key=lambda i: -last[i])
        was_training = model.training
        model.eval()
        rng = torch.get_rng_state()
        results: list[Any] = [None] * n
        try:
            backend = HFBackend(
                GenerationConfig(temperature=0.0, batch_size=self.batch_size),
                model=model,
                tokenizer=self.trainer.processing_class,
            )
            device = next(model.parameters()).device.type
            autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=self.bf16)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                with autocast:
                    out = backend.generate(
                        [self.prompts[i] for i in idx],
                        max_new_tokens=self.max_new_tokens,
                        progress=False,
                    )
                for i, result in zip(idx, out, strict=True):
                    results[i] = result
        finally:
            torch.set_rng_state(rng)
            model.train(was_training)
        scored = score_results(self.questions, results, "heldout", "policy")
        tokens = [r.completions[0].completion_tokens for r in results]
        return [bool(c) for c in scored["n_correct"]], tokens

    def check(self, step: int) -> dict[str, Any]:
        started = perf_counter()
        cached = step == 0 and self.cache is not None and self.cache.is_file()
        if cached:
            assert self.cache is not None
            stored = json.loads(self.cache.read_text())
            correct, tokens = stored["correct"], stored["tokens"]
        else:
            correct, tokens = self.measure(self.trainer.model)
            if step == 0 and self.cache is not None:
                write_json({"correct": correct, "tokens": tokens}, self.cache)
        curriculum = getattr(self.trainer, "curriculum", None)
        elapsed = perf_counter() - started
        self.check_seconds += elapsed
        point = {
            "step": step,
            "accuracy": sum(correct) / max(1, len(correct)),
            "correct": correct,
            "tokens": tokens,
            "truncated": sum(t >= self.max_new_tokens for t in tokens) / max(1, len(tokens)),
            "rollouts": int(getattr(curriculum, "rollouts_total", 0)),
            "unique_seen": len(getattr(curriculum, "seen", ())),
            "train_seconds": self.train_seconds(),
            "check_seconds": elapsed,
            "cached": cached,
        }
        self._append(point)
        return point

    def train_seconds(self) -> float:
        """Training time so far: wall time since the start less the checks' own."""
        if not self._started:
            return self._offset
        return self._offset + perf_counter() - self._started - self.check_seconds

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A fresh run starts a fresh journal; a resumed one keeps the points up to its step."""
        self._started = perf_counter()
        self.check_seconds = 0.0
        if not state.is_world_process_zero:
            return
        if state.global_step == 0:
            self.journal.unlink(missing_ok=True)
            self.points = []
            self._offset = 0.0
        else:
            self.resume(state.global_step)
        if not self.points or self.points[-1]["step"] != state.global_step:
            self.check(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        due = step % self.every == 0 or step == state.max_steps
        if due and state.is_world_process_zero:
            self.check(step)
