"""Compare-strategies flow: every strategy x seed from one config, judged on one held-out set.

The stages before ``train`` run once (the cached ``pipeline`` subflow); then every strategy of
``compare.strategies`` (``sparft.comparison.STRATEGIES``) trains with every seed of
``compare.seeds`` in its own working copy (``flows.grid.run_variants``: cached, one MLflow
variant run each), checking greedy accuracy on the evaluate stage's first benchmark every
``compare.eval_every`` steps (``train.heldout``; the shared step-0 point is computed once), all
under ``compare.scale`` (params for every stage, before the caller's overrides). The
flow reads the curves back, computes the statistics of ``sparft.comparison.summarise`` and
writes ``data/compare/strategies.json`` and ``data/compare/strategies.png``, both also logged
to the flow's MLflow run with a per-strategy metric set and a Prefect table artifact.

    sparft compare-strategies --strategy uniform --strategy sparft --seed 0 --seed 1
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.dvc_state import all_specs, locate, read_spec
from flows.grid import flow_tags, run_variants, slug
from flows.preflight import after_probe, compare_setup
from flows.tasks import working_dir
from sparft.comparison import (
    BASELINE,
    CompareConfig,
    RunCurve,
    format_interval,
    pilot_power,
    power_lines,
    strategy_overrides,
    summarise,
)
from sparft.config import ConfigError, Params, as_overrides, with_overrides
from sparft.io import path_digest, write_json
from sparft.merge_reports import design_params, merge, merged_preflight, run_record
from sparft.stages.cluster import OUT as CLUSTERS
from sparft.stages.probe import OUT as PROBE
from sparft.stages.stage import lookup
from sparft.stages.train import HELDOUT, HISTORY
from sparft.stages.train import METRICS as TRAIN_METRICS
from sparft.tracking import tracked_run

OUT = Path("data/compare/strategies.json")
PLOT = Path("data/compare/strategies.png")
CACHE = Path("data/compare/heldout-cache")


def variant_label(strategy: str, seed: int) -> str:
    return f"{strategy} seed={seed}"


def variant_overrides(cfg: CompareConfig, root: Path, name: str, seed: int) -> list[str]:
    """A strategy x seed's overrides: the strategy's params, the seed for training and for the
    bandit, and the held-out checks."""
    overrides, _ = strategy_overrides(name)
    return [
        *as_overrides(overrides),
        f"train.seed={seed}",
        f"bandit.seed={seed}",
        f"train.heldout.every={cfg.eval_every}",
        f"train.heldout.cache_dir={json.dumps(str(root / CACHE))}",
    ]


def variants(cfg: CompareConfig, root: Path) -> list[tuple[str, list[str]]]:
    """``(label, overrides)`` of every strategy x seed, seed by seed, so a comparison stopped
    early holds every strategy at the same seeds, and a rerun with those seeds reports from
    the cache."""
    return [
        (variant_label(name, seed), variant_overrides(cfg, root, name, seed))
        for seed in cfg.seeds
        for name in cfg.strategies
    ]


def design(params: Params, cfg: CompareConfig, root: Path) -> dict[str, Any]:
    """What the runs read, for ``sparft.merge_reports``: the digest of every data file and
    source file a strategy's training reads and each strategy's params but the per-run ones,
    both as its variant key covers them (``read_spec``)."""
    inputs: dict[str, str | None] = {}
    code: dict[str, str | None] = {}
    per_strategy = {}
    for name in cfg.strategies:
        p = with_overrides(params, variant_overrides(cfg, root, name, cfg.seeds[0]), name)
        config = p.model_dump(mode="json")
        spec = read_spec(all_specs(config)["train"], p)
        for dep in spec.deps:
            where = code if dep.split("/")[0] in ("sparft", "flows") else inputs
            where[dep] = path_digest(locate(root, dep))
        per_strategy[name] = design_params({k: lookup(config, k) for k in spec.params})
    return {
        "inputs": dict(sorted(inputs.items())),
        "params": per_strategy,
        "code": dict(sorted(code.items())),
    }


def machine() -> dict[str, Any]:
    """The machine a comparison ran on: a merged report lists each part's."""
    import torch

    from sparft.generation.server import CPUINFO, cpu_has_bf16

    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        lines = []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), None)
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "cpu_bf16": cpu_has_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def probe_rollouts(root: Path) -> int:
    """Rollouts the probe stage spent (0 when it read labels)."""
    path = root / PROBE
    if not path.is_file():
        return 0
    frame = pd.read_parquet(path)
    return int(frame["k"].fillna(0).sum()) if "k" in frame else 0


