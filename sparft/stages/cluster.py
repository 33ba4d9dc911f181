"""Stage ``cluster``: questions clustered on [reduced embedding ; weighted difficulty].

Writes ``data/clusters.parquet`` (id, cluster, difficulty, noise), ``data/features.npz`` (the
clustering features, for ``select``), ``data/cluster_summary.json`` (per-cluster size, mean
difficulty and spread) and two plots under ``data/plots/``. Everything is computed (and the
plots rendered) before the data files are replaced, each atomically, the summary last.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.probe import OUT as PROBE
from sparft.stages.reduce import OUT as REDUCED
from sparft.stages.stage import Artifact, Stage

if TYPE_CHECKING:
    from sparft.config import Params

OUT = Path("data/clusters.parquet")
FEATURES = Path("data/features.npz")
SUMMARY = Path("data/cluster_summary.json")
MAP_PLOT = Path("data/plots/cluster_map.png")
BARS_PLOT = Path("data/plots/cluster_bars.png")


def run(params: Params) -> dict[str, Any]:
    import pandas as pd

    from sparft.cluster import align_difficulty, run_clustering
    from sparft.data import DataError
    from sparft.embed import Embeddings, load_embeddings, save_embeddings
    from sparft.io import write_json, write_parquet
    from sparft.plots import map_coordinates, plot_cluster_bars, plot_cluster_map

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


def artifact(config: Mapping[str, Any]) -> Artifact | None:
    """The per-cluster table, as a markdown artifact of the flow run."""
    if not SUMMARY.is_file():
        return None
    summary = json.loads(SUMMARY.read_text())
    lines = [
        f"### {summary.get('clusters')} clusters of {summary.get('questions')} questions "
        f"({summary.get('method')}, difficulty weight {summary.get('difficulty_weight')})",
        "",
        "| cluster | size | mean difficulty | min | max | std | noise |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary.get("per_cluster", []):
        lines.append(
            f"| {r.get('cluster')} | {r.get('size')} | {r.get('mean_difficulty', 0):.3f} | "
            f"{r.get('min_difficulty', 0):.3f} | {r.get('max_difficulty', 0):.3f} | "
            f"{r.get('std_difficulty', 0):.3f} | {r.get('noise')} |"
        )
    lines += ["", *[f"- {note}" for note in summary.get("notes", [])]]
    description = f"cluster stage summary ({SUMMARY})"
    return Artifact("sparft-clusters", description, markdown="\n".join(lines))


STAGE = Stage(
    name="cluster",
    module=__name__,
    description="cluster on meaning plus difficulty",
    inputs=(str(REDUCED), str(PROBE)),
    outs=(str(OUT), str(FEATURES)),
    metrics=(str(SUMMARY),),
    plots=(str(MAP_PLOT), str(BARS_PLOT)),
    params=("cluster",),
    mlflow=(str(SUMMARY), str(MAP_PLOT), str(BARS_PLOT), str(OUT)),
    where=(("cluster map", str(MAP_PLOT)),),
    artifact=artifact,
)
