"""Stage ``evaluate``: the trained model, and the base model it started from, on benchmarks.

Writes ``data/eval/results.parquet`` (one row per model, benchmark and question, with every
completion, extracted answer and verdict), ``data/eval/metrics.json`` (``{model: {benchmark:
{pass@1, pass@1_se, ...}}}``, DVC metrics), ``data/eval/vs_base.json`` (per benchmark, the
evaluated model's pass@1 minus the base model's, paired over questions, with its interval: the
number that says whether training helped) and ``data/plots/eval_accuracy.png``. Everything is
computed before any file is replaced, each atomically, the metrics last.

The returned summary holds the same numbers, spelled ``pass_at_k``: MLflow, which logs the
summary's numbers, refuses ``@`` in metric names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.stage import Artifact, Report, Stage
from sparft.stages.train import MODEL as TRAINED_MODEL

if TYPE_CHECKING:
    from sparft.config import Params
    from sparft.evaluation import EvalReport, EvaluateConfig

OUT_DIR = Path("data/eval")
RESULTS = OUT_DIR / "results.parquet"
METRICS = OUT_DIR / "metrics.json"
VS_BASE = OUT_DIR / "vs_base.json"
PLOT = Path("data/plots/eval_accuracy.png")


def run_evaluation(
    params: Params,
    cfg: EvaluateConfig | None = None,
    out_dir: Path = OUT_DIR,
    plot: Path = PLOT,
) -> dict[str, Any]:
    """Evaluate with ``cfg`` (default ``params.evaluate``), write the three files, summarise.
    ``model: trained`` is the train stage's policy folder."""
    from sparft.evaluation import evaluate

    cfg = cfg or params.evaluate
    report = evaluate(
        cfg, params.generation, params.prompt, params.data, params.arithmetic, trained=TRAINED_MODEL
    )
    return write_report(report, out_dir, plot)


def write_report(report: EvalReport, out_dir: Path = OUT_DIR, plot: Path = PLOT) -> dict[str, Any]:
    """Plot, results and metrics (in that order, so metrics mean the rest is there)."""
    from sparft.evaluation import BASE_LABEL, paired_difference
    from sparft.io import write_json, write_parquet
    from sparft.plots import plot_accuracy

    settings = report.settings
    title = (
        f"pass@1, {settings.get('n', 1)} sample(s) per question, "
        f"T={settings.get('temperature', 0):g}, max {settings.get('max_new_tokens')} tokens"
    )
    plot_accuracy(report.aggregates, plot, title=title)
    write_parquet(report.results, out_dir / RESULTS.name)
    labels = list(report.models)
    vs_base = (
        paired_difference(report.results, labels[0], BASE_LABEL)
        if len(labels) > 1 and BASE_LABEL in labels[1:]
        else {}
    )
    write_json(vs_base, out_dir / VS_BASE.name)
    metrics = report.metrics
    write_json(metrics, out_dir / METRICS.name)
    return {
        "metrics": mlflow_safe(metrics),
        "vs_base": vs_base,
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


def report(summary: dict[str, Any], params: Params | None = None) -> list[Report]:
    """One row per model and benchmark: accuracy with its standard error, then speed."""
    metrics = {
        label: {b: {k.replace("_at_", "@"): v for k, v in m.items()} for b, m in per.items()}
        for label, per in summary["metrics"].items()
    }
    ks = sorted(
        {
            int(k[5:])
            for per in metrics.values()
            for m in per.values()
            for k in m
            if k.startswith("pass@") and k[5:].isdigit() and k != "pass@1"
        }
    )
    settings = summary.get("settings", {})
    title = (
        f"evaluation: {settings.get('n')} sample(s) per question, "
        f"T={settings.get('temperature')}, max {settings.get('max_new_tokens')} new tokens"
    )
    columns = ("model", "benchmark", "questions", "pass@1 ± se", *[f"pass@{k}" for k in ks])
    columns += ("mean tokens", "truncated", "wall s", "questions/s", "tokens/s")
    rows = []
    for label, per in metrics.items():
        for bench, m in per.items():
            se = m.get("pass@1_se")
            rows.append(
                (
                    label,
                    bench,
                    str(m["questions"]),
                    f"{m['pass@1']:.3f}" + (f" ± {se:.3f}" if se is not None else ""),
                    *[f"{m[f'pass@{k}']:.3f}" for k in ks],
                    f"{m['mean_completion_tokens']:.0f}",
                    f"{m['truncated_share']:.1%}",
                    f"{m.get('wall_s', 0):.1f}",
                    f"{m.get('questions_per_s', 0):.3g}",
                    f"{m.get('tokens_per_s', 0):.3g}",
                )
            )
    tables = [Report(title, rows, columns)]
    vs_base = summary.get("vs_base") or {}
    if vs_base:
        model = next(iter(metrics))
        level = float(next(iter(vs_base.values())).get("level", 0.95))
        tables.append(
            Report(
                f"{model} minus base, paired over the same questions (the interval covers the "
                "questions' sampling, not the seed-to-seed spread of training)",
                [
                    (
                        bench,
                        str(d["questions"]),
                        f"{d['difference']:+.3f}",
                        f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if "ci_low" in d else "",
                        f"{d['p_value']:.3f}" if "p_value" in d else "",
                        f"{d['better']} / {d['worse']}",
                        verdict(d),
                    )
                    for bench, d in vs_base.items()
                ],
                ("benchmark", "questions", "difference", f"{level:.0%} CI", "p",
                 "better / worse", "verdict"),
            )
        )  # fmt: skip
    notes = [("note", str(n)) for n in summary.get("notes", [])]
    return [*tables, *([Report("notes", notes)] if notes else [])]


def verdict(d: Mapping[str, Any]) -> str:
    """In words: training helped, hurt, or the questions cannot tell (the interval holds 0)."""
    low, high = d.get("ci_low"), d.get("ci_high")
    if low is None or high is None or low <= 0 <= high:
        return "not separable"
    return "trained ahead" if low > 0 else "trained behind"


def artifact(config: Mapping[str, Any]) -> Artifact | None:
    """Held-out accuracy per model and benchmark, as a table artifact of the flow run."""
    if not METRICS.is_file():
        return None
    metrics = json.loads(METRICS.read_text())

    def cell(value: Any) -> Any:
        return round(value, 4) if isinstance(value, float) and not math.isnan(value) else value

    rows = [
        {"model": model, "benchmark": bench, **{k: cell(v) for k, v in m.items()}}
        for model, per in metrics.items()
        for bench, m in per.items()
    ]
    vs_base = json.loads(VS_BASE.read_text()) if VS_BASE.is_file() else {}
    rows += [
        {"model": "minus base (paired)", "benchmark": bench, **{k: cell(v) for k, v in d.items()}}
        for bench, d in vs_base.items()
    ]
    return Artifact("sparft-evaluation", f"evaluation ({METRICS}, {VS_BASE})", table=rows)


STAGE = Stage(
    name="evaluate",
    module=__name__,
    description="the trained model and its base on held-out benchmarks",
    inputs=("${data.out}", str(TRAINED_MODEL)),
    outs=(str(RESULTS),),
    metrics=(str(METRICS), str(VS_BASE)),
    plots=(str(PLOT),),
    params=("evaluate", "generation", "prompt", "arithmetic", "data"),
    mlflow=(str(PLOT), str(METRICS), str(VS_BASE), str(RESULTS)),
    where=(("held-out evaluation", f"{METRICS}, {VS_BASE}, {RESULTS}"),),
    report=report,
    artifact=artifact,
)