def arm_solve_rates(root: Path) -> dict[str, float]:
    """Mean probe solve rate of each cluster's questions, by cluster label."""
    if not (root / CLUSTERS).is_file() or not (root / PROBE).is_file():
        return {}
    clusters = pd.read_parquet(root / CLUSTERS)[["id", "cluster"]]
    probe = pd.read_parquet(root / PROBE)[["id", "solve_rate"]]
    rates = clusters.merge(probe, on="id").groupby("cluster")["solve_rate"].mean()
    return {str(label): float(rate) for label, rate in rates.items()}


def read_curves(cfg: CompareConfig, root: Path) -> list[RunCurve]:
    """Every variant's held-out checks and per-step record, from its working copy."""
    probe = probe_rollouts(root)
    runs = []
    for name in cfg.strategies:
        _, uses_probe = strategy_overrides(name)
        for seed in cfg.seeds:
            here = root / "data" / "compare" / slug(variant_label(name, seed))
            points = pd.read_parquet(here / HELDOUT)
            if points.empty:
                raise ConfigError(f"{here / HELDOUT}: no held-out checks (train.heldout.every=0?)")
            metrics = json.loads((here / TRAIN_METRICS).read_text())
            runs.append(
                RunCurve(
                    strategy=name,
                    seed=seed,
                    points=points,
                    history=pd.read_parquet(here / HISTORY),
                    probe_rollouts=probe if uses_probe else 0,
                    arm_picks=metrics.get("arm_picks", {}),
                )
            )
    return runs


def check_pilot(
    cfg: CompareConfig,
    root: Path,
    strict: bool,
    warn: Callable[[str], None],
    design_seeds: int | None = None,
) -> dict[str, Any]:
    """The pilot's power check (``sparft.comparison.pilot_power``) once the first
    ``compare.pilot_seeds`` seeds have trained: a predicted MDE at ``design_seeds`` (default:
    the comparison's) above ``compare.target_mde`` warns, and under ``strict`` stops the
    comparison before the other seeds train (the pilot's variants stay cached for a rerun)."""
    if cfg.target_mde is None:
        raise ConfigError("compare.target_mde is null: no target for the pilot check")
    pilot = cfg.model_copy(update={"seeds": cfg.seeds[: cfg.pilot_seeds]})
    summary, _ = summarise(read_curves(pilot, root), pilot)
    power = pilot_power(summary, design_seeds or len(cfg.seeds), cfg.target_mde, cfg.level)
    if not power["passed"]:
        message = "\n".join(power_lines(power))
        if strict:
            raise ConfigError(
                f"{message}\nstopped under --strict before seeds {cfg.seeds[cfg.pilot_seeds :]} "
                "trained (the pilot's variants are cached): change the design, or run without "
                "--strict to go on"
            )
        warn(message)
    return power


def table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per strategy: final accuracy with its interval, gain over the start, the
    seed-level test against uniform (difference, interval, p, verdict, minimum detectable
    difference), steps and rollouts to uniform's final accuracy."""
    rows = []
    for name, entry in summary.items():
        final, gain, vs = entry["final"], entry["gain"], entry.get("vs_uniform")
        reached = entry.get("reach_uniform_final") or {}
        rows.append(
            {
                "strategy": name,
                "seeds": len(entry["seeds"]),
                "step": final["step"],
                "accuracy": round(final["mean"], 4),
                "ci": format_interval(final["ci"]),
                "gain": round(gain["difference"], 4),
                "gain_ci": format_interval(gain["ci"]),
                "vs_uniform": None if not vs else round(vs["difference"], 4),
                "vs_uniform_ci": None if not vs else format_interval(vs["ci"]),
                "p_value": None if not vs else round(vs["p_value"], 4),
                "verdict": None if not vs else vs["verdict"],
                "mde": None if not vs or vs["mde"] is None else round(vs["mde"], 4),
                "steps_to_uniform_final": reached.get("step"),
                "rollouts_to_uniform_final": reached.get("rollouts"),
                "train_s_to_uniform_final": reached.get("train_seconds"),
                "rollouts": round(final["rollouts"]),
                "train_s": round(final["train_seconds"], 1),
                "effective_prompt_ratio": round(entry["effective_prompt_ratio"]["mean"], 3),
            }
        )
    return rows


