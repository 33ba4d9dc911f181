"""Answer checking: the final answer a completion states, and whether it equals the gold answer.

One path serves rewards, probing, evaluation and ``sparft verify``, so every number the project
reports is scored the same way. Model text is never evaluated; ``math-verify`` parses it into
sympy objects.

Extraction (``extract_answer``) tries, in order, and the first that yields an answer decides:

1. the last complete ``\\boxed{}``/``\\fbox{}`` (brace-matched, so nested braces and truncated
   boxes are handled);
2. GSM8K's ``#### X``;
3. the whole completion, when it is only an answer (``$(2,7]$``, ``t^2-3t+2``, ``7 \\geq y``,
   ``\\text{even}``): no prose around it, so cutting a number out of it would be wrong;
4. an answer phrase ("the final answer is X", "Answer: X"); a phrase that is itself a sentence
   ("The smallest $k$ is 12") is handed to math-verify's extraction;
5. math-verify's own extraction (its LaTeX and expression configs) on the completion: answer
   anchors, then the rightmost LaTeX span or expression;
6. the last number in the text.

Several boxes parted only by separators (``\\boxed{1}, \\boxed{2}``, ``\\quad\\text{and}``) are one
answer listing several solutions; a "final answer is" line after the last box overrides it. A
gold field that is a worked solution or an answer phrase has its answer extracted the same way.

Matching (``answers_match``) cleans both sides (delimiters, ``\\boxed``, ``\\dfrac``, spacing
commands, thousands separators, degrees, currency, trailing units) and settles at once: equal
strings, equal numbers, a percentage against its number or its fraction (``50\\%`` = 50 = 0.5),
a decimal comma against a decimal point (``1,22`` = 1.22), text answers as words
(``\\text{even}`` = ``even``, never through sympy), and two different integers. The rest
(expressions, equations, relations, intervals, sets, matrices) goes to math-verify's ``parse``
and ``verify``, which read a bare comma list as a set (``-2, 1`` = ``1, -2``; a tuple in
brackets keeps its order). Two of its verdicts are corrected: an equation ``L = R`` equals a
value only when ``L`` names the quantity (``x = 5``, ``|AB| = 1``, not ``2x + z = 1``), and
numbers that round alike at math-verify's six decimals but differ in relative terms
(``1/2004!`` and ``1/2006!``) do not match.

Time limits. ``math-verify``'s own timeout is ``signal.alarm``, which raises ``ValueError``
outside the main thread (Prefect task workers, TRL callbacks in threads). Its timeouts are
therefore switched off and ``timeout_s`` is enforced here, for every call into math-verify
(extraction and matching alike), by thread:

* main thread: a ``SIGALRM`` interval timer (``setitimer``, so fractions of a second work) raises
  a ``BaseException`` that ``math-verify``'s ``except Exception`` blocks cannot swallow, and it
  re-fires every 50 ms until disarmed. Used only when no other ``ITIMER_REAL`` timer is armed,
  so it never clobbers someone else's alarm.
* any other thread (or ``SPARFT_MATCH_ISOLATION=process``): the call runs in a small pool of
  long-lived worker processes (``python -P -c`` loading this file by path: no ``multiprocessing``,
  so no fork-with-threads hazards, no re-import of the caller's ``__main__`` and no import of the
  rest of the package). The worker limits itself with the same interval timer; the caller waits
  ``timeout_s + 1 s`` and then kills it, which also bounds work that signals cannot interrupt (a
  long C-level bignum power). ``SPARFT_MATCH_WORKERS`` sets the pool size (default
  ``min(4, cpu_count)``, started lazily as concurrency demands).

Neither path bounds memory, and ``timeout_s <= 0`` means no limit (in-process, any thread).
A call that times out, or whose worker dies, counts as no answer / no match; nothing is raised.
This file imports nothing from the package, so a worker can load it alone.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

Message = Mapping[str, Any]
# A completion as TRL hands it to reward functions: plain text, or a list of chat messages.
Completion = str | Sequence[Message]

# Answers longer than this are not handed to sympy: real final answers are short, and long
# strings are where parsing time explodes.
_MAX_ANSWER_CHARS = 400
# math-verify's extraction reads only the end of a completion, where the final answer is.
_MAX_SCAN_CHARS = 4000
# A completion longer than this is not taken for a bare answer.
_MAX_BARE_CHARS = 300
# A gold field longer than this that reads as prose is a worked solution: its answer is extracted.
_MAX_GOLD_ANSWER_CHARS = 200
_WORKER_GRACE_S = 1.0
_WORKER_STARTUP_S = 120.0
_ALARM_REPEAT_S = 0.05


class Grade(NamedTuple):
    """The answer a completion states (``None`` if none) and whether it equals the gold one."""

    answer: str | None
    correct: bool


# ---------------------------------------------------------------------------------------------
# Extraction: sparft's own rules
# ---------------------------------------------------------------------------------------------

_BOX_START_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_EMPHASIS_START_RE = re.compile(r"\\(?:textbf|mathbf|boldsymbol|bm|underline)\s*\{")
_TEXT_START_RE = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox)\s*\{")
_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_IS_RE = re.compile(r"\banswer(?:\*\*)?\s*(?:is\b|:)(?:\s*\*\*)?\s*:?", re.IGNORECASE)
_NUMBER_RE = re.compile(
    r"(?<![\w.\\])(?:-)?\\[dt]?frac\{\d+\}\{\d+\}"
    r"|(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:/\d+)?(?![\d])"
)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|,\s+(?!and\b|or\b)[a-z]{3,}\b")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_TEXT_RE = re.compile(r"\\(?:text|textrm|textnormal|mbox)\s*\{[^{}]{0,40}\}")
_SEPARATOR_RE = re.compile(r"\\(?:quad|qquad|[,;:!]|\(|\)|\[|\]|\\)|[$&,;.\s]")
_JOINER_RE = re.compile(r"[,;]|\\q?quad|\b(?:and|or)\b", re.IGNORECASE)
_FINAL_ANSWER_RE = re.compile(r"final answer(?:\*\*)?\s*(?:is\b|:)", re.IGNORECASE)
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_ENVIRONMENT_RE = re.compile(r"\\(?:begin\s*\{array\}\s*\{[^}]*\}|(?:begin|end)\s*\{\w+\*?\})")
# Words that join the parts of a math-only answer ("1 and 2", "x < 1 or x > 3").
_JOINING_WORDS = frozenset({"and", "or"})
# An answer of words only: letters, spaces and light punctuation (``(C)``, ``no solution``).
_WORDS_ONLY_RE = re.compile(r"[A-Za-z][A-Za-z\s'()\-.,]*")
_MAX_TEXT_ANSWER_WORDS = 3


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


def last_boxed(text: str) -> str | None:
    """Content of the non-empty box that closes last (the outer one when boxes nest); an empty
    ``\\boxed{}`` echoed from the prompt's instructions does not hide an earlier answer."""
    found = _final_boxes(text)
    return found[0][-1] if found else None


