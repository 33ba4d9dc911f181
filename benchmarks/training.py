"""Training benchmarks: the curriculum's cost per step, and sample efficiency against uniform.

(a) ``overhead``: seconds per step of ``CurriculumGRPOTrainer`` with each curriculum (and the
knapsack allocator, ``knapsack``: uniform prompts, Knapsack RL's rollout counts) against TRL's
own ``GRPOTrainer`` with its default sampler, identical config, alternating rounds in the same
process. Every completion is forced to the same length (``min_new_tokens``), every step has the
same rollout budget and the reward costs the same on any text, so all sides do the same work
whatever prompts and group sizes they plan (target ratio <= 1.02). Beside the ratio, the
curriculum's own time per step (plan, advantages, observe: ``time/curriculum_s``, which the
trainer logs in every run).

(b) ``efficiency``: ``sparft`` (bandit over the selected subset) against ``uniform`` (plain GRPO
over every loaded question), several seeds each, greedy held-out accuracy every few steps,
against steps and against unique questions seen (``sparft-lp``: the same with the
learning-progress reward). Needs a project folder where the pipeline ran
up to ``select`` (``data/subset.parquet``, ``data/train.parquet``).

    python benchmarks/training.py overhead --steps 20 --rounds 3 --methods sparft cures
    python benchmarks/training.py efficiency --project . --seeds 0 1 2 --steps 20 --every 5
    python benchmarks/training.py report lp.json su.json --out efficiency.json   # merge runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from transformers import TrainerCallback

from sparft.answers import completion_text
from sparft.bandit import BanditConfig
from sparft.config import Params, load_params
from sparft.curricula import make_curriculum
from sparft.data import load_dataset, read_dataset
from sparft.evaluation import heldout_arithmetic, score_results, training_ids
from sparft.generation import GenerationConfig, HFBackend
from sparft.io import write_json
from sparft.models import prepare_model
from sparft.plots import save_figure
from sparft.prompts import PromptConfig, build_messages
from sparft.rewards import format_reward
from sparft.testing import tiny_llama_config
from sparft.training import TrainConfig
from sparft.training.setup import build_trainer, grpo_args, load_policy, training_dataset

console = Console()
ROOT = Path(__file__).resolve().parents[1]


class StepTimes(TrainerCallback):
    """Wall time of every optimizer step (generation, scoring and update)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def tiny_model(folder: Path) -> str:
    """A 2-layer Llama with SmolLM2's tokenizer: curriculum overhead is most visible when the
    model's own work is small."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(prepare_model("smollm2-135m"))
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def parity_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """A solve signal of constant cost: checking a random model's text against gold answers
    costs more or less depending on the text, which would swamp what the curriculum costs."""
    return [float(len(completion_text(c)) % 2) for c in completions]


def method_trainer(
    side: str, cfg: TrainConfig, model: str, frame: pd.DataFrame, seed: int, clock: StepTimes
) -> Any:
    """sparft's trainer with curriculum ``side`` (``knapsack``: uniform + knapsack allocation)."""
    name, allocation = ("uniform", "knapsack") if side == "knapsack" else (side, "auto")
    cfg = cfg.model_copy(update={"curriculum": name, "allocation": allocation})
    curriculum = make_curriculum(name, frame, Params(train=cfg, bandit=BanditConfig(seed=seed)))
    return build_trainer(
        cfg, model, frame, curriculum, PromptConfig(), callbacks=[clock],
        reward_funcs=[parity_reward, format_reward],
    )  # fmt: skip


