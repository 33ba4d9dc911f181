"""Answer extraction and checking for GRPO on math, plus TRL reward functions.

The final answer of a completion is pulled out with plain string scanning (never ``eval``), then
compared with the gold answer in two stages: a cheap normalised string / number comparison that
settles most cases without sympy, and ``math-verify`` (``parse`` + ``verify``) for the rest.

Time limits. ``math-verify``'s own timeout is ``signal.alarm``, which raises ``ValueError`` outside
the main thread (Prefect task workers, TRL callbacks in threads). Its timeouts are therefore
switched off and ``timeout_s`` is enforced here, by thread:

* main thread: a ``SIGALRM`` interval timer (``setitimer``, so fractions of a second work) raises
  a ``BaseException`` that ``math-verify``'s ``except Exception`` blocks cannot swallow, and it
  re-fires every 50 ms until disarmed. Measured cost ~0.01-0.02 ms per check. Used only when no
  other ``ITIMER_REAL`` timer is armed, so it never clobbers someone else's alarm.
* any other thread (or ``SPARFT_MATCH_ISOLATION=process``): the check runs in a small pool of
  long-lived worker processes (``python -P -c`` loading this file by path: no ``multiprocessing``,
  so no fork-with-threads hazards, no re-import of the caller's ``__main__`` and no import of the
  rest of the package). The worker limits itself with the same interval timer; the caller waits
  ``timeout_s + 1 s`` and then kills it, which also bounds work that signals cannot interrupt (a
  long C-level bignum power). Measured on a 2-core machine: 0.1-0.4 ms extra per check (pipe
  round trip; more under load), 0.7-0.9 s to start a worker (on first use and after a kill, not
  counted against ``timeout_s``), ~60 MB resident per worker. ``SPARFT_MATCH_WORKERS`` sets the
  pool size (default ``min(4, cpu_count)``, started lazily as concurrency demands).

Neither path bounds memory, and ``timeout_s <= 0`` means no limit (in-process, any thread).
A check that times out, or whose worker dies, counts as not matching; nothing is raised.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Message = Mapping[str, Any]
# A completion as TRL hands it to reward functions: plain text, or a list of chat messages.
Completion = str | Sequence[Message]

# Answers longer than this are not handed to sympy: real final answers are short, and long
# strings are where parsing time explodes.
_MAX_ANSWER_CHARS = 400
_WORKER_GRACE_S = 1.0
_WORKER_STARTUP_S = 120.0
_ALARM_REPEAT_S = 0.05

# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

_BOX_START_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_EMPHASIS_START_RE = re.compile(r"\\(?:textbf|mathbf|boldsymbol|bm|underline)\s*\{")
_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_IS_RE = re.compile(r"\banswer(?:\*\*)?\s*(?:is\b|:)(?:\s*\*\*)?\s*:?", re.IGNORECASE)
_NUMBER_RE = re.compile(
    r"(?<![\w.\\])(?:-)?\\[dt]?frac\{\d+\}\{\d+\}"
    r"|(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:/\d+)?(?![\d])"
)
_LEADING_WORDS_RE = re.compile(r"^(?:[A-Za-z]{2,},?\s+)+(?=[-$\\(\d.])")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|,\s+(?!and\b|or\b)[a-z]{3,}\b")


def _brace_pairs(text: str) -> dict[int, int]:
    """Position of each ``{`` mapped to its closing ``}`` (escaped braces skipped), in one pass
    so that many unclosed boxes in a long completion cannot make the scan quadratic."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN_RE.finditer(text):
        token = m.group(0)
        if token == "{":
            stack.append(m.start())
        elif token == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every complete ``\\boxed{...}``/``\\fbox{...}`` as (start, end, content); unclosed ones
    (a truncated completion) are skipped."""
    starts = list(_BOX_START_RE.finditer(text))
    if not starts:
        return []
    pairs = _brace_pairs(text)
    spans = []
    for m in starts:
        close = pairs.get(m.end() - 1)
        if close is not None:
            spans.append((m.start(), close + 1, text[m.end() : close]))
    return spans


def _last_boxed(text: str) -> str | None:
    """Content of the non-empty box that closes last (the outer one when boxes nest); an empty
    ``\\boxed{}`` echoed from the prompt's instructions does not hide an earlier answer."""
    spans = [span for span in _boxed_spans(text) if span[2].strip()]
    if not spans:
        return None
    _, _, content = max(spans, key=lambda s: (s[1], -s[0]))
    content = content.strip()
    inner = _boxed_spans(content)
    while inner and inner[0][0] == 0 and inner[0][1] == len(content):
        content = inner[0][2].strip()
        inner = _boxed_spans(content)
    return content