def _unnest(content: str) -> str:
    """``\\boxed{\\boxed{5}}`` and the like down to ``5``."""
    content = content.strip()
    inner = _boxed_spans(content)
    while inner and inner[0][0] == 0 and inner[0][1] == len(content):
        content = inner[0][2].strip()
        inner = _boxed_spans(content)
    return content


def _joins_boxes(gap: str) -> bool:
    """Whether the text between two boxes makes them one answer with several parts: nothing,
    or a joiner (``, ``, ``;``, ``\\quad``, ``and``, ``or``, ``\\text{ and }``) among math
    delimiters. Boxes in separate formulas with nothing between them are separate answers."""
    if not gap.strip():
        return True
    joined = _TEXT_RE.sub(" and ", gap)
    if not _JOINER_RE.search(joined):
        return False
    rest = _SEPARATOR_RE.sub(" ", joined)
    return all(word.lower() in _JOINING_WORDS for word in rest.split())


def _final_boxes(text: str) -> tuple[list[str], int] | None:
    """The contents of the last box and of the boxes just before it that only separators part
    from it ("\\boxed{1}, \\boxed{2} and \\boxed{3}": several solutions, each boxed), with
    the end of the last box; ``None`` without a non-empty box."""
    spans = [span for span in _boxed_spans(text) if span[2].strip()]
    if not spans:
        return None
    outer: list[tuple[int, int, str]] = []
    for span in spans:  # in order of start; brace-matched boxes nest or are disjoint
        if not outer or span[0] >= outer[-1][1]:
            outer.append(span)
    group = [outer[-1]]
    for span in reversed(outer[:-1]):
        if not _joins_boxes(text[span[1] : group[0][0]]):
            break
        group.insert(0, span)
    contents = list(dict.fromkeys(_unnest(sp[2]) for sp in group))
    return contents, group[-1][1]


