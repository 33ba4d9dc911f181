"""Stage ``train``: GRPO on the selected subset with the configured curriculum and allocation.

Writes the policy to ``data/train/model`` (full weights, or a LoRA adapter), the per-step
curriculum record and trainer logs, run metrics, and plots of arm choices (for curricula with
arms) and training curves. Checkpoints go to ``train.checkpoint_dir`` (not a DVC output: they
exist to resume). The probe stage's answers (``data/probe.parquet``), when present, are every
curriculum's first evidence of each question's solve rate (CurES's initial rollouts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sparft.config import Params
from sparft.curricula import make_curriculum, needs_column
from sparft.curricula.base import PROBE_CORRECT, PROBE_ROLLOUTS
from sparft.curricula.dots import EMBEDDING
from sparft.data import DataError, read_dataset
from sparft.embed import load_embeddings
from sparft.io import write_json, write_parquet
from sparft.models import prepare_model
from sparft.plots import plot_arm_choices, plot_training_curves
from sparft.stages.cluster import OUT as CLUSTERS
from sparft.stages.embed import OUT as EMBEDDINGS
from sparft.stages.probe import OUT as PROBE
from sparft.stages.selection import OUT as SUBSET
from sparft.trainer import (
    build_trainer,
    log_history_frame,
    save_policy,
    summary_metrics,
    train,
)

MODEL = Path("data/train/model")
HISTORY = Path("data/train/history.parquet")
LOGS = Path("data/train/logs.parquet")
METRICS = Path("data/train/metrics.json")
ARMS_PLOT = Path("data/plots/train_arms.png")
CURVES_PLOT = Path("data/plots/train_curves.png")
ARTIFACTS = (ARMS_PLOT, CURVES_PLOT, HISTORY, METRICS)

CURVES = {
    "reward": "reward",
    "solve rate (curriculum batch)": "curriculum/solve_rate",
    "effective prompt ratio": "curriculum/effective_prompt_ratio",
    "rollouts so far": "curriculum/rollouts_total",
    "KL to the reference": "kl",
    "completion length (tokens)": "completions/mean_length",
    "loss": "loss",
    "generation seconds": "time/generation_s",
    "update seconds": "time/update_s",
}


def training_frame(params: Params) -> pd.DataFrame:
    """The questions to train on, with a ``cluster`` column when the curriculum needs one and
    the probe stage's answers (``probe_rollouts``, ``probe_correct``) where it has them."""
    if params.train.data == "subset":
        if not SUBSET.exists():
            raise DataError(f"{SUBSET}: no such file (run the select stage first)")
        frame = pd.read_parquet(SUBSET)
    else:
        frame = read_dataset(params.data.out)
        if needs_column(params.train.curriculum, params) == "cluster":
            if not CLUSTERS.exists():
                raise DataError(f"{CLUSTERS}: no such file (run the cluster stage first)")
            clusters = pd.read_parquet(CLUSTERS)[["id", "cluster"]]
            frame = frame.merge(clusters, on="id", how="inner", validate="one_to_one")
    if needs_column(params.train.curriculum, params) == EMBEDDING:
        emb = load_embeddings(EMBEDDINGS)
        row = {qid: i for i, qid in enumerate(emb.ids.tolist())}
        missing = [qid for qid in frame["id"].astype(str) if qid not in row]
        if missing:
            raise DataError(
                f"{EMBEDDINGS}: {len(missing)} training questions have no embedding "
                f"(e.g. {missing[0]}): rerun embed"
            )
        frame = frame.assign(**{EMBEDDING: [emb.matrix[row[q]] for q in frame["id"].astype(str)]})
    if PROBE.exists():
        probe = pd.read_parquet(PROBE)
        if {"id", "k", "n_correct"} <= set(probe.columns):
            probe = probe[["id", "k", "n_correct"]].rename(
                columns={"k": PROBE_ROLLOUTS, "n_correct": PROBE_CORRECT}
            )
            frame = frame.merge(probe, on="id", how="left", validate="one_to_one")
    return frame


def _plots(history: pd.DataFrame, logs: pd.DataFrame, n_arms: int | None) -> None:
    if n_arms is not None and not history.empty:
        plot_arm_choices(
            history["step"].to_numpy() + 1,
            history["arm"].to_numpy(),
            history["solve_rate"].to_numpy(),
            n_arms,
            ARMS_PLOT,
        )
    curves = {
        title: (logs["step"].to_numpy(), logs[key].to_numpy(dtype=float))
        for title, key in CURVES.items()
        if key in logs and logs[key].notna().all()
    }
    plot_training_curves(curves, CURVES_PLOT)


def run(params: Params) -> dict[str, Any]:
    cfg = params.train
    frame = training_frame(params)
    curriculum = make_curriculum(cfg.curriculum, frame, params)
    model_path = prepare_model(cfg.model or params.generation.model)
    report_to = ["mlflow"] if params.tracking.enabled else []
    trainer = build_trainer(cfg, model_path, frame, curriculum, params.prompt, report_to)
    resumed = train(trainer, cfg)
    save_policy(trainer, MODEL)
    history = pd.DataFrame(curriculum.history)
    logs = log_history_frame(trainer.state.log_history)
    summary: dict[str, Any] = {
        "curriculum": cfg.curriculum,
        "allocation": curriculum.allocator.method,
        "training_questions": len(frame),
        "resumed_from": str(resumed) if resumed else None,
        "lora": hasattr(trainer.model, "peft_config"),
        **summary_metrics(history, logs),
    }
    if not trainer.args.should_save:
        return summary
    labels = getattr(curriculum, "arm_labels", None)
    n_arms = len(labels) if labels is not None and "arm" in history else None
    if n_arms is not None:
        picks = np.bincount(history["arm"].to_numpy(dtype=int), minlength=n_arms)
        summary["arm_picks"] = {str(labels[a]): int(c) for a, c in enumerate(picks)}
    write_parquet(history, HISTORY)
    write_parquet(logs, LOGS)
    write_json(summary, METRICS)
    _plots(history, logs, n_arms)
    return summary