def _math_span(s: str) -> str | None:
    """Content of a leading ``$...$``, ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]``."""
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left):
            end = s.find(right, len(left))
            if end > len(left):
                return s[len(left) : end]
            return None
    return None


def _answer_phrase(text: str) -> str | None:
    """X in the last "the (final) answer is X" / "Answer: X", cut at the end of its sentence.

    A phrase with no digit, no LaTeX and more than three words ("the answer is that we need
    more data") is prose, not an answer, so the next anchor back is tried instead.
    """
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        rest = text[m.end() :].lstrip()
        rest = _LEADING_WORDS_RE.sub("", rest.split("\n", 1)[0].strip())
        span = _math_span(rest)
        if span is None:
            cut = _SENTENCE_END_RE.search(rest)
            span = rest[: cut.start()] if cut else rest
        span = span.strip().strip("*").strip().rstrip(".").strip().strip("$").strip()
        if not span:
            continue
        if not re.search(r"[\d\\]", span) and len(span.split()) > 3:
            continue
        return span
    return None


def _last_number(text: str) -> str | None:
    """The last number written in the text, with thousands commas removed."""
    found = None
    for m in _NUMBER_RE.finditer(text):
        found = m.group(0)
    if found is None:
        return None
    return found if "frac" in found else found.replace(",", "")


def extract_answer(text: str) -> str | None:
    """The final answer a completion states.

    Priority: last ``\\boxed{}``/``\\fbox{}`` (brace-matched), GSM8K ``#### X``, "the (final)
    answer is X" / "Answer: X", the last number. ``None`` if there is nothing of the kind.
    """
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    gsm = [g.strip().strip("$").strip() for g in _GSM8K_RE.findall(text)]
    gsm = [g for g in gsm if g]
    if gsm:
        return gsm[-1]
    phrase = _answer_phrase(text)
    if phrase:
        return phrase
    return _last_number(text)


# ---------------------------------------------------------------------------------------------
# Normalisation and the cheap comparison
# ---------------------------------------------------------------------------------------------

_THOUSANDS_SEP_RE = re.compile(r"(?<=\d),\\!\s*(?=\d{3})")
_SPACING_RE = re.compile(r"\\[!,;:]|\\ |~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_UNIT_TEXT_RE = re.compile(
    r"(?<=[\d}).])\s*\\(?:text|mbox|mathrm|textrm)\{\s*[A-Za-z]{2,}[A-Za-z\s.]*\}"
    r"(?:\s*\^\s*\{?\d\}?)?\s*$"
)
_UNIT_WORDS_RE = re.compile(
    r"(?<=[\d}).])\s+(?!(?:pi|sqrt|times|cdot|plus|minus|over|mod|and|or)\b)"
    r"(?:[A-Za-z]{2,}|[A-Za-z](?=\s*[/^]))(?:[\s/^.\-]*[A-Za-z0-9]+)*\.?\s*$"
)
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_SLASH_FRAC_RE = re.compile(r"(-?\d+)/(\d+)")
_LATEX_FRAC_RE = re.compile(r"(-?)\\frac(?:\{(-?\d+)\}\{(\d+)\}|(\d)(\d))")


def _unwrap_whole(s: str, start_re: re.Pattern[str]) -> str:
    """Content of ``\\cmd{...}`` when that command spans the whole string, else ``s``."""
    m = start_re.match(s)
    if m and _brace_pairs(s).get(m.end() - 1) == len(s) - 1:
        return s[m.end() : -1]
    return s


def _strip_wrappers(s: str) -> str:
    """Peel bold markers, math delimiters, a whole-string box or bold command, a full stop."""
    for _ in range(6):
        before = s
        s = s.strip()
        if s.startswith("**") and s.endswith("**") and len(s) > 4:
            s = s[2:-2]
        s = s.rstrip(".").strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
                s = s[len(left) : -len(right)]
                break
        s = _unwrap_whole(s, _BOX_START_RE)
        s = _unwrap_whole(s, _EMPHASIS_START_RE)
        if s == before:
            break
    return s.strip()


