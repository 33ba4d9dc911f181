"""Seconds per GRPO step at the comparison's scale, by where rollouts are sampled and how the
update computes: ``train.rollouts`` hf (transformers' generate in the training process) against
vllm-server (a vLLM server with the policy's weights loaded in place each step), with fp32 or
bf16-mixed (bf16 autocast over fp32 master weights) updates, with and without activation
checkpointing, and the server in fp32 or bf16.

SmolLM2-135M, 4 prompts x 4 rollouts, at most 64 new tokens, beta 0, learning rate 2e-5, on
arithmetic grades 1-4, the same questions for every variant. Each variant trains ``--steps``
steps from the same base weights in this process; the first step is left out of the medians
(warm-up). Per step: generation (rollouts, the weight load included), of which the weight load,
the update (TRL's forward and backward), the rest (the optimizer step, logging, the
curriculum), and the step's total.
``step_ratio`` is the fastest vllm-server variant's step over the reference (``hf``, fp32, with
activation checkpointing: the default before this benchmark). The limit: the best matmul rate
this CPU reaches in fp32 and bf16 on the same threads, against the update's floating-point
operations (6 x parameters x tokens, 8 x with checkpointing's second forward). ``--profile``
prints torch's profile of one update (forward and backward) per variant, in one more step
left out of the times; the update alone is always profiled.

    python benchmarks/rollouts.py --steps 5 --json benchmarks/results/rollouts.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")

import torch
from rich.console import Console
from rich.table import Table

from sparft.arithmetic import ArithmeticConfig
from sparft.config import Params
from sparft.curricula import make_curriculum
from sparft.data import DataConfig, load_dataset
from sparft.generation.config import ServerConfig
from sparft.io import write_json
from sparft.models import prepare_model
from sparft.prompts import PromptConfig
from sparft.training import TrainConfig
from sparft.training.heldout import ServedChecks, SharedServer, rollout_server
from sparft.training.rollouts import ServedRollouts
from sparft.training.setup import build_trainer

THREADS = 2


@dataclass(frozen=True)
class Variant:
    rollouts: str
    precision: str
    checkpointing: bool
    server_dtype: str = ""  # vllm-server only: the dtype the server computes in

    @property
    def name(self) -> str:
        parts = [self.rollouts, self.precision, "ckpt" if self.checkpointing else "no-ckpt"]
        return " ".join([*parts, f"server {self.server_dtype}"] if self.server_dtype else parts)


REFERENCE = Variant("hf", "fp32", True)
VARIANTS = [
    REFERENCE,
    Variant("hf", "fp32", False),
    Variant("hf", "bf16-mixed", False),
    Variant("vllm-server", "fp32", False, "float32"),
    Variant("vllm-server", "bf16-mixed", False, "float32"),
    Variant("vllm-server", "bf16-mixed", False, "bfloat16"),
]
KEYS = {
    "generation_s": "time/generation_s",
    "weight_load_s": "time/weight_load_s",
    "update_s": "time/update_s",
    "step_s": "step_time",
    "completion_tokens": "completions/mean_length",
    # vllm-server: TRL's measure of the served sampler against the trainer's probabilities
    "logp_gap_mean": "sampling/sampling_logp_difference/mean",
    "logp_gap_max": "sampling/sampling_logp_difference/max",
    "is_ratio_min": "sampling/importance_sampling_ratio/min",
    "is_ratio_max": "sampling/importance_sampling_ratio/max",
}


class ProfileUpdate:
    """torch's profile of the update (forward and backward, after the rollouts) of step
    ``step``: wraps the trainer's ``training_step`` and starts once its inputs are ready."""

    def __init__(self, trainer: Any, step: int) -> None:
        self.trainer, self.step, self.table = trainer, step, ""
        self._training_step = trainer.training_step
        trainer.training_step = self._profiled

    def _profiled(self, *args: Any, **kwargs: Any) -> Any:
        if self.trainer.state.global_step != self.step - 1:
            return self._training_step(*args, **kwargs)
        from torch.profiler import ProfilerActivity, profile

        prof = profile(activities=[ProfilerActivity.CPU])
        prepare = self.trainer._prepare_inputs

        def prepared(*a: Any, **k: Any) -> Any:
            inputs = prepare(*a, **k)  # the rollouts: not profiled
            prof.start()
            return inputs

        self.trainer._prepare_inputs = prepared
        try:
            loss = self._training_step(*args, **kwargs)
        finally:
            self.trainer._prepare_inputs = prepare
        prof.stop()
        self.table = profile_table(prof)
        return loss


