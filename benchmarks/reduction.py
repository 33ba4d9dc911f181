"""Data-reduction speed: the embed function against plain ``SentenceTransformer.encode``, and
the wall time of reduce + cluster + select on DeepScaleR's MATH set and on 40,000 questions.

Embedding: the same model object, the same texts, batch size and normalisation on both sides,
alternated ``--repeats`` times (ABBA order) so both see the same machine load; the ratio of
the medians of questions/s measures the overhead of sparft's length-sorted chunks and progress
bar (target >= 0.95). By default every batch is its own encode call and progress step (the
worst case).

Reduction: the plain functions of each stage (no file I/O) with the default configuration;
the 40,000-question set tiles the MATH embeddings with small noise (embedding
40,000 questions would take most of an hour on two cores). The MATH embeddings are cached
under /tmp (see ``cluster_quality.py``).

Probing: the probe stage's function (``probe_with_model``: k samples per question through the
HF backend, answer checking, progress file) against a plain ``model.generate`` loop producing
the same number of sampled completions of the same prompts; tokens/s of each, same run.

    python benchmarks/reduction.py --embed-texts 256 --repeats 3 --threads 1 --probe-questions 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

# benchmarks/ is on sys.path when this runs as a script: reuse the cached MATH embeddings
from cluster_quality import DEFAULT_CACHE, cached_embeddings, math_set
from rich.console import Console
from rich.table import Table
from sklearn.cluster import KMeans  # noqa: F401  (imported here: timings exclude import time)
from sklearn.decomposition import PCA  # noqa: F401

from sparft.cluster import ClusterConfig, run_clustering
from sparft.embed import EmbedConfig, embed_questions, load_encoder
from sparft.plots import map_coordinates, plot_cluster_bars, plot_cluster_map
from sparft.probe import probe_with_labels
from sparft.reduce import ReduceConfig, fit_reduce
from sparft.selection import SelectConfig, select_subset

console = Console(width=140)


def probe_throughput(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """tokens/s of the probe stage's function against plain batched sampling, ABBA order."""
    import tempfile
    from argparse import Namespace

    from generation import run_plain

    from sparft.arithmetic import ArithmeticConfig
    from sparft.data import DataConfig, load_dataset
    from sparft.generation import GenerationConfig, HFBackend, render_prompt
    from sparft.models import load_causal_lm, prepare_model
    from sparft.probe import ProbeConfig, probe_with_model
    from sparft.prompts import PromptConfig, build_messages

    path = prepare_model("smollm2-135m")
    model, tokenizer = load_causal_lm(path, "float32", "cpu")
    frame, _ = load_dataset(DataConfig(spec="arithmetic"), ArithmeticConfig(per_grade=8))
    frame = frame.sample(args.probe_questions, random_state=0)
    k, tokens = 4, args.probe_tokens
    cfg = ProbeConfig(k=k, temperature=0.7, max_new_tokens=tokens, batch_questions=len(frame))
    gen = GenerationConfig(model=path, batch_size=32, max_new_tokens=tokens, temperature=0.7)
    texts = [
        render_prompt(tokenizer, build_messages(q, PromptConfig()))[0] for q in frame["question"]
    ]
    plain_args = Namespace(seed=0, max_new_tokens=tokens, temperature=0.7, top_p=1.0)
    rates: dict[str, list[float]] = {"probe": [], "plain": []}
    for order in (("probe", "plain"), ("plain", "probe")):
        for side in order:
            if side == "probe":
                with tempfile.TemporaryDirectory() as tmp:
                    backend = HFBackend(gen, model=model, tokenizer=tokenizer)
                    started = time.perf_counter()
                    probed = probe_with_model(
                        frame, backend, cfg, PromptConfig(), path, Path(tmp) / "p.parquet"
                    )
                    seconds = time.perf_counter() - started
                made = float((probed["mean_completion_tokens"] * k).sum())
            else:
                repeated = [t for t in texts for _ in range(k)]
                measured = run_plain(model, tokenizer, repeated, plain_args, 32)
                seconds, made = measured.seconds, float(measured.tokens)
            rates[side].append(made / seconds)
    probe_rate, plain_rate = statistics.median(rates["probe"]), statistics.median(rates["plain"])
    what = f"probe {len(frame)} questions x {k}, <= {tokens} tokens (SmolLM2-135M)"
    return [
        (what, "plain generate loop", f"{plain_rate:.1f} tok/s"),
        (what, "probe stage function", f"{probe_rate:.1f} tok/s"),
        (what, "ratio probe / plain", f"{probe_rate / plain_rate:.3f}"),
    ]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def embed_throughput(texts: list[str], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    cfg = EmbedConfig(
        num_threads=args.threads, batch_size=args.batch_size, chunk_batches=args.chunk_batches
    )
    model = load_encoder(cfg)
    ids = [str(i) for i in range(len(texts))]
    plain_times, stage_times = [], []
    model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    plain = stage = None
    for repeat in range(args.repeats):
        for side in ("plain", "stage") if repeat % 2 == 0 else ("stage", "plain"):
            if side == "plain":
                seconds, plain = timed(
                    lambda: model.encode(
                        texts,
                        batch_size=cfg.batch_size,
                        normalize_embeddings=True,
                        show_progress_bar=False,
                    )
                )
                plain_times.append(seconds)
            else:
                seconds, stage = timed(
                    lambda: embed_questions(ids, texts, cfg, model=model, progress=True)
                )
                stage_times.append(seconds)
    assert plain is not None and stage is not None
    diff = float(np.abs(plain - stage.matrix).max())
    plain_rate = len(texts) / statistics.median(plain_times)
    stage_rate = len(texts) / statistics.median(stage_times)
    label = f"{len(texts)} MATH"
    runs = (
        f"q/s of each run: plain {_rates(texts, plain_times)}; sparft {_rates(texts, stage_times)}"
    )
    return [
        ("embed: plain SentenceTransformer.encode (median)", label, f"{plain_rate:.1f} q/s"),
        ("embed: sparft embed_questions (median)", label, f"{stage_rate:.1f} q/s"),
        ("embed: ratio sparft / plain", runs, f"{stage_rate / plain_rate:.3f}"),
        ("embed: max |difference| of the two outputs", label, f"{diff:.1e}"),
    ]


def _rates(texts: list[str], times: list[float]) -> str:
    return " ".join(f"{len(texts) / t:.1f}" for t in times)


def reduction_times(
    ids: np.ndarray, matrix: np.ndarray, difficulty: np.ndarray, label: str, plots_dir: Path
) -> list[tuple[str, str, str]]:
    rows = []
    t_reduce, reduction = timed(lambda: fit_reduce(matrix, ReduceConfig()))
    t_cluster, (table, feats, _, summary) = timed(
        lambda: run_clustering(ids, reduction.reduced, difficulty, ClusterConfig())
    )
    labels = table["cluster"].to_numpy()
    t_select, picked = timed(lambda: select_subset(feats.matrix, labels, SelectConfig()))

    def plots() -> None:
        coords, axis_labels = map_coordinates(reduction.reduced)
        plot_cluster_map(coords, labels, difficulty, plots_dir / "map.png", axis_labels)
        plot_cluster_bars(summary["per_cluster"], plots_dir / "bars.png")

    t_plots, _ = timed(plots)
    total = t_reduce + t_cluster + t_select
    for name, seconds in (
        ("reduce (PCA 384 -> 32)", t_reduce),
        ("cluster (features + k-means K=10, 4 inits)", t_cluster),
        (f"select (k-center, {len(picked)} questions)", t_select),
        ("reduce + cluster + select", total),
        ("plots (map + bars)", t_plots),
    ):
        rows.append((name, label, f"{seconds:.2f} s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-dir", default="../shared/data")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--embed-texts", type=int, default=256, help="0 skips the embed part.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk-batches",
        type=int,
        default=1,
        help="Batches per encode call on the sparft side; 1 is the worst case (most calls).",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--large", type=int, default=40_000)
    parser.add_argument("--probe-questions", type=int, default=16, help="0 skips probing.")
    parser.add_argument("--probe-tokens", type=int, default=32)
    parser.add_argument("--plots-dir", type=Path, default=Path("/tmp/sparft-bench/plots"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    frame = math_set(args.shared_dir)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(frame), size=min(args.embed_texts, len(frame)), replace=False)
    rows = embed_throughput(frame["question"].iloc[sample].tolist(), args) if len(sample) else []

    emb = cached_embeddings(frame, args.cache, args.threads)
    difficulty = 1.0 - probe_with_labels(frame)["solve_rate"].to_numpy()
    args.plots_dir.mkdir(parents=True, exist_ok=True)
    rows += reduction_times(emb.ids, emb.matrix, difficulty, f"{len(frame)} MATH", args.plots_dir)

    tiles = -(-args.large // len(frame))
    big = np.tile(emb.matrix, (tiles, 1))[: args.large]
    big = big + rng.normal(scale=0.02, size=big.shape).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    big_ids = np.array([f"t{i}" for i in range(len(big))])
    big_difficulty = np.tile(difficulty, tiles)[: args.large]
    rows += reduction_times(big_ids, big, big_difficulty, f"{args.large:,} tiled", args.plots_dir)

    if args.probe_questions:
        rows += probe_throughput(args)

    table = Table(
        title=f"data reduction ({os.cpu_count()} shared cores; embedding: {args.threads} torch "
        f"thread(s), batch {args.batch_size}, {args.chunk_batches} batch(es) per encode call)"
    )
    for name in ("what", "data", "result"):
        table.add_column(name, justify="right" if name == "result" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
