"""Stage ``dots_predictor``: DOTS's difficulty predictor, trained on the probed solve rates.

Reads the embed stage's vectors and every probe file in ``dots.probes`` (one per probe model;
each is a group, and a question is predicted from references of its own group), holds out
``dots.val_share`` of the questions, trains on the rest (``sparft.curricula.dots.predictor``)
and writes the predictor to ``dots.predictor``, its error on the held-out questions against a
constant (mean) predictor and a 10-nearest-neighbour one to ``data/dots/metrics.json``, and a
plot of predicted against measured rates.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.embed import OUT as EMBEDDINGS
from sparft.stages.probe import OUT as PROBE
from sparft.stages.stage import Stage

if TYPE_CHECKING:
    import numpy as np

    from sparft.config import Params

METRICS = Path("data/dots/metrics.json")
PLOT = Path("data/plots/dots_predictor.png")


def training_rows(params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(embedding rows, solve rates, group per row, question ids) from every probe file."""
    import numpy as np
    import pandas as pd

    from sparft.curricula.dots import METHOD as DOTS
    from sparft.data import DataError
    from sparft.embed import load_embeddings

    probes = DOTS.settings(params).probes
    emb = load_embeddings(EMBEDDINGS)
    position = {qid: i for i, qid in enumerate(emb.ids.tolist())}
    rows, rates, groups, ids = [], [], [], []
    for group, name in enumerate(probes):
        path = Path(name)
        if not path.exists():
            raise DataError(f"{path}: no such file (run the probe stage first)")
        probe = pd.read_parquet(path)
        for column in ("id", "solve_rate"):
            if column not in probe:
                raise DataError(f"{path}: field '{column}' missing (has {list(probe.columns)})")
        probe = probe[np.isfinite(probe["solve_rate"].astype(float))]
        missing = [qid for qid in probe["id"].astype(str) if qid not in position]
        if missing:
            raise DataError(
                f"{path}: {len(missing)} probed questions have no embedding (e.g. {missing[0]}): "
                "rerun embed"
            )
        rows += [position[qid] for qid in probe["id"].astype(str)]
        rates += probe["solve_rate"].astype(float).tolist()
        groups += [group] * len(probe)
        ids += probe["id"].astype(str).tolist()
    if len(rows) < 4:
        raise DataError(f"{', '.join(probes)}: {len(rows)} probed questions, need 4")
    return emb.matrix[rows], np.array(rates), np.array(groups), ids


def run(params: Params) -> dict[str, Any]:
    import numpy as np

    from sparft.curricula.dots import METHOD as DOTS
    from sparft.curricula.dots.predictor import (
        TrainSettings,
        error_metrics,
        knn_rates,
        predict,
        save_predictor,
        train_predictor,
    )
    from sparft.io import write_json
    from sparft.plots import plot_predicted_rates

    cfg = DOTS.settings(params)
    x, y, groups, ids = training_rows(params)
    rng = np.random.default_rng(cfg.seed)
    questions = sorted(set(ids))
    n_val = round(cfg.val_share * len(questions))
    held = set(rng.choice(questions, size=n_val, replace=False).tolist()) if n_val else set()
    val = np.array([qid in held for qid in ids])
    settings = TrainSettings(
        hidden=cfg.hidden, dropout=cfg.dropout, references=cfg.train_references,
        epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        warmup_share=cfg.warmup_share, seed=cfg.seed,
    )  # fmt: skip
    model, losses = train_predictor(x[~val], y[~val], groups[~val], settings)
    save_predictor(model, cfg.predictor)
    summary: dict[str, Any] = {
        "questions": len(questions),
        "rows": len(ids),
        "probe_models": len(cfg.probes),
        "held_out": n_val,
        "final_train_loss": losses[-1] if losses else None,
    }
    judged = val if val.any() else ~val  # without a held-out set, say so and judge in sample
    predicted, measured = np.zeros(judged.sum()), y[judged]
    knn, mean = np.zeros_like(predicted), np.zeros_like(predicted)
    for g in np.unique(groups):
        refs = np.flatnonzero((groups == g) & ~val)
        queries = np.flatnonzero((groups == g) & judged)
        if not len(refs) or not len(queries):
            continue
        refs = rng.choice(refs, size=min(cfg.train_references, len(refs)), replace=False)
        at = np.searchsorted(np.flatnonzero(judged), queries)
        predicted[at] = predict(model, x[queries], x[refs], y[refs], queries, refs)
        knn[at] = knn_rates(x[queries], x[refs], y[refs])
        mean[at] = y[refs].mean()
    summary["judged_on"] = "held-out questions" if val.any() else "training questions"
    summary["predictor"] = error_metrics(predicted, measured)
    summary["mean_baseline"] = error_metrics(mean, measured)
    summary["knn_baseline"] = error_metrics(knn, measured)
    write_json(summary, METRICS)
    p = summary["predictor"]
    title = f"{summary['judged_on']}: MAE {p['mae']:.3f}, Pearson {p['pearson']:.2f}"
    plot_predicted_rates(measured, predicted, PLOT, title)
    return summary


STAGE = Stage(
    name="dots_predictor",
    module=__name__,
    description="DOTS's difficulty predictor, trained on the probed solve rates",
    inputs=(str(EMBEDDINGS), str(PROBE)),
    outs=("${dots.predictor}",),
    metrics=(str(METRICS),),
    plots=(str(PLOT),),
    params=("dots",),
    mlflow=(str(METRICS), str(PLOT)),
)
