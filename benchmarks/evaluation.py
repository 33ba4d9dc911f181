"""Throughput of the evaluation path against a plain ``model.generate`` loop on the same questions.

The evaluation side is ``sparft.evaluation.evaluate`` as the ``evaluate`` stage runs it
(benchmark loading, prompt template, ``HFBackend``, answer extraction and math-verify scoring,
aggregation), on a model loaded once and shared with the plain side. The plain side is what a
user would write: chat template, left padding, ``model.generate`` per batch, decode; it does not
score. Both get the same questions in the same (length-sorted) order, the same batch size and
greedy decoding, so their outputs are identical and the ratio measures only what evaluation adds.
"overhead" is the evaluation's time outside ``model.generate``, the figure that does not move
with machine load.

    python benchmarks/evaluation.py --model smollm2-135m --benchmark gsm8k --questions 16 \\
        --max-new-tokens 128 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from rich.console import Console
from rich.table import Table

from sparft.config import load_params
from sparft.evaluation import EvalReport, EvaluateConfig, evaluate, load_benchmark
from sparft.generation import HFBackend, encode_prompts
from sparft.models import load_causal_lm
from sparft.prompts import build_messages
from sparft.testing import load_script

console = Console()


def _generation_benchmark() -> ModuleType:
    """``benchmarks/generation.py``, for its plain ``model.generate`` loop and ``Measurement``."""
    return load_script(Path(__file__).with_name("generation.py"), "_generation_benchmark")


def run_evaluation(
    model: Any, tokenizer: Any, args: argparse.Namespace
) -> tuple[float, float, EvalReport]:
    """(seconds, seconds inside ``model.generate``, report) of one ``evaluate`` call."""
    params = load_params(args.params)
    cfg = EvaluateConfig(
        model=args.model,
        benchmarks=[args.benchmark],
        limit=args.questions,
        max_new_tokens=args.max_new_tokens,
        temperature=0.0,
        include_base=False,
        seed=args.seed,
    )
    generation = params.generation.model_copy(
        update={"batch_size": args.batch_size, "num_threads": args.threads}
    )
    with _generation_benchmark().timed_generate(model) as inside:
        started = time.perf_counter()
        report = evaluate(
            cfg,
            generation,
            params.prompt,
            params.data,
            params.arithmetic,
            backend_factory=lambda gen: HFBackend(gen, model=model, tokenizer=tokenizer),
            progress=False,
        )
        seconds = time.perf_counter() - started
    return seconds, inside[0], report


def plain_texts(tokenizer: Any, args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The same questions rendered with the chat template, longest first (the backend's order),
    and the position of each in the benchmark's order."""
    params = load_params(args.params)
    cfg = EvaluateConfig(benchmarks=[args.benchmark], limit=args.questions, seed=args.seed)
    frame, _ = load_benchmark(args.benchmark, cfg, params.data, params.arithmetic)
    messages = [build_messages(q, params.prompt) for q in frame["question"]]
    encoded = encode_prompts(tokenizer, messages)
    order = sorted(range(len(messages)), key=lambda i: -len(encoded[i]))
    texts = [
        tokenizer.apply_chat_template(messages[i], tokenize=False, add_generation_prompt=True)
        for i in order
    ]
    return texts, order


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--benchmark", default="gsm8k")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side; median taken")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="params.yaml", help="prompt and data settings")
    args = parser.parse_args(argv)

    gen_bench = _generation_benchmark()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.model, dtype="float32", device="cpu")
    texts, order = plain_texts(tokenizer, args)
    plain_args = argparse.Namespace(
        max_new_tokens=args.max_new_tokens, temperature=0.0, top_p=1.0, seed=args.seed
    )
    with torch.inference_mode():  # warm-up: first-call costs belong to neither side
        model.generate(**tokenizer(texts[:2], padding=True, return_tensors="pt"), max_new_tokens=2)

    plain_runs, eval_runs = [], []
    for _ in range(args.repeats):
        plain_runs.append(gen_bench.run_plain(model, tokenizer, texts, plain_args, args.batch_size))
        eval_runs.append(run_evaluation(model, tokenizer, args))
    plain = plain_runs[0]
    seconds, inside, report = eval_runs[0]
    completions = report.results["completions"].tolist()
    eval_texts = [completions[i][0] for i in order]
    tokens = int(report.aggregates["completion_tokens"].iloc[0])
    same = eval_texts == plain.texts and tokens == plain.tokens
    plain_s = statistics.median(m.seconds for m in plain_runs)
    eval_s = statistics.median(run[0] for run in eval_runs)
    q = len(texts)

    table = Table(
        title=f"{args.model} on {q} {args.benchmark} questions: greedy, max {args.max_new_tokens} "
        f"new tokens, batch {args.batch_size}, {args.threads} thread(s)"
    )
    for column in ("side", "seconds", "questions/s", "tokens/s", "ratio", "overhead", "tokens"):
        table.add_column(column, justify="right")
    table.add_row(
        "plain generate", f"{plain_s:.1f}", f"{q / plain_s:.3f}", f"{plain.tokens / plain_s:.1f}",
        "1.000", "", str(plain.tokens),
    )  # fmt: skip
    table.add_row(
        "evaluation", f"{eval_s:.1f}", f"{q / eval_s:.3f}", f"{tokens / eval_s:.1f}",
        f"{plain_s / eval_s:.3f}", f"{100 * (1 - inside / seconds):.1f}%", str(tokens),
    )  # fmt: skip
    console.print(table)
    accuracy = report.aggregates["pass@1"].iloc[0]
    console.print(
        f"same output: {'yes' if same else 'no'}; pass@1 on these questions: {accuracy:.3f}; "
        f"truncated: {report.aggregates['truncated_share'].iloc[0]:.1%}"
    )


if __name__ == "__main__":
    main()
