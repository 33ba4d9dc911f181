"""What orchestration costs: a full ``sparft run``, a fully cached rerun, a no-op ``dvc repro``,
and Prefect's overhead per task.

The pipeline runs in a fresh git + DVC project in a temporary folder (this checkout's ``sparft/``
sources, ``dvc.yaml`` and ``params.yaml`` with the ``--set`` overrides written into it, so DVC
sees the same settings), each ``sparft run`` as its own process on Prefect's ephemeral API, as a
user runs it. The cached rerun should cost a small fraction of the full run (target: under 5% of
a default-size run); most of what is left is the ephemeral server's start, measured on its own,
and the same rerun against a running ``prefect server`` shows the cost without it. Prefect's
per-task overhead is measured in this process, around a loop inside a flow: N no-op tasks, N
cache hits, N direct calls; and a flow run with no task (its start and end).

    python benchmarks/orchestration.py                                   # the default run (slow)
    python benchmarks/orchestration.py --set arithmetic.per_grade=2 --set train.max_steps=4 \\
        --set evaluate.limit=16                                         # smaller
    python benchmarks/orchestration.py --tiny                            # CI size: tiny random LM
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_project(folder: Path, overrides: list[str]) -> Path:
    """A git + DVC project with the sources, ``dvc.yaml`` and the overridden ``params.yaml``."""
    from sparft.config import apply_overrides, load_params

    project = folder / "project"
    project.mkdir()
    shutil.copytree(
        ROOT / "sparft", project / "sparft", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    raw = apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(project / "params.yaml")  # a bad override fails here, before any timing
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
    ):
        run(cmd, project, env(folder))
    return project


def env(folder: Path) -> dict[str, str]:
    """Prefect's home, database and result storage in the temporary folder; ephemeral API."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    out.update(
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        PREFECT_HOME=str(folder / "prefect"),
        PREFECT_LOCAL_STORAGE_PATH=str(folder / "prefect" / "results"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return out


def run(cmd: list[str], cwd: Path, environ: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, output) of one command; stops the benchmark if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeats))


def prefect_overhead(n_tasks: int, folder: Path) -> dict[str, float]:
    """Seconds per call of a no-op task, a cache hit and a plain call, timed around the loop
    inside the flow; and a whole flow run with no task (its start and end: creating the run,
    flushing logs and events). The ephemeral server is started by a warm-up flow, not counted."""
    os.environ.update({k: v for k, v in env(folder).items() if k.startswith("PREFECT_")})
    from prefect import flow, task

    def noop(i: int) -> int:
        return i

    plain_task = task(noop, name="noop")
    cached_task = task(
        noop, name="cached-noop", persist_result=True, cache_key_fn=lambda _c, a: f"bench-{a['i']}"
    )
    kinds = {"direct": noop, "plain": plain_task, "cached": cached_task}

    @flow(name="bench-tasks")
    def loop(n: int, kind: str) -> float:
        call = kinds[kind]
        start = time.perf_counter()
        for i in range(n):
            call(i)
        return (time.perf_counter() - start) / max(n, 1)

    loop(1, "plain")  # warm-up: the ephemeral server starts here
    loop(n_tasks, "cached")  # fill the cache

    def whole_flow() -> float:
        start = time.perf_counter()
        loop(0, "direct")
        return time.perf_counter() - start

    return {
        "task": median_of(3, lambda: loop(n_tasks, "plain")),
        "cached task": median_of(3, lambda: loop(n_tasks, "cached")),
        "direct call": median_of(3, lambda: loop(n_tasks, "direct")),
        "empty flow": median_of(3, whole_flow),
    }


