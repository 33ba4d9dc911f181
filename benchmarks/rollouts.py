"""Seconds per GRPO step at the comparison's scale, by where rollouts are sampled and how the
update computes: ``train.rollouts`` hf (transformers' generate in the training process) against
vllm-server (a vLLM server with the policy's weights loaded in place each step), each with fp32
and bf16-mixed (bf16 autocast over fp32 master weights) updates.

SmolLM2-135M, 4 prompts x 4 rollouts, at most 64 new tokens, beta 0, learning rate 2e-5, on
arithmetic grades 1-4, the same questions for every variant. Each variant trains ``--steps``
steps from the same base weights in this process; the first step is left out of the medians
(warm-up). Per step: generation (rollouts, the weight load included), of which the weight load,
the update (forward, backward, optimizer), and the step's total. ``step_ratio`` is the total
of vllm-server fp32 over hf fp32 (the old default). One vLLM server (vLLM's CPU build from
``make vllm-env``, eager) serves every vllm-server variant.

    python benchmarks/rollouts.py --steps 5 --json benchmarks/results/rollouts.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")

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
from sparft.training.heldout import ServedChecks, rollout_server
from sparft.training.rollouts import ServedRollouts
from sparft.training.setup import build_trainer

VARIANTS = [
    ("hf", "fp32"),
    ("vllm-server", "fp32"),
    ("hf", "bf16-mixed"),
    ("vllm-server", "bf16-mixed"),
]
KEYS = {
    "generation_s": "time/generation_s",
    "weight_load_s": "time/weight_load_s",
    "update_s": "time/update_s",
    "step_s": "step_time",
    # vllm-server: TRL's measure of the served sampler against the trainer's probabilities
    "logp_gap_mean": "sampling/sampling_logp_difference/mean",
    "logp_gap_max": "sampling/sampling_logp_difference/max",
    "is_ratio_min": "sampling/importance_sampling_ratio/min",
    "is_ratio_max": "sampling/importance_sampling_ratio/max",
}


def run_variant(
    rollouts: str, precision: str, steps: int, model: str, served: ServedChecks, work: Path
) -> dict[str, Any]:
    frame, _ = load_dataset(DataConfig(spec="arithmetic"), ArithmeticConfig(per_grade=16))
    cfg = TrainConfig(
        curriculum="uniform", prompts_per_step=4, num_generations=4, max_completion_length=64,
        max_steps=steps, learning_rate=2e-5, beta=0.0, precision=precision, num_threads=2,
        save_steps=10_000, checkpoint_dir=str(work / f"{rollouts}-{precision}"), rollouts=rollouts,
    )  # fmt: skip
    curriculum = make_curriculum("uniform", frame, Params(train=cfg))
    trainer = build_trainer(cfg, model, frame, curriculum, PromptConfig())
    if rollouts == "vllm-server":
        ServedRollouts(served, cfg.max_completion_length, cfg.temperature).attach(trainer)
    trainer.train()
    logs = [row for row in trainer.state.log_history if "step_time" in row]
    per_step = {name: [float(row.get(key, 0.0)) for row in logs] for name, key in KEYS.items()}
    medians = {name: statistics.median(values[1:] or values) for name, values in per_step.items()}
    return {"rollouts": rollouts, "precision": precision, "per_step": per_step, **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--precision",
        action="append",
        choices=["fp32", "bf16-mixed"],
        help="Update precisions to time (repeatable; default both). bf16-mixed needs bf16 "
        "units (AMX or AVX512-BF16): without them an update takes minutes.",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    model = prepare_model("smollm2-135m")
    server = rollout_server(ServerConfig(extra_args=["--enforce-eager"], max_model_len=1024))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        served = ServedChecks(model, server, Path(tmp) / "weights")
        try:
            for rollouts, precision in VARIANTS:
                if args.precision and precision not in args.precision:
                    continue
                rows.append(run_variant(rollouts, precision, args.steps, model, served, Path(tmp)))
        finally:
            served.close()
    reference = rows[0]["step_s"]
    table = Table(title=f"seconds per step (median of steps 2-{args.steps}), SmolLM2-135M, 4 x 4")
    for column in ("rollouts", "precision", "generation", "of which weight load", "update",
                   "step", "vs hf fp32", "logp gap mean / max"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("rollouts", "precision") else "right")
    for row in rows:
        row["ratio"] = row["step_s"] / reference
        table.add_row(
            row["rollouts"], row["precision"], f"{row['generation_s']:.2f}",
            f"{row['weight_load_s']:.2f}", f"{row['update_s']:.2f}", f"{row['step_s']:.2f}",
            f"{row['ratio']:.2f}",
            f"{row['logp_gap_mean']:.4f} / {row['logp_gap_max']:.3f}"
            if row["rollouts"] == "vllm-server" else "",
        )  # fmt: skip
    Console().print(table)
    report = {
        "settings": {
            "model": "smollm2-135m",
            "prompts_per_step": 4,
            "num_generations": 4,
            "max_completion_length": 64,
            "beta": 0.0,
            "steps": args.steps,
            "threads": 2,
            "server": server.model_dump(),
        },
        "variants": rows,
        "step_ratio": next(
            r["ratio"] for r in rows if (r["rollouts"], r["precision"]) == ("vllm-server", "fp32")
        ),
    }
    if args.json is not None:
        write_json(report, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