def metric_key(name: str) -> str:
    """A strategy name as an MLflow key prefix (``+`` is not allowed there)."""
    return name.replace("+", "_plus_")


def strategy_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's headline numbers as MLflow metrics, ``NAME.metric``."""
    out: dict[str, float] = {}
    for name, entry in summary.items():
        key = metric_key(name)
        out[f"{key}.accuracy"] = entry["final"]["mean"]
        if entry["final"]["ci"] is not None:
            out[f"{key}.accuracy_ci_low"] = entry["final"]["ci"][0]
            out[f"{key}.accuracy_ci_high"] = entry["final"]["ci"][1]
        out[f"{key}.gain"] = entry["gain"]["difference"]
        out[f"{key}.effective_prompt_ratio"] = entry["effective_prompt_ratio"]["mean"]
        out[f"{key}.rollouts"] = entry["final"]["rollouts"]
        out[f"{key}.train_seconds"] = entry["final"]["train_seconds"]
        vs = entry.get("vs_uniform")
        if vs:
            out[f"{key}.vs_uniform"] = vs["difference"]
            out[f"{key}.vs_uniform_p"] = vs["p_value"]
            if vs["ci"] is not None:
                out[f"{key}.vs_uniform_ci_low"] = vs["ci"][0]
                out[f"{key}.vs_uniform_ci_high"] = vs["ci"][1]
            if vs["mde"] is not None:
                out[f"{key}.mde"] = vs["mde"]
    return out


def verdict_tags(summary: dict[str, Any]) -> dict[str, str]:
    """Each strategy's verdict against uniform as an MLflow tag, ``NAME.verdict``."""
    return {
        f"{metric_key(name)}.verdict": entry["vs_uniform"]["verdict"]
        for name, entry in summary.items()
        if entry.get("vs_uniform")
    }


def verdict_caption(summary: dict[str, Any], level: float) -> str:
    """The plot's second title line: each strategy's verdict against uniform with its p and
    minimum detectable difference, so the picture cannot say more than the test."""
    parts = []
    for name, entry in summary.items():
        vs = entry.get("vs_uniform")
        if vs:
            mde = "n/a" if vs["mde"] is None else f"{vs['mde']:.3f}"
            parts.append(f"{name}: {vs['verdict']} (p={vs['p_value']:.2f}, MDE {mde})")
    if not parts:
        return ""
    return f"vs {BASELINE} at the last check, {level:.0%} seed-level: " + "; ".join(parts)


def settings(
    params: Params, cfg: CompareConfig, heldout: int, wall_s: float, part: bool = False
) -> dict[str, Any]:
    train = params.train
    design = params.compare
    return {
        "model": train.model or params.generation.model,
        "data": params.data.spec,
        "benchmark": params.evaluate.benchmarks[0],
        "heldout_questions": heldout,
        "max_new_tokens": params.evaluate.max_new_tokens,
        "max_steps": train.max_steps,
        "prompts_per_step": train.prompts_per_step,
        "num_generations": train.num_generations,
        "max_completion_length": train.max_completion_length,
        "learning_rate": train.learning_rate,
        "probe_max_new_tokens": params.probe.max_new_tokens,
        "strategies": cfg.strategies,
        "seeds": cfg.seeds,
        "eval_every": cfg.eval_every,
        "scale": cfg.scale,
        "pairs": cfg.pairs,
        "statistics": "seed-level: paired t interval over seeds (question-set error included), "
        "exact sign-flip p over seeds, verdict when both agree (sparft.seed_stats)",
        "bootstrap": cfg.bootstrap,
        "level": cfg.level,
        "wall_seconds": round(wall_s, 1),
        "machine": machine(),
        "part_of": {"strategies": design.strategies, "seeds": design.seeds} if part else None,
    }


