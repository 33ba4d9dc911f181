"""Shared fixtures: a tiny causal LM built from scratch, and the real SmolLM2 preset.

Nothing may come from a model hub here, so the hub is switched off before anything
imports transformers.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Each pytest-xdist worker (and the processes it starts) takes its share of the cores: OpenMP
# threads beyond the cores spin against each other and slow every worker down several times.
# A test that sets a thread count uses WORKER_THREADS.
# The cores this process may run on (a container's share, not the host's count where known).
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
WORKER_THREADS = max(1, _CORES // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(WORKER_THREADS))

from sparft.testing import build_tiny_lm  # noqa: E402  (after the settings above)

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="sparft-test-prefect-"))
FAKE_VLLM = Path(__file__).parent / "scripts" / "fake_vllm_server.py"


def cli_env(prefect_home: Path, drop: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The environment of a ``sparft`` command run as a subprocess: this environment's scripts
    first on PATH, its own Prefect home (no ``PREFECT_`` setting of ours leaks in, nor any
    variable starting with one of ``drop``), no analytics, one thread; then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", *drop))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def fake_vllm_python(folder: Path, cpu: bool = True) -> Path:
    """A 'vLLM environment' whose interpreter answers sparft's build check (CPU build or not)
    and runs the stand-in server (``scripts/fake_vllm_server.py``) in place of vLLM's."""
    python = folder / ("cpu" if cpu else "gpu") / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ]; then exit {0 if cpu else 1}; fi\n'
        "shift 2  # -m vllm.entrypoints.openai.api_server\n"
        f'exec "{sys.executable}" "{FAKE_VLLM}" "$@"\n'
    )
    python.chmod(0o755)
    return python


def pytest_configure(config: pytest.Config) -> None:
    """Prefect keeps its database in PREFECT_HOME: tests use a fresh one, never ~/.prefect,
    and never a server the user's environment points at. Set before test modules import it."""
    os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"


# Test files with a module-scoped fixture (a Prefect server, a vLLM server, a real-model
# pipeline): under pytest-xdist each runs whole on one worker, so the fixture is built once.
SHARED_FIXTURE_FILES = frozenset(
    f"tests/{path.name}"
    for path in Path(__file__).parent.glob("test_*.py")
    if 'fixture(scope="module"' in path.read_text()
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist the slow tests are handed out first and the quick ones fill the
    workers' gaps at the end (files of ``SHARED_FIXTURE_FILES`` keep their order: one unit)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(
            key=lambda item: (
                item.nodeid.split("::", 1)[0] in SHARED_FIXTURE_FILES
                or item.get_closest_marker("slow") is None
            )
        )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test`` runs pytest-xdist workers: a file of ``SHARED_FIXTURE_FILES`` is one unit
    of work, every other test its own, handed to whichever worker is free. (xdist's
    ``loadgroup`` would say this with marks, but its grouping does not reach pytest 9's node
    ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in SHARED_FIXTURE_FILES else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_mlflow_uri() -> Any:
    """``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI in the environment, which
    sparft honours as an override: without this, one test's store leaks into the next."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


SHARED_DATA = Path(
    os.environ.get(
        "SPARFT_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)
needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"shared benchmark data not found at {SHARED_DATA}"
)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random causal LM with a real offline tokenizer and chat template."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This run's temporary folder that every pytest-xdist worker sees (the workers' own
    folders are beside each other in it), for what the run builds once for all of them."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def sparft_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$SPARFT_CACHE`` when set (conversions reused across runs), else one folder for all
    of this run's workers (the conversion locks it: the first converts, the others wait)."""
    env = os.environ.get("SPARFT_CACHE")
    if env:
        return Path(env)
    cache = shared_tmp(tmp_path_factory) / "sparft-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def smollm2_dir(sparft_cache: Path) -> Path:
    """The real SmolLM2-135M-Instruct, converted from its GGUF (about 30 s the first time)."""
    from sparft.models import prepare_model

    return Path(prepare_model("smollm2-135m", sparft_cache))
