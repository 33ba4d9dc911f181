"""Time limits on every call into math-verify, in any thread: math-verify's own timeout is
``signal.alarm``, which raises ``ValueError`` outside the main thread (Prefect task workers, TRL
callbacks in threads), so ``_bounded`` enforces ``timeout_s`` itself, by a ``SIGALRM`` interval
timer in the main thread and by a pool of long-lived worker processes elsewhere, and
``batch_budget`` caps what a whole batch of checks may spend, so hostile completions cannot
stall a run. A call that times out, or whose worker dies, counts as no answer / no match;
nothing is raised.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from sparft.answers.verify import _math_verify, _mv_extract, _mv_match

logger = logging.getLogger(__name__)

_WORKER_GRACE_S = 1.0
_WORKER_STARTUP_S = 120.0
_ALARM_REPEAT_S = 0.05


# ---------------------------------------------------------------------------------------------
# Time limit, main thread: SIGALRM interval timer
# ---------------------------------------------------------------------------------------------


class _CheckTimeout(BaseException):
    """Raised from the SIGALRM handler; a BaseException so ``except Exception`` cannot eat it."""


_alarm_active = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _alarm_active:
        raise _CheckTimeout


def _alarm_usable() -> bool:
    """True in the main thread when no other ``ITIMER_REAL`` timer is running and the current
    SIGALRM handler is one Python can put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGALRM) is None:
        return False
    return signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _disarm() -> None:
    global _alarm_active
    _alarm_active = False
    signal.setitimer(signal.ITIMER_REAL, 0)


