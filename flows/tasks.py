"""Task policy both flows share: which errors are retried, how a stage runs as a cached task,
when a cached result is no longer trusted, and how a stage's end is worded."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from prefect import task
from prefect.client.schemas.objects import TaskRun
from prefect.results import ResultStore, get_result_store
from prefect.states import State
from prefect.tasks import Task

from flows.dvc_state import output_digests
from sparft.config import ConfigError, Params
from sparft.data import DataError
from sparft.models import ModelNotAvailableError
from sparft.tracking import run_stage

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


def transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry I/O and runtime hiccups (a dropped connection, a busy disk, CUDA out of memory),
    never a configuration or data error, which would only fail the same way again."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return False
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, PERMANENT_ERRORS)


def key_from_inputs(_ctx: Any, inputs: dict[str, Any]) -> str | None:
    """The cache key the flow computed and passed in (``""``: not cached)."""
    return inputs.get("cache_key") or None


def execute(stage: str, params: Params, cache_key: str, outs: list[str]) -> dict[str, Any]:
    """Run one stage as ``sparft stage`` does; record what it wrote, to vet later cache hits."""
    from sparft.stages import STAGES

    start = time.perf_counter()
    summary = run_stage(STAGES[stage], params)
    return {
        "stage": stage,
        "summary": summary,
        "seconds": round(time.perf_counter() - start, 2),
        "cache_key": cache_key,
        "outputs": output_digests(Path.cwd(), outs),
    }


def cached_task(
    fn: Callable[..., dict[str, Any]], name: str, run_name: str, refresh: bool = False
) -> Task[Any, dict[str, Any]]:
    """``fn`` as a task cached on the ``cache_key`` the flow passes it, its result persisted,
    retried once on transient errors: the policy of every sparft task."""
    return task(
        name=name,
        task_run_name=run_name,
        cache_key_fn=key_from_inputs,
        persist_result=True,
        refresh_cache=refresh,
        retries=1,
        retry_delay_seconds=RETRY_DELAY_S,
        retry_condition_fn=transient,
    )(fn)


def stage_task(name: str, refresh: bool = False) -> Task[Any, dict[str, Any]]:
    """The task that runs stage ``name``, cached on the key the flow computes for it."""
    return cached_task(execute, name, name, refresh)


_UNREADABLE = object()


def result_store(for_task: Task[Any, Any]) -> ResultStore:
    """The result store ``for_task`` reads: its flow run's; outside a flow (a preflight before
    the flow starts) the local storage an ephemeral API's flows write to, read directly: asking
    that API for a server-side default would start it (about 20 s)."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    outside = FlowRunContext.get() is None and TaskRunContext.get() is None
    if outside and settings.results.default_storage_block is None and not settings.api.url:
        local = LocalFileSystem(basepath=str(settings.results.local_storage_path))
        return cast(ResultStore, ResultStore(result_storage=local).update_for_task(for_task))
    # a ResultStore here: Prefect's sync-compatible call
    return cast(ResultStore, get_result_store().update_for_task(for_task))


def _recorded(key: str, for_task: Task[Any, Any]) -> Any:
    """The cached result of ``key`` (None when there is none; ``_UNREADABLE`` when it cannot
    be read)."""
    store = result_store(for_task)
    try:
        return store.read(key).result if store.exists(key) else None
    except Exception:
        return _UNREADABLE


def stale_record(key: str, current: dict[str, str | None], for_task: Task[Any, Any]) -> bool:
    """A cached result exists for ``key`` but the outputs on disk are not those it recorded
    (deleted, or rewritten by another command such as ``sparft stage``): run again."""
    recorded = _recorded(key, for_task)
    if recorded is None:
        return False
    return not isinstance(recorded, dict) or recorded.get("outputs") != current


def current_record(key: str, current: dict[str, str | None], for_task: Task[Any, Any]) -> bool:
    """A cached result exists for ``key`` and the outputs on disk are those it recorded: the
    outputs are what the stage makes of its present deps and params (a cache hit, not stale)."""
    recorded = _recorded(key, for_task)
    return isinstance(recorded, dict) and recorded.get("outputs") == current


@contextmanager
def working_dir(path: Path) -> Iterator[None]:
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


def headline(summary: Mapping[str, Any], keys: tuple[str, ...] = (), most: int = 6) -> str:
    """A stage's headline numbers for the live log line (its declaration's ``headline`` keys,
    else the first few numbers of its summary; the full tables print when the flow ends)."""
    items = [(k, summary[k]) for k in keys if k in summary] if keys else list(summary.items())
    numbers = [
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in items
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    return f": {', '.join(numbers[:most])}" if numbers else ""


def cell(value: Any) -> Any:
    """A table cell: numpy scalars as Python numbers, floats rounded, NaN as empty."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value
