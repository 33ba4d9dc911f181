"""MLflow wiring for the entry points (CLI, Prefect flows). Library modules never import this.

A pipeline run is one parent MLflow run; each stage is a nested run holding the flattened
resolved config as params, the stage summary's numbers as metrics, its plots and small outputs
as artifacts, and the status FAILED with the error when the stage raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from sparft.config import Params
    from sparft.stages.stage import Stage
    from sparft.tracking_config import TrackingConfig

MAX_PARAM_CHARS = 6000


PINNED = ("torch", "transformers", "accelerate", "peft", "safetensors", "tokenizers")


def flatten(tree: Mapping[str, Any]) -> dict[str, str]:
    """Nested config as ``section.key`` -> string, the shape MLflow params take."""
    from sparft.config import dotted

    return {key: str(value)[:MAX_PARAM_CHARS] for key, value in dotted(tree).items()}


def numeric_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) stage summary, as MLflow metric names."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}".replace(" ", "_")
        if isinstance(value, int | float):  # bool is an int: logged as 0/1
            out[name] = float(value)
        elif isinstance(value, Mapping):
            out.update(numeric_metrics(value, f"{name}."))
    return out


def configure(cfg: TrackingConfig) -> Any:
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", cfg.uri))
    mlflow.set_experiment(cfg.experiment)
    return mlflow


def process_tags() -> dict[str, str]:
    """Which process holds a run: what lets a later run tell that it was killed."""
    import socket

    import psutil

    proc = psutil.Process()
    return {
        "sparft.host": socket.gethostname(),
        "sparft.pid": str(proc.pid),
        "sparft.pid_started": f"{proc.create_time():.3f}",
    }


def _alive(pid: int, started: str) -> bool:
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.3f}" == started
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def mark_killed_runs(mlflow: Any, experiment: str) -> list[str]:
    """Runs of ``experiment`` still RUNNING whose process on this host has ended (SIGKILL, out
    of memory, a lost machine) are marked KILLED, with a ``sparft.killed`` tag saying so;
    returns their ids. Runs of other hosts, and of processes still alive, are left alone."""
    import socket

    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    host = socket.gethostname()
    runs = client.search_runs(
        [found.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    marked = []
    for run in runs:
        tags = run.data.tags
        if tags.get("sparft.host") != host or not tags.get("sparft.pid", "").isdigit():
            continue
        if _alive(int(tags["sparft.pid"]), tags.get("sparft.pid_started", "")):
            continue
        note = (
            f"process {tags['sparft.pid']} on {host} ended without closing this run; marked "
            f"KILLED when process {os.getpid()} started the next run"
        )
        client.set_tag(run.info.run_id, "sparft.killed", note)
        client.set_terminated(run.info.run_id, status="KILLED")
        marked.append(run.info.run_id)
    return marked


@contextmanager
def tracked_run(
    name: str, params: Params, tags: Mapping[str, str] | None = None
) -> Iterator[Any | None]:
    """An MLflow run (nested when one is active) that ends FAILED with the error if the body
    raises, tagged with the process that holds it. A run that starts no nesting first marks
    the runs a killed process left RUNNING as KILLED. Yields None when tracking is off."""
    if not params.tracking.enabled or int(os.environ.get("RANK", "0")) != 0:
        yield None  # under accelerate/torchrun only the main process records
        return
    mlflow = configure(params.tracking)
    nested = mlflow.active_run() is not None
    if not nested:
        mark_killed_runs(mlflow, params.tracking.experiment)
    run_tags = {**process_tags(), **(tags or {})}
    with mlflow.start_run(run_name=name, nested=nested, tags=run_tags) as run:
        try:
            yield run
        except BaseException as err:
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
            mlflow.end_run(status="FAILED")
            raise


def run_stage(stage: Stage, params: Params) -> dict[str, Any]:
    """Run one stage inside its own (nested) MLflow run: the flattened params, the summary's
    numbers as metrics (its ``series``, ``{name: [[step, value], ...]}``, step by step), the
    files its declaration names as artifacts, and the policy it declares as an MLflow model."""
    with tracked_run(stage.name, params, tags={"sparft.stage": stage.name}) as run:
        if run is None:
            return stage.run(params)
        import mlflow

        mlflow.log_params(flatten(params.model_dump(mode="json")))
        summary = stage.run(params)
        metrics = numeric_metrics(summary)
        if metrics:
            mlflow.log_metrics(metrics)
        for name, points in summary.get("series", {}).items():  # curves: one value per step
            for step, value in points:
                mlflow.log_metric(name, value, step=int(step))
        for path in stage.mlflow:
            if Path(path).is_file():
                mlflow.log_artifact(path, artifact_path=stage.name)
        if stage.policy and params.tracking.log_model:
            log_policy(params, summary, stage.policy)
        return summary


def pip_requirements() -> list[str]:
    """Exact versions of what loading the logged model needs, from this environment."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in PINNED]