def _run_with_alarm(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()``, or ``None`` when it runs past ``timeout_s``. Main thread only."""
    global _alarm_active
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        try:
            _alarm_active = True
            signal.setitimer(signal.ITIMER_REAL, timeout_s, _ALARM_REPEAT_S)
            try:
                return fn()
            finally:
                _disarm()
        except _CheckTimeout:
            _disarm()
            return None
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)


# ---------------------------------------------------------------------------------------------
# Time limit, other threads: worker processes
# ---------------------------------------------------------------------------------------------

# What a worker may be asked to run: strings in, a JSON value (bool, string or null) out.
_WORKER_CALLS: dict[str, Callable[..., Any]] = {"match": _mv_match, "extract": _mv_extract}

# A worker imports this package from the caller's own files (``sys.argv[1]``: the folder of
# the ``sparft`` package the caller runs) under a bare stand-in for ``sparft``: neither
# ``sparft/__init__.py`` nor any module outside ``sparft.answers`` runs there, and sys.path is
# left as it is.
_WORKER_BOOT = (
    "import sys,types;"
    "p=types.ModuleType('sparft');p.__path__=[sys.argv[1]];sys.modules['sparft']=p;"
    "from sparft.answers import limits;limits._serve()"
)


_READY = b'{"ready": true}'


class _WorkerError(RuntimeError):
    """A worker process could not be started."""


def _serve() -> None:
    """Worker loop: one JSON request per stdin line, one JSON reply per line on the original
    stdout (library prints are sent to stderr so they cannot corrupt the protocol)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proto = os.fdopen(os.dup(1), "w", encoding="ascii")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _math_verify()
    _mv_match("1", "1")
    proto.write(_READY.decode("ascii") + "\n")
    proto.flush()
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        req = json.loads(line)
        result = _run_with_alarm(partial(_WORKER_CALLS[req["f"]], *req["a"]), float(req["t"]))
        proto.write(json.dumps({"r": result}) + "\n")
        proto.flush()


class _Worker:
    """One worker process and its line-buffered pipe to it."""

    def __init__(self) -> None:
        self._buf = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _WORKER_BOOT, str(Path(__file__).resolve().parents[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self._poll = select.poll()
        self._poll.register(self.proc.stdout.fileno(), select.POLLIN)
        deadline = time.monotonic() + _WORKER_STARTUP_S
        while True:
            line = self._read_line(deadline - time.monotonic())
            if line is None:
                self.kill()
                raise _WorkerError("math-verify worker process did not start")
            if line == _READY:
                return

    def _read_line(self, timeout_s: float) -> bytes | None:
        """One line from the worker, or ``None`` on timeout or end of file. ``poll`` rather
        than ``select``, which fails on descriptors above 1023 in fd-heavy trainer processes."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poll.poll(remaining * 1000):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def call(self, name: str, args: Sequence[str], timeout_s: float) -> Any:
        """The call's result, or ``None`` on timeout or a dead worker (the worker is then
        killed)."""
        assert self.proc.stdin is not None
        request = json.dumps({"f": name, "a": list(args), "t": timeout_s}) + "\n"
        try:
            self.proc.stdin.write(request.encode("ascii"))
        except OSError:
            self.kill()
            return None
        line = self._read_line(timeout_s + _WORKER_GRACE_S)
        if line is None:
            self.kill()
            return None
        try:
            return json.loads(line)["r"]
        except (ValueError, KeyError, TypeError):
            self.kill()
            return None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        """Ask the worker to exit (EOF on its stdin), killing it if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1.0)
        self.kill()


class _WorkerPool:
    """Up to ``size`` workers, started on demand and shared by all threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pid = os.getpid()
        self.broken = False
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive:
                        return worker
                    worker.kill()
                    self._count -= 1
                if self._count < self.size:
                    break
                self._cond.wait()
            self._count += 1
        try:
            return _Worker()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if worker.alive:
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def call(self, name: str, args: Sequence[str], timeout_s: float) -> Any:
        worker = self._acquire()
        try:
            return worker.call(name, args, timeout_s)
        finally:
            self._release(worker)

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.close()


_pool: _WorkerPool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _WorkerPool:
    """The process-wide pool; a forked child builds its own rather than share the parent's pipes."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            size = int(os.environ.get("SPARFT_MATCH_WORKERS", min(4, os.cpu_count() or 1)))
            _pool = _WorkerPool(max(1, size))
        return _pool


@atexit.register
def _close_pool() -> None:
    if _pool is not None and _pool.pid == os.getpid():
        _pool.close()


class Budget:
    """What a batch may spend in math-verify (``batch_budget``), and how many calls it had to
    skip once the budget was spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.skipped = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "sparft_answer_budget", default=None
)
BATCH_BUDGET_S = 30.0  # a batch's math-verify time: ample for real answers (ms each)
UNCHECKED_NOTE = (
    "%d answer checks skipped math-verify: the batch had spent its %g s budget (hostile "
    "completions?); sparft's own rules decided them"
)
_MIN_CALL_S = 0.01


@contextlib.contextmanager
def batch_budget(seconds: float = BATCH_BUDGET_S) -> Iterator[Budget]:
    """Inside the block, all math-verify calls together get at most ``seconds``: each call's
    limit is cut to what is left, and once it is spent math-verify is skipped: sparft's own
    rules still extract and match, and a case only math-verify could settle counts as no
    match (``Budget.skipped`` counts them). So a batch full of hostile completions (towers
    of exponents, LaTeX bombs) ends within about ``seconds`` plus one worker grace, and the
    run goes on."""
    budget = Budget(seconds)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _bounded(name: str, args: Sequence[str], timeout_s: float) -> Any:
    """``_WORKER_CALLS[name](*args)`` within ``timeout_s`` (plus the worker grace) in any
    thread, and within what is left of the batch's budget; ``None`` when it runs past the
    limit or the budget is spent.

    By thread:

    * main thread: a ``SIGALRM`` interval timer (``setitimer``, so fractions of a second work)
      raises a ``BaseException`` that math-verify's ``except Exception`` blocks cannot
      swallow, and it re-fires every 50 ms until disarmed. Used only when no other
      ``ITIMER_REAL`` timer is armed, so it never clobbers someone else's alarm.
    * any other thread (or ``SPARFT_MATCH_ISOLATION=process``): the call runs in a small pool
      of long-lived worker processes (``python -P -c`` importing ``sparft.answers`` from the
      caller's files: no ``multiprocessing``, so no fork-with-threads hazards, no re-import of
      the caller's ``__main__`` and no import of the rest of the package, which
      ``sparft.answers`` never imports). The worker limits itself with the same interval
      timer; the caller waits ``timeout_s + 1 s`` and then kills it, which also bounds work
      that signals cannot interrupt (a long C-level bignum power). ``SPARFT_MATCH_WORKERS``
      sets the pool size (default ``min(4, cpu_count)``, started lazily as concurrency
      demands).

    Neither path bounds memory, and ``timeout_s <= 0`` means no limit (in-process, any
    thread).
    """
    call = _WORKER_CALLS[name]
    budget = _BUDGET.get()
    if budget is not None:
        left = budget.left()
        if left < _MIN_CALL_S:
            budget.skipped += 1
            return None
        timeout_s = min(timeout_s, left) if timeout_s > 0 else left
    if timeout_s <= 0:
        return call(*args)
    isolation = os.environ.get("SPARFT_MATCH_ISOLATION", "auto")
    if isolation != "process" and _alarm_usable():
        return _run_with_alarm(lambda: call(*args), timeout_s)
    pool = _get_pool()
    if not pool.broken:
        try:
            return pool.call(name, args, timeout_s)
        except (_WorkerError, OSError):
            pool.broken = True
            logger.warning("math-verify worker unavailable; checking in-thread without a limit")
    return call(*args)
