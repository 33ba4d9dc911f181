"""Prefect flow of the sparft pipeline: one cached task per stage, ``dvc.lock`` kept in step.

Each task runs a stage through ``sparft.tracking.run_stage``, exactly as ``sparft stage NAME``
does, so every stage that runs is a nested MLflow run under the flow's parent run. A task's
cache key is the content hash of the stage's deps (the data its declaration reads and the source
files its module imports, ``flows.dvc_state``), the values of its params, and the project
folder: the same deps ``dvc.yaml`` lists, since it is generated from the same declarations, so
``sparft run`` and ``dvc repro`` rerun the same stages. A cache hit is trusted only while the
outputs on disk are those the cached run recorded; otherwise the stage runs again. After a
stage runs, its entry in ``dvc.lock`` is committed, so ``dvc status`` is clean and ``dvc repro``
does nothing afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.states import State
from prefect.utilities.urls import url_for

from flows.artifacts import link_mlflow, publish
from flows.dvc_state import DvcLock, StageSpec, all_specs, output_digests, stage_key
from flows.preflight import after_probe
from flows.runners import RunnerSettings, shard_runner
from flows.tasks import headline, stage_status, stage_task, stale_record, working_dir
from sparft.config import ConfigError, Params, load_params, validate_params
from sparft.stages import STAGES
from sparft.tracking import log_headline, tracked_run


@flow(
    name="sparft-pipeline",
    description=f"{' -> '.join(STAGES)}, cached on each stage's deps and params, dvc.lock "
    "committed after each stage.",
)
def pipeline(
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
    project_dir: str | None = None,
    stages: list[str] | None = None,
    runner: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    worker_cpus: float = 1.0,
    worker_gpus: float = 0.0,
    strict: bool = False,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the stages (all by default) in the project folder (default: the current one) with
    ``params_file`` plus ``section.key=value`` overrides; returns each stage's summary. A flow
    that has validated the params already passes them as ``params`` (``Params.model_dump``, a
    flow parameter Prefect can store and show): the file is not read again.

    Before ``train``, once the probe and cluster stages have run, the preflight checks
    (``sparft.preflight``) go into the report and the MLflow run; with ``strict`` a warning
    stops the flow there (``ConfigError``).

    ``runner="ray"`` spreads the shards of probe, embed and evaluate over Ray workers (a local
    instance on 127.0.0.1, or the cluster at ``ray_address``), ``workers`` of them (default:
    the cluster's CPUs / ``worker_cpus``); the results are the same as with ``"local"``."""
    root = Path(project_dir).resolve() if project_dir else Path.cwd()
    settings = RunnerSettings(runner, ray_address, workers, worker_cpus, worker_gpus)
    with working_dir(root), shard_runner(settings, get_run_logger().info):
        resolved = (
            load_params(params_file, overrides or [])
            if params is None
            else validate_params(params, "the calling flow's params")
        )
        config = resolved.model_dump(mode="json")
        known = list(STAGES)
        unknown = sorted(set(stages or ()) - set(known))
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)} (stages: {', '.join(known)})")
        names = [name for name in known if not stages or name in stages]
        return _run(resolved, config, root, all_specs(config), names, strict)


def _run(
    params: Params,
    config: dict[str, Any],
    root: Path,
    specs: dict[str, StageSpec],
    names: list[str],
    strict: bool = False,
) -> dict[str, Any]:
    logger = get_run_logger()
    lock = DvcLock(root)
    notes: list[str] = []
    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx else None
    report: dict[str, Any] = {
        "flow_run_id": str(flow_run.id) if flow_run else None,
        "flow_run_name": flow_run.name if flow_run else None,
        "flow_run_url": url_for(flow_run) if flow_run else None,
        "mlflow_run_id": None,
        "stages": {},
        "notes": notes,
        "preflight": None,
    }
    tags = {"sparft.kind": "pipeline"}
    if flow_run is not None:
        tags |= {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_name": flow_run.name}
        if report["flow_run_url"]:
            tags["prefect.flow_run_url"] = report["flow_run_url"]
    cached_specs: list[StageSpec] = []
    flow_start = time.perf_counter()
    with tracked_run("pipeline", params, tags=tags) as mlrun:
        if mlrun is not None:
            report["mlflow_run_id"] = mlrun.info.run_id
            try:
                link_mlflow(flow_run, mlrun, root)
            except Exception as err:  # a missing link must not cost the run
                logger.warning("could not link the MLflow run to the flow run: %s", err)
        for name in names:
            if name == "train":  # the probe and clusters are decided now: check before training
                report["preflight"] = after_probe(params, root, mlrun, strict, logger.warning)
            spec = specs[name]
            key = stage_key(spec, config, root)
            outs = list(spec.outs)
            refresh = stale_record(key, output_digests(root, outs), stage_task(name))
            if refresh:
                logger.info("%s: outputs differ from the cached run's: running it again", name)
            start = time.perf_counter()
            run = stage_task(name, refresh)(name, params, key, outs, return_state=True)
            state = cast(State[dict[str, Any]], run)
            result = state.result()
            cached = state.name == "Cached"
            report["stages"][name] = {
                "cached": cached,
                "state": state.name,
                "seconds": round(time.perf_counter() - start, 2),
                "stage_seconds": result["seconds"],
                "summary": result["summary"],
            }
            status = stage_status(cached, result["seconds"])
            line = headline(result["summary"], STAGES[name].headline)
            logger.info("%s: %s%s", name, status, line)
            if cached:
                cached_specs.append(spec)
            elif lock.commit([spec], config):
                logger.info("%s: outputs, deps and params committed to dvc.lock", name)
            publish(STAGES[name], config)
            if mlrun is not None:
                import mlflow

                mlflow.set_tag(f"sparft.stage.{name}", "cached" if cached else "ran")
        # a cached stage's lock entry may lag (dvc.lock reverted, a stage run elsewhere)
        for name in lock.commit(cached_specs, config, only_stale=True):
            logger.info("%s: cached, and its dvc.lock entry brought up to date", name)
        if mlrun is not None:
            summaries = {name: stage["summary"] for name, stage in report["stages"].items()}
            log_headline(params, summaries, time.perf_counter() - flow_start)
    notes.extend(lock.notes)
    for note in notes:
        logger.info(note)
    return report
