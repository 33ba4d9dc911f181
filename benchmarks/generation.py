"""Throughput of ``HFBackend`` against a plain ``model.generate`` loop, same run, same work.

Both sides get the same prompts in the same order (pre-sorted by length, so the backend's
own sort changes nothing), the same batch size, the same sampling settings and the same
seed; the outputs are then identical and the ratio of tokens/s measures only the
backend's overhead (target >= 0.95). On a machine shared with other processes the ratio
is noisy; the "overhead" column (backend time outside ``model.generate``) is not.

    python benchmarks/generation.py --model smollm2-135m --batch-sizes 1 8 32 \\
        --prompts 32 --max-new-tokens 32 --threads 1
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from rich.console import Console
from rich.table import Table

from sparft.arithmetic import ArithmeticConfig
from sparft.config import load_params
from sparft.data import load_dataset
from sparft.generation import GenerationConfig, HFBackend, encode_prompts
from sparft.models import load_causal_lm
from sparft.probe import probe_with_model

console = Console()


@dataclass
class Measurement:
    seconds: float
    texts: list[str]
    counts: list[int]
    in_generate: float = 0.0
    """Seconds spent inside ``model.generate``: the rest is the backend's own overhead."""

    @property
    def tokens(self) -> int:
        return sum(self.counts)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def make_prompts(count: int, seed: int) -> list[str]:
    """Small arithmetic questions, like the curriculum's easiest grade."""
    rng = random.Random(seed)
    ops = ["+", "-", "*"]
    return [
        f"What is {rng.randint(2, 99)} {rng.choice(ops)} {rng.randint(2, 99)}? "
        "Answer with the number."
        for _ in range(count)
    ]


def sampling_kwargs(temperature: float, top_p: float) -> dict[str, Any]:
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def run_plain(
    model: Any, tokenizer: Any, texts: list[str], args: argparse.Namespace, batch_size: int
) -> Measurement:
    """What a user would write: tokenizer padding (left) and ``model.generate`` per batch."""
    eos = tokenizer.eos_token_id
    outputs: list[list[int]] = []
    started = time.perf_counter()
    with torch.inference_mode():
        torch.manual_seed(args.seed)
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                add_special_tokens=False,
                return_tensors="pt",
            ).to(model.device)
            out = model.generate(
                **batch,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
                **sampling_kwargs(args.temperature, args.top_p),
            )
            for row in out[:, batch["input_ids"].shape[1] :].tolist():
                outputs.append(row[: row.index(eos) + 1] if eos in row else row)
    seconds = time.perf_counter() - started
    texts = [tokenizer.decode(o, skip_special_tokens=True) for o in outputs]
    return Measurement(seconds, texts, [len(o) for o in outputs])


