"""Shared fixtures: a tiny causal LM built from scratch, and the real SmolLM2 preset.

Nothing may come from a model hub here, so the hub is switched off before anything
imports transformers.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from sparft.testing import build_tiny_lm

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


@pytest.fixture(scope="session")
def sparft_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$SPARFT_CACHE`` when set (conversions reused across runs), else a session tmp dir."""
    env = os.environ.get("SPARFT_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("sparft-cache")


@pytest.fixture(scope="session")
def smollm2_dir(sparft_cache: Path) -> Path:
    """The real SmolLM2-135M-Instruct, converted from its GGUF (about 30 s the first time)."""
    from sparft.models import prepare_model

    return Path(prepare_model("smollm2-135m", sparft_cache))
