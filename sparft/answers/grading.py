"""The one scoring path of rewards, probing, evaluation and ``sparft verify``: the final answer
a completion states (``extract_answer``), whether it equals the gold one (``answers_match``), and
both at once (``grade``, ``is_correct``), built from sparft's own rules
(``sparft.answers.rules``) and math-verify (``sparft.answers.verify``) under time limits
(``sparft.answers.limits``), so every number the project reports is scored the same way and
model text is never evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sparft.answers.limits import _bounded
from sparft.answers.rules import (
    _ANSWER_IS_RE,
    _FINAL_ANSWER_RE,
    _GSM8K_RE,
    _answer_phrase,
    _bare_answer,
    _clean,
    _fast_verdict,
    _final_boxes,
    _is_sentence,
    _last_number,
    _strip_wrappers,
)

Message = Mapping[str, Any]
# A completion as TRL hands it to reward functions: plain text, or a list of chat messages.
Completion = str | Sequence[Message]

# Answers longer than this are not handed to sympy: real final answers are short, and long
# strings are where parsing time explodes.
_MAX_ANSWER_CHARS = 400
# A gold field longer than this that reads as prose is a worked solution: its answer is extracted.
_MAX_GOLD_ANSWER_CHARS = 200


class Grade(NamedTuple):
    """The answer a completion states (``None`` if none) and whether it equals the gold one."""

    answer: str | None
    correct: bool


def extract_answer(text: str, timeout_s: float = 5.0) -> str | None:
    """The final answer a completion states, or ``None``.

    Tried in order; the first that yields an answer decides:

    1. the last complete ``\\boxed{}``/``\\fbox{}`` (brace-matched, so nested braces and
       truncated boxes are handled), unless a "final answer is" line follows it. Several boxes
       parted only by separators (``\\boxed{1}, \\boxed{2}``, ``\\quad\\text{and}``) are one
       answer listing several solutions, joined as a list;
    2. GSM8K's ``#### X``;
    3. the whole completion, when it is only an answer (``$(2,7]$``, ``t^2-3t+2``,
       ``7 \\geq y``, ``\\text{even}``): no prose around it, so cutting a number out of it
       would be wrong;
    4. an answer phrase ("the final answer is X", "Answer: X"); a phrase that is itself a
       sentence ("The smallest $k$ is 12") is handed to math-verify's extraction;
    5. math-verify's own extraction (its LaTeX and expression configs, within ``timeout_s``)
       on the completion: answer anchors, then the rightmost LaTeX span or expression;
    6. the last number in the text.
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

    Settled at once (``sparft.answers.rules``): equal strings, equal numbers, a percentage
    against its number or its fraction (``50\\%`` = 50 = 0.5), a decimal comma against a
    decimal point (``1,22`` = 1.22), text answers as words (``\\text{even}`` = ``even``, never
    through sympy), and two different integers. The rest (expressions, equations, relations,
    intervals, sets, matrices) goes to math-verify's ``parse`` and ``verify``
    (``sparft.answers.verify``), which read a bare comma list as a set (``-2, 1`` = ``1, -2``;
    a tuple in brackets keeps its order). A gold field that is a worked solution or an answer
    phrase has its answer extracted first, the same way as a completion's.
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