def profile_table(prof: Any) -> str:
    return str(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a square matmul on this process's threads: what the CPU reaches in practice."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def run_variant(
    variant: Variant, steps: int, model: str, served: ServedChecks | None, work: Path, profile: bool
) -> dict[str, Any]:
    frame, _ = load_dataset(DataConfig(spec="arithmetic"), ArithmeticConfig(per_grade=16))
    cfg = TrainConfig(
        curriculum="uniform", prompts_per_step=4, num_generations=4, max_completion_length=64,
        max_steps=steps + int(profile), learning_rate=2e-5, beta=0.0, precision=variant.precision,
        num_threads=THREADS, save_steps=10_000, rollouts=variant.rollouts,
        checkpoint_dir=str(work / variant.name.replace(" ", "-")),
        grpo={"gradient_checkpointing": variant.checkpointing},
    )  # fmt: skip
    curriculum = make_curriculum("uniform", frame, Params(train=cfg))
    trainer = build_trainer(cfg, model, frame, curriculum, PromptConfig())
    if served is not None:
        ServedRollouts(served, cfg.max_completion_length, cfg.temperature).attach(trainer)
    profiler = ProfileUpdate(trainer, steps + 1) if profile else None
    trainer.train()
    # the profiled step (one more than --steps) is left out: the profiler slows it
    logs = [row for row in trainer.state.log_history if "step_time" in row][:steps]
    per_step = {name: [float(row.get(key, 0.0)) for row in logs] for name, key in KEYS.items()}
    per_step["other_s"] = [  # the optimizer step, logging and the curriculum
        step - gen - update
        for step, gen, update in zip(
            per_step["step_s"], per_step["generation_s"], per_step["update_s"], strict=True
        )
    ]
    medians = {name: statistics.median(values[1:] or values) for name, values in per_step.items()}
    prompts = trainer._tokenize_prompts(trainer.train_dataset["prompt"][:16])[0]
    prompt_tokens = statistics.mean(len(ids) for ids in prompts)
    tokens = 16 * (prompt_tokens + medians["completion_tokens"])
    params = sum(p.numel() for p in trainer.model.parameters())
    flops = (8 if variant.checkpointing else 6) * params * tokens
    return {
        **asdict(variant),
        "name": variant.name,
        "per_step": per_step,
        **medians,
        "update_tflop": flops / 1e12,
        "update_gflops": flops / 1e9 / medians["update_s"],
        "optim": trainer.args.optim,
        "profile": profiler.table if profiler else "",
    }


UPDATE_OPTIONS = [("fp32", True), ("fp32", False), ("bf16-mixed", True), ("bf16-mixed", False)]


def update_alone(model: str, repeats: int = 3) -> list[dict[str, Any]]:
    """The update on one fixed batch (16 rows of 64 prompt and 64 completion tokens, random
    advantages): TRL's GRPO loss, backward, fused AdamW, per option (precision, activation
    checkpointing), so the options meet the same tokens. The gradient's cosine similarity with
    fp32's (no checkpointing) says how far bf16 autocast moves it."""
    frame, _ = load_dataset(DataConfig(spec="arithmetic"), ArithmeticConfig(per_grade=2))
    torch.manual_seed(0)
    ids = torch.randint(100, 40_000, (16, 128))
    batch = {
        "prompt_ids": ids[:, :64], "prompt_mask": torch.ones(16, 64, dtype=torch.long),
        "completion_ids": ids[:, 64:], "completion_mask": torch.ones(16, 64, dtype=torch.long),
        "advantages": torch.randn(16), "num_items_in_batch": torch.tensor(16 * 64),
    }  # fmt: skip
    rows, reference = [], None
    for precision, checkpointing in sorted(UPDATE_OPTIONS, key=lambda o: o[1]):
        cfg = TrainConfig(curriculum="uniform", prompts_per_step=4, num_generations=4,
                          beta=0.0, precision=precision, num_threads=THREADS)  # fmt: skip
        curriculum = make_curriculum("uniform", frame, Params(train=cfg))
        trainer = build_trainer(cfg, model, frame, curriculum, PromptConfig())
        policy = trainer.model
        policy.train()
        if checkpointing:
            policy.activation_checkpointing_enable({"use_reentrant": False})
        optimizer = torch.optim.AdamW(policy.parameters(), lr=0.0, fused=True)  # lr 0: same weights
        trainer.current_gradient_accumulation_steps = 1
        mixed = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
        times: dict[str, list[float]] = {"forward_backward_s": [], "optimizer_s": []}
        for i in range(repeats + 1):
            started = time.perf_counter()
            with mixed:
                loss = trainer.compute_loss(policy, batch)
            loss.backward()
            stepped = time.perf_counter()
            if i == 0:
                grad = torch.cat([q.grad.flatten() for q in policy.parameters()]).clone()
            optimizer.step()
            optimizer.zero_grad()
            if i:  # the first is warm-up
                times["forward_backward_s"].append(stepped - started)
                times["optimizer_s"].append(time.perf_counter() - stepped)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof, mixed:
            trainer.compute_loss(policy, batch).backward()
        optimizer.zero_grad()
        if reference is None:
            reference = grad
        cosine = float(
            torch.nn.functional.cosine_similarity(grad.double(), reference.double(), dim=0)
        )
        fb = statistics.median(times["forward_backward_s"])
        params = sum(q.numel() for q in policy.parameters())
        rows.append({
            "precision": precision, "checkpointing": checkpointing, "forward_backward_s": fb,
            "optimizer_s": statistics.median(times["optimizer_s"]),
            "gflops": (8 if checkpointing else 6) * params * 16 * 128 / fb / 1e9,
            "grad_cosine_vs_fp32": cosine, "profile": profile_table(prof),
        })  # fmt: skip
    return rows


