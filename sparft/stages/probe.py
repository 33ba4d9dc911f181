"""Stage ``probe``: per-question solve rate of the probe model, to ``data/probe.parquet``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.stage import Report, Stage

if TYPE_CHECKING:
    import pandas as pd

    from sparft.config import Params

OUT = Path("data/probe.parquet")
PROGRESS = Path("data/probe.progress")  # journal of finished batches while the stage runs
SUMMARY = Path("data/probe_summary.json")
HISTOGRAM = Path("data/plots/probe_solve_rates.png")


def summarise(frame: pd.DataFrame, probed: pd.DataFrame) -> dict[str, Any]:
    """Overall and per-difficulty-label solve rates (the label is the arithmetic grade)."""
    merged = frame[["id", "difficulty_label"]].merge(probed, on="id")
    summary: dict[str, Any] = {
        "questions": len(merged),
        "solve_rate": float(merged["solve_rate"].mean()),
        "mean_completion_tokens": float(merged["mean_completion_tokens"].mean()),
        # what probing cost, in the units training spends (a comparison counts them)
        "rollouts": int(merged["k"].fillna(0).sum()) if "k" in merged else 0,
    }
    if merged["truncated"].notna().any():
        summary["truncated"] = float(merged["truncated"].mean())
    if merged["difficulty_label"].notna().any():
        by_label = merged.groupby("difficulty_label")["solve_rate"].agg(["mean", "count"])
        summary["solve_rate_by_label"] = {
            f"{label:g}": {"solve_rate": float(r["mean"]), "questions": int(r["count"])}
            for label, r in by_label.iterrows()
        }
    return summary


def run(params: Params) -> dict[str, Any]:
    import shutil

    from sparft.data import read_dataset
    from sparft.generation.server import serving
    from sparft.io import write_json, write_parquet
    from sparft.models import prepare_model
    from sparft.plots import plot_solve_rate_histogram
    from sparft.probe import probe_sharded, probe_with_labels, sample_questions

    cfg = params.probe
    frame = sample_questions(read_dataset(params.data.out), cfg)
    extra: dict[str, Any] = {}
    if cfg.source == "label":
        probed = probe_with_labels(frame)
    else:
        gen = params.generation.model_copy(update={"model": cfg.model or params.generation.model})
        gen = gen.model_copy(update={"model": prepare_model(gen.model)})
        with serving(gen) as served:
            # absolute: the shards may run on workers started elsewhere
            journal = PROGRESS.absolute()
            done = probe_sharded(frame, served, cfg, params.prompt, journal)
        probed = done.probed
        extra = {
            "shards": len(done.shards),
            "resumed_questions": done.resumed,
            "sampling_seeded": served.backend != "vllm-server" or served.request_seed,
        }
    write_parquet(probed, OUT)
    summary = summarise(frame, probed) | extra
    write_json(summary, SUMMARY)
    by_model = cfg.source == "model"
    how = f"{cfg.k} samples each (T={cfg.temperature:g})" if by_model else "from labels"
    title = f"{len(probed)} questions, {how}: mean solve rate {summary['solve_rate']:.3f}"
    k = cfg.k if by_model else None
    plot_solve_rate_histogram(probed["solve_rate"].to_numpy(), k, HISTOGRAM, title)
    shutil.rmtree(PROGRESS, ignore_errors=True)
    return summary


def report(summary: dict[str, Any], params: Params) -> list[Report]:
    rows = [
        (label, str(row["questions"]), f"{row['solve_rate']:.3f}")
        for label, row in summary.get("solve_rate_by_label", {}).items()
    ]
    rows.append(("all", str(summary["questions"]), f"{summary['solve_rate']:.3f}"))
    title = f"probe solve rate over {summary['questions']} questions"
    return [Report(title, rows, ("difficulty", "questions", "solve rate"))]


STAGE = Stage(
    name="probe",
    module=__name__,
    description="each question's solve rate under the probe model",
    inputs=("${data.out}",),
    outs=(str(OUT),),
    metrics=(str(SUMMARY),),
    plots=(str(HISTOGRAM),),
    params=("probe", "generation", "prompt"),
    mlflow=(str(SUMMARY), str(HISTOGRAM)),
    report=report,
)
