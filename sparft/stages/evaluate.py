"""Stage ``evaluate``: the trained model, and the base model it started from, on benchmarks.

Writes ``data/eval/results.parquet`` (one row per model, benchmark and question, with every
completion, extracted answer and verdict), ``data/eval/metrics.json`` (``{model: {benchmark:
{pass@1, pass@1_se, ...}}}``, DVC metrics) and ``data/plots/eval_accuracy.png``. Everything is
computed before any file is replaced, each atomically, the metrics last.

The returned summary holds the same numbers, spelled ``pass_at_k``: MLflow, which logs the
summary's numbers, refuses ``@`` in metric names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparft.config import Params
from sparft.evaluation import EvalReport, EvaluateConfig, evaluate
from sparft.io import write_json, write_parquet
from sparft.plots import plot_accuracy

OUT_DIR = Path("data/eval")
RESULTS = OUT_DIR / "results.parquet"
METRICS = OUT_DIR / "metrics.json"
PLOT = Path("data/plots/eval_accuracy.png")
ARTIFACTS = (PLOT, METRICS, RESULTS)


def run_evaluation(
    params: Params,
    cfg: EvaluateConfig | None = None,
    out_dir: Path = OUT_DIR,
    plot: Path = PLOT,
) -> dict[str, Any]:
    """Evaluate with ``cfg`` (default ``params.evaluate``), write the three files, summarise."""
    cfg = cfg or params.evaluate
    report = evaluate(cfg, params.generation, params.prompt, params.data, params.arithmetic)
    return write_report(report, out_dir, plot)


def write_report(report: EvalReport, out_dir: Path = OUT_DIR, plot: Path = PLOT) -> dict[str, Any]:
    """Plot, results and metrics (in that order, so metrics mean the rest is there)."""
    settings = report.settings
    title = (
        f"pass@1, {settings.get('n', 1)} sample(s) per question, "
        f"T={settings.get('temperature', 0):g}, max {settings.get('max_new_tokens')} tokens"
    )
    plot_accuracy(report.aggregates, plot, title=title)
    write_parquet(report.results, out_dir / RESULTS.name)
    metrics = report.metrics
    write_json(metrics, out_dir / METRICS.name)
    return {
        "metrics": mlflow_safe(metrics),
        "models": report.models,
        "settings": settings,
        "notes": report.notes,
        "results": str(out_dir / RESULTS.name),
        "plot": str(plot),
    }


def mlflow_safe(tree: dict[str, Any]) -> dict[str, Any]:
    """The same nested dict with ``@`` in keys spelled ``_at_`` (``pass@1`` -> ``pass_at_1``)."""
    return {
        key.replace("@", "_at_"): mlflow_safe(value) if isinstance(value, dict) else value
        for key, value in tree.items()
    }


def run(params: Params) -> dict[str, Any]:
    return run_evaluation(params)
