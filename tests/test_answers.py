"""Fast tests for answer extraction, matching and time limits (``sparft.answers``)."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sparft import answers
from sparft.answers import (
    answers_match,
    check_gold,
    completion_text,
    extract_answer,
    grade,
    is_correct,
    limits,
)

PATHOLOGICAL = r"\boxed{9^{9^{9^{9}}}}"


# --- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{\frac{\sqrt{3}}{2}} is it", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"First \boxed{1}, finally \boxed{2}.", "2"),
        (r"\boxed{\boxed{5}}", "5"),
        (r"\fbox{7}", "7"),
        (r"Got \boxed{5}, then the text is cut \boxed{6", "5"),
        (r"\boxed{3} even though #### 4 and the answer is 5", "3"),
        ("Work...\n#### 1,000", "1,000"),
        ("#### 4\nThe answer is 5", "4"),
        ("The answer is 42.", "42"),
        ("The final answer is $25$.", "25"),
        ("THE FINAL ANSWER IS 8", "8"),
        ("The answer is: **42**.", "42"),
        (r"**Final Answer:** $\frac{1}{2}$", r"\frac{1}{2}"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("The answer is therefore 42.", "42"),
        ("The final answer is 12, which is even.", "12"),
        (r"the answer is \(\frac{2}{3}\)", r"\frac{2}{3}"),
        ("The answer is D.", "D"),
        ("So the total is 5 + 7 = 12 apples", "12"),
        ("so x = -5", "-5"),
        ("from 3-4", "3-4"),
        ("The total is 4+6", "4+6"),
        ("between 1,234 and 5,678 apples", "5678"),
        ("about 3/4 of the pie", "3/4"),
        ("it costs $5.00.", "5.00"),
        (r"we get $\dfrac{3}{4}$ in the end", r"\frac{3}{4}"),
        ("no numbers here", "no numbers here"),
        ("there are no numbers here at all", None),
        ("", None),
        (r"\boxed{}", None),
        (r"So \boxed{7}. (Remember to use \boxed{} next time.)", "7"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_long_text_is_fast() -> None:
    text = ("\\boxed{" + "x " * 50) * 2000 + " the last number is 17"
    start = time.perf_counter()
    assert extract_answer(text) == "17"
    assert time.perf_counter() - start < 1.0


# --- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "gold"),
    [
        ("18", "18"),
        ("1,000", "1000"),
        ("1000", "1,000"),
        ("25", "025"),
        ("025", "25"),
        ("5.0", "5"),
        (r"\frac{1}{2}", "0.5"),
        (r"\dfrac{1}{2}", "0.5"),
        ("1/2", r"\frac12"),
        ("0.333333", r"\frac13"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
        ("(x+1)^2", "x^2+2x+1"),
        ("(3,4]", "(3, 4]"),
        ("-2, 1", "1,-2"),
        ("x=5", "5"),
        ("5", "x=5"),
        ("[-2,7]", r"x \in [-2,7]"),
        ("90", r"90^\circ"),
        ("5.4", r"5.4 \text{ cents}"),
        ("864", r"864 \mbox{ inches}^2"),
        (r"\frac{270}{7}", r"\frac{270}7\text{ degrees}"),
        ("18 dollars", "18"),
        ("10 km/h", "10"),
        ("32348", r"\$32,\!348"),
        ("11111111100", r"11,\! 111,\! 111,\! 100"),
        ("Evelyn", r"\text{Evelyn}"),
        ("C", r"\text{(C)}"),
        ("50", r"50\%"),
        (r"\boxed{5}", "5"),
        ("$5$", "5"),
    ],
)
def test_answers_match_equivalent(predicted: str, gold: str) -> None:
    assert answers_match(predicted, gold)


@pytest.mark.parametrize(
    ("predicted", "gold"),
    [
        ("25", "2.5"),
        ("2.5", "25"),
        ("1/2", "2"),
        (r"\frac{1}{2}", "2"),
        ("1", "1,000"),
        ("0.33", r"\frac13"),
        ("x=6", "5"),
        ("2x+3", "2"),
        ("3", r"x \in [-2,7]"),
        ("Navin", r"\text{Evelyn}"),
        ("5 pi", "5"),
        ("-5", "5"),
        ("24", "025"),
        (None, "5"),
        ("", "5"),
        ("5", ""),
    ],
)
def test_answers_match_different(predicted: str | None, gold: str) -> None:
    assert not answers_match(predicted, gold)


def test_aime_zero_padding() -> None:
    assert is_correct(r"The answer is $\boxed{25}$.", "025")
    assert is_correct("#### 73", "073")
    assert is_correct(r"\boxed{025}", "25")
    assert not is_correct(r"\boxed{250}", "025")


def test_gold_may_be_a_number() -> None:
    assert is_correct(r"\boxed{70}", 70)
    assert grade(r"\boxed{588}", 588) == (r"588", True)


def test_check_gold() -> None:
    assert check_gold("2+3=<<2+3=5>>5 apples\n#### 5", "5") == (True, "5")
    assert check_gold(r"So $x = \boxed{\dfrac{3}{4}}$.", r"\frac34") == (True, r"\dfrac{3}{4}")
    assert check_gold(r"Hence \boxed{7}.", "8") == (False, "7")
    assert check_gold("No final answer at all", "8") == (False, None)


# --- completions and reward functions ---------------------------------------------------------


def test_completion_text_forms() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"
    chat = [
        {"role": "user", "content": r"ignore \boxed{1}"},
        {"role": "assistant", "content": "step"},
        {"role": "assistant", "content": [{"type": "text", "text": r"\boxed{2}"}]},
    ]
    assert completion_text(chat) == "step\n" + r"\boxed{2}"
    assert completion_text(None) == ""
    assert completion_text([{"role": "assistant", "content": None}]) == ""


# --- time limits ------------------------------------------------------------------------------


def test_pathological_input_main_thread_is_bounded() -> None:
    handler_before = signal.getsignal(signal.SIGALRM)
    start = time.perf_counter()
    assert not is_correct(PATHOLOGICAL, "5", timeout_s=1.0)
    assert time.perf_counter() - start < 1.5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler_before
    assert answers_match("x=5", "5")


def test_very_long_answer_is_rejected_quickly() -> None:
    huge = "1+" * 100_000 + "1"
    start = time.perf_counter()
    assert not answers_match(huge, "5", timeout_s=1.0)
    assert not is_correct(r"\boxed{" + huge + "}", "5", timeout_s=1.0)
    assert time.perf_counter() - start < 1.5


def test_pathological_input_in_worker_threads_is_bounded() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        # First call starts a worker process; its start-up is not part of the check's limit.
        assert pool.submit(answers_match, "x=5", "5").result()
        start = time.perf_counter()
        assert not pool.submit(is_correct, PATHOLOGICAL, "5", 1.0).result()
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0 + limits._WORKER_GRACE_S + 0.5
        assert pool.submit(answers_match, r"\frac{1}{2}", "0.5").result()
        assert not pool.submit(answers_match, "1/2", "2").result()


HOSTILE = [
    PATHOLOGICAL,
    r"\boxed{(10^{10})!}",
    r"\boxed{" + r"\frac{1}{1+" * 300 + "1" + "}" * 600 + "}",
    "9" * 1_000_000,
    "\u202e\u200b\x00" * 1000 + r"\boxed{4\u200b2}",  # RTL, zero-width, NUL: not 42
]


@pytest.mark.parametrize("in_thread", [False, True], ids=["main thread", "worker thread"])
def test_a_batch_of_hostile_completions_ends_within_its_budget(in_thread: bool) -> None:
    """Eight towers at 5 s each would take 40 s; the batch's budget stops them at 1 s, they
    score 0, the skipped checks are counted, and an easy answer after them is still right."""
    from sparft.rewards import correctness_reward

    def batch() -> tuple[list[float], int, float]:
        start = time.perf_counter()
        with answers.batch_budget(1.0) as budget:
            verdicts = [float(is_correct(PATHOLOGICAL, "5")) for _ in range(8)]
            verdicts.append(float(is_correct(r"The answer is \boxed{\frac{1}{2}}", "0.5")))
        return verdicts, budget.skipped, time.perf_counter() - start

    if in_thread:
        with ThreadPoolExecutor(max_workers=1) as pool:
            assert pool.submit(answers_match, "x=5", "5").result()  # worker start-up
            verdicts, skipped, elapsed = pool.submit(batch).result()
    else:
        verdicts, skipped, elapsed = batch()
    assert verdicts[:8] == [0.0] * 8 and skipped >= 7
    assert elapsed < 1.0 + limits._WORKER_GRACE_S + 1.0
    assert verdicts[8] == 1.0  # 1/2 = 0.5 without math-verify: the fast rules settle it
    logged: dict[str, float] = {}
    rewards = correctness_reward(
        [*HOSTILE, r"\boxed{42}"], ["5", "1", "1", "9", "42", "42"], log_metric=logged.__setitem__
    )
    assert rewards == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0] and "answers/unchecked" in logged


def test_budget_is_per_block() -> None:
    with answers.batch_budget(0.0) as spent:
        assert not answers_match("(x-1)(x+1)", "x^2-1")  # needs math-verify: skipped
    assert spent.skipped == 1
    assert answers_match("(x-1)(x+1)", "x^2-1")  # outside the block: checked


def test_threading_thread_and_dead_worker_recovery() -> None:
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(answers_match("(x+1)^2", "x^2+2x+1")))
    thread.start()
    thread.join(timeout=60)
    assert results == [True]
    pool = limits._get_pool()
    assert pool._idle, "a check from a non-main thread should have started a worker process"
    for worker in list(pool._idle):
        worker.proc.kill()
        worker.proc.wait()
    thread = threading.Thread(target=lambda: results.append(answers_match("-2, 1", "1,-2")))
    thread.start()
    thread.join(timeout=60)
    assert results == [True, True]


def test_stuck_worker_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker stuck where no signal reaches it (a long C call) is killed after the grace."""
    stuck = (
        "import sys, time; print('{\"ready\": true}', flush=True); "
        "sys.stdin.readline(); time.sleep(600)"
    )
    monkeypatch.setattr(limits, "_WORKER_BOOT", stuck)
    worker = limits._Worker()
    start = time.perf_counter()
    assert worker.call("match", ["1", "2"], 0.2) is None
    assert time.perf_counter() - start < 0.2 + limits._WORKER_GRACE_S + 0.5
    assert not worker.alive


