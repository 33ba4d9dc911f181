"""Sampling through the vLLM server sparft starts: whole prefills with per-request seeds (the
CPU build's default since 2026-12-07) against chunked prefill without them, same run.

vLLM's CPU build kills its engine on a seeded request whose prompt is prefilled in chunks, so
sparft now starts it with ``--no-enable-chunked-prefill``. This measures what that costs in
tokens/s and what it buys: the same seed gives the same completions within a server and across
server starts. Long GSM8K prompts, many at once, so that chunked prefill does split them.

    python benchmarks/seeded_server.py --questions 48 --samples 4 --max-new-tokens 64 \\
        --json benchmarks/results/seeded_server.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console
from rich.table import Table

from sparft.generation import GenerationConfig, make_backend
from sparft.generation.config import ServerConfig
from sparft.generation.server import CHUNKED_PREFILL, cpu_has_bf16, serving
from sparft.io import write_json
from sparft.models import prepare_model

console = Console()
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MODES = {"whole prefill, seeded": [], "chunked prefill, unseeded": [CHUNKED_PREFILL]}


def one_server(
    mode: str, questions: list[str], args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    """Start a server in ``mode``, sample every question ``args.calls`` times with one seed."""
    server = ServerConfig(
        extra_args=[*args.extra_args, *MODES[mode]],
        max_model_len=args.max_model_len,
        log_file=str(log),
    )
    cfg = GenerationConfig(
        backend="vllm-server",
        model=prepare_model(args.model),
        server=server,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.concurrency,
    )
    started = time.monotonic()
    calls = []
    with serving(cfg, progress=False) as served, make_backend(served) as backend:
        ready_s = time.monotonic() - started
        for _ in range(args.calls):
            t0 = time.monotonic()
            results = backend.generate(questions, n=args.samples, progress=False, seed=args.seed)
            seconds = time.monotonic() - t0
            tokens = sum(c.completion_tokens for r in results for c in r.completions)
            texts = [c.text for r in results for c in r.completions]
            calls.append({"seconds": seconds, "tokens": tokens, "texts": texts})
        seeded = served.request_seed
    return {"mode": mode, "seeded": seeded, "ready_s": ready_s, "calls": calls}


def same(a: list[str], b: list[str]) -> int:
    return sum(x == y for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", type=Path, default=SHARED / "gsm8k" / "train.jsonl")
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--calls", type=int, default=2, help="generate calls per server")
    parser.add_argument("--starts", type=int, default=2, help="server starts per mode")
    parser.add_argument("--extra-args", nargs="*", default=["--enforce-eager"])
    parser.add_argument("--logs", type=Path, default=Path("data/logs"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    with args.data.open() as rows:
        questions = [json.loads(row)["question"] for row in rows.readlines()[: args.questions]]
    servers = []
    for mode in MODES:
        for start in range(args.starts):
            log = args.logs / f"seeded-server-{len(servers)}.log"
            console.print(f"{mode}: server {start + 1} of {args.starts}")
            servers.append(one_server(mode, questions, args, log))

    table = Table(title="vLLM server sampling: whole prefills and seeds against chunked prefill")
    for column in (
        "mode",
        "seeds sent",
        "tokens/s (median of calls)",
        "vs chunked",
        "same completions, one server",
        "same completions, across starts",
    ):
        table.add_column(column)
    rows_out = []
    rate: dict[str, float] = {}
    for mode in MODES:
        mine = [s for s in servers if s["mode"] == mode]
        calls = [c for s in mine for c in s["calls"]]
        rate[mode] = statistics.median(c["tokens"] / c["seconds"] for c in calls)
        first = mine[0]["calls"]
        within = [same(first[0]["texts"], c["texts"]) for c in first[1:]]
        across = [same(first[0]["texts"], s["calls"][0]["texts"]) for s in mine[1:]]
        total = len(first[0]["texts"])
        rows_out.append(
            {
                "mode": mode,
                "seeded": mine[0]["seeded"],
                "tokens_per_s": rate[mode],
                "completions": total,
                "same_within_server": within,
                "same_across_starts": across,
                "ready_s": [s["ready_s"] for s in mine],
                "calls": [
                    {"seconds": c["seconds"], "tokens": c["tokens"]}
                    for s in mine
                    for c in s["calls"]
                ],
            }
        )
    reference = rate["chunked prefill, unseeded"]
    for row in rows_out:
        row["ratio_vs_chunked"] = row["tokens_per_s"] / reference
        table.add_row(
            row["mode"],
            str(row["seeded"]),
            f"{row['tokens_per_s']:.0f}",
            f"{row['ratio_vs_chunked']:.2f}",
            ", ".join(f"{n}/{row['completions']}" for n in row["same_within_server"]),
            ", ".join(f"{n}/{row['completions']}" for n in row["same_across_starts"]),
        )
    console.print(table)
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        settings["cpu_bf16"] = cpu_has_bf16()
        write_json({"settings": settings, "modes": rows_out}, args.json)
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
