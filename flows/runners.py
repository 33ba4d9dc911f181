"""Where the shards of probe, embed and evaluate run: in the flow's process, or on Ray workers
through prefect-ray's ``RayTaskRunner``.

The stages cut their work into shards (``sparft.parallel``) and hand them to whichever mapper is
installed; this module installs one per flow run. Under ``runner="ray"`` each shard is a Prefect
task run on a Ray worker (so it shows in the Prefect UI under the stage), taking
``worker_cpus`` CPUs and ``worker_gpus`` GPUs; a local Ray instance listens on 127.0.0.1 only
and is stopped with the flow, an existing cluster is joined at ``ray_address`` and left running.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

from prefect import task
from prefect.cache_policies import NONE

from sparft.parallel import Mapper, SerialMapper, using_mapper

Runner = Literal["local", "ray"]
RUNNERS: tuple[str, ...] = ("local", "ray")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class RunnerSettings:
    """How a flow run spreads its shards; none of it changes a result, so none of it is a
    param (cache keys and ``dvc.lock`` ignore it)."""

    runner: str = "local"
    ray_address: str | None = None
    workers: int | None = None  # None: the cluster's CPUs / worker_cpus
    worker_cpus: float = 1.0
    worker_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise ValueError(f"unknown runner {self.runner!r} (runners: {', '.join(RUNNERS)})")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.worker_cpus <= 0 or self.worker_gpus < 0:
            raise ValueError("worker_cpus must be > 0 and worker_gpus >= 0")
        if self.ray_address and self.runner != "ray":
            raise ValueError("ray_address is for runner 'ray'")
        if self.runner == "ray":
            missing = [m for m in ("ray", "prefect_ray") if importlib.util.find_spec(m) is None]
            if missing:
                raise ValueError(
                    f"runner 'ray' needs {' and '.join(missing)}, which this environment lacks: "
                    "pip install -e '.[ray]' (make install does)"
                )


def run_unit(fn: Callable[[Any], Any], unit: Any) -> Any:
    """The body of every shard task: one shard of a stage's work."""
    return fn(unit)


@dataclass
class RayMapper:
    """Each shard a Prefect task on a Ray worker; results in the shards' order."""

    runner: Any  # an entered prefect_ray.RayTaskRunner
    workers: int
    cpus: float
    gpus: float
    log: Callable[[str], None] = field(default=print)

    def __call__(self, fn: Callable[[Any], Any], units: Sequence[Any], label: str) -> list[Any]:
        from prefect_ray.context import remote_options

        shard = task(name=f"{label} shard", cache_policy=NONE, persist_result=False)(run_unit)
        options: dict[str, float] = {"num_cpus": self.cpus}
        if self.gpus:
            options["num_gpus"] = self.gpus
        with remote_options(**options):
            futures = [
                self.runner.submit(
                    shard.with_options(task_run_name=f"{label} shard {i + 1}/{len(units)}"),
                    {"fn": fn, "unit": unit},
                )
                for i, unit in enumerate(units)
            ]
        started = time.perf_counter()
        self.log(f"{label}: {len(units)} shards on {self.workers} Ray workers")
        for future in futures:
            future.wait()
        failed = [f for f in futures if not f.state.is_completed()]
        if failed:
            # every shard has ended, so all the work that finished is saved before this raises
            failed[0].result()
        self.log(f"{label}: {len(units)} shards done in {time.perf_counter() - started:.1f} s")
        return [f.result() for f in futures]


def _api_url() -> str | None:
    """The Prefect API this flow run reports to (the temporary server included)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


def ray_init_kwargs(settings: RunnerSettings, api_url: str | None) -> dict[str, Any]:
    """``ray.init`` arguments: a local instance on 127.0.0.1 without the dashboard; workers
    told the flow's Prefect API, where they can reach it, so their task runs land under it."""
    env: dict[str, str] = {}
    local = not settings.ray_address
    if api_url and (local or urlparse(api_url).hostname not in LOOPBACK):
        env["PREFECT_API_URL"] = api_url
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        if name in os.environ:
            env[name] = os.environ[name]
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
    if local:
        kwargs["include_dashboard"] = False
        if settings.workers:
            kwargs["num_cpus"] = max(1, round(settings.workers * settings.worker_cpus))
            if settings.worker_gpus:
                kwargs["num_gpus"] = round(settings.workers * settings.worker_gpus)
    return kwargs


def _loopback_only() -> None:
    """Keep a local Ray instance on 127.0.0.1. Ray turns a loopback ``node_ip_address`` into
    the machine's routable address and then listens on every interface, unless it runs in its
    single-machine mode (the one it uses on macOS and Windows), set by this variable, which its
    child processes inherit; the driver reads it from a constant set at import."""
    os.environ[SINGLE_MACHINE] = "0"
    import ray._private.ray_constants as constants

    constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def shard_runner(settings: RunnerSettings, log: Callable[[str], None] = print) -> Iterator[Mapper]:
    """Install the mapper ``settings`` asks for, for the stages run inside the block."""
    if settings.runner == "local":
        with using_mapper(SerialMapper()) as mapper:
            yield mapper
        return
    if not settings.ray_address:
        _loopback_only()
    import ray
    from prefect_ray import RayTaskRunner

    kwargs = ray_init_kwargs(settings, _api_url())
    with RayTaskRunner(address=settings.ray_address, init_kwargs=kwargs) as runner:
        workers = settings.workers
        if workers is None:
            resources = ray.cluster_resources()
            by_cpu = int(resources.get("CPU", 1) // settings.worker_cpus)
            by_gpu = (
                int(resources.get("GPU", 0) // settings.worker_gpus)
                if settings.worker_gpus
                else by_cpu
            )
            workers = max(1, min(by_cpu, by_gpu))
        where = settings.ray_address or "a local Ray instance on 127.0.0.1"
        log(f"shards of probe, embed and evaluate run on {workers} Ray workers ({where})")
        with using_mapper(
            RayMapper(runner, workers, settings.worker_cpus, settings.worker_gpus, log)
        ) as mapper:
            yield mapper
