"""Prefect flow of the sparft pipeline: one cached task per stage, ``dvc.lock`` kept in step.

Each task calls ``sparft.stages.STAGES[name]`` through ``sparft.tracking.run_stage``, exactly as
``sparft stage NAME`` does, so every stage that runs is a nested MLflow run under the flow's
parent run. A task's cache key is the content hash of the stage's ``deps`` in ``dvc.yaml`` (its
input artifacts and its source files), the values of its ``params`` entries, and the project
folder. ``dvc.yaml`` is the one list of what a stage depends on, so ``sparft run`` and
``dvc repro`` rerun the same stages. A cache hit is trusted only while the outputs on disk are
those the cached run recorded; otherwise the stage runs again. After a stage runs, its entry in
``dvc.lock`` is committed, so ``dvc status`` is clean and ``dvc repro`` does nothing afterwards.

This module imports only sparft and third-party packages: a served deployment loads it by path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.context import FlowRunContext
from prefect.results import get_result_store
from prefect.states import State
from prefect.tasks import Task
from prefect.utilities.urls import url_for

import sparft
from sparft.config import ConfigError, Params, load_params
from sparft.data import DataError
from sparft.models import ModelNotAvailableError
from sparft.tracking import run_stage, tracked_run

KEY_VERSION = 1  # bump when the key's layout changes, so old cache records are not reused
SOURCE_ROOT = Path(sparft.__file__).resolve().parents[1]
RETRY_DELAY_S = 10
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError)
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    ModelNotAvailableError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    NotImplementedError,
    ValueError,
)
_VAR = re.compile(r"\$\{\s*([^}\s]+)\s*\}")


@dataclass(frozen=True)
class StageSpec:
    """One ``dvc.yaml`` stage, ``${...}`` resolved against the run's configuration."""

    name: str
    deps: tuple[str, ...]
    params: tuple[str, ...]  # sections or dotted keys, plus the keys interpolated into paths
    outs: tuple[str, ...]  # outs, metrics and plots


def find_dvc_yaml(root: Path) -> Path | None:
    """The project's ``dvc.yaml``, else the one of the sparft source checkout (so a plain folder
    with only ``params.yaml`` still gets cached stages), else None."""
    for candidate in (root / "dvc.yaml", SOURCE_ROOT / "dvc.yaml"):
        if candidate.is_file():
            return candidate
    return None


def lookup(config: Mapping[str, Any], dotted: str) -> Any:
    """``section.key`` in the nested configuration; None where it does not exist."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _path_of(entry: str | Mapping[str, Any]) -> str:
    """``path`` or ``{path: {cache: false}}`` -> path."""
    return entry if isinstance(entry, str) else next(iter(entry))


def _param_keys(entries: list[Any]) -> list[str]:
    keys: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            keys.append(entry)
        else:  # {params_file: [keys]}
            for value in entry.values():
                keys.extend(value or [])
    return keys


def load_specs(dvc_yaml: Path, config: Mapping[str, Any]) -> dict[str, StageSpec]:
    """Every stage's deps, params and outputs as ``dvc.yaml`` declares them."""
    doc = yaml.safe_load(dvc_yaml.read_text()) or {}
    specs: dict[str, StageSpec] = {}
    for name, stage in (doc.get("stages") or {}).items():
        used: list[str] = []

        def resolve(text: str, stage_name: str = name, used: list[str] = used) -> str:
            def value(match: re.Match[str]) -> str:
                found = lookup(config, match.group(1))
                if found is None:
                    raise ConfigError(f"{dvc_yaml}: stage {stage_name}: no value for {match[0]}")
                used.append(match.group(1))
                return str(found)

            return _VAR.sub(value, text)

        deps = tuple(resolve(_path_of(d)) for d in stage.get("deps") or [])
        outs = tuple(
            resolve(_path_of(o))
            for kind in ("outs", "metrics", "plots")
            for o in stage.get(kind) or []
        )
        params = _param_keys(stage.get("params") or [])
        specs[name] = StageSpec(name, deps, tuple(dict.fromkeys([*params, *used])), outs)
    return specs


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime, inode): a stage's outputs are hashed
    once per process although they are checked as outputs and then keyed as the next inputs."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def path_digest(path: Path) -> str | None:
    """Digest of a file or of a folder's files (names and contents); None when absent."""
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
        return "dir:" + digest.hexdigest()
    return None


def locate(root: Path, rel: str) -> Path:
    """A dep's path: in the project, else (for ``sparft/...`` source files the project has no
    copy of) in the installed sparft source, which is the code that actually runs."""
    path = Path(rel)
    if path.is_absolute():
        return path
    here = root / path
    if here.exists() or path.parts[0] != "sparft":
        return here
    return SOURCE_ROOT / path