def _math_span(s: str) -> str | None:
    """Content of a leading ``$...$``, ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]``."""
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left):
            end = s.find(right, len(left))
            if end > len(left):
                return s[len(left) : end]
            return None
    return None


def _prose_words(s: str) -> list[str]:
    """Words of two or more letters outside LaTeX command and environment names."""
    return _WORD_RE.findall(_COMMAND_RE.sub(" ", _ENVIRONMENT_RE.sub(" ", s)))


def _is_sentence(span: str) -> bool:
    """Whether an answer span reads as prose ("The smallest $k$ is 12") rather than an answer."""
    words = [w for w in _prose_words(span) if w.lower() not in _JOINING_WORDS]
    if not words:
        return False
    plain = _TEXT_START_RE.sub("", span).replace("}", "")
    return not (_WORDS_ONLY_RE.fullmatch(plain.strip()) and len(words) <= _MAX_TEXT_ANSWER_WORDS)


def _answer_phrase(text: str) -> str | None:
    """X in the last "the (final) answer is X" / "Answer: X": the math span right after the
    anchor, else the rest of its sentence (which may itself be a sentence, "The smallest $k$
    is 12", for math-verify to read).

    A phrase with no digit, no LaTeX and more than three words ("the answer is that we need
    more data") is prose, not an answer, so the next anchor back is tried instead.
    """
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        line = text[m.end() :].lstrip().split("\n", 1)[0].strip()
        span = _math_span(line)
        if span is None:
            cut = _SENTENCE_END_RE.search(line)
            span = line[: cut.start()] if cut else line
        span = span.strip().strip("*").strip().rstrip(".").strip()
        if span.count("$") == 1:
            span = span.strip("$").strip()
        if not span:
            continue
        if not re.search(r"[\d\\]", span) and len(span.split()) > _MAX_TEXT_ANSWER_WORDS:
            continue
        return span
    return None


def _bare_answer(text: str) -> str | None:
    """The completion itself when it is only an answer: short, one line (or one display
    block), and no prose words besides "and"/"or" joining parts, or a few words and nothing
    else (``even``, ``\\text{(C)}``, ``no solution``)."""
    s = text.strip()
    if not s or len(s) > _MAX_BARE_CHARS:
        return None
    s = _strip_wrappers(s)
    if not s or "$" in s.replace("\\$", "") or "\\(" in s or "\\[" in s:
        return None
    if "\n" in s and not text.strip().startswith(("$$", "\\[")):
        return None
    if _is_sentence(s) or _ANSWER_IS_RE.search(s):
        return None
    return s


def _last_number(text: str) -> str | None:
    """The last number written in the text, with thousands commas removed."""
    found = None
    for m in _NUMBER_RE.finditer(text):
        found = m.group(0)
    if found is None:
        return None
    return found if "frac" in found else found.replace(",", "")


# ---------------------------------------------------------------------------------------------
# Normalisation and the cheap comparison
# ---------------------------------------------------------------------------------------------

