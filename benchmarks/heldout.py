"""Held-out checks through transformers against through a vLLM server whose weights are replaced
in place (``train.heldout.backend``), on the comparison's held-out set, same run.

Each backend checks the base policy, then the same policy after a few supervised steps on gold
answers (weights that differ from the files the server started with, as after GRPO steps): the
seconds per check, the accuracy, and how often the two backends give the same verdict and the
same text. The server's start-up and each weight load are timed apart.

    python benchmarks/heldout.py --questions 256 --max-new-tokens 96 --steps 4
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from rich.console import Console
from rich.table import Table

from sparft.config import as_overrides, load_params
from sparft.evaluation import load_benchmark, score_results
from sparft.io import write_json
from sparft.models import prepare_model
from sparft.testing import supervised_steps
from sparft.training.heldout import HeldoutCurve, ServedChecks

RESULTS = Path(__file__).parent / "results"
console = Console(width=160)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--steps", type=int, default=4, help="supervised steps between checks")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=64, help="hf: questions per batch")
    parser.add_argument("--concurrency", type=int, default=64, help="server: requests at once")
    parser.add_argument("--out", type=Path, default=RESULTS / "heldout_backends.json")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = load_params(args.params)
    params = load_params(args.params, as_overrides(base.compare.scale))
    ev = params.evaluate
    questions, _ = load_benchmark(ev.benchmarks[0], ev, params.data, params.arithmetic)
    questions = questions.head(args.questions)
    path = prepare_model(params.train.model or params.generation.model)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    served = ServedChecks(
        path,
        params.generation.server,
        Path("data/bench-heldout-weights"),
        concurrency=args.concurrency,
    )
    curves = {
        name: HeldoutCurve(
            questions,
            params.prompt,
            every=1,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            journal=Path(f"data/bench-heldout-{name}.jsonl"),
            server=server,
        )
        for name, server in (("hf", None), ("vllm-server", served))
    }
    for curve in curves.values():
        curve.trainer = SimpleNamespace(processing_class=tokenizer, model=model)
    started = time.perf_counter()
    served.connect(model)
    server_start_s = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    try:
        for policy in ("base", f"after {args.steps} steps"):
            if policy != "base":
                supervised_steps(model, tokenizer, questions, args.steps, args.lr)
            outcome = {}
            for name, curve in curves.items():
                loads = served.load_seconds
                started = time.perf_counter()
                results = curve.generate(model)
                seconds = time.perf_counter() - started
                scored = score_results(questions, results, "heldout", "policy")
                correct = [bool(c) for c in scored["n_correct"]]
                tokens = [r.completions[0].completion_tokens for r in results]
                outcome[name] = (correct, [r.completions[0].text for r in results])
                rows.append(
                    {
                        "policy": policy,
                        "backend": name,
                        "seconds": round(seconds, 1),
                        "weight_load_s": round(served.load_seconds - loads, 1),
                        "accuracy": sum(correct) / len(correct),
                        "tokens": sum(tokens),
                        "tokens_per_s": round(sum(tokens) / seconds, 1),
                    }
                )
            (hf_ok, hf_text), (sv_ok, sv_text) = outcome["hf"], outcome["vllm-server"]
            rows[-1]["same_verdict"] = sum(a == b for a, b in zip(hf_ok, sv_ok, strict=True)) / len(
                hf_ok
            )
            rows[-1]["same_text"] = sum(
                a == b for a, b in zip(hf_text, sv_text, strict=True)
            ) / len(hf_ok)
            rows[-1]["speedup"] = round(rows[-2]["seconds"] / rows[-1]["seconds"], 2)
    finally:
        served.close()
    table = Table(title=f"held-out checks: {len(questions)} questions, {path}")
    for key in rows[-1]:
        table.add_column(key)
    for row in rows:
        table.add_row(
            *(
                f"{row.get(k, ''):.3f}" if isinstance(row.get(k), float) else str(row.get(k, ""))
                for k in rows[-1]
            )
        )
    console.print(table)
    console.print(f"server start-up: {server_start_s:.0f} s (once per comparison)")
    write_json(
        {"server_start_s": server_start_s, "questions": len(questions), "rows": rows}, args.out
    )


if __name__ == "__main__":
    main()
