"""Grid flow: variants of any params (strategies, seeds, ...) trained and evaluated on the same
selected subset.

The stages before ``from_stage`` run once, through the cached ``pipeline`` flow (a subflow).
Each variant of the grid (e.g. ``train.curriculum`` in [sparft, uniform] x ``train.seed`` in
[0, 1]) is a mapped task that runs the remaining stages in its own working copy,
``data/compare/<variant>/``: stages read and write ``data/...`` relative to the current folder,
which one process shares between threads, so each variant runs in a child process there. Its
inputs are hard links to the project's files (stages replace files by rename, so a link is never
written through). Variant tasks are cached like pipeline stages. Every variant is an MLflow pipeline
run (train and evaluate nested in it) under the flow's ``grid`` run, so ``sparft summarise-runs``
counts it too. The flow ends with a table artifact of the evaluation metrics per variant, and
sparft's own comparison (``sparft.tracking.summarise_runs``: per strategy, mean ± sd over
seeds) of these variants as a second table and a plot, ``data/compare/compare.png``.

    python -m flows.grid --grid train.curriculum=sparft,uniform --grid train.seed=0,1
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext

from flows.artifacts import absolute_uri
from flows.dvc_state import (
    StageSpec,
    all_specs,
    locate,
    output_digests,
    path_digest,
    read_spec,
)
from flows.pipeline import pipeline
from flows.tasks import PERMANENT_ERRORS, cached_task, cell, stale_record, working_dir
from sparft.config import (
    ConfigError,
    Params,
    as_overrides,
    load_params,
    validate_params,
    with_overrides,
)
from sparft.stages import STAGES
from sparft.stages.evaluate import METRICS as EVAL_METRICS
from sparft.stages.stage import lookup
from sparft.tracking import log_headline, run_stage, tracked_run
from sparft.training.checkpoints import CHECKPOINT_PREFIX
from sparft.training.heldout import SERVER_ENV, SharedServer

DEFAULT_GRID: dict[str, list[Any]] = {"train.curriculum": ["sparft", "uniform"], "train.seed": [0]}
RESULT_FILE = "variant.json"
LOG_FILE = "variant.log"
PERMANENT_EXIT = 3  # the worker's exit code for a configuration or data error: no retry


def expand(grid: dict[str, list[Any]]) -> list[tuple[str, list[str]]]:
    """Every combination of the grid as (label, ``section.key=value`` overrides)."""
    keys = list(grid)
    variants = []
    for values in itertools.product(*(grid[k] for k in keys)):
        label = ",".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values, strict=True))
        overrides = as_overrides(dict(zip(keys, values, strict=True)))
        variants.append((label, overrides))
    return variants


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).replace("=", "-")


def variant_inputs(specs: list[StageSpec]) -> list[str]:
    """Files the variant's stages read but do not write: what its working copy needs."""
    outs = {out for spec in specs for out in spec.outs}
    deps = dict.fromkeys(d for spec in specs for d in spec.deps)
    sources = ("sparft", "flows")
    return [
        d
        for d in deps
        if d not in outs and not Path(d).is_absolute() and d.split("/")[0] not in sources
    ]