def served_checks(model: str, server: ServerConfig, dtype: str, work: Path) -> ServedChecks:
    """The held-out checks' endpoint with its own server started in ``dtype`` (the run's
    would be the policy's dtype, fp32 here)."""
    served = ServedChecks(model, server, work / f"weights-{dtype}")
    served.owned = SharedServer(model, server, dtype)
    served.url = served.owned.url()
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--only",
        action="append",
        choices=[v.name for v in VARIANTS],
        help="Variants to time (repeatable; default all; the reference always runs). bf16 "
        "needs bf16 units (AMX or AVX512-BF16): without them an update takes minutes.",
    )
    parser.add_argument(
        "--part",
        choices=["steps", "update", "both"],
        default="both",
        help="The training steps, the update alone, or both; with --json a part updates its "
        "own keys of an existing report.",
    )
    parser.add_argument("--profile", action="store_true", help="Profile one more step's update.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    console = Console(width=160)
    model = prepare_model("smollm2-135m")
    report: dict[str, Any] = {}
    if args.json is not None and args.json.is_file() and args.part != "both":
        report = json.loads(args.json.read_text())
    limits = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    report["matmul_gflops"] = limits
    report["cpu"] = cpu_name()
    if args.part in ("steps", "both"):
        report.update(steps_report(args, model, console))
    if args.part in ("update", "both"):
        report["update_alone"] = update_report(model, console)
    console.print(
        f"the limit on {THREADS} threads: {limits['fp32']:.0f} GFLOP/s fp32, "
        f"{limits['bf16']:.0f} GFLOP/s bf16 (2048 x 2048 matmul)"
    )
    if args.json is not None:
        write_json(report, args.json)
        print(f"wrote {args.json}")


def steps_report(args: argparse.Namespace, model: str, console: Console) -> dict[str, Any]:
    server = rollout_server(ServerConfig(extra_args=["--enforce-eager"], max_model_len=1024))
    chosen = [v for v in VARIANTS if v == REFERENCE or not args.only or v.name in args.only]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for dtype in dict.fromkeys(v.server_dtype for v in chosen):
            served = served_checks(model, server, dtype, work) if dtype else None
            try:
                for variant in (v for v in chosen if v.server_dtype == dtype):
                    rows.append(run_variant(variant, args.steps, model, served, work, args.profile))
            finally:
                if served is not None:
                    served.close()
    reference = rows[0]["step_s"]
    table = Table(title=f"seconds per step (median of steps 2-{args.steps}), SmolLM2-135M, 4 x 4")
    for column in ("variant", "generation", "of which weight load", "update", "update GFLOP/s",
                   "other", "step", "vs reference", "logp gap mean / max"):  # fmt: skip
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in rows:
        row["ratio"] = row["step_s"] / reference
        table.add_row(
            row["name"], f"{row['generation_s']:.2f}", f"{row['weight_load_s']:.2f}",
            f"{row['update_s']:.2f}", f"{row['update_gflops']:.0f}", f"{row['other_s']:.2f}",
            f"{row['step_s']:.2f}", f"{row['ratio']:.2f}",
            f"{row['logp_gap_mean']:.4f} / {row['logp_gap_max']:.3f}"
            if row["rollouts"] == "vllm-server" else "",
        )  # fmt: skip
    console.print(table)
    for row in rows:
        if row["profile"]:
            console.print(f"\n[bold]{row['name']}[/]: one update's profile\n{row['profile']}")
    served_rows = [r for r in rows if r["rollouts"] == "vllm-server"]
    return {
        "settings": {
            "model": "smollm2-135m",
            "prompts_per_step": 4,
            "num_generations": 4,
            "max_completion_length": 64,
            "beta": 0.0,
            "steps": args.steps,
            "threads": THREADS,
            "server": server.model_dump(),
        },
        "reference": REFERENCE.name,
        "variants": rows,
        "step_ratio": min(r["ratio"] for r in served_rows) if served_rows else None,
    }


def update_report(model: str, console: Console) -> list[dict[str, Any]]:
    updates = update_alone(model)
    alone = Table(title="the update alone: 16 x (64 + 64) tokens, GRPO loss, backward, fused AdamW")
    for column in ("precision", "checkpointing", "forward + backward s", "GFLOP/s",
                   "optimizer s", "gradient cosine vs fp32"):  # fmt: skip
        alone.add_column(column, justify="left" if column == "precision" else "right")
    for u in updates:
        alone.add_row(
            u["precision"], "on" if u["checkpointing"] else "off", f"{u['forward_backward_s']:.2f}",
            f"{u['gflops']:.0f}", f"{u['optimizer_s']:.3f}", f"{u['grad_cosine_vs_fp32']:.5f}",
        )  # fmt: skip
    console.print(alone)
    for u in updates:
        check = "on" if u["checkpointing"] else "off"
        console.print(f"\n[bold]{u['precision']}, checkpointing {check}[/]\n{u['profile']}")
    return updates


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
