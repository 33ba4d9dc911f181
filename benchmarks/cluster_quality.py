"""How much the clusters follow difficulty and meaning, as a function of the difficulty weight w.

On DeepScaleR's labelled MATH train set (level 1-5, seven subjects), with label difficulty as
the probe stage's ``source: label`` gives it, for each w and each embedding scaling:

- between-cluster share of the difficulty variance (eta squared; 1 = clusters are pure levels),
- adjusted mutual information of the clusters with the level,
- adjusted mutual information with the subject (``type``): how much meaning is kept,

averaged over k-means seeds. The minilm embeddings (a few minutes on two busy cores) are cached
in ``--cache`` (default under /tmp, never in the repository).

    python benchmarks/cluster_quality.py --k 10 --n-components 32 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.metrics import adjusted_mutual_info_score

from sparft.cluster import ClusterConfig, run_clustering
from sparft.data import DataConfig, load_dataset
from sparft.embed import EmbedConfig, Embeddings, embed_questions, load_embeddings, save_embeddings
from sparft.probe import probe_with_labels
from sparft.reduce import ReduceConfig, fit_reduce

console = Console(width=140)
DEFAULT_CACHE = Path("/tmp/sparft-bench/minilm-deepscaler-math.npz")


def math_set(shared_dir: str) -> pd.DataFrame:
    frame, report = load_dataset(
        DataConfig(spec="deepscaler:math", on_bad_rows="skip", shared_dir=shared_dir)
    )
    console.print(f"deepscaler:math: {report.rows_read} read, {len(frame)} kept {report.dropped}")
    return frame


def cached_embeddings(frame: pd.DataFrame, cache: Path, threads: int | None) -> Embeddings:
    """Embeddings of ``frame`` from ``cache`` when it holds exactly these ids, else computed."""
    if cache.exists():
        emb = load_embeddings(cache)
        if emb.ids.tolist() == frame["id"].tolist():
            console.print(f"embeddings from {cache}")
            return emb
    start = time.perf_counter()
    emb = embed_questions(
        frame["id"].tolist(), frame["question"].tolist(), EmbedConfig(num_threads=threads)
    )
    console.print(f"embedded {len(frame)} questions in {time.perf_counter() - start:.0f} s")
    save_embeddings(emb, cache)
    return emb


def evaluate(
    reduced: np.ndarray,
    frame: pd.DataFrame,
    difficulty: np.ndarray,
    cfg: ClusterConfig,
    seeds: int,
) -> dict[str, float]:
    level = frame["difficulty_label"].to_numpy()
    subject = frame["meta"].map(lambda m: json.loads(m).get("type")).to_numpy()
    ids = frame["id"].to_numpy()
    rows = []
    for seed in range(seeds):
        table, feats, _, summary = run_clustering(
            ids, reduced, difficulty, cfg.model_copy(update={"seed": seed})
        )
        labels = table["cluster"].to_numpy()
        rows.append(
            {
                "share": feats.difficulty_share,
                "eta2": summary["difficulty_between_cluster_share"],
                "ami_level": adjusted_mutual_info_score(level, labels),
                "ami_subject": adjusted_mutual_info_score(subject, labels),
                "spread": float(np.mean([c["std_difficulty"] for c in summary["per_cluster"]])),
            }
        )
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-dir", default="../shared/data")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--n-components", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--weights", type=float, nargs="+", default=[0, 0.25, 0.4, 0.5, 0.6, 0.75, 1, 1.5, 2]
    )
    parser.add_argument("--scalings", nargs="+", default=["block", "columns"])
    args = parser.parse_args()

    frame = math_set(args.shared_dir)
    emb = cached_embeddings(frame, args.cache, args.threads)
    reduction = fit_reduce(emb.matrix, ReduceConfig(n_components=args.n_components))
    difficulty = 1.0 - probe_with_labels(frame)["solve_rate"].to_numpy()
    console.print(
        f"PCA {emb.matrix.shape[1]} -> {reduction.n_components} dims keeps "
        f"{reduction.explained_variance:.1%} of the embedding variance"
    )
    table = Table(
        title=f"k-means K={args.k} on {len(frame)} MATH questions, "
        f"{args.n_components} PCA dims, mean of {args.seeds} seeds"
    )
    for name in (
        "scaling",
        "w",
        "difficulty share of variance",
        "between-cluster share of difficulty variance",
        "AMI with level",
        "AMI with subject",
        "mean within-cluster std of difficulty",
    ):
        table.add_column(name, justify="right")
    for scaling in args.scalings:
        for w in args.weights:
            cfg = ClusterConfig(k=args.k, difficulty_weight=w, embedding_scaling=scaling)
            r = evaluate(reduction.reduced, frame, difficulty, cfg, args.seeds)
            table.add_row(
                scaling,
                f"{w:g}",
                f"{r['share']:.2f}",
                f"{r['eta2']:.3f}",
                f"{r['ami_level']:.3f}",
                f"{r['ami_subject']:.3f}",
                f"{r['spread']:.3f}",
            )
        table.add_section()
    console.print(table)


if __name__ == "__main__":
    main()
