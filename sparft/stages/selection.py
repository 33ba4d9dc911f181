"""Stage ``select``: the training subset, a few questions per cluster, to ``data/subset.parquet``
(the data set's rows plus cluster, difficulty and pick rank) and a map of the picks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.cluster import FEATURES
from sparft.stages.cluster import OUT as CLUSTERS
from sparft.stages.reduce import OUT as REDUCED
from sparft.stages.stage import Stage

if TYPE_CHECKING:
    from sparft.config import Params

OUT = Path("data/subset.parquet")
SUMMARY = Path("data/select_summary.json")
MAP_PLOT = Path("data/plots/subset_map.png")


def run(params: Params) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from sparft.data import DataError, read_dataset
    from sparft.embed import load_embeddings
    from sparft.io import write_json, write_parquet
    from sparft.plots import map_coordinates, plot_cluster_map
    from sparft.selection import select_subset

    cfg = params.select
    if not CLUSTERS.exists():
        raise DataError(f"{CLUSTERS}: no such file (run the cluster stage first)")
    clusters = pd.read_parquet(CLUSTERS)
    feats = load_embeddings(FEATURES, key="features")
    if feats.ids.tolist() != clusters["id"].astype(str).tolist():
        raise DataError(f"{FEATURES} and {CLUSTERS} list different questions: rerun cluster")
    picked = select_subset(feats.matrix, clusters["cluster"].to_numpy(), cfg)
    chosen = clusters.iloc[picked["position"]].reset_index(drop=True)
    chosen["rank"] = picked["rank"].to_numpy()
    train = read_dataset(params.data.out)
    subset = chosen.merge(train, on="id", how="left", validate="one_to_one")
    if subset["question"].isna().any():
        missing = subset.loc[subset["question"].isna(), "id"].iloc[0]
        raise DataError(f"{params.data.out}: clustered question {missing} is not in the data set")
    subset = subset[[*train.columns, "cluster", "difficulty", "rank"]]
    notes = []
    if cfg.budget >= len(clusters):
        notes.append(
            f"select.budget={cfg.budget} >= {len(clusters)} clustered questions: "
            "the subset is every question"
        )
    reduced = load_embeddings(REDUCED, key="reduced")
    position = {qid: i for i, qid in enumerate(reduced.ids.tolist())}
    if any(i not in position for i in feats.ids.tolist()):
        raise DataError(f"{REDUCED} lacks questions of {CLUSTERS}: rerun reduce and cluster")
    coords, axis_labels = map_coordinates(reduced.matrix[[position[i] for i in feats.ids]])
    selected = np.zeros(len(clusters), dtype=bool)
    selected[picked["position"].to_numpy()] = True
    all_noise = clusters.groupby("cluster")["noise"].all()
    noise_cluster = int(all_noise.index[-1]) if all_noise.iloc[-1] else None
    plot_cluster_map(
        coords,
        clusters["cluster"].to_numpy(),
        clusters["difficulty"].to_numpy(),
        MAP_PLOT,
        axis_labels,
        selected=selected,
        noise_cluster=noise_cluster,
        title=f"{len(subset)} selected of {len(clusters)} ({cfg.method}, {cfg.allocation})",
    )
    per_cluster = subset.groupby("cluster")["difficulty"].agg(["size", "mean"])
    summary = {
        "method": cfg.method,
        "allocation": cfg.allocation,
        "budget": cfg.budget,
        "selected": len(subset),
        "from_questions": len(clusters),
        "mean_difficulty": float(subset["difficulty"].mean()),
        "per_cluster": {
            str(c): {"selected": int(r["size"]), "mean_difficulty": float(r["mean"])}
            for c, r in per_cluster.iterrows()
        },
        "notes": notes,
    }
    write_parquet(subset, OUT)
    write_json(summary, SUMMARY)
    return summary


STAGE = Stage(
    name="select",
    module=__name__,
    description="a small diverse subset per cluster",
    inputs=("${data.out}", str(CLUSTERS), str(FEATURES), str(REDUCED)),
    outs=(str(OUT),),
    metrics=(str(SUMMARY),),
    plots=(str(MAP_PLOT),),
    params=("select",),
    mlflow=(str(OUT), str(SUMMARY), str(MAP_PLOT)),
    where=(("training subset", str(OUT)),),
)