def _clean(s: str) -> str:
    """Normalise an answer string so that formatting noise does not decide a match."""
    s = _strip_wrappers(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _THOUSANDS_SEP_RE.sub(",", s)
    s = _SPACING_RE.sub("", s)
    s = _DEGREE_RE.sub("", s)
    s = s.removeprefix("\\$").removeprefix("$").strip()
    s = _UNIT_TEXT_RE.sub("", s)
    s = _UNIT_WORDS_RE.sub("", s)
    return s.strip()


def _as_number(s: str) -> Fraction | None:
    """Exact value of a plain number, ``a/b`` or ``\\frac{a}{b}``; ``None`` for anything else."""
    try:
        if _THOUSANDS_RE.fullmatch(s) or _DECIMAL_RE.fullmatch(s):
            return Fraction(s.replace(",", ""))
        m = _SLASH_FRAC_RE.fullmatch(s)
        if m and int(m.group(2)) != 0:
            return Fraction(int(m.group(1)), int(m.group(2)))
        m = _LATEX_FRAC_RE.fullmatch(s)
        if m:
            num = int(m.group(2) or m.group(4))
            den = int(m.group(3) or m.group(5))
            if den != 0:
                return Fraction(-num if m.group(1) else num, den)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _fast_verdict(pred: str, gold: str) -> bool | None:
    """Settle the easy cases without sympy; ``None`` means math-verify must decide.

    Only a match, or a mismatch of two integers, is settled here: a decimal against a fraction
    is left to math-verify so that its rounding rules (0.333333 = 1/3) apply everywhere.
    """
    if "".join(pred.split()) == "".join(gold.split()):
        return True
    p, g = _as_number(pred), _as_number(gold)
    if p is None or g is None:
        return None
    if p == g:
        return True
    if p.denominator == 1 and g.denominator == 1 and "." not in pred + gold:
        return False
    return None


# ---------------------------------------------------------------------------------------------
# math-verify, with its own timeouts switched off
# ---------------------------------------------------------------------------------------------


class _NoTimeoutWarning(logging.Filter):
    """Drop math-verify's "timeout is disabled" warning: the limit is enforced in this module."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


_mv_module: Any = None


def _math_verify() -> Any:
    """Import math-verify lazily: it pulls in sympy (~0.6 s), which callers may never need."""
    global _mv_module
    if _mv_module is None:
        import math_verify

        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_NoTimeoutWarning())
        _mv_module = math_verify
    return _mv_module


def _mv_parse(s: str) -> list[Any]:
    """Parse an answer as LaTeX (boxed, so the whole string is one expression); if that yields
    no sympy object, also try plain-expression extraction (``1/2``, ``3.5``)."""
    mv = _math_verify()
    parsed = mv.parse(
        "\\boxed{" + s + "}",
        extraction_config=[mv.LatexExtractionConfig()],
        parsing_timeout=None,
    )
    if all(isinstance(x, str) for x in parsed):
        parsed = parsed + mv.parse(
            s, extraction_config=[mv.ExprExtractionConfig()], parsing_timeout=None
        )
    return parsed


def _mv_match(pred: str, gold: str) -> bool:
    """math-verify equivalence of two cleaned answers, with no time limit of its own."""
    mv = _math_verify()
    try:
        gold_parsed = _mv_parse(gold)
        pred_parsed = _mv_parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(mv.verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:
        logger.debug("math-verify failed on %r vs %r", pred, gold, exc_info=True)
        return False


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


def _run_with_alarm(fn: Callable[[], bool], timeout_s: float) -> bool | None:
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

_WORKER_BOOT = (
    "import importlib.util as u,sys;"
    "s=u.spec_from_file_location('_sparft_rewards_worker',sys.argv[1]);"
    "m=u.module_from_spec(s);s.loader.exec_module(m);m._serve()"
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
        result = _run_with_alarm(lambda r=req: _mv_match(r["p"], r["g"]), float(req["t"]))
        proto.write(json.dumps({"r": result}) + "\n")
        proto.flush()


class _Worker:
    """One worker process and its line-buffered pipe to it."""

    def __init__(self) -> None:
        self._buf = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _WORKER_BOOT, str(Path(__file__).resolve())],
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

    def check(self, pred: str, gold: str, timeout_s: float) -> bool | None:
        """Verdict, or ``None`` on timeout or a dead worker (the worker is then killed)."""
        assert self.proc.stdin is not None
        request = json.dumps({"p": pred, "g": gold, "t": timeout_s}) + "\n"
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
            result = json.loads(line)["r"]
        except (ValueError, KeyError, TypeError):
            self.kill()
            return None
        return None if result is None else bool(result)

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

    def check(self, pred: str, gold: str, timeout_s: float) -> bool | None:
        worker = self._acquire()
        try:
            return worker.check(pred, gold, timeout_s)
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


def _bounded_match(pred: str, gold: str, timeout_s: float) -> bool:
    """math-verify verdict within ``timeout_s`` (plus the worker grace), in any thread."""
    isolation = os.environ.get("SPARFT_MATCH_ISOLATION", "auto")
    if isolation != "process" and _alarm_usable():
        return bool(_run_with_alarm(lambda: _mv_match(pred, gold), timeout_s))
    pool = _get_pool()
    if not pool.broken:
        try:
            return bool(pool.check(pred, gold, timeout_s))
        except (_WorkerError, OSError):
            pool.broken = True
            logger.warning("math-verify worker unavailable; checking in-thread without a limit")
    return _mv_match(pred, gold)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def answers_match(predicted: str | None, gold: str, timeout_s: float = 5.0) -> bool:
    """Whether a predicted final answer equals the gold one (math-verify semantics).

    Both sides are cleaned first (delimiters, ``\\boxed``, ``\\dfrac``, spacing commands,
    degrees, a leading dollar sign, trailing unit words); equal strings or equal plain numbers
    match at once, two different integers do not, and everything else goes to math-verify
    within ``timeout_s`` seconds. A timeout counts as no match.
    """
    if predicted is None or len(str(predicted)) > 4 * _MAX_ANSWER_CHARS:
        return False
    pred, ref = _clean(str(predicted)), _clean(str(gold))
    if not pred or not ref:
        return False
    verdict = _fast_verdict(pred, ref)
    if verdict is not None:
        return verdict
    if len(pred) > _MAX_ANSWER_CHARS or len(ref) > _MAX_ANSWER_CHARS:
        return False
    if timeout_s <= 0:
        return _mv_match(pred, ref)
    return _bounded_match(pred, ref, timeout_s)


def completion_text(completion: Completion | Message | None) -> str:
    """Text of a completion: a plain string, or TRL's conversational form (a list of message
    dicts), whose assistant contents are joined in order."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, Mapping) else completion
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                str(c.get("text", "")) for c in content if isinstance(c, dict) and "text" in c
            )
    return "\n".join(parts)