def link_tree(source: Path, target: Path) -> None:
    """Hard-link a file or folder into the working copy (copy where links are refused)."""
    if source.is_dir():
        for file in source.rglob("*"):
            if file.is_file():
                link_tree(file, target / file.relative_to(source))
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def variant_key(
    label: str, specs: list[StageSpec], config: dict[str, Any], root: Path, workdir: Path
) -> str:
    """Like a stage key, over all the variant's stages (``read_spec``: what they read under
    the variant's params): their external inputs and source files, their params, and the
    working copy's folder."""
    outs = {out for spec in specs for out in spec.outs}
    deps = dict.fromkeys(d for spec in specs for d in spec.deps if d not in outs)
    params = dict.fromkeys(k for spec in specs for k in spec.params)
    payload = {
        "label": label,
        "workdir": str(workdir),
        "deps": {d: path_digest(locate(root, d)) for d in deps},
        "params": {k: lookup(config, k) for k in params},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"sparft-compare-{hashlib.sha256(blob).hexdigest()[:40]}"


def remove_checkpoints(folder: Path) -> int:
    """Delete every ``checkpoint-*`` folder under ``folder``, leaving other files (the held-out
    curve's journal); the bytes freed. A finished, cached variant never resumes from them."""
    freed = 0
    for checkpoint in folder.glob(f"{CHECKPOINT_PREFIX}*"):
        if checkpoint.is_dir():
            freed += sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
            shutil.rmtree(checkpoint)
    return freed


def _run_variant(
    label: str,
    config: dict[str, Any],
    stages: list[str],
    inputs: list[str],
    outs: list[str],
    root: str,
    workdir: str,
    parent_run_id: str | None,
    tracking_uri: str | None,
    cache_key: str,
) -> dict[str, Any]:
    """Link the inputs into the working copy, run the stages there in a child process, and
    return its evaluation metrics and what it wrote. A variant that trained has its checkpoints
    removed once it succeeds: they serve only to resume it, and at SmolLM2's size each holds
    1.5 GB (the first 6-seed comparison filled the disk with them)."""
    here = Path(workdir)
    here.mkdir(parents=True, exist_ok=True)
    for rel in inputs:
        if (Path(root) / rel).exists():
            link_tree(Path(root) / rel, here / rel)
    job = {
        "label": label,
        "params": config,
        "stages": stages,
        "parent_run_id": parent_run_id,
    }
    env = dict(os.environ)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if HELDOUT_SERVER and "train" in stages:  # started at the first that trains, not cached
        env[SERVER_ENV] = HELDOUT_SERVER[0].url()
    with (here / LOG_FILE).open("w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "flows.grid", "--worker", json.dumps(job)],
            cwd=here,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        tail = (here / LOG_FILE).read_text()[-2000:]
        kind = ValueError if done.returncode == PERMANENT_EXIT else RuntimeError
        raise kind(f"variant {label} failed (exit {done.returncode}); {here / LOG_FILE}:\n{tail}")
    result = json.loads((here / RESULT_FILE).read_text())
    metrics = here / EVAL_METRICS
    result["metrics"] = json.loads(metrics.read_text()) if metrics.is_file() else {}
    result["outputs"] = output_digests(here, outs)
    result["cache_key"] = cache_key
    if "train" in stages:  # finished and cached: its checkpoints could only resume it
        result["checkpoint_bytes_freed"] = remove_checkpoints(
            here / config["train"]["checkpoint_dir"]
        )
    return result


variant_task = cached_task(_run_variant, "variant", "{label}")
HELDOUT_SERVER: list[SharedServer] = []  # the vLLM server of run_variants' held-out checks


def summarise_variants(params: Params, run_ids: list[str], plot: Path) -> list[dict[str, Any]]:
    """sparft's own comparison (what ``sparft summarise-runs`` prints), over this flow's variants
    only: per strategy, accuracy as mean ± sd over seeds; and its plot."""
    from sparft.plots import plot_comparison
    from sparft.tracking import pipeline_runs, summarise_runs

    runs = pipeline_runs(params.tracking)
    runs = runs[runs["run_id"].isin(run_ids)] if not runs.empty else runs
    if runs.empty:
        return []
    plot_comparison(runs, plot, title="grid flow: held-out accuracy per strategy")
    return [
        {k: cell(v) for k, v in row.items()}
        for row in summarise_runs(runs).to_dict(orient="records")
    ]


@flow(name="sparft-grid", description="A grid of params variants, each in its own working copy.")
def grid(
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
    project_dir: str | None = None,
    grid: dict[str, list[Any]] | None = None,
    from_stage: str = "train",
    include_base: bool = True,
    parallel: int = 1,
) -> dict[str, Any]:
    """Run the stages before ``from_stage`` once, then the rest for every grid combination (at
    most ``parallel`` at a time); with ``include_base``, evaluate ``generation.model`` too."""
    root = Path(project_dir).resolve() if project_dir else Path.cwd()
    with working_dir(root):
        params = load_params(params_file, overrides or [])
        with tracked_run("grid", params, tags=flow_tags("grid")) as mlrun:
            results = run_variants(
                params,
                root,
                expand(grid or DEFAULT_GRID),
                from_stage,
                include_base,
                parallel,
                mlrun,
            )
            run_ids = [r["mlflow_run_id"] for r in results if r.get("mlflow_run_id")]
            plot = root / "data" / "compare" / "compare.png"
            summary = summarise_variants(params, run_ids, plot) if run_ids else []
            if mlrun is not None and summary:
                import mlflow

                mlflow.log_artifact(str(plot), artifact_path="grid")
        table = metrics_table(results)
        if table:
            create_table_artifact(table, key="sparft-grid", description="evaluation per variant")
        if summary:
            create_table_artifact(
                summary,
                key="sparft-grid-summary",
                description="per strategy, mean and sd over seeds (sparft summarise-runs); "
                f"plot: {plot}",
            )
        else:
            get_run_logger().info(
                "no tracked variant with train and evaluate: no per-strategy summary"
            )
        return {"variants": results, "table": table, "summary": summary}


def flow_tags(kind: str) -> dict[str, str]:
    """The MLflow tags of a flow's parent run: its kind and the Prefect flow run it belongs to."""
    tags = {"sparft.kind": kind}
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        tags["prefect.flow_run_id"] = str(ctx.flow_run.id)
    return tags


def run_variants(
    params: Params,
    root: Path,
    variants: list[tuple[str, list[str]]],
    from_stage: str = "train",
    include_base: bool = False,
    parallel: int = 1,
    mlrun: Any = None,
    stages: list[str] | None = None,
    after_shared: Callable[[], None] | None = None,
    after_first: tuple[int, Callable[[], None]] | None = None,
) -> list[dict[str, Any]]:
    """The stages before ``from_stage`` once (the cached ``pipeline`` subflow), then
    ``after_shared`` (the preflight checks, which may stop the run), then the rest (or
    ``stages``) for every ``(label, overrides)`` variant of ``params`` in its working copy, as
    variant runs nested under ``mlrun``; returns each variant's result, in order. With
    ``after_first=(n, check)``, ``check`` runs once the first n variants have (a pilot's power
    check, which may stop the run before the others train). The params are passed down
    validated (to each variant's process as their JSON), never re-read."""
    names = list(STAGES)
    if from_stage not in names:
        raise ConfigError(f"from_stage '{from_stage}': not a stage ({', '.join(names)})")
    shared, own = names[: names.index(from_stage)], stages or names[names.index(from_stage) :]
    unknown = sorted(set(own) - set(names))
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)} (stages: {', '.join(names)})")
    evaluates = "evaluate" in own
    once = ["evaluate.include_base=false"] if evaluates else []  # the base is evaluated once
    jobs = [(label, own, [*o, *once]) for label, o in variants]
    if include_base and evaluates:
        jobs.append(("base", ["evaluate"], [*once, f"evaluate.model={params.generation.model}"]))
    if shared:
        pipeline(project_dir=str(root), stages=shared, params=params.model_dump(mode="json"))
    if after_shared is not None:
        after_shared()
    uri = absolute_uri(_tracking_uri(params), root) if mlrun is not None else None
    calls = []
    servers: list[SharedServer | None] = []
    for label, job_stages, extra in jobs:
        p = with_overrides(params, extra, f"variant {label}")
        if "train" in job_stages:
            servers.append(SharedServer.for_params(p))
        config = p.model_dump(mode="json")
        # what the variant reads: a strategy that reads no clusters keeps its key when they change
        specs = [read_spec(s, p) for name, s in all_specs(config).items() if name in job_stages]
        workdir = root / "data" / "compare" / slug(label)
        key = variant_key(label, specs, config, root, workdir)
        outs = [o for spec in specs for o in spec.outs]
        refresh = stale_record(key, output_digests(workdir, outs), variant_task)
        calls.append(
            (
                refresh,
                {
                    "label": label,
                    "config": config,
                    "stages": job_stages,
                    "inputs": variant_inputs(specs),
                    "outs": outs,
                    "root": str(root),
                    "workdir": str(workdir),
                    "parent_run_id": mlrun.info.run_id if mlrun is not None else None,
                    "tracking_uri": uri,
                    "cache_key": key,
                },
            )
        )
    keys = {None if s is None else s.key for s in servers}
    shared_server = servers[0] if len(keys) == 1 and None not in keys else None
    first, check = after_first if after_first is not None else (len(calls), None)

    def train_all() -> list[dict[str, Any]]:
        done = _map_in_batches(calls[:first], max(1, parallel))
        if check is not None and first < len(calls):
            check()
            done += _map_in_batches(calls[first:], max(1, parallel))
        return done

    if shared_server is None:  # none, or variants of other models: each starts its own
        return train_all()
    HELDOUT_SERVER.append(shared_server)
    try:
        return train_all()
    finally:
        HELDOUT_SERVER.remove(shared_server)
        shared_server.close()