def log_policy(params: Params, summary: dict[str, Any], folder: str) -> Any:
    """Log the trained policy as an MLflow transformers model and register it.

    A LoRA adapter is merged into its base first (MLflow's PEFT round trip does not restore the
    base weights with this transformers version), so the logged model loads on its own; the raw
    adapter is kept beside it as run artifacts.
    """
    import mlflow
    from transformers import pipeline

    from sparft.curricula.sparft import METHOD as SPARFT
    from sparft.models import is_lora_adapter, resolve_model

    lora = is_lora_adapter(folder)
    pipe = pipeline("text-generation", model=resolve_model(folder))
    curriculum = params.train.curriculum
    tags = {
        "strategy": curriculum,
        "allocation": str(summary.get("allocation", params.train.allocation)),
        "replay": str(params.train.replay.enabled).lower(),
        "training_questions": str(summary.get("training_questions")),
        "steps": str(params.train.max_steps),
        "lora": str(lora).lower(),
        "bandit": SPARFT.settings(params).algorithm if curriculum == SPARFT.name else "none",
    }
    info = mlflow.transformers.log_model(
        transformers_model=pipe,
        name="policy",
        pip_requirements=pip_requirements(),
        registered_model_name=params.tracking.registered_model,
        tags=tags,
    )
    if lora:
        mlflow.log_artifacts(folder, artifact_path="adapter")
    if params.tracking.registered_model and info.registered_model_version:
        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_model_version_tag(
                params.tracking.registered_model, str(info.registered_model_version), key, value
            )
    return info


def headline_params(params: Params) -> dict[str, str]:
    """What tells runs apart in MLflow's run table: the parent run's params (the stages
    nested under it hold the full config)."""
    train = params.train
    flat = flatten(params.model_dump(mode="json"))
    return {
        "strategy": _strategy(flat),
        "curriculum": train.curriculum,
        "allocation": train.allocation,
        "replay": str(train.replay.enabled).lower(),
        "seed": str(train.seed),
        "model": train.model or params.generation.model,
        "training_data": train.data,
        "max_steps": str(train.max_steps),
        "rollouts_per_step": str(train.rollouts_per_step),
        "learning_rate": str(train.learning_rate),
        "data": params.data.spec,
    }