_THOUSANDS_SEP_RE = re.compile(r"(?<=\d)(?:,\\!\s*|\{,\}|\\,|\\ |~|\s)(?=\d{3}(?!\d))")
_SPACING_RE = re.compile(r"(?<!\\)\\(?:[!,;: ]|quad|qquad)|~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_PERCENT_RE = re.compile(r"\s*(?:\\?%|\\text\{\s*%\s*\}|percent|pct)\s*$", re.IGNORECASE)
_UNIT_TEXT_RE = re.compile(
    r"(?<=[\d}).])\s*\\(?:text|mbox|mathrm|textrm|textnormal)\{\s*[A-Za-z]{2,}[A-Za-z\s.]*\}"
    r"(?:\s*\^\s*\{?\d\}?)?\s*$"
)
_UNIT_WORDS_RE = re.compile(
    r"(?<=[\d}).])\s+(?!(?:pi|sqrt|times|cdot|plus|minus|over|mod|and|or)\b)"
    r"(?:[A-Za-z]{2,}|[A-Za-z](?=\s*[/^]))[A-Za-z0-9\s/^.\-]*$"
)
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_DECIMAL_COMMA_RE = re.compile(r"-?\d+,(?:\d{1,2}|\d{4,})")
_SLASH_FRAC_RE = re.compile(r"(-?\d+)/(\d+)")
_LATEX_FRAC_RE = re.compile(r"(-?)\\frac(?:\{(-?\d+)\}\{(\d+)\}|(\d)(\d))")
_EQUALS_RE = re.compile(r"(?<![<>!=\\])=(?!=)")
_VARIABLE_RE = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?(?:\([A-Za-z]\))?|\\[A-Za-z]+")
_PLAIN_EXPR_RE = re.compile(r"[\d\s.,+\-*/^()%\u00d7\u00f7]+")


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
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = _THOUSANDS_SEP_RE.sub(",", s)
    s = _SPACING_RE.sub("", s)
    s = _DEGREE_RE.sub("", s)
    s = s.removeprefix("\\$").removeprefix("$").strip()
    s = _UNIT_TEXT_RE.sub("", s)
    s = _UNIT_WORDS_RE.sub("", s)
    return s.strip().rstrip("\\").strip()


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


def _words(s: str) -> str | None:
    """A text answer (``\\text{Evelyn}``, ``(C)``, ``even``) as lower-case words; ``None`` when
    ``s`` has math in it. Words are compared as strings: sympy would read ``even`` as the
    product ``e*v*e*n`` and call it equal to ``neve``."""
    plain = s
    for _ in range(3):
        plain = _unwrap_whole(plain.strip(), _TEXT_START_RE)
    plain = plain.strip()
    if plain.startswith("(") and plain.endswith(")"):
        plain = plain[1:-1]
    plain = plain.strip().rstrip(".")
    if not _WORDS_ONLY_RE.fullmatch(plain) or not _WORD_RE.search(plain):
        return None
    return " ".join(plain.lower().split())


def _decimal_comma_match(pred: str, gold: str) -> bool | None:
    """``1,22`` or ``1000,99`` (a decimal comma: not three digits after it, so not a thousands
    separator) against a decimal written with a point; ``None`` for anything else, since
    ``-2,1`` alone is a list of two answers."""
    for this, other in ((pred, gold), (gold, pred)):
        if _DECIMAL_COMMA_RE.fullmatch(this) and "." in other:
            value = _as_number(other)
            if value is not None:
                return Fraction(this.replace(",", ".")) == value
    return None


def _fast_verdict(pred: str, gold: str) -> bool | None:
    """Settle the easy cases without sympy; ``None`` means math-verify must decide.

    Only a match, or a mismatch of two integers or of two text answers, is settled here: a
    decimal against a fraction is left to math-verify so that its rounding rules
    (0.333333 = 1/3) apply everywhere.
    """
    if "".join(pred.split()) == "".join(gold.split()):
        return True
    pred_words, gold_words = _words(pred), _words(gold)
    if pred_words is not None and gold_words is not None:
        return pred_words == gold_words
    p_pct, g_pct = _PERCENT_RE.search(pred), _PERCENT_RE.search(gold)
    p_str = pred[: p_pct.start()].strip() if p_pct else pred
    g_str = gold[: g_pct.start()].strip() if g_pct else gold
    p, g = _as_number(p_str), _as_number(g_str)
    if p is None or g is None:
        return _decimal_comma_match(p_str, g_str)
    if p == g:
        return True
    if bool(p_pct) != bool(g_pct) and (p / 100 == g if p_pct else g / 100 == p):
        return True
    if p.denominator == 1 and g.denominator == 1 and "." not in p_str + g_str:
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
    no sympy object and the answer is a plain expression (``1/2``, ``3.5``, ``2**10``), also
    try math-verify's expression extraction, which on LaTeX would pick out a stray number."""
    mv = _math_verify()
    parsed = mv.parse(
        "\\boxed{" + s + "}",
        extraction_config=[mv.LatexExtractionConfig()],
        parsing_timeout=None,
    )
    if all(isinstance(x, str) for x in parsed) and _PLAIN_EXPR_RE.fullmatch(s):
        parsed = parsed + mv.parse(
            s, extraction_config=[mv.ExprExtractionConfig()], parsing_timeout=None
        )
    return parsed


def _top_level_sum(expr: str) -> bool:
    """Whether ``expr`` is a sum or difference of terms outside any brackets (``2x + z``),
    as opposed to one quantity (``|AB|``, ``\\frac{NO}{BO}``, ``A:B``)."""
    depth = 0
    for i, ch in enumerate(expr.strip()):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch in "+-" and depth == 0 and i > 0:
            return True
    return False


def _equation_sides(pred: str, gold: str) -> tuple[str, str] | None:
    """Both answers ready for math-verify when one is an equation ``L = R`` and the other is
    not: R is compared when L names the quantity R gives (``x``, ``f(x)``, ``|AB|``, ``A:B``,
    ``3 + 2``), or is a variable (``y = 2x + 1`` against ``2x + 1``); the last part of a chain
    ``x = 2 + 3 = 5`` likewise. An equation such as ``2x + z = 1`` or ``7 = 11a + c`` never
    equals a value (math-verify 0.9.0 calls some of them a match). ``None`` when no match is
    possible.
    """
    sides = []
    for this, other in ((pred, gold), (gold, pred)):
        parts = _EQUALS_RE.split(this)
        if len(parts) == 1 or len(_EQUALS_RE.split(other)) > 1 or "," in this or ";" in this:
            sides.append(this)
            continue
        lhs, rhs = parts[0].strip(), parts[-1].strip()
        if len(parts) == 2 and not _VARIABLE_RE.fullmatch(lhs):
            names = re.search(r"[A-Za-z]", _COMMAND_RE.sub("", lhs))
            if re.search(r"[A-Za-z]", _COMMAND_RE.sub("", rhs)) or (names and _top_level_sum(lhs)):
                return None
        sides.append(rhs)
    return sides[0], sides[1]


def _same_number(gold: Any, pred: Any) -> bool:
    """False when both are numbers that differ in relative terms by more than 1e-5.

    math-verify rounds to 6 decimals before comparing, which makes ``1/2004!`` equal
    ``1/2006!`` (both round to 0); its rounding matches (``0.333333`` = 1/3) survive this.
    Each side is evaluated by sympy to 30 digits, so values beyond a float's range compare
    correctly; complex values are left to math-verify.
    """
    import sympy

    try:
        if not (isinstance(gold, sympy.Expr) and isinstance(pred, sympy.Expr)):
            return True
        if gold.free_symbols or pred.free_symbols or not (gold.is_number and pred.is_number):
            return True
        a, b = sympy.N(gold, 30), sympy.N(pred, 30)
        if not (isinstance(a, sympy.Float) and isinstance(b, sympy.Float)):
            return True
        return bool(abs(a - b) <= max(abs(a), abs(b)) * sympy.Float("1e-5", 30))
    except (TypeError, ValueError, ArithmeticError, AttributeError):
        return True


def _mv_match(pred: str, gold: str) -> bool:
    """math-verify equivalence of two cleaned answers, with no time limit of its own."""
    mv = _math_verify()
    try:
        sides = _equation_sides(pred, gold)
        if sides is None:
            return False
        pred, gold = sides
        gold_parsed = _mv_parse(gold)
        pred_parsed = _mv_parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        if not mv.verify(gold_parsed, pred_parsed, timeout_seconds=None):
            return False
        return _same_number(gold_parsed[0], pred_parsed[0])
    except Exception:
        logger.debug("math-verify failed on %r vs %r", pred, gold, exc_info=True)
        return False


_AND_JOIN_RE = re.compile(r"\s+and\s+")


def _mv_extract(text: str) -> str | None:
    """The answer math-verify's own extraction finds in free text (answer anchors first, then
    the rightmost LaTeX span or expression), as a string for ``answers_match``."""
    mv = _math_verify()
    try:
        parsed = mv.parse(
            text[-_MAX_SCAN_CHARS:],
            extraction_config=[mv.LatexExtractionConfig(), mv.ExprExtractionConfig()],
            parsing_timeout=None,
        )
    except Exception:
        logger.debug("math-verify extraction failed on %r", text, exc_info=True)
        return None
    strings = [x for x in parsed if isinstance(x, str) and x.strip()]
    if len(parsed) < 2 or not strings:
        return None
    return _AND_JOIN_RE.sub(", ", strings[-1].strip())


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

_WORKER_BOOT = (
    "import importlib.util as u,sys;"
    "s=u.spec_from_file_location('_sparft_answers_worker',sys.argv[1]);"
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
        result = _run_with_alarm(partial(_WORKER_CALLS[req["f"]], *req["a"]), float(req["t"]))
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
    limit or the budget is spent."""
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


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def extract_answer(text: str, timeout_s: float = 5.0) -> str | None:
    """The final answer a completion states, or ``None``.

    Priority: the last ``\\boxed{}``/``\\fbox{}`` (with the boxes that only separators part
    from it, joined as a list) unless a "final answer is" phrase follows it, GSM8K ``#### X``,
    the whole text when it is only an answer, an answer phrase, math-verify's extraction
    (within ``timeout_s``), the last number.
    """
    if not text:
        return None
    boxes = _final_boxes(text)
    if boxes and not _FINAL_ANSWER_RE.search(text, boxes[1]):
        return ", ".join(boxes[0])
    gsm = [g.strip().strip("$").strip() for g in _GSM8K_RE.findall(text)]
    gsm = [g for g in gsm if g]
    if gsm:
        return gsm[-1]
    bare = _bare_answer(text)
    if bare:
        return bare
    phrase = _answer_phrase(text)
    if phrase and not _is_sentence(phrase):
        return phrase
    found = _bounded("extract", [phrase or text], timeout_s)
    if found and _is_sentence(found):  # a LaTeX span of prose: "$? just about 1$"
        return _last_number(found) or str(found)
    if found:
        return str(found)
    if phrase:
        return phrase
    if boxes:
        return ", ".join(boxes[0])
    return _last_number(text)


def _gold_answer(gold: str, timeout_s: float) -> str:
    """The gold answer itself when a data set's field holds a worked solution or an answer
    phrase ("answer is 0.25", "... Final Answer: The final answer is $28\\%$."); a short
    answer is taken as it is, letters and all (``AB=4, CD=5``, ``15\\text{ cm}``)."""
    boxed = "\\boxed" in gold or "\\fbox" in gold
    long_prose = len(gold) > _MAX_GOLD_ANSWER_CHARS and _is_sentence(gold)
    if boxed or long_prose or _ANSWER_IS_RE.search(gold):
        return extract_answer(gold, timeout_s) or gold
    return gold


def answers_match(predicted: str | None, gold: str, timeout_s: float = 5.0) -> bool:
    """Whether a predicted final answer equals the gold one (math-verify semantics).

    Both sides are cleaned first; equal strings, equal plain numbers and equal text answers
    match at once, two different integers or words do not, and everything else goes to
    math-verify within ``timeout_s`` seconds. A timeout counts as no match.
    """
    if predicted is None or len(str(predicted)) > 4 * _MAX_ANSWER_CHARS:
        return False
    pred, ref = _clean(str(predicted)), _clean(_gold_answer(str(gold), timeout_s))
    if not pred or not ref:
        return False
    verdict = _fast_verdict(pred, ref)
    if verdict is not None:
        return verdict
    if len(pred) > _MAX_ANSWER_CHARS or len(ref) > _MAX_ANSWER_CHARS:
        return False
    return bool(_bounded("match", [pred, ref], timeout_s))


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


def grade(completion: Completion, gold: str | int | float, timeout_s: float = 5.0) -> Grade:
    """The answer a completion states and whether it equals ``gold``: the one scoring path.

    A completion that is the gold answer character for character (spaces aside) is correct
    whatever it looks like to the extractor.
    """
    text = completion_text(completion)
    if len(text) <= 4 * _MAX_ANSWER_CHARS and "".join(text.split()) == "".join(str(gold).split()):
        return Grade(_strip_wrappers(text), True)
    answer = extract_answer(text, timeout_s)
    return Grade(answer, answers_match(answer, str(gold), timeout_s))


def is_correct(completion: Completion, gold: str | int | float, timeout_s: float = 5.0) -> bool:
    """Whether the final answer stated in a completion equals the gold answer."""
    return grade(completion, gold, timeout_s).correct


def check_gold(solution: str, answer: str) -> tuple[bool, str | None]:
    """Extract the final answer from a data set's worked solution and compare it with the gold
    answer field: ``(agrees, extracted)``. Used by ``sparft verify`` to audit a data set."""
    extracted, agrees = grade(solution, answer)
    return agrees, extracted