def _tracking_uri(params: Any) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", params.tracking.uri)


def _map_in_batches(
    calls: list[tuple[bool, dict[str, Any]]], parallel: int
) -> list[dict[str, Any]]:
    """``variant_task.map`` over the variants, ``parallel`` at a time (training is CPU- and
    memory-bound); those whose cached outputs went stale are mapped with ``refresh_cache``."""
    done: dict[str, dict[str, Any]] = {}
    for refresh in (False, True):
        group = [kwargs for stale, kwargs in calls if stale == refresh]
        for start in range(0, len(group), parallel):
            batch = group[start : start + parallel]
            columns = {name: [kwargs[name] for kwargs in batch] for name in batch[0]}
            mapped = variant_task.with_options(refresh_cache=refresh)
            futures = cast(Any, mapped).map(**columns)  # one list per parameter
            for kwargs, future in zip(batch, futures, strict=True):
                done[kwargs["label"]] = future.result()
    return [done[kwargs["label"]] for _, kwargs in calls]


def metrics_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant, model and benchmark."""
    rows = []
    for result in results:
        for model, per in result.get("metrics", {}).items():
            for bench, m in per.items():
                rows.append(
                    {
                        "variant": result["label"],
                        "model": model,
                        "benchmark": bench,
                        **{k: cell(v) for k, v in m.items()},
                        "mlflow_run_id": result.get("mlflow_run_id"),
                    }
                )
    return rows


def _worker(job: dict[str, Any]) -> int:
    """In the working copy: the variant's stages, as one MLflow run nested under the flow's."""
    try:
        params = validate_params(job["params"], f"variant {job['label']}")
        # a pipeline run as ``sparft summarise-runs`` counts them: train, evaluate nested in it
        tags = {"sparft.kind": "pipeline", "sparft.variant": job["label"]}
        if job.get("parent_run_id"):
            tags["mlflow.parentRunId"] = job["parent_run_id"]
        started = time.perf_counter()
        with tracked_run(f"variant {job['label']}", params, tags=tags) as run:
            summaries = {name: run_stage(STAGES[name], params) for name in job["stages"]}
            if run is not None:
                log_headline(params, summaries, time.perf_counter() - started)
    except PERMANENT_ERRORS as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return PERMANENT_EXIT
    result = {"label": job["label"], "mlflow_run_id": run.info.run_id if run is not None else None}
    Path(RESULT_FILE).write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--grid", action="append", default=[], help="section.key=v1,v2 (values read as YAML)"
    )
    parser.add_argument("--from-stage", default="train")
    parser.add_argument("--no-base", action="store_true")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(json.loads(args.worker))
    axes = {}
    for item in args.grid:
        key, _, values = item.partition("=")
        axes[key] = [yaml.safe_load(v) for v in values.split(",")]
    out = grid(
        params_file=args.params,
        overrides=args.overrides,
        grid=axes or None,
        from_stage=args.from_stage,
        include_base=not args.no_base,
        parallel=args.parallel,
    )
    for row in [*out["table"], *out["summary"]]:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