def headline_metrics(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The parent run's metrics from its stages' summaries: the trained model's held-out
    accuracy (``heldout_accuracy``: the first benchmark, or without evaluate the learning
    curve's last check; ``accuracy.NAME`` each), and the
    training's effective prompt ratio, rollouts, unique questions and wall time."""
    out: dict[str, float] = {}
    trained = summaries.get("evaluate", {}).get("metrics", {}).get("trained", {})
    for i, (bench, m) in enumerate(trained.items()):
        if isinstance(m, Mapping) and isinstance(m.get("pass_at_1"), int | float):
            out[f"accuracy.{bench}"] = float(m["pass_at_1"])
            if i == 0:
                out["heldout_accuracy"] = float(m["pass_at_1"])
    train = summaries.get("train", {})
    if "heldout_accuracy" not in out and isinstance(train.get("heldout_accuracy_final"), float):
        out["heldout_accuracy"] = train["heldout_accuracy_final"]  # the curve's last check
    for key, name in (
        ("effective_prompt_ratio", "effective_prompt_ratio"),
        ("rollouts_total", "rollouts"),
        ("unique_questions_seen", "unique_questions_seen"),
        ("train_seconds", "train_wall_s"),
        ("steps", "steps"),
    ):
        if isinstance(train.get(key), int | float):
            out[name] = float(train[key])
    probe = summaries.get("probe", {})
    if isinstance(probe.get("rollouts"), int | float):
        out["probe_rollouts"] = float(probe["rollouts"])
    return out


def log_headline(params: Params, summaries: Mapping[str, Mapping[str, Any]], wall_s: float) -> None:
    """Headline params and metrics on the active (parent) run."""
    import mlflow

    mlflow.log_params(headline_params(params))
    mlflow.log_metrics({**headline_metrics(summaries), "wall_s": wall_s})


def log_preflight(run: Any, payload: Mapping[str, Any]) -> None:
    """A flow's preflight checks on its run: ``preflight.json`` (every check) and the tag
    ``preflight.warnings`` (how many warned), by run id, whichever run is active now."""
    import mlflow

    client = mlflow.MlflowClient()
    client.log_dict(run.info.run_id, dict(payload), "preflight.json")
    client.set_tag(run.info.run_id, "preflight.warnings", str(len(payload["warnings"])))


def _strategy(params: Mapping[str, str]) -> str:
    curriculum = params.get("train.curriculum", "?")
    allocation = params.get("train.allocation", "auto")
    name = curriculum if allocation == "auto" else f"{curriculum} + {allocation}"
    if str(params.get("train.replay.enabled", "False")).lower() == "true":
        name += " + replay"
    if curriculum != "sparft":
        return name
    return f"{name} ({params.get('bandit.algorithm', '?')}, {params.get('bandit.reward', '?')})"


def pipeline_runs(cfg: TrackingConfig, experiment: str | None = None) -> pd.DataFrame:
    """One row per finished pipeline run: strategy, seed, data size, steps, held-out accuracy
    of the trained model per benchmark (``acc:NAME``, its standard error ``se:NAME``), wall time."""
    mlflow = configure(cfg)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment or cfg.experiment)
    if found is None:
        raise ValueError(f"MLflow experiment '{experiment or cfg.experiment}' does not exist")
    runs = client.search_runs([found.experiment_id], max_results=5000)
    children: dict[str, dict[str, Any]] = {}
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        stage = run.data.tags.get("sparft.stage")
        if parent and stage and run.info.status == "FINISHED":
            children.setdefault(parent, {})[stage] = run
    rows = []
    for run in runs:
        stages = children.get(run.info.run_id, {})
        if run.data.tags.get("sparft.kind") != "pipeline" or run.info.status != "FINISHED":
            continue
        if "train" not in stages or "evaluate" not in stages:
            continue
        train, evaluation = stages["train"], stages["evaluate"]
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "strategy": _strategy(train.data.params),
            "seed": train.data.params.get("train.seed"),
            "training_questions": train.data.metrics.get("training_questions"),
            "steps": train.data.metrics.get("steps"),
            "wall_s": (run.info.end_time - run.info.start_time) / 1000,
        }
        for key, value in evaluation.data.metrics.items():
            parts = key.split(".")
            if len(parts) == 4 and parts[:2] == ["metrics", "trained"]:
                if parts[3] == "pass_at_1":
                    row[f"acc:{parts[2]}"] = value
                elif parts[3] == "pass_at_1_se":
                    row[f"se:{parts[2]}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def summarise_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: runs, data size, steps, mean and spread (sd across runs) per benchmark."""
    benchmarks = [c[4:] for c in frame.columns if c.startswith("acc:")]
    rows = []
    for strategy, group in frame.groupby("strategy", sort=True):
        row: dict[str, Any] = {
            "strategy": strategy,
            "runs": len(group),
            "training_questions": group["training_questions"].mean(),
            "steps": group["steps"].mean(),
            "wall_s": group["wall_s"].mean(),
        }
        for name in benchmarks:
            values = group[f"acc:{name}"].dropna()
            row[f"mean:{name}"] = values.mean()
            row[f"sd:{name}"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