def is_correct(completion: Completion, gold: str, timeout_s: float = 5.0) -> bool:
    """Whether the final answer stated in a completion equals the gold answer."""
    return answers_match(extract_answer(completion_text(completion)), str(gold), timeout_s)


def correctness_reward(
    completions: Sequence[Completion], answer: Sequence[str | int | float], **kwargs: Any
) -> list[float]:
    """TRL reward: 1.0 for a correct final answer, else 0.0 (``answer`` is the gold column).

    TRL passes ``prompts``, ``completion_ids``, every other dataset column, ``trainer_state``,
    ``log_extra`` and ``log_metric`` as keywords; they are accepted and ignored.
    """
    return [1.0 if is_correct(c, str(a)) else 0.0 for c, a in zip(completions, answer, strict=True)]


def format_reward(completions: Sequence[Completion], **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 when the completion puts a non-empty final answer in ``\\boxed{}``."""
    return [1.0 if _last_boxed(completion_text(c)) else 0.0 for c in completions]


def check_gold(solution: str, answer: str) -> tuple[bool, str | None]:
    """Extract the final answer from a data set's worked solution and compare it with the gold
    answer field: ``(agrees, extracted)``. Used by ``sparft verify`` to audit a data set."""
    extracted = extract_answer(solution)
    return answers_match(extracted, str(answer)), extracted