def test_process_isolation_from_main_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARFT_MATCH_ISOLATION", "process")
    assert answers_match(r"2\sqrt{2}", r"\sqrt{8}")
    assert not answers_match("25", "2.5")


def test_foreign_alarm_is_left_alone() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert answers_match(r"2\sqrt{2}", r"\sqrt{8}")
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert remaining > 0
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_concurrent_checks_from_many_threads() -> None:
    cases = [
        ("x=5", "5", True),
        ("-2, 1", "1,-2", True),
        (r"\sqrt{8}", r"2\sqrt{2}", True),
        ("1/2", "2", False),
        ("2x+3", "2", False),
    ]

    def run(offset: int) -> list[bool]:
        return [answers_match(p, g) == want for p, g, want in (cases[offset:] + cases[:offset]) * 2]

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(run, range(6)))
    assert all(all(o) for o in outcomes)


def test_extraction_through_math_verify_from_a_thread() -> None:
    """Without a box or an answer-only completion, math-verify's extraction runs in a worker
    process when called from a thread, like matching."""
    text = "Final Answer: The smallest $k$ is 12."
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(extract_answer, text).result() == "12"
        assert pool.submit(is_correct, text, "12").result()
        assert not pool.submit(is_correct, text, "13").result()


def test_slow_extraction_is_cut_off_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(text: str) -> str:
        time.sleep(30)
        return "never"

    monkeypatch.setitem(limits._WORKER_CALLS, "extract", stuck)
    start = time.perf_counter()
    assert extract_answer("We add them up and get 17 in the end", timeout_s=0.3) == "17"
    assert time.perf_counter() - start < 1.0


def test_grade_reports_the_answer_it_judged() -> None:
    assert grade(r"First \boxed{1}, then on reflection \boxed{2}.", "2") == ("2", True)
    assert grade(r"\boxed{1}, \boxed{2}", "2, 1") == ("1, 2", True)
    assert grade("I do not know.", "5") == ("I do not know", False)
    assert grade("", "5") == (None, False)
    assert grade([{"role": "assistant", "content": "$(2,7]$"}], "(2,7]") == ("(2,7]", True)


def test_gold_fields_holding_solutions_or_phrases() -> None:
    assert answers_match(r"\frac{2}{3}", "answer is 0.6666667")
    assert answers_match("28", r"So the loss is 28\%. Final Answer: The final answer is $28\%$.")
    assert answers_match("-2, 1", r"\(\boxed{1}\) and \(\boxed{-2}\).")
    assert answers_match("15", r"15\text{ cm}")
    assert answers_match("AB = 4, CD = 5", "AB=4, CD=5")