def assemble(
    runs: list[RunCurve], cfg: CompareConfig, arm_rates: dict[str, float], **parts: Any
) -> dict[str, Any]:
    """A report: ``parts`` (settings, design, preflight, power, variants) as given, the
    statistics of ``runs`` under ``cfg``, and the runs themselves, so that reports of parts of
    one design merge (``merged_report``)."""
    summary, tested = summarise(runs, cfg, arm_rates)
    return {
        **parts,
        "strategies": summary,
        "pairs": tested,
        "table": table_rows(summary),
        "runs": [run_record(run) for run in runs],
        "arm_solve_rates": arm_rates,
    }


def write_report(report: dict[str, Any], out: Path, plot: Path) -> None:
    """The report's JSON and its plot of the curves."""
    from sparft.plots import plot_strategy_curves

    write_json(report, out)
    s = report["settings"]
    plot_strategy_curves(
        report["strategies"],
        plot,
        title=f"{s['model']} on {s['benchmark']} ({s['heldout_questions']} held-out questions), "
        f"mean over seeds, {s['level']:.0%} seed-level interval\n"
        f"{verdict_caption(report['strategies'], s['level'])}",
    )


def merged_report(paths: Sequence[Path]) -> dict[str, Any]:
    """One report from the reports of parts of one design (``sparft.merge_reports.merge``
    says what must agree): the union of their runs summarised again, the preflight's seeds
    check over the union's seeds, the first part's pilot check, and each part in ``merged``
    (file, sha256, strategies, seeds, machine, wall time, pilot check)."""
    parts, digests = [], {}
    for path in paths:
        try:
            text = path.read_bytes()
            parts.append((str(path), json.loads(text)))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
        digests[str(path)] = hashlib.sha256(text).hexdigest()
    runs, info = merge(parts)
    for part in info["parts"]:
        part["sha256"] = digests[part["file"]]
    reports = [report for _, report in parts]
    settings = dict(reports[0]["settings"])
    machines: list[Any] = []
    for machine_of in (r["settings"].get("machine") for r in reports):
        if machine_of not in machines:
            machines.append(machine_of)
    settings.update(
        strategies=list(dict.fromkeys(s for r in reports for s in r["settings"]["strategies"])),
        seeds=sorted({run.seed for run in runs}),
        pairs=list(dict.fromkeys(p for r in reports for p in r["settings"].get("pairs", []))),
        wall_seconds=round(sum(r["settings"].get("wall_seconds", 0.0) for r in reports), 1),
        machine=machines[0] if len(machines) == 1 else machines,
        part_of=info["design"],
    )
    cfg = CompareConfig(
        **{k: settings[k] for k in ("strategies", "seeds", "pairs", "eval_every", "scale")},
        bootstrap=settings["bootstrap"],
        level=settings["level"],
    )
    arm_rates: dict[str, float] = next(
        (r["arm_solve_rates"] for r in reports if r.get("arm_solve_rates")), {}
    )
    return assemble(
        runs,
        cfg,
        arm_rates,
        settings=settings,
        design={
            key: {k: v for r in reports for k, v in r["design"].get(key, {}).items()}
            for key in ("inputs", "params", "code")
        },
        preflight=merged_preflight(parts, settings["seeds"]),
        power=next((r["power"] for r in reports if r.get("power")), None),
        variants={k: v for r in reports for k, v in r.get("variants", {}).items()},
        merged=info,
    )


