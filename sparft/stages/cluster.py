"""Stage ``cluster``: questions clustered on [reduced embedding ; weighted difficulty].

Writes ``data/clusters.parquet`` (id, cluster, difficulty, noise), ``data/features.npz`` (the
clustering features, for ``select``), ``data/cluster_summary.json`` (per-cluster size, mean
difficulty and spread) and two plots under ``data/plots/``. Everything is computed (and the
plots rendered) before the data files are replaced, each atomically, the summary last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sparft.cluster import align_difficulty, run_clustering
from sparft.config import Params
from sparft.data import DataError
from sparft.embed import Embeddings, load_embeddings, save_embeddings
from sparft.io import write_json, write_parquet
from sparft.plots import map_coordinates, plot_cluster_bars, plot_cluster_map
from sparft.stages.probe import OUT as PROBE
from sparft.stages.reduce import OUT as REDUCED

OUT = Path("data/clusters.parquet")
FEATURES = Path("data/features.npz")
SUMMARY = Path("data/cluster_summary.json")
MAP_PLOT = Path("data/plots/cluster_map.png")
BARS_PLOT = Path("data/plots/cluster_bars.png")
ARTIFACTS = (SUMMARY, MAP_PLOT, BARS_PLOT, OUT)


def run(params: Params) -> dict[str, Any]:
    cfg = params.cluster
    reduced = load_embeddings(REDUCED, key="reduced")
    if not PROBE.exists():
        raise DataError(f"{PROBE}: no such file (run the probe stage first)")
    rows, difficulty, notes = align_difficulty(reduced.ids, pd.read_parquet(PROBE), str(PROBE))
    ids, matrix = reduced.ids[rows], reduced.matrix[rows]
    table, feats, clustering, summary = run_clustering(ids, matrix, difficulty, cfg)
    summary["notes"] = notes + summary["notes"]
    coords, axis_labels = map_coordinates(matrix)
    title = (
        f"{len(table)} questions, {clustering.n_clusters} clusters ({cfg.method}), "
        f"difficulty weight w={cfg.difficulty_weight:g}"
    )
    plot_cluster_map(
        coords,
        clustering.labels,
        difficulty,
        MAP_PLOT,
        axis_labels,
        noise_cluster=clustering.noise_cluster,
        title=title,
    )
    plot_cluster_bars(summary["per_cluster"], BARS_PLOT, title=title)
    save_embeddings(Embeddings(ids, feats.matrix, reduced.model), FEATURES, key="features")
    write_parquet(table, OUT)
    write_json(summary, SUMMARY)
    return summary