def stage_key(spec: StageSpec, config: Mapping[str, Any], root: Path) -> str:
    """Cache key: digests of the deps, values of the params, the project folder."""
    payload = {
        "version": KEY_VERSION,
        "stage": spec.name,
        "project": str(root),
        "deps": {dep: path_digest(locate(root, dep)) for dep in spec.deps},
        "params": {key: lookup(config, key) for key in spec.params},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"sparft-{spec.name}-{hashlib.sha256(blob).hexdigest()[:40]}"


def output_digests(root: Path, outs: list[str] | tuple[str, ...]) -> dict[str, str | None]:
    return {out: path_digest(root / out) for out in outs}


class DvcLock:
    """Keeps ``dvc.lock`` in step with what the flow ran (``dvc commit -f STAGE``).

    A stage is committed only when the settings it ran with are the ones ``params.yaml`` gives
    it: otherwise the lock would vouch for outputs made with other settings (``--set``, another
    ``--params`` file); such a stage is left for ``dvc repro`` to rerun, with a note.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notes: list[str] = []
        self.dvc_config: dict[str, Any] | None = None
        if not ((root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()):
            self.notes.append(f"{root} is not a DVC repository: dvc.lock not updated")
        elif not (root / "params.yaml").is_file():
            self.notes.append(f"{root}/params.yaml missing: dvc.lock not updated")
        else:
            self.dvc_config = load_params(root / "params.yaml").model_dump(mode="json")

    def _consistent(self, spec: StageSpec, config: Mapping[str, Any]) -> bool:
        assert self.dvc_config is not None
        differ = [k for k in spec.params if lookup(config, k) != lookup(self.dvc_config, k)]
        if differ:
            self.notes.append(
                f"stage {spec.name} ran with {', '.join(differ)} different from params.yaml: "
                "not committed to dvc.lock (dvc repro would rerun it)"
            )
        return not differ

    def commit(
        self, specs: list[StageSpec], config: Mapping[str, Any], only_stale: bool = False
    ) -> list[str]:
        """Record the stages' deps, params and outputs in ``dvc.lock``; with ``only_stale``, only
        those ``dvc status`` reports as changed. Returns the committed stage names."""
        if self.dvc_config is None or not specs:
            return []
        names = [spec.name for spec in specs if self._consistent(spec, config)]
        if not names:
            return []
        from dvc.repo import Repo

        dvc_logger = logging.getLogger("dvc")
        level = dvc_logger.level
        dvc_logger.setLevel(logging.WARNING)  # the flow logs one line per commit instead
        try:
            with Repo(str(self.root)) as repo:
                if only_stale:
                    changed = repo.status(targets=names)
                    names = [name for name in names if name in changed]
                for name in names:
                    repo.commit(name, force=True)
        except Exception as err:  # the run's results stand; only the lock file lags behind
            self.notes.append(f"dvc commit of {', '.join(names)} failed ({err}): run dvc commit")
            return []
        finally:
            dvc_logger.setLevel(level)
        return names


def _transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry I/O and runtime hiccups (a dropped connection, a busy disk, CUDA out of memory),
    never a configuration or data error, which would only fail the same way again."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return False
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, PERMANENT_ERRORS)


def _execute(stage: str, params: Params, cache_key: str, outs: list[str]) -> dict[str, Any]:
    """Run one stage as ``sparft stage`` does; record what it wrote, to vet later cache hits."""
    from sparft.stages import ARTIFACTS, STAGES  # here: a fully cached run never imports torch

    start = time.perf_counter()
    summary = run_stage(stage, params, STAGES[stage], ARTIFACTS.get(stage, ()))
    return {
        "stage": stage,
        "summary": summary,
        "seconds": round(time.perf_counter() - start, 2),
        "cache_key": cache_key,
        "outputs": output_digests(Path.cwd(), outs),
    }


def _key_from_inputs(_ctx: Any, inputs: dict[str, Any]) -> str | None:
    return inputs.get("cache_key") or None  # "" (no dvc.yaml entry): not cached


def stage_task(name: str, refresh: bool = False) -> Task[Any, dict[str, Any]]:
    """The task that runs stage ``name``, cached on the key the flow computes for it."""
    return task(
        _execute,
        name=name,
        task_run_name=name,
        cache_key_fn=_key_from_inputs,
        persist_result=True,
        refresh_cache=refresh,
        retries=1,
        retry_delay_seconds=RETRY_DELAY_S,
        retry_condition_fn=_transient,
    )


def _stale_record(key: str, current: dict[str, str | None], for_task: Task[Any, Any]) -> bool:
    """A cached result exists for ``key`` but the outputs on disk are not those it recorded
    (deleted, or rewritten by another command such as ``sparft stage``): run again."""
    store = get_result_store().update_for_task(for_task)  # the store the task itself reads
    try:
        if not store.exists(key):
            return False
        recorded = store.read(key).result
    except Exception:
        return True
    return not isinstance(recorded, dict) or recorded.get("outputs") != current


@contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    """Stages read and write ``data/...`` relative to the project folder."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def stage_status(cached: bool, seconds: float) -> str:
    """How a stage ended, worded the same in the flow's log and in ``sparft run``'s output."""
    return f"cached (its run took {seconds:.1f} s)" if cached else f"finished in {seconds:.1f} s"


def headline(summary: Mapping[str, Any], most: int = 6) -> str:
    """The first few numbers of a stage's summary, for the live log line after each stage (the
    full tables print when the flow ends)."""
    numbers = [
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in summary.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    return f": {', '.join(numbers[:most])}" if numbers else ""


def _jsonable(value: Any) -> Any:
    """A table cell: numpy scalars as Python numbers, floats rounded, NaN as empty, lists (a
    step's prompt ids and group sizes) as one space-separated string."""
    if isinstance(value, list | tuple | np.ndarray):
        return " ".join(str(_jsonable(v)) for v in value)
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def cluster_artifact(path: Path) -> None:
    if not path.is_file():
        return
    summary = json.loads(path.read_text())
    rows = summary.get("per_cluster", [])
    lines = [
        f"### {summary.get('clusters')} clusters of {summary.get('questions')} questions "
        f"({summary.get('method')}, difficulty weight {summary.get('difficulty_weight')})",
        "",
        "| cluster | size | mean difficulty | min | max | std | noise |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('cluster')} | {r.get('size')} | {r.get('mean_difficulty', 0):.3f} | "
            f"{r.get('min_difficulty', 0):.3f} | {r.get('max_difficulty', 0):.3f} | "
            f"{r.get('std_difficulty', 0):.3f} | {r.get('noise')} |"
        )
    lines += ["", *[f"- {note}" for note in summary.get("notes", [])]]
    create_markdown_artifact(
        "\n".join(lines), key="sparft-clusters", description=f"cluster stage summary ({path})"
    )


def arms_artifact(path: Path, max_rows: int = 1000) -> None:
    if not path.is_file():
        return
    history = pd.read_parquet(path)
    if history.empty:
        return
    picks = ""
    if "arm" in history:
        counts = history["arm"].value_counts().sort_index()
        picks = ", ".join(f"arm {arm}: {n}" for arm, n in counts.items())
    rows = [
        {k: _jsonable(v) for k, v in row.items()}
        for row in history.tail(max_rows).to_dict(orient="records")
    ]
    create_table_artifact(
        rows,
        key="sparft-arm-choices",
        description=f"curriculum choice per GRPO step ({path}); picks: {picks or 'n/a'}",
    )


def evaluation_artifact(path: Path) -> None:
    if not path.is_file():
        return
    metrics = json.loads(path.read_text())
    rows = [
        {"model": model, "benchmark": bench, **{k: _jsonable(v) for k, v in m.items()}}
        for model, per in metrics.items()
        for bench, m in per.items()
    ]
    create_table_artifact(rows, key="sparft-evaluation", description=f"evaluation ({path})")


# stage -> (how its output's name ends in dvc.yaml, the artifact made from that output)
STAGE_ARTIFACTS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "cluster": ("cluster_summary.json", cluster_artifact),
    "train": ("history.parquet", arms_artifact),
    "evaluate": ("metrics.json", evaluation_artifact),
}


def _absolute_uri(uri: str, root: Path) -> str:
    """``sqlite:///mlflow.db`` is relative to the project; the link must work from anywhere."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(root / uri[len(prefix) :])
    return uri


def link_mlflow(flow_run: FlowRun | None, mlrun: Any, root: Path) -> None:
    """Give the Prefect flow run its MLflow parent run: a tag and an artifact with the link."""
    import mlflow

    run_id, experiment = mlrun.info.run_id, mlrun.info.experiment_id
    uri = _absolute_uri(mlflow.get_tracking_uri(), root)
    if flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=[*flow_run.tags, f"mlflow-run:{run_id}"])
    path = f"#/experiments/{experiment}/runs/{run_id}"
    if uri.startswith(("http://", "https://")):
        create_link_artifact(
            f"{uri.rstrip('/')}/{path}", link_text=f"MLflow run {run_id}", key="sparft-mlflow"
        )
        return
    create_markdown_artifact(
        f"MLflow parent run `{run_id}` (experiment id {experiment}) in `{uri}`.\n\n"
        f"Browse it: `mlflow ui --backend-store-uri {uri} --host 127.0.0.1`, then open "
        f"`http://127.0.0.1:5000/{path}`.",
        key="sparft-mlflow",
        description="the MLflow parent run of this flow run",
    )


@flow(
    name="sparft-pipeline",
    description="load -> embed -> reduce -> probe -> cluster -> select -> dots_predictor -> train "
    "-> evaluate, "
    "cached on dvc.yaml's deps and params, dvc.lock committed after each stage.",
)
def pipeline(
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
    project_dir: str | None = None,
    stages: list[str] | None = None,
) -> dict[str, Any]:
    """Run the stages (all by default) in the project folder (default: the current one) with
    ``params_file`` plus ``section.key=value`` overrides; returns each stage's summary."""
    root = Path(project_dir).resolve() if project_dir else Path.cwd()
    with _working_dir(root):
        params = load_params(params_file, overrides or [])
        config = params.model_dump(mode="json")
        dvc_yaml = find_dvc_yaml(root)
        specs = load_specs(dvc_yaml, config) if dvc_yaml else {}
        if specs:  # dvc.yaml's stages, in its order (the tests hold it equal to STAGES)
            known = list(specs)
        else:
            from sparft.stages import STAGES

            known = list(STAGES)
        unknown = sorted(set(stages or ()) - set(known))
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)} (stages: {', '.join(known)})")
        names = [name for name in known if not stages or name in stages]
        return _run(params, config, root, specs, names, has_dvc_yaml=dvc_yaml is not None)