@flow(
    name="sparft-compare-strategies",
    description="Every strategy x seed from one config, held-out curves with confidence.",
)
def compare_strategies(
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
    project_dir: str | None = None,
    strategies: list[str] | None = None,
    seeds: list[int] | None = None,
    parallel: int | None = None,
    strict: bool = False,
    pairs: list[str] | None = None,
    part: bool = False,
) -> dict[str, Any]:
    """Run the comparison ``compare`` (with ``strategies``, ``seeds``, ``parallel``, ``pairs``
    replacing its values when given) describes; returns the settings, the per-strategy summary
    and its table, and writes them to ``data/compare/strategies.json`` and a plot. The preflight
    checks run once the shared stages have (``report["preflight"]``); with ``strict`` a
    warning stops the comparison there, before any training (``ConfigError``). A ``part`` runs
    some of ``compare``'s strategies and seeds, to be merged (``sparft merge-reports``): its
    seeds check and pilot check are the whole design's."""
    root = Path(project_dir).resolve() if project_dir else Path.cwd()
    started = time.perf_counter()
    with working_dir(root):
        params, cfg = compare_setup(
            params_file, overrides or [], strategies, seeds, parallel, pairs, part
        )
        design_seeds = params.compare.seeds if part else cfg.seeds
        logger = get_run_logger()
        logger.info("%d strategies x %d seeds", len(cfg.strategies), len(cfg.seeds))
        with tracked_run("compare-strategies", params, tags=flow_tags("compare")) as mlrun:
            preflight: dict[str, Any] = {}

            def check_before_training() -> None:
                preflight.update(
                    after_probe(
                        params, root, mlrun, strict, logger.warning, cfg.strategies, design_seeds
                    )
                )

            # a part holding the design's first seeds checks the pilot for the whole design
            gated = (
                cfg.target_mde is not None
                and len(design_seeds) > cfg.pilot_seeds
                and cfg.seeds[: cfg.pilot_seeds] == design_seeds[: cfg.pilot_seeds]
                and any(name != BASELINE for name in cfg.strategies)
            )
            if cfg.target_mde is not None and not gated:
                logger.info(
                    "compare.target_mde: no pilot power check (%d seeds, pilot_seeds %d, "
                    "a strategy besides uniform needed; a part needs the design's first seeds)",
                    len(cfg.seeds),
                    cfg.pilot_seeds,
                )
            power: dict[str, Any] = {}

            def check_power() -> None:
                power.update(check_pilot(cfg, root, strict, logger.warning, len(design_seeds)))
                logger.info(power_lines(power)[0])

            pilot_variants = cfg.pilot_seeds * len(cfg.strategies)  # variants run seed by seed
            results = run_variants(
                params,
                root,
                variants(cfg, root),
                parallel=cfg.parallel,
                mlrun=mlrun,
                stages=["train"],
                after_shared=check_before_training,
                after_first=(pilot_variants, check_power) if gated else None,
            )
            runs = read_curves(cfg, root)
            heldout = len(runs[0].points["correct"].iloc[0])
            report = assemble(
                runs,
                cfg,
                arm_solve_rates(root),
                settings=settings(params, cfg, heldout, time.perf_counter() - started, part),
                design=design(params, cfg, root),
                preflight=preflight,
                power=power or None,
                variants={r["label"]: r.get("mlflow_run_id") for r in results},
            )
            summary = report["strategies"]
            write_report(report, root / OUT, root / PLOT)
            if mlrun is not None:
                import mlflow

                mlflow.log_params(
                    {
                        "strategies": " ".join(cfg.strategies),
                        "seeds": " ".join(map(str, cfg.seeds)),
                        "model": report["settings"]["model"],
                        "heldout_questions": str(heldout),
                        "max_steps": str(params.train.max_steps),
                        "eval_every": str(cfg.eval_every),
                        **{f"scale.{key}": str(value) for key, value in cfg.scale.items()},
                    }
                )
                mlflow.log_metrics(
                    {**strategy_metrics(summary), "wall_s": time.perf_counter() - started}
                )
                mlflow.set_tags(verdict_tags(summary))
                mlflow.log_artifact(str(root / OUT), artifact_path="compare")
                mlflow.log_artifact(str(root / PLOT), artifact_path="compare")
        create_table_artifact(
            report["table"],
            key="sparft-compare-strategies",
            description=f"held-out accuracy per strategy against {BASELINE} ({OUT}, {PLOT})",
        )
        return report