def overhead(args: argparse.Namespace) -> None:
    from trl import GRPOTrainer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = (
            tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else prepare_model(args.model)
        )
        n = 64
        frame = pd.DataFrame(
            {
                "id": [f"q{i}" for i in range(n)],
                "question": [f"What is {i} + {i % 7}?" for i in range(n)],
                "answer": [str(i + i % 7) for i in range(n)],
                "cluster": [i % 8 for i in range(n)],
            }
        )
        cfg = TrainConfig(
            max_steps=args.steps,
            prompts_per_step=args.prompts,
            num_generations=args.generations,
            max_completion_length=args.max_completion_length,
            save_steps=10**6,
            checkpoint_dir=str(Path(tmp) / "ckpt"),
            grpo={"generation_kwargs": {"min_new_tokens": args.max_completion_length}},
        )
        frame["probe_rollouts"], frame["probe_correct"] = 8, [i % 9 for i in range(n)]
        sides = ["trl", *args.methods]
        times: dict[str, list[float]] = {side: [] for side in sides}
        own: dict[str, list[float]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            for side in sides:
                clock = StepTimes()
                if side == "trl":
                    policy, tokenizer, peft = load_policy(model, cfg)
                    trainer = GRPOTrainer(
                        model=policy,
                        reward_funcs=[parity_reward, format_reward],
                        args=grpo_args(cfg),
                        train_dataset=training_dataset(frame, PromptConfig()),
                        processing_class=tokenizer,
                        peft_config=peft,
                        callbacks=[clock],
                    )
                else:
                    trainer = method_trainer(side, cfg, model, frame, round_, clock)
                trainer.train()
                times[side].extend(clock.times[1:])  # the first step warms up caches
                logged = [r.get("time/curriculum_s") for r in trainer.state.log_history]
                own[side].extend(v for v in logged[1:] if v is not None)
                console.print(
                    f"round {round_} {side}: median {statistics.median(clock.times):.3f} s"
                )
    table = Table(title=f"curriculum overhead, {args.model}, {args.threads} thread(s)")
    columns = ("trainer", "steps", "median s/step", "ratio (median)", "curriculum ms/step", "share")
    for col in columns:
        table.add_column(col, justify="right")
    ref = statistics.median(times["trl"])
    for side in sides:
        label = "TRL GRPOTrainer (RepeatSampler)" if side == "trl" else f"sparft: {side}"
        med = statistics.median(times[side])
        mine = statistics.median(own[side]) if own[side] else None
        table.add_row(
            label, str(len(times[side])), f"{med:.4f}", f"{med / ref:.3f}",
            "" if mine is None else f"{1000 * mine:.2f}",
            "" if mine is None else f"{mine / med:.2%}",
        )  # fmt: skip
    console.print(table)
    if args.out:
        result = {"model": args.model, "threads": args.threads, "seconds": times, "own": own}
        write_json(result, args.out)


class HeldoutCheck(TrainerCallback):
    """Greedy accuracy of the policy on held-out questions at step 0 and every ``every`` steps."""

    def __init__(self, questions: pd.DataFrame, prompt: PromptConfig, every: int, tokens: int):
        self.questions = questions
        self.prompts = [build_messages(q, prompt) for q in questions["question"]]
        self.every = every
        self.tokens = tokens
        self.points: list[dict[str, float]] = []
        self.trainer: Any = None

    def check(self, model: Any, step: int, seen: int) -> None:
        was_training = model.training
        model.eval()
        rng = torch.get_rng_state()
        backend = HFBackend(
            GenerationConfig(temperature=0.0, batch_size=32),
            model=model,
            tokenizer=self.trainer.processing_class,
        )
        results = backend.generate(self.prompts, max_new_tokens=self.tokens, progress=False)
        torch.set_rng_state(rng)  # the check must not change what training samples next
        scored = score_results(self.questions, results, "heldout", "policy")
        model.train(was_training)
        accuracy = float(scored["n_correct"].sum() / len(scored))
        self.points.append({"step": step, "accuracy": accuracy, "unique_seen": seen})

    def on_step_end(
        self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
    ) -> None:
        if state.global_step % self.every == 0 or state.global_step == args.max_steps:
            seen = len(self.trainer.curriculum.seen)
            self.check(self.trainer.model, state.global_step, seen)


def efficiency(args: argparse.Namespace) -> None:
    project = Path(args.project)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    params = load_params(project / "params.yaml")
    os.chdir(project)
    subset = pd.read_parquet("data/subset.parquet")
    full = read_dataset(params.data.out)
    heldout, _ = heldout_arithmetic(
        params.arithmetic, params.arithmetic.seed + 1000, args.heldout_per_grade,
        training_ids(params.data, params.arithmetic),
    )  # fmt: skip
    model = prepare_model(params.train.model or params.generation.model)
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for strategy in args.strategies:
            uses_subset = strategy != "uniform" or args.uniform_data == "subset"
            frame = subset if uses_subset else full
            cfg = params.train.model_copy(
                update={
                    "max_steps": args.steps,
                    "seed": seed,
                    "save_steps": 10**6,
                    "num_threads": args.threads,
                    "checkpoint_dir": tempfile.mkdtemp(prefix="sparft-bench-"),
                }
            )
            bandit = params.bandit.model_copy(update={"seed": seed})
            if strategy == "sparft-lp":
                bandit = bandit.model_copy(update={"reward": "learning-progress"})
            name = strategy.split("-")[0]
            cfg = cfg.model_copy(update={"curriculum": name})
            settings = params.model_copy(update={"train": cfg, "bandit": bandit})
            curriculum = make_curriculum(name, frame, settings)
            check = HeldoutCheck(heldout, params.prompt, args.every, args.eval_tokens)
            started = time.perf_counter()
            trainer = build_trainer(cfg, model, frame, curriculum, params.prompt, callbacks=[check])
            check.trainer = trainer
            check.check(trainer.model, 0, 0)
            trainer.train()
            run = {
                "strategy": strategy,
                "seed": seed,
                "training_questions": len(frame),
                "seconds": time.perf_counter() - started,
                "points": check.points,
                "arms": [r["arm"] for r in curriculum.history],
                "train_solve_rate": [r["solve_rate"] for r in curriculum.history],
            }
            runs.append(run)
            write_json({"heldout_questions": len(heldout), "runs": runs}, out)
            console.print(f"{strategy} seed {seed}: {check.points[-1]} in {run['seconds']:.0f} s")
    report(runs, len(heldout), out)


def report(runs: list[dict[str, Any]], heldout: int, out: Path) -> None:
    table = Table(title=f"held-out greedy accuracy ({heldout} questions), mean ± sd over seeds")
    for col in ("strategy", "training qs", "step", "accuracy", "unique questions seen", "s/run"):
        table.add_column(col, justify="right")
    curves: dict[str, dict[str, Any]] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        mine = [r for r in runs if r["strategy"] == strategy]
        steps = [p["step"] for p in mine[0]["points"]]
        acc = np.array([[p["accuracy"] for p in r["points"]] for r in mine])
        seen = np.array([[p["unique_seen"] for p in r["points"]] for r in mine])
        for i, step in enumerate(steps):
            table.add_row(
                strategy, str(mine[0]["training_questions"]), str(step),
                f"{acc[:, i].mean():.3f} ± {acc[:, i].std():.3f}",
                f"{seen[:, i].mean():.1f}", f"{np.mean([r['seconds'] for r in mine]):.0f}",
            )  # fmt: skip
        curves[f"{strategy} ({mine[0]['training_questions']} questions, {len(mine)} seeds)"] = {
            "step": np.array(steps), "seen": seen.mean(axis=0), "acc": acc
        }  # fmt: skip
    console.print(table)
    plot_efficiency(curves, heldout, out.with_suffix(".png"))


def plot_efficiency(curves: dict[str, dict[str, Any]], heldout: int, path: Path) -> None:
    """Every strategy on one axis, against steps and against unique questions seen: the line is
    the mean over seeds, the band one standard deviation."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for label, c in curves.items():
        mean, sd = c["acc"].mean(axis=0), c["acc"].std(axis=0)
        for ax, x in zip(axes, (c["step"], c["seen"]), strict=True):
            (line,) = ax.plot(x, mean, marker="o", label=label)
            ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
    axes[0].set(xlabel="step", ylabel=f"held-out accuracy ({heldout} questions, greedy)")
    axes[1].set(xlabel="unique training questions seen (mean over seeds)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


COST_SETTINGS: dict[str, dict[str, Any]] = {
    "default (fp32, beta 0.02, checkpointing)": {},
    "no activation checkpointing": {"grpo": {"activation_checkpointing": False}},
    "beta 0 (no reference model), no checkpointing": {
        "beta": 0.0, "grpo": {"activation_checkpointing": False}
    },
    "beta 0, bf16 weights": {
        "beta": 0.0, "precision": "bf16", "grpo": {"activation_checkpointing": False}
    },
    "beta 0, bf16-mixed (fp32 weights, autocast)": {
        "beta": 0.0, "precision": "bf16-mixed", "grpo": {"activation_checkpointing": False}
    },
    "beta 0, bf16-mixed, checkpointing": {"beta": 0.0, "precision": "bf16-mixed"},
    "beta 0, half the rollouts (4 x 4)": {
        "beta": 0.0, "prompts_per_step": 4, "grpo": {"activation_checkpointing": False}
    },
}  # fmt: skip


def cost(args: argparse.Namespace) -> None:
    """Seconds per GRPO step of a real model on this machine under each of ``COST_SETTINGS``
    (uniform prompts from the offline arithmetic set, real correctness reward), against the
    default settings measured in the same run: what a comparison's length can be sized on."""
    params = load_params(ROOT / "params.yaml", ["train.curriculum=uniform", "train.data=full"])
    frame, _ = load_dataset(params.data, params.arithmetic)
    model = prepare_model(args.model)
    rows = []
    for name, update in COST_SETTINGS.items():
        cfg = params.train.model_copy(
            update={
                "max_steps": args.steps, "prompts_per_step": args.prompts,
                "num_generations": args.generations, "max_completion_length": args.tokens,
                "save_steps": 10**6, "checkpoint_dir": tempfile.mkdtemp(prefix="sparft-cost-"),
                **update,
            }
        )  # fmt: skip
        settings = params.model_copy(update={"train": cfg})
        clock = StepTimes()
        curriculum = make_curriculum("uniform", frame, settings)
        trainer = build_trainer(cfg, model, frame, curriculum, params.prompt, callbacks=[clock])
        trainer.train()
        logs = [r for r in trainer.state.log_history if "loss" in r]
        steady = clock.times[1:] or clock.times  # the first step warms up
        rows.append(
            {
                "settings": name,
                "rollouts": cfg.rollouts_per_step,
                "step_s": statistics.median(steady),
                "generation_s": statistics.median(r["time/generation_s"] for r in logs[1:] or logs),
                "all_steps_s": clock.times,
            }
        )
        console.print(f"{name}: {rows[-1]['step_s']:.1f} s per step")
    reference = rows[0]["step_s"]
    table = Table(title=f"{args.model}: seconds per GRPO step ({args.tokens} tokens at most)")
    for col in ("settings", "rollouts/step", "s/step", "generation s", "speed-up"):
        table.add_column(col, justify="left" if col == "settings" else "right")
    for row in rows:
        table.add_row(
            row["settings"], str(row["rollouts"]), f"{row['step_s']:.1f}",
            f"{row['generation_s']:.1f}", f"{reference / row['step_s']:.2f}x",
        )  # fmt: skip
    console.print(table)
    if args.out:
        write_json(
            {"model": args.model, "threads": torch.get_num_threads(), "rows": rows}, args.out
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("overhead")
    a.add_argument("--model", default="tiny", help="tiny (random 2-layer) or a preset/folder")
    a.add_argument("--steps", type=int, default=20)
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--prompts", type=int, default=4)
    a.add_argument("--generations", type=int, default=8)
    a.add_argument(
        "--methods", nargs="+", default=["uniform", "sparft", "cures", "dump", "knapsack"],
        help="curricula to time against TRL (knapsack: uniform with the knapsack allocator)",
    )  # fmt: skip
    a.add_argument("--out", type=Path, help="also write the step times as JSON")
    a.add_argument("--max-completion-length", type=int, default=16)
    a.add_argument("--threads", type=int, default=1)
    b = sub.add_parser("efficiency")
    b.add_argument("--project", default=".")
    b.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    b.add_argument(
        "--strategies", nargs="+", default=["sparft", "uniform"],
        help="sparft (bandit as in params.yaml), sparft-lp (learning-progress reward), uniform",
    )  # fmt: skip
    b.add_argument("--uniform-data", choices=["full", "subset"], default="full")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--every", type=int, default=5)
    b.add_argument("--heldout-per-grade", type=int, default=4)
    b.add_argument("--eval-tokens", type=int, default=48)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--out", default="benchmarks/results/efficiency.json")
    d = sub.add_parser("cost", help="seconds per step of a real model under several settings")
    d.add_argument("--model", default="smollm2-135m")
    d.add_argument("--steps", type=int, default=3)
    d.add_argument("--prompts", type=int, default=8)
    d.add_argument("--generations", type=int, default=4)
    d.add_argument("--tokens", type=int, default=64)
    d.add_argument("--out", type=Path, default=Path("benchmarks/results/train_step_cost.json"))
    c = sub.add_parser("report", help="merge efficiency results run separately: table and plot")
    c.add_argument("inputs", nargs="+", type=Path)
    c.add_argument("--out", type=Path, default=Path("benchmarks/results/efficiency.json"))
    args = parser.parse_args(argv)
    commands = {
        "overhead": overhead, "efficiency": efficiency, "cost": cost, "report": merge_reports
    }  # fmt: skip
    commands[args.command](args)


def merge_reports(args: argparse.Namespace) -> None:
    """One table and plot from several ``efficiency`` outputs (same held-out set required)."""
    results = [json.loads(path.read_text()) for path in args.inputs]
    heldout = {r["heldout_questions"] for r in results}
    if len(heldout) != 1:
        raise SystemExit(f"the inputs used different held-out sets: {sorted(heldout)} questions")
    runs = [run for r in results for run in r["runs"]]
    questions = heldout.pop()
    write_json({"heldout_questions": questions, "runs": runs}, args.out)
    report(runs, questions, args.out)


if __name__ == "__main__":
    main()
