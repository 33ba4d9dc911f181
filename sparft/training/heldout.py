"""Held-out accuracy while training: greedy answers of the live policy on one fixed question set
at step 0 and every ``every`` steps, what a learning curve is made of.

The questions are the evaluate stage's first benchmark (its ``limit``, ``seed`` and
``max_new_tokens``), so the curve measures what evaluation measures. Each point keeps every
question's verdict (a comparison pairs strategies question by question), the rollouts and unique
questions the curriculum had spent by then, and the training seconds (the checks' own time left
out). Points are journaled one line each beside the checkpoints, so a resumed run keeps those up
to its checkpoint; the step-0 point of a base model can be cached across runs (``cache_dir``,
keyed by the model's files and the question set), since every strategy starts from the same one.

The checks generate with transformers in the training process (``backend: hf``) or through a vLLM
server (``vllm-server``, ``ServedChecks``), which answered 2x faster on this project's AMX CPU
(``benchmarks/heldout.py``): before each check the live weights are written out and loaded into
the server in place, so one server, started once, serves every check of every run that shares
its architecture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from sparft.io import write_json

if TYPE_CHECKING:
    import pandas as pd

    from sparft.generation import Prompt, PromptResult
    from sparft.generation.config import ServerConfig
    from sparft.generation.server import VLLMServer
    from sparft.prompts import PromptConfig
    from sparft.training.config import TrainConfig

JOURNAL = "heldout.jsonl"
SERVER_ENV = "SPARFT_HELDOUT_SERVER_URL"  # a shared server's /v1 URL (the compare flow's)
WEIGHTS_DIR = "heldout-weights"  # beside the checkpoints: the weights the server loads
WEIGHTS_FILE = "model.safetensors"


# what TRL's importance-sampling correction needs from the server
LOGPROBS_ARGS = ("--logprobs-mode", "processed_logprobs")


def rollout_server(server: ServerConfig) -> ServerConfig:
    """``server`` with the log-probability mode the training rollouts' correction needs
    (``sparft.training.rollouts``; added once)."""
    if "--logprobs-mode" in server.extra_args:
        return server
    return server.model_copy(update={"extra_args": [*server.extra_args, *LOGPROBS_ARGS]})


def served_server(train: TrainConfig, server: ServerConfig) -> ServerConfig | None:
    """The server settings a run of ``train`` needs for its held-out checks and rollouts
    (``server`` with the rollouts' log-probability mode where they use it), or None when
    neither goes through a vLLM server."""
    checks = bool(train.heldout.every) and train.heldout.backend == "vllm-server"
    if train.rollouts == "vllm-server":
        return rollout_server(server)
    return server if checks else None


def _server_file(url: str, suffix: str) -> Path:
    name = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sparft-heldout-{name}.{suffix}"


def weights_owner(url: str) -> str:
    """Whose weights the server at ``url`` holds: the token its last loader left (under
    ``server_lock``), or "" when none is known."""
    path = _server_file(url, "owner")
    return path.read_text() if path.is_file() else ""


def claim_weights(url: str, token: str) -> None:
    """Record that the weights just loaded into ``url`` are ``token``'s (under ``server_lock``)."""
    _server_file(url, "owner").write_text(token)


@contextmanager
def server_lock(url: str) -> Iterator[None]:
    """One run at a time loads weights into the server at ``url`` and generates with them."""
    import fcntl

    path = _server_file(url, "lock")
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def vllm_dtype(dtype: Any) -> str:
    """The ``--dtype`` that serves weights of torch ``dtype`` as they are."""
    name = str(dtype).removeprefix("torch.")
    return {"bfloat16": "bfloat16", "float16": "float16"}.get(name, "float32")


def write_weights(policy: Any, folder: Path) -> Path:
    """``policy``'s weights as the one safetensors file a vLLM server loads, written atomically.
    Tied tensors (an output head sharing the input embedding) are written apart: vLLM's in-place
    reload skips a tied head, so the served copy is untied (``serving_folder``) and gets both.
    A LoRA policy is written merged (``served_state``)."""
    from safetensors.torch import save_file

    from sparft.io import atomic_path

    state: dict[str, Any] = {}
    seen: set[int] = set()
    for name, tensor in served_state(policy).items():
        tensor = tensor.detach()
        ptr = tensor.data_ptr()
        state[name] = tensor.clone() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return folder / WEIGHTS_FILE


def served_state(policy: Any) -> dict[str, Any]:
    """The state dict the base model's server loads: ``policy``'s own, or for a LoRA policy
    (peft) each adapted weight plus its adapters' delta, under the base model's names: the
    merge TRL does before it syncs a LoRA policy into vLLM, computed beside the weights, so
    the policy is never merged and unmerged in place (no rounding drift)."""
    if not hasattr(policy, "peft_config"):
        return dict(policy.state_dict())
    from peft.tuners.lora import LoraLayer

    deltas: dict[str, Any] = {}
    for name, module in policy.named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    key = f"{name}.base_layer.weight"
                    delta = module.get_delta_weight(adapter)  # type: ignore[attr-defined]
                    deltas[key] = deltas.get(key, 0) + delta
    merged = {}
    for name, tensor in policy.state_dict().items():
        if "lora_" in name:
            continue  # in the deltas; sparft's LoRA trains no other module (modules_to_save)
        weight = tensor.detach()
        if name in deltas:
            weight = weight + deltas[name].to(weight.dtype)
        merged[name.removeprefix("base_model.model.").replace(".base_layer", "")] = weight
    return merged


def serving_folder(model_dir: str, folder: Path, policy: Any) -> Path:
    """A model folder for the held-out server: ``model_dir``'s config (with untied
    embeddings) and tokenizer, and ``policy``'s weights."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in Path(model_dir).iterdir():
        weights = item.suffix in (".safetensors", ".bin", ".pt", ".gguf") or ".index." in item.name
        if item.is_file() and not weights and item.name != "config.json":
            shutil.copy2(item, folder / item.name)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    config["tie_word_embeddings"] = False
    write_json(config, folder / "config.json")
    write_weights(policy, folder)
    return folder


class SharedServer:
    """A vLLM server for held-out checks, on a serving folder of ``model`` in a temporary
    folder, started at the first ``url()`` call; ``close`` stops it and removes the folder.
    One serves every variant of a compare flow (which name it in
    ``$SPARFT_HELDOUT_SERVER_URL``, so variants answered from cache start none), or one
    run's checks (``ServedChecks``)."""

    def __init__(self, model: str, server: ServerConfig, dtype: str) -> None:
        import threading

        self.model = model
        self.cfg = server
        self.dtype = dtype
        self.server: VLLMServer | None = None
        self.folder: Path | None = None
        self._url: str | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two of them the same server: model, dtype and server settings."""
        return self.model, self.dtype, self.cfg.model_dump_json()

    @classmethod
    def for_params(cls, params: Any) -> SharedServer | None:
        """The server ``params``' runs would each start for their checks and rollouts, or None
        when they start none (``hf`` rollouts and checks or no curve, or a server already
        named)."""
        from sparft.models import prepare_model
        from sparft.training.config import policy_dtype

        train = params.train
        server = served_server(train, params.generation.server)
        if server is None or train.heldout.server_url or os.environ.get(SERVER_ENV):
            return None
        model = prepare_model(train.model or params.generation.model)
        return cls(model, server, vllm_dtype(policy_dtype(train)))

    def url(self) -> str:
        import torch
        from transformers import AutoModelForCausalLM

        from sparft.generation.server import VLLMServer

        with self._lock:
            if self._url is None:
                self.folder = Path(tempfile.mkdtemp(prefix="sparft-heldout-serve-"))
                dtype = getattr(torch, self.dtype)
                base = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype)
                serving_folder(self.model, self.folder, base)
                del base
                self.server = VLLMServer(
                    str(self.folder), self.cfg, dtype=self.dtype, dev_mode=True
                )
                self._url = self.server.start(progress=False)
            return self._url

    def close(self) -> None:
        with self._lock:
            if self.server is not None:
                self.server.stop()
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
            self.server, self._url, self.folder = None, None, None


class ServedChecks:
    """Greedy generation for the held-out checks through a vLLM server: the policy's weights
    go to ``weights_dir`` and into the server in place (``serving.load_weights``) before each
    check. The server is ``url``, else ``$SPARFT_HELDOUT_SERVER_URL``, else one started here
    at the first check (a ``SharedServer`` of ``model``, the base model's folder, in the
    policy's dtype) and stopped by ``close``. A server given by URL must serve ``model``'s
    architecture with untied embeddings (``serving_folder``) and run with
    ``VLLM_SERVER_DEV_MODE=1``."""

    def __init__(
        self,
        model: str,
        server: ServerConfig,
        weights_dir: str | Path,
        url: str | None = None,
        concurrency: int = 64,
    ) -> None:
        self.model = model
        self.server_cfg = server
        self.weights_dir = Path(weights_dir)
        self.url = url or os.environ.get(SERVER_ENV) or None
        self.concurrency = concurrency
        self.owned: SharedServer | None = None  # the server started here, if any
        self.load_seconds = 0.0

    def connect(self, policy: Any) -> str:
        """The server's URL, once it answers: if none was named, one started here for
        ``model`` in ``policy``'s dtype."""
        from sparft.generation.server import wait_healthy

        if self.url is None:
            dtype = vllm_dtype(next(policy.parameters()).dtype)
            self.owned = SharedServer(self.model, self.server_cfg, dtype)
            self.url = self.owned.url()
        elif self.owned is None:  # a server of the user's or the flow's: it may be starting
            wait_healthy(
                self.url.rstrip("/").removesuffix("/v1"),
                None,
                self.server_cfg.startup_timeout_s,
                None,
                f"the held-out checks' vLLM server at {self.url} (train.heldout.server_url or "
                f"${SERVER_ENV})",
                "generation.server.startup_timeout_s",
            )
        return self.url

    def load(self, policy: Any, url: str, token: str) -> float:
        """``policy``'s weights into the server at ``url`` in place, recorded as ``token``'s
        (``claim_weights``); call under ``server_lock``. Returns the server's load seconds."""
        from sparft.generation.server import load_weights

        write_weights(policy, self.weights_dir)
        seconds = load_weights(url, self.weights_dir)
        claim_weights(url, token)
        return seconds

    def generate(
        self, policy: Any, prompts: Sequence[Prompt], max_new_tokens: int
    ) -> list[PromptResult]:
        from sparft.generation import GenerationConfig, VLLMServerBackend

        url = self.connect(policy)
        with server_lock(url):
            # a token of its own: the rollouts reload after a check
            self.load_seconds += self.load(policy, url, f"checks {uuid.uuid4().hex}")
            cfg = GenerationConfig(
                backend="vllm-server",
                model=self.model,
                server_url=url,
                temperature=0.0,
                batch_size=self.concurrency,
                request_seed=False,  # greedy: nothing to seed
            )
            backend = VLLMServerBackend(cfg)
            try:
                return backend.generate(prompts, max_new_tokens=max_new_tokens, progress=False)
            finally:
                backend.close()

    def close(self) -> None:
        if self.owned is not None:
            self.owned.close()
            self.owned = None
            self.url = None
        shutil.rmtree(self.weights_dir, ignore_errors=True)


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
        server: ServedChecks | None = None,
    ) -> None:
        from sparft.prompts import build_messages

        self.questions = questions.reset_index(drop=True)
        self.prompts = [build_messages(q, prompt) for q in self.questions["question"]]
        self.every = every
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.journal = Path(journal)
        self.bf16 = bf16  # generate under bf16 autocast, as training does when it uses bf16
        self.server = server
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
                "backend": "hf" if self.server is None else "vllm-server",
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
        """Every question's greedy verdict and completion length."""
        from sparft.evaluation import score_results

        results = self.generate(model)
        scored = score_results(self.questions, results, "heldout", "policy")
        tokens = [r.completions[0].completion_tokens for r in results]
        return [bool(c) for c in scored["n_correct"]], tokens

    def generate(self, model: Any) -> list[PromptResult]:
        """Every question's greedy answer from ``model``: through the server, or from
        ``model`` itself, where batches group questions by their length at the previous check
        (a batch of short answers then stops early instead of waiting for one that runs to
        the limit). The RNG state is put back, so a check never changes what
        training samples next."""
        import torch

        from sparft.generation import GenerationConfig, HFBackend

        if self.server is not None:
            return self.server.generate(model, self.prompts, self.max_new_tokens)
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
        return results

    def close(self) -> None:
        """Stop the server the checks started, if any, and remove the weights written for it."""
        if self.server is not None:
            self.server.close()

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

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        due = step % self.every == 0 or step == state.max_steps
        if due and state.is_world_process_zero:
            self.check(step)
