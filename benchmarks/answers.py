"""Agreement and cost of the answer checker, layer by layer, on an answer-equivalence case table.

Layers, each asked for a verdict on every (gold, prediction) case:

* ``sparft``: ``is_correct(prediction, gold)``, the reward path (extraction, then matching);
* ``match alone``: ``answers_match(prediction, gold)``, matching with no extraction;
* ``math-verify alone``: ``verify(parse(gold), parse(prediction))`` with math-verify's default
  extraction configs, as a user would call it.

It prints agreement with the table's verdicts (overall, on equivalent and on different pairs,
per kind), the agreement of ``is_correct`` with each of sparft's own rules switched off in
turn (which rules measurably help), the time per check (median, 99th percentile, maximum),
and the time ``is_correct`` takes on hostile inputs (towers of exponents, huge completions,
thousands of boxes), each of which must stay within its time limit (5 s) plus the worker
grace. Results go to ``benchmarks/results/answers.json``.

    python benchmarks/answers.py                          # the committed table
    python benchmarks/answers.py --cases other.jsonl      # rows with gold, pred, expected
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from sparft import answers
from sparft.answers import answers_match, grading, is_correct, limits, rules, verify
from sparft.io import write_json

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "answer_cases.yaml"
FIELDS = ("kind", "via", "gold", "prediction", "equivalent")
TIMEOUT_S = 5.0

console = Console()


def load_cases(path: Path) -> list[dict[str, Any]]:
    """The YAML case table, or a JSONL file of ``{gold, pred, expected[, kind]}`` rows."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        return [
            {
                "kind": r.get("kind", "other"),
                "gold": r["gold"],
                "prediction": r["pred"],
                "equivalent": bool(r["expected"]),
            }
            for r in rows
        ]
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]
    return [dict(zip(FIELDS, r, strict=True)) if isinstance(r, list) else r for r in rows]


def _math_verify_alone(prediction: str, gold: str) -> bool:
    import math_verify

    try:
        return bool(math_verify.verify(math_verify.parse(gold), math_verify.parse(prediction)))
    except Exception:
        return False


