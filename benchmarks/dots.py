"""DOTS benchmarks: the difficulty predictor's error, and what rollout replay costs and saves.

(a) ``predictor``: on each data set, the questions are split 80/20 (seeded); the predictor is
trained on the 80% (``sparft.curricula.dots.predictor``, the ``dots`` section's settings) and
predicts the 20% from ``dots.train_references`` references drawn from the 80%, as it predicts
training questions from reference rollouts during GRPO. Against it, on the same split: a
constant predictor (the 80%'s mean rate) and a 10-nearest-neighbour one (mean rate of the most
similar references, cosine, same embeddings). Data sets: DeepScaleR's MATH train set with
level-derived rates (``1 - scaled level``, the probe stage's ``source: label``) and the offline
default's arithmetic set probed by SmolLM2 (k sampled answers per question), both embedded with
the offline MiniLM. Writes ``benchmarks/results/dots_predictor.json``.

(b) ``replay``: seconds per training step of the curriculum trainer with and without rollout
replay on the same config (SmolLM2 by default, or a random 2-layer model with ``--model tiny``;
completions forced to one length; a reward of constant cost), split into generation and
update, and the share of the trained rows that replay took from the buffer instead of
generating, i.e. the rollouts it saved.

    python benchmarks/dots.py predictor --math-questions 7469 --seeds 0 1 2
    python benchmarks/dots.py replay --steps 10 --model smollm2-135m
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

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from sparft.config import Params
from sparft.curricula import make_curriculum
from sparft.curricula.dots import DotsConfig
from sparft.curricula.dots.predictor import (
    TrainSettings,
    error_metrics,
    knn_rates,
    predict,
    train_predictor,
)
from sparft.data import DataConfig, load_dataset
from sparft.embed import EmbedConfig, embed_questions
from sparft.io import write_json
from sparft.models import prepare_model
from sparft.training import ReplayConfig

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def math_set(limit: int | None, seed: int) -> tuple[pd.DataFrame, np.ndarray, str]:
    from sparft.probe import probe_with_labels

    shared = str(ROOT / ".." / "shared" / "data")
    frame, _ = load_dataset(
        DataConfig(spec="deepscaler:math", shared_dir=shared, on_bad_rows="skip")
    )
    if limit and limit < len(frame):
        frame = frame.sample(n=limit, random_state=seed).reset_index(drop=True)
    rates = probe_with_labels(frame)["solve_rate"].to_numpy(dtype=float)
    return frame, rates, "DeepScaleR MATH train, level-derived rates"


def arithmetic_set(k: int, tokens: int, threads: int) -> tuple[pd.DataFrame, np.ndarray, str]:
    from sparft.generation import GenerationConfig, make_backend
    from sparft.probe import ProbeConfig, probe_with_model
    from sparft.prompts import PromptConfig

    params = Params()
    frame, _ = load_dataset(DataConfig(spec="arithmetic"), params.arithmetic)
    model = prepare_model(params.generation.model)
    backend = make_backend(GenerationConfig(model=model, num_threads=threads))
    cfg = ProbeConfig(k=k, max_new_tokens=tokens)
    probed = probe_with_model(frame, backend, cfg, PromptConfig(), model)
    rates = frame[["id"]].merge(probed, on="id")["solve_rate"].to_numpy(dtype=float)
    return frame, rates, f"offline arithmetic, SmolLM2 probe (k={k}, {tokens} tokens)"


def evaluate_split(x: np.ndarray, y: np.ndarray, cfg: DotsConfig, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    settings = TrainSettings(
        hidden=cfg.hidden, dropout=cfg.dropout, references=cfg.train_references,
        epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        warmup_share=cfg.warmup_share, seed=seed,
    )  # fmt: skip
    model, _ = train_predictor(x[train], y[train], np.zeros(len(train)), settings)
    refs = rng.choice(train, size=min(cfg.train_references, len(train)), replace=False)
    ours = error_metrics(predict(model, x[test], x[refs], y[refs]), y[test])
    mean = error_metrics(np.full(len(test), y[train].mean()), y[test])
    knn = error_metrics(knn_rates(x[test], x[refs], y[refs]), y[test])
    return {
        "mae": ours["mae"], "pearson": ours["pearson"], "baseline_mae": mean["mae"],
        "knn_mae": knn["mae"], "knn_pearson": knn["pearson"],
        "train_questions": len(train), "test_questions": len(test),
    }  # fmt: skip


def predictor(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cfg = Params().dots
    sets = {
        "math": math_set(args.math_questions, 0),
        "arithmetic": arithmetic_set(args.probe_k, args.probe_tokens, args.threads),
    }
    embed = EmbedConfig(num_threads=args.threads)
    results: dict[str, Any] = {}
    for name, (frame, rates, description) in sets.items():
        emb = embed_questions(frame["id"].tolist(), frame["question"].tolist(), embed)
        runs = [evaluate_split(emb.matrix, rates, cfg, seed) for seed in args.seeds]
        summary = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        summary["seeds"] = len(runs)
        summary["description"] = description
        summary["mae_sd"] = float(np.std([r["mae"] for r in runs]))
        results[name] = summary
    table = Table(title="DOTS predictor on held-out questions (mean over seeds)")
    for col in ("data set", "questions (train/test)", "MAE", "Pearson", "mean MAE", "kNN MAE",
                "kNN Pearson"):  # fmt: skip
        table.add_column(col, justify="right" if col != "data set" else "left")
    for r in results.values():
        table.add_row(
            r["description"], f"{r['train_questions']:.0f}/{r['test_questions']:.0f}",
            f"{r['mae']:.3f} ± {r['mae_sd']:.3f}", f"{r['pearson']:.3f}",
            f"{r['baseline_mae']:.3f}", f"{r['knn_mae']:.3f}", f"{r['knn_pearson']:.3f}",
        )  # fmt: skip
    console.print(table)
    write_json(results, args.out)
    console.print(f"written to {args.out}")


def replay(args: argparse.Namespace) -> None:
    # the overhead benchmark's parts: ``python benchmarks/dots.py`` has this folder on sys.path
    from training import StepTimes, parity_reward, tiny_model

    from sparft.prompts import PromptConfig
    from sparft.rewards import format_reward
    from sparft.training import TrainConfig
    from sparft.training.setup import build_trainer

    torch.set_num_threads(args.threads)
    n = 64
    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "question": [f"What is {i} + {i % 7}?" for i in range(n)],
            "answer": [str(i + i % 7) for i in range(n)],
        }
    )
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = (
            tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else prepare_model(args.model)
        )
        for label, on in (("without replay", False), ("with replay", True)):
            cfg = TrainConfig(
                curriculum="uniform", max_steps=args.steps, prompts_per_step=args.prompts,
                num_generations=args.generations, max_completion_length=args.tokens,
                save_steps=10**6, checkpoint_dir=str(Path(tmp) / label),
                replay=ReplayConfig(enabled=on, sigma=args.sigma),
                grpo={"generation_kwargs": {"min_new_tokens": args.tokens}},
            )  # fmt: skip
            curriculum = make_curriculum("uniform", frame, Params(train=cfg))
            clock = StepTimes()
            trainer = build_trainer(
                cfg, model, frame, curriculum, PromptConfig(), callbacks=[clock],
                reward_funcs=[parity_reward, format_reward],
            )  # fmt: skip
            trainer.train()
            logs = pd.DataFrame(trainer.state.log_history[1:-1])  # first step warms up; summary
            history = pd.DataFrame(curriculum.history)
            replayed = history["replay/rows"].sum() if "replay/rows" in history else 0.0
            trained = history["rollouts"].sum() + replayed
            rows[label] = {
                "median_s_per_step": statistics.median(clock.times[1:]),
                "generation_s": float(logs["time/generation_s"].median()),
                "update_s": float(logs["time/update_s"].median()),
                "generated_rollouts": float(history["rollouts"].sum()),
                "replayed_rows": float(replayed),
                "rollouts_saved_share": float(replayed / trained),
            }
    base = rows["without replay"]["median_s_per_step"]
    title = f"rollout replay (sigma={args.sigma}), {args.model}, {args.steps} steps"
    table = Table(title=title)
    columns = ("run", "s/step", "ratio", "generation s", "update s", "generated", "replayed")
    for col in (*columns, "saved"):
        table.add_column(col, justify="right" if col != "run" else "left")
    for label, r in rows.items():
        table.add_row(
            label, f"{r['median_s_per_step']:.3f}", f"{r['median_s_per_step'] / base:.3f}",
            f"{r['generation_s']:.3f}", f"{r['update_s']:.3f}",
            f"{r['generated_rollouts']:.0f}", f"{r['replayed_rows']:.0f}",
            f"{r['rollouts_saved_share']:.1%}",
        )  # fmt: skip
    console.print(table)
    write_json(rows, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("predictor")
    a.add_argument("--math-questions", type=int, default=None, help="sample of MATH (all: none)")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a.add_argument("--probe-k", type=int, default=4)
    a.add_argument("--probe-tokens", type=int, default=64)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/dots_predictor.json")
    b = sub.add_parser("replay")
    b.add_argument("--model", default="smollm2-135m", help="tiny (random 2-layer) or a preset")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--prompts", type=int, default=4)
    b.add_argument("--generations", type=int, default=4)
    b.add_argument("--tokens", type=int, default=32)
    b.add_argument("--sigma", type=float, default=0.5)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/dots_replay.json")
    args = parser.parse_args()
    {"predictor": predictor, "replay": replay}[args.command](args)


if __name__ == "__main__":
    main()
