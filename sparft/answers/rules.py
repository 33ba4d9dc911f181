"""sparft's own answer rules: where a completion states its final answer, how an answer is cleaned,
and the comparisons settled without sympy. Extraction finds the last complete
``\\boxed{}``/``\\fbox{}`` (brace-matched, with the boxes that only separators part from it), an
answer-only completion, an answer phrase or the last number; normalisation strips delimiters,
``\\boxed``, ``\\dfrac``, spacing commands, thousands separators, degrees, currency and trailing
units, so formatting noise never decides a match; ``_fast_verdict`` then settles equal strings,
numbers, percentages, decimal commas, text answers and different integers, and leaves the rest
to ``sparft.answers.verify``. Plain string work with the standard library, run without a time
limit: only math-verify needs one.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A completion longer than this is not taken for a bare answer.
_MAX_BARE_CHARS = 300


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