def _in_thread(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``fn`` called from a worker thread, where the time limit runs in a worker process."""

    def call(prediction: Any, gold: Any) -> Any:
        out: list[Any] = []
        thread = threading.Thread(target=lambda: out.append(fn(prediction, gold)))
        thread.start()
        thread.join()
        return out[0]

    return call


LAYERS: dict[str, Callable[[str, str], bool]] = {
    "sparft": is_correct,
    "match alone": answers_match,
    "math-verify alone": _math_verify_alone,
}


def _none(*args: object) -> None:
    return None


# sparft's own rules, each replaced by "finds nothing" in turn: (the module whose code calls it,
# its name there, stand-in).
ABLATIONS: dict[str, tuple[ModuleType, str, Callable[..., Any]]] = {
    "joined boxes": (rules, "_joins_boxes", lambda gap: False),
    "answer-only completions": (grading, "_bare_answer", _none),
    "answer phrases": (grading, "_answer_phrase", _none),
    "math-verify extraction": (verify, "_mv_extract", _none),
    "last number": (grading, "_last_number", _none),
    "gold answer extraction": (grading, "_gold_answer", lambda gold, timeout_s: gold),
    "text answers as words": (rules, "_words", _none),
    "equation sides": (verify, "_equation_sides", lambda pred, gold: (pred, gold)),
    "relative check of numbers": (verify, "_same_number", lambda gold, pred: True),
}


@contextlib.contextmanager
def _without(module: ModuleType, attribute: str, stand_in: Callable[..., Any]) -> Any:
    original = getattr(module, attribute)
    calls = limits._WORKER_CALLS
    setattr(module, attribute, stand_in)
    if attribute == "_mv_extract":
        calls["extract"] = stand_in
    try:
        yield
    finally:
        setattr(module, attribute, original)
        calls["extract"] = verify._mv_extract


def run_ablations(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Agreement of ``is_correct`` with each of sparft's own rules switched off (main thread)."""

    def agreement() -> float:
        ok = [is_correct(str(c["prediction"]), str(c["gold"])) is c["equivalent"] for c in cases]
        return round(sum(ok) / len(ok), 4)

    out = {"all rules": agreement()}
    for name, (module, attribute, stand_in) in ABLATIONS.items():
        with _without(module, attribute, stand_in):
            out[f"without {name}"] = agreement()
    return out


def hostile_inputs() -> list[tuple[str, str, str]]:
    """(name, completion, gold) cases built to make a checker hang or blow up."""
    long_prose = "We add the numbers one by one and keep a running total. " * 2000
    return [
        ("tower of powers, boxed", r"\boxed{9^{9^{9^{9}}}}", "5"),
        ("tower of powers, bare", "9^9^9^9", "5"),
        ("huge factorial", r"\boxed{100000!}", r"\frac{1}{2}"),
        ("1000-digit numbers", r"\boxed{" + "7" * 1000 + "}", "7" * 999 + "8"),
        ("100k characters, no box", long_prose + " So the answer is 42.", "42"),
        ("2000 unclosed boxes", r"\boxed{1 " * 2000, "1"),
        ("200 joined boxes", ", ".join(rf"\boxed{{{i}}}" for i in range(200)), "7"),
        ("5000 nested braces", r"\boxed{" + "{" * 5000 + "1" + "}" * 5001, "1"),
        ("long chain of equalities", "$" + " = ".join(["x"] * 3000) + " = 5$", "5"),
        ("deep fraction", r"\boxed{" + r"\frac{1}{1+" * 300 + "1" + "}" * 600 + "}", "1"),
        ("factorial of a power", r"\boxed{(10^{10})!}", "1"),
        ("power of a factorial", r"\boxed{10^{10^{10}}! - 9^{9^{9}}}", "2"),
        ("deep roots", r"\boxed{" + r"\sqrt{" * 500 + "2" + "}" * 501, "2"),
        ("1 MB of digits", "9" * 1_000_000, "9"),
        ("1 MB of LaTeX", r"\left(" * 100_000 + "1" + r"\right)" * 100_000, "1"),
        ("RTL, zero-width, NUL", "\u202e\u200b\u200f\x00" * 2000 + r"\boxed{4\u200b2}", "42"),
        ("unicode digits and marks", r"\boxed{\u0664\u0662\u0301}", "42"),
        ("nested \\frac in a box", r"\boxed{\frac{\frac{\frac{1}{2}}{3^{4^{5^{6}}}}}{7}}", "1"),
    ]


def _timed(fn: Callable[[str, str], bool], prediction: str, gold: str) -> tuple[bool, float]:
    start = time.perf_counter()
    verdict = fn(prediction, gold)
    return verdict, time.perf_counter() - start


def run_layers(cases: list[dict[str, Any]]) -> dict[str, Any]:
    layers = dict(LAYERS)
    layers["sparft, from a thread"] = _in_thread(is_correct)
    for fn in layers.values():  # imports and worker start-up are not per-check costs
        fn("1", "1")
    out: dict[str, Any] = {}
    for name, fn in layers.items():
        agree: dict[str, list[bool]] = defaultdict(list)
        times = []
        for case in cases:
            verdict, seconds = _timed(fn, str(case["prediction"]), str(case["gold"]))
            ok = verdict is case["equivalent"]
            times.append(seconds)
            agree["all"].append(ok)
            agree["equivalent pairs" if case["equivalent"] else "different pairs"].append(ok)
            agree[f"kind: {case['kind']}"].append(ok)
        times.sort()
        keys = ["all", "equivalent pairs", "different pairs"]
        keys = [k for k in keys if k in agree] + sorted(k for k in agree if k not in keys)
        out[name] = {
            "agreement": {k: round(sum(agree[k]) / len(agree[k]), 4) for k in keys},
            "cases": {k: len(agree[k]) for k in keys},
            "ms_median": round(1000 * statistics.median(times), 3),
            "ms_p99": round(1000 * times[min(len(times) - 1, int(0.99 * len(times)))], 3),
            "ms_max": round(1000 * times[-1], 3),
        }
    return out


def run_hostile() -> list[dict[str, Any]]:
    rows = []
    for name, completion, gold in hostile_inputs():
        for where, fn in (("main thread", is_correct), ("worker thread", _in_thread(is_correct))):
            verdict, seconds = _timed(fn, completion, gold)
            rows.append({"input": name, "where": where, "verdict": verdict, "s": round(seconds, 3)})
    return rows


def _reward_batch(completions: list[str], golds: list[str]) -> int:
    from sparft.rewards import correctness_reward

    return int(sum(correctness_reward(completions, golds)))


def _evaluation_batch(completions: list[str], golds: list[str]) -> int:
    import pandas as pd

    from sparft.evaluation import score_results
    from sparft.generation import Completion, PromptResult

    questions = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(len(golds))],
            "question": ["?"] * len(golds),
            "answer": golds,
            "difficulty_label": [None] * len(golds),
        }
    )
    results = [PromptResult(1, [Completion(c, 1, "stop")]) for c in completions]
    return int(score_results(questions, results, "hostile", "none")["n_correct"].sum())


def _probe_batch(completions: list[str], golds: list[str]) -> int:
    """The probe's scoring path: ``score_batch`` on a backend that answers with the batch."""
    import pandas as pd

    from sparft.generation import Completion, PromptResult
    from sparft.probe import ProbeConfig, score_batch
    from sparft.prompts import PromptConfig

    class Canned:
        def generate(self, prompts: list[Any], **kwargs: Any) -> list[PromptResult]:
            return [PromptResult(1, [Completion(c, 1, "stop")]) for c in completions]

    batch = pd.DataFrame({"id": range(len(golds)), "question": ["?"] * len(golds), "answer": golds})
    rows = score_batch(batch, Canned(), ProbeConfig(k=1), PromptConfig(), 0)  # type: ignore[arg-type]
    return int(sum(r["n_correct"] for r in rows))