def _run(
    params: Params,
    config: dict[str, Any],
    root: Path,
    specs: dict[str, StageSpec],
    names: list[str],
    has_dvc_yaml: bool,
) -> dict[str, Any]:
    logger = get_run_logger()
    lock = DvcLock(root)
    notes = [] if has_dvc_yaml else ["no dvc.yaml found: stages run without caching"]
    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx else None
    report: dict[str, Any] = {
        "flow_run_id": str(flow_run.id) if flow_run else None,
        "flow_run_name": flow_run.name if flow_run else None,
        "flow_run_url": url_for(flow_run) if flow_run else None,
        "mlflow_run_id": None,
        "stages": {},
        "notes": notes,
    }
    tags = {"sparft.kind": "pipeline"}
    if flow_run is not None:
        tags |= {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_name": flow_run.name}
        if report["flow_run_url"]:
            tags["prefect.flow_run_url"] = report["flow_run_url"]
    cached_specs: list[StageSpec] = []
    with tracked_run("pipeline", params, tags=tags) as mlrun:
        if mlrun is not None:
            report["mlflow_run_id"] = mlrun.info.run_id
            try:
                link_mlflow(flow_run, mlrun, root)
            except Exception as err:  # a missing link must not cost the run
                logger.warning("could not link the MLflow run to the flow run: %s", err)
        for name in names:
            spec = specs.get(name)
            key = stage_key(spec, config, root) if spec else ""
            outs = list(spec.outs) if spec else []
            refresh = bool(key) and _stale_record(key, output_digests(root, outs), stage_task(name))
            if refresh:
                logger.info("%s: outputs differ from the cached run's: running it again", name)
            start = time.perf_counter()
            state = stage_task(name, refresh)(name, params, key, outs, return_state=True)
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
            logger.info("%s: %s%s", name, status, headline(result["summary"]))
            if spec is not None:
                if cached:
                    cached_specs.append(spec)
                elif lock.commit([spec], config):
                    logger.info("%s: outputs, deps and params committed to dvc.lock", name)
            if name in STAGE_ARTIFACTS and spec is not None:
                suffix, make_artifact = STAGE_ARTIFACTS[name]
                for out in (o for o in spec.outs if o.endswith(suffix)):
                    make_artifact(root / out)
            if mlrun is not None:
                import mlflow

                mlflow.set_tag(f"sparft.stage.{name}", "cached" if cached else "ran")
        # a cached stage's lock entry may lag (dvc.lock reverted, a stage run elsewhere)
        for name in lock.commit(cached_specs, config, only_stale=True):
            logger.info("%s: cached, and its dvc.lock entry brought up to date", name)
    notes.extend(lock.notes)
    for note in notes:
        logger.info(note)
    return report