@contextmanager
def timed_generate(model: Any) -> Iterator[list[float]]:
    """Count the seconds spent inside ``model.generate`` (in the yielded list's one item)."""
    inside = [0.0]
    generate = model.generate

    def timed(*a: Any, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            return generate(*a, **kw)
        finally:
            inside[0] += time.perf_counter() - began

    model.generate = timed
    try:
        yield inside
    finally:
        model.generate = generate


def run_backend(
    model: Any, tokenizer: Any, prompts: list[str], args: argparse.Namespace, batch_size: int
) -> Measurement:
    cfg = GenerationConfig(
        model=args.model,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=batch_size,
        num_threads=args.threads,
        seed=args.seed,
    )
    backend = HFBackend(cfg, model=model, tokenizer=tokenizer)
    with timed_generate(model) as inside:
        started = time.perf_counter()
        results = backend.generate(prompts, progress=False)
        seconds = time.perf_counter() - started
    completions = [c for r in results for c in r.completions]
    return Measurement(
        seconds,
        [c.text for c in completions],
        [c.completion_tokens for c in completions],
        inside[0],
    )


def throughput_section(model: Any, tokenizer: Any, args: argparse.Namespace) -> Table:
    """tokens/s of the backend and of the plain loop, per batch size, interleaved runs."""
    prompts = make_prompts(args.prompts, args.seed)
    encoded = encode_prompts(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    prompts = [prompts[i] for i in order]
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    with torch.inference_mode():  # warm-up: first-call costs belong to neither side
        model.generate(**tokenizer(texts[:2], padding=True, return_tensors="pt"), max_new_tokens=2)

    table = Table(
        title=f"{args.model}: {args.prompts} prompts, max {args.max_new_tokens} new tokens, "
        f"T={args.temperature}, {args.threads or torch.get_num_threads()} thread(s)"
    )
    columns = (
        "batch",
        "plain tok/s",
        "backend tok/s",
        "ratio",
        "overhead",
        "tokens",
        "same output",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for batch_size in args.batch_sizes:
        plain_runs, backend_runs = [], []
        for _ in range(args.repeats):
            plain_runs.append(run_plain(model, tokenizer, texts, args, batch_size))
            backend_runs.append(run_backend(model, tokenizer, prompts, args, batch_size))
        plain = statistics.median(m.tokens_per_s for m in plain_runs)
        ours = statistics.median(m.tokens_per_s for m in backend_runs)
        first_plain, first_ours = plain_runs[0], backend_runs[0]
        same = (first_plain.texts, first_plain.counts) == (first_ours.texts, first_ours.counts)
        table.add_row(
            str(batch_size),
            f"{plain:.1f}",
            f"{ours:.1f}",
            f"{ours / plain:.3f}",
            f"{100 * (1 - first_ours.in_generate / first_ours.seconds):.1f}%",
            f"{first_plain.tokens}/{first_ours.tokens}",
            "yes" if same else "no",
        )
        console.print(f"batch {batch_size}: plain {plain:.1f} tok/s, backend {ours:.1f} tok/s")
    return table


def solve_rate_by_grade_section(model: Any, tokenizer: Any, args: argparse.Namespace) -> Table:
    """Solve rate per arithmetic grade with the project's prompt and probe sampling settings.

    Read beside the throughput table, it says what a generation setting costs and what the
    model can do with it; it is also the calibration record of the generated grades.
    """
    params = load_params(args.params)
    arithmetic = ArithmeticConfig(per_grade=args.grade_questions, seed=args.seed + 1000)
    frame, _ = load_dataset(params.data.model_copy(update={"spec": "arithmetic"}), arithmetic)
    probe_cfg = params.probe.model_copy(update={"k": args.grade_k})
    backend = HFBackend(GenerationConfig(batch_size=32, seed=args.seed), model, tokenizer)
    probed = probe_with_model(frame, backend, probe_cfg, params.prompt, args.model)
    merged = frame[["id", "difficulty_label"]].merge(probed, on="id")
    table = Table(
        title=f"{args.model}: solve rate per arithmetic grade ({args.grade_questions} questions x "
        f"{args.grade_k} samples, T={probe_cfg.temperature}, max {probe_cfg.max_new_tokens} tokens)"
    )
    for name in ("grade", "solve rate", "questions solved at least once", "mean tokens"):
        table.add_column(name, justify="right")
    for grade, group in merged.groupby("difficulty_label"):
        table.add_row(
            f"{grade:g}",
            f"{group['solve_rate'].mean():.3f}",
            f"{(group['n_correct'] > 0).sum()}/{len(group)}",
            f"{group['mean_completion_tokens'].mean():.0f}",
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 by default: with other processes on 2 cores, 2 threads "
        "were seen to run far slower)",
    )
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per side; median taken")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--params", default="params.yaml", help="prompt and probe settings")
    parser.add_argument("--grade-questions", type=int, default=8, help="questions per grade")
    parser.add_argument("--grade-k", type=int, default=4, help="samples per question")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-grades", action="store_true")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.model, dtype="float32", device=args.device)
    if not args.skip_throughput:
        console.print(throughput_section(model, tokenizer, args))
    if not args.skip_grades:
        console.print(solve_rate_by_grade_section(model, tokenizer, args))


if __name__ == "__main__":
    main()