BATCH_PATHS: dict[str, Callable[[list[str], list[str]], int]] = {
    "GRPO reward (correctness_reward)": _reward_batch,
    "evaluation (score_results)": _evaluation_batch,
    "probe (score_batch)": _probe_batch,
}


def run_batches(size: int) -> list[dict[str, Any]]:
    """Batches of ``size`` hostile completions (the slowest inputs repeated, plus every other
    one) through each scoring path, on the main thread and from a worker thread: each must
    end within its batch budget (``answers.BATCH_BUDGET_S``) plus a worker grace and score 0,
    and the check after it must still be right."""
    cases = hostile_inputs()
    slow = [c for c in cases if "tower" in c[0] or "factorial" in c[0]]
    picked = [*cases, *(slow * size)][:size]
    completions = [c for _, c, _ in picked] + [r"\boxed{42}"]
    golds = [g for _, _, g in picked] + ["42"]
    rows = []
    for name, fn in BATCH_PATHS.items():
        for where in ("main thread", "worker thread"):
            start = time.perf_counter()
            call = fn if where == "main thread" else _in_thread(fn)
            correct = call(completions, golds)
            rows.append(
                {
                    "path": name,
                    "where": where,
                    "completions": len(completions),
                    "correct": correct,
                    "s": round(time.perf_counter() - start, 3),
                }
            )
    return rows


def print_report(report: dict[str, Any]) -> None:
    layers = report["layers"]
    names = list(layers)
    keys = list(layers["sparft"]["agreement"])
    table = Table(title=f"agreement with the case table ({report['cases_file']})")
    table.add_column("cases")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for key in keys:
        n = layers["sparft"]["cases"][key]
        table.add_row(key, str(n), *(f"{layers[name]['agreement'][key]:.3f}" for name in names))
    console.print(table)
    timing = Table(title="time per check (ms)")
    for column in ("layer", "median", "p99", "max"):
        timing.add_column(column, justify="right" if column != "layer" else "left")
    for name in names:
        lay = layers[name]
        timing.add_row(name, str(lay["ms_median"]), str(lay["ms_p99"]), str(lay["ms_max"]))
    console.print(timing)
    ablation = Table(title="is_correct with one of sparft's rules switched off")
    for column in ("rules", "agreement", "change"):
        ablation.add_column(column, justify="left" if column == "rules" else "right")
    full = report["ablations"]["all rules"]
    for name, value in report["ablations"].items():
        ablation.add_row(name, f"{value:.3f}", f"{value - full:+.3f}")
    console.print(ablation)
    hostile = Table(title=f"hostile inputs through is_correct (limit {TIMEOUT_S:g} s)")
    for column in ("input", "where", "verdict", "seconds"):
        hostile.add_column(column)
    for row in report["hostile"]:
        hostile.add_row(row["input"], row["where"], str(row["verdict"]), f"{row['s']:.3f}")
    console.print(hostile)
    if report.get("batches"):
        budget = answers.BATCH_BUDGET_S
        batches = Table(title=f"hostile batches (budget {budget:g} s per batch; one easy check)")
        for column in ("path", "where", "completions", "correct", "seconds"):
            batches.add_column(column)
        for row in report["batches"]:
            batches.add_row(
                row["path"], row["where"], str(row["completions"]), str(row["correct"]),
                f"{row['s']:.2f}",
            )  # fmt: skip
        console.print(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=Path, default=TABLE, help="YAML table or JSONL rows")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/answers.json")
    parser.add_argument("--no-hostile", action="store_true", help="skip the hostile inputs")
    parser.add_argument("--batch", type=int, default=64, help="hostile batch size (0: none)")
    args = parser.parse_args()
    cases = load_cases(args.cases)
    cases_file = args.cases.relative_to(ROOT) if args.cases.is_relative_to(ROOT) else args.cases
    report: dict[str, Any] = {"cases_file": str(cases_file), "n_cases": len(cases)}
    report["layers"] = run_layers(cases)
    report["ablations"] = run_ablations(cases)
    report["hostile"] = [] if args.no_hostile else run_hostile()
    report["batches"] = [] if args.no_hostile or not args.batch else run_batches(args.batch)
    report["batch_budget_s"] = answers.BATCH_BUDGET_S
    print_report(report)
    worst = max((row["s"] for row in report["hostile"]), default=0.0)
    console.print(f"worst hostile check: {worst:.2f} s (limit {TIMEOUT_S:g} s + 1 s grace)")
    write_json(report, args.out)
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
