"""The math-verify adapter: equivalence and extraction by ``math-verify`` (sympy) for what
sparft's own rules (``sparft.answers.rules``) cannot settle, with two of its verdicts corrected
(an equation equals a value only when its left side names the quantity; numbers that round
alike at six decimals must also agree in relative terms) and its own ``signal.alarm`` timeouts
switched off, since they fail outside the main thread. Nothing here has a time limit of its
own: callers go through ``sparft.answers.limits``, which bounds every call.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sparft.answers.rules import _COMMAND_RE

logger = logging.getLogger(__name__)

# math-verify's extraction reads only the end of a completion, where the final answer is.
_MAX_SCAN_CHARS = 4000

_EQUALS_RE = re.compile(r"(?<![<>!=\\])=(?!=)")
_VARIABLE_RE = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?(?:\([A-Za-z]\))?|\\[A-Za-z]+")
_PLAIN_EXPR_RE = re.compile(r"[\d\s.,+\-*/^()%\u00d7\u00f7]+")


class _NoTimeoutWarning(logging.Filter):
    """Drop math-verify's "timeout is disabled" warning: ``sparft.answers.limits`` enforces the
    limit."""

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