def stage_seconds(output: str) -> dict[str, float]:
    """Per-stage wall seconds from ``sparft run``'s console output."""
    found = re.finditer(r"^(\w+) finished in ([\d.]+) s", output, re.MULTILINE)
    return {m[1]: float(m[2]) for m in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value")
    parser.add_argument("--tiny", action="store_true", help="CI size: tiny random LM, tiny stages")
    parser.add_argument("--repeats", type=int, default=3, help="for the cheap measurements")
    parser.add_argument("--tasks", type=int, default=50, help="no-op tasks per flow")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sparft-bench-orch-"))
    overrides = list(args.overrides)
    if args.tiny:
        from sparft.testing import build_tiny_lm, tiny_overrides

        model = build_tiny_lm(folder / "tiny-lm")
        overrides = [*tiny_overrides(), f"generation.model={model}", *overrides]
    try:
        project = make_project(folder, overrides)
        environ = env(folder)
        full, full_out = run(["sparft", "run"], project, environ)
        stages = stage_seconds(full_out)
        rows = [(f"full `sparft run` ({len(stages)} stages ran)", full)]
        cached = median_of(args.repeats, lambda: cached_run(project, environ))
        rows.append((f"cached rerun, every stage `Cached` (median of {args.repeats})", cached))
        imports = median_of(
            args.repeats,
            lambda: run([sys.executable, "-c", "import flows.pipeline"], ROOT, environ)[0],
        )
        rows.append(("of which: importing `flows.pipeline` (Prefect, sparft's config)", imports))
        code = "from prefect import flow\nflow(lambda: None, name='empty')()"
        server = median_of(
            args.repeats, lambda: run([sys.executable, "-c", code], folder, environ)[0]
        )
        rows.append(("of which: ephemeral Prefect server start and stop", server))
        with prefect_server(folder) as url:
            on_server = {**environ, "PREFECT_API_URL": url}
            served = median_of(args.repeats, lambda: cached_run(project, on_server))
        rows.append(("cached rerun against a running `prefect server`", served))
        repro = median_of(args.repeats, lambda: no_op_repro(project, environ))
        rows.append(("`dvc repro`, nothing changed", repro))
        status = median_of(args.repeats, lambda: run(["dvc", "status"], project, environ)[0])
        rows.append(("`dvc status`", status))
        overhead = prefect_overhead(args.tasks, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print_tables(rows, stages, overhead, overrides, args)


def cached_run(project: Path, environ: dict[str, str]) -> float:
    seconds, out = run(["sparft", "run"], project, environ)
    # ``sparft run``'s own lines (``load cached ...``), not the flow's log lines (``load: cached``)
    cached = re.findall(r"^\w+ cached \(its run took", out, re.MULTILINE)
    assert len(cached) == 8, out[-3000:]
    return seconds


def no_op_repro(project: Path, environ: dict[str, str]) -> float:
    seconds, out = run(["dvc", "repro"], project, environ)
    assert "Running stage" not in out, out[-3000:]
    return seconds


@contextmanager
def prefect_server(folder: Path) -> Iterator[str]:
    """``prefect server start`` on a free port with its own home and database; its API URL."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = folder / "server"
    home.mkdir()
    environ = {
        **env(folder),
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/server.db",
    }
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        cmd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("prefect server did not start")
            time.sleep(1)
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def print_tables(
    rows: list[tuple[str, float]],
    stages: dict[str, float],
    overhead: dict[str, float],
    overrides: list[str],
    args: argparse.Namespace,
) -> None:
    cpu = platform.processor() or platform.machine()
    print(f"{date.today()}, {os.cpu_count()} cores ({cpu}), OMP_NUM_THREADS=1")
    print(f"settings: {' '.join(o for o in overrides if 'generation.model' not in o) or 'default'}")
    full = rows[0][1]
    print("\n| measurement | seconds | share of the full run |\n| --- | --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / full:.1%} |")
    print("\n| stage | seconds in the full run |\n| --- | --- |")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.1f} |")
    per_call = [
        ("Prefect task (no-op body)", overhead["task"]),
        ("Prefect task, cache hit (persisted result)", overhead["cached task"]),
        ("direct function call", overhead["direct call"]),
        ("a flow run with no task (start and end)", overhead["empty flow"]),
    ]
    print(f"\n| per call ({args.tasks} calls in a flow, median of 3 flows) | milliseconds |")
    print("| --- | --- |")
    for name, seconds in per_call:
        print(f"| {name} | {seconds * 1000:.4g} |")


if __name__ == "__main__":
    main()
