"""A run's numbers: TRL's per-step logs as a table (one row per optimizer step) and the run-level
summary the train stage writes to DVC metrics and MLflow.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def log_history_frame(log_history: list[dict[str, Any]]) -> pd.DataFrame:
    """Trainer's per-step logs (loss, reward, KL, lengths, timings) as one row per step."""
    return pd.DataFrame([r for r in log_history if "step" in r and "loss" in r])


def summary_metrics(history: pd.DataFrame, logs: pd.DataFrame) -> dict[str, float]:
    """Run-level numbers for DVC metrics and MLflow."""
    out: dict[str, float] = {"steps": float(len(history))}
    if not history.empty:
        out["solve_rate_mean"] = float(history["solve_rate"].mean())
        tail = history.tail(max(1, len(history) // 4))
        out["solve_rate_last_quarter"] = float(tail["solve_rate"].mean())
        out["effective_prompt_ratio"] = float(history["effective_prompt_ratio"].mean())
        out["unique_questions_seen"] = float(history["unique_seen"].iloc[-1])
        out["rollouts_total"] = float(history["rollouts_total"].iloc[-1])
    for key in ("time/generation_s", "time/update_s", "kl", "completions/mean_length"):
        if key in logs and logs[key].notna().any():
            out["mean_" + key.replace("/", "_")] = float(logs[key].mean())
    return {k: v for k, v in out.items() if math.isfinite(v)}
