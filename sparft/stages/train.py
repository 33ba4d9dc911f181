"""Stage ``train``: GRPO on the selected subset with the configured curriculum and allocation.

Writes the policy to ``data/train/model`` (full weights, or a LoRA adapter), the per-step
curriculum record and trainer logs, run metrics, and plots of arm choices (for curricula with
arms) and training curves. Checkpoints go to ``train.checkpoint_dir`` (not a DVC output: they
exist to resume). The probe stage's answers (``data/probe.parquet``), when present, are every
curriculum's first evidence of each question's solve rate (CurES's initial rollouts).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.cluster import OUT as CLUSTERS
from sparft.stages.dots_predictor import STAGE as DOTS_PREDICTOR
from sparft.stages.embed import OUT as EMBEDDINGS
from sparft.stages.probe import OUT as PROBE
from sparft.stages.selection import OUT as SUBSET
from sparft.stages.stage import Artifact, Stage

if TYPE_CHECKING:
    import pandas as pd

    from sparft.config import Params
    from sparft.training.heldout import HeldoutCurve, ServedChecks

MODEL = Path("data/train/model")
HISTORY = Path("data/train/history.parquet")
LOGS = Path("data/train/logs.parquet")
HELDOUT = Path("data/train/heldout.parquet")  # the learning curve (train.heldout.every > 0)
CURVE_COLUMNS = [
    "step", "accuracy", "correct", "tokens", "truncated", "rollouts", "unique_seen",
    "train_seconds", "check_seconds", "cached",
]  # fmt: skip
METRICS = Path("data/train/metrics.json")
ARMS_PLOT = Path("data/plots/train_arms.png")
CURVES_PLOT = Path("data/plots/train_curves.png")

# what the learning curve's questions depend on (train.heldout: the evaluate stage's set)
HELDOUT_PARAMS = (
    "evaluate.benchmarks",
    "evaluate.limit",
    "evaluate.seed",
    "evaluate.max_new_tokens",
    "evaluate.heldout_seed",
    "evaluate.heldout_per_grade",
    "arithmetic",
)

CURVES = {
    "reward": "reward",
    "solve rate (curriculum batch)": "curriculum/solve_rate",
    "effective prompt ratio": "curriculum/effective_prompt_ratio",
    "rollouts so far": "curriculum/rollouts_total",
    "KL to the reference": "kl",
    "completion length (tokens)": "completions/mean_length",
    "loss": "loss",
    "generation seconds": "time/generation_s",
    "update seconds": "time/update_s",
}


def _with_clusters(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    from sparft.data import DataError

    if not CLUSTERS.exists():
        raise DataError(f"{CLUSTERS}: no such file (run the cluster stage first)")
    clusters = pd.read_parquet(CLUSTERS)[["id", "cluster"]]
    return frame.merge(clusters, on="id", how="inner", validate="one_to_one")


def _with_embeddings(frame: pd.DataFrame) -> pd.DataFrame:
    from sparft.data import DataError
    from sparft.embed import load_embeddings

    emb = load_embeddings(EMBEDDINGS)
    row = {qid: i for i, qid in enumerate(emb.ids.tolist())}
    missing = [qid for qid in frame["id"].astype(str) if qid not in row]
    if missing:
        raise DataError(
            f"{EMBEDDINGS}: {len(missing)} training questions have no embedding "
            f"(e.g. {missing[0]}): rerun embed"
        )
    return frame.assign(embedding=[emb.matrix[row[q]] for q in frame["id"].astype(str)])


# a column a method needs (its entry's ``columns``) that the training data lacks -> the file
# it comes from, and what joins it on
COLUMN_SOURCES: dict[str, tuple[Path, Callable[[pd.DataFrame], pd.DataFrame]]] = {
    "cluster": (CLUSTERS, _with_clusters),
    "embedding": (EMBEDDINGS, _with_embeddings),
}


def training_frame(params: Params) -> pd.DataFrame:
    """The questions to train on, with the columns the curriculum needs (``cluster``,
    ``embedding``) and the probe stage's answers (``probe_rollouts``, ``probe_correct``) where
    it has them."""
    import pandas as pd

    from sparft.curricula import frame_columns
    from sparft.curricula.base import PROBE_CORRECT, PROBE_ROLLOUTS
    from sparft.data import DataError, read_dataset

    if params.train.data == "subset":
        if not SUBSET.exists():
            raise DataError(f"{SUBSET}: no such file (run the select stage first)")
        where, frame = SUBSET, pd.read_parquet(SUBSET)
    else:
        where, frame = Path(params.data.out), read_dataset(params.data.out)
    for column in frame_columns(params.train.curriculum, params):
        if column in frame:
            continue
        if column not in COLUMN_SOURCES:
            raise DataError(
                f"{where}: no '{column}' field, which train.curriculum="
                f"{params.train.curriculum} needs (and no stage provides: "
                f"{', '.join(COLUMN_SOURCES)} do)"
            )
        frame = COLUMN_SOURCES[column][1](frame)
    if PROBE.exists():
        probe = pd.read_parquet(PROBE)
        if {"id", "k", "n_correct"} <= set(probe.columns):
            probe = probe[["id", "k", "n_correct"]].rename(
                columns={"k": PROBE_ROLLOUTS, "n_correct": PROBE_CORRECT}
            )
            frame = frame.merge(probe, on="id", how="left", validate="one_to_one")
    return frame


def settings_fingerprint(params: Params, frame: pd.DataFrame, model_path: str) -> str:
    """What a checkpoint must have been saved under for ``train.resume: auto`` to continue it:
    the stage's params (but those that only say how often to save, where, or with how many
    threads), the training questions and answers, the starting model's files, and sparft's
    own source (a fix to a reward or a curriculum must not continue a run made before it)."""
    import hashlib
    import json

    import sparft
    from sparft.io import path_digest
    from sparft.stages.stage import lookup

    package = Path(sparft.__file__).parent
    config = params.model_dump(mode="json")
    values = {key: lookup(config, key) for key in STAGE.all_params()}
    train = dict(values["train"])
    for key in ("resume", "save_steps", "save_total_limit", "checkpoint_dir", "num_threads"):
        train.pop(key, None)
    values["train"] = train
    payload = {
        "params": values,
        "questions": frame[["id", "question", "answer"]].astype(str).values.tolist(),
        "model": path_digest(Path(model_path)) or model_path,
        "code": {
            str(f.relative_to(package)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(package.rglob("*.py"))
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def served(params: Params, model_path: str) -> ServedChecks | None:
    """The vLLM server the held-out checks and the rollouts share, when either uses one
    (started at first use, with the log-probabilities the rollouts' correction needs)."""
    from sparft.training.heldout import WEIGHTS_DIR, ServedChecks, served_server

    cfg = params.train
    server = served_server(cfg, params.generation.server)
    if server is None:
        return None
    return ServedChecks(
        model_path,
        server,
        Path(cfg.checkpoint_dir) / WEIGHTS_DIR,
        url=cfg.heldout.server_url,
        concurrency=cfg.heldout.batch_size,
    )


def heldout_curve(
    params: Params, model_path: str, server: ServedChecks | None = None
) -> HeldoutCurve | None:
    """The learning-curve callback ``train.heldout`` asks for, on the evaluate stage's first
    benchmark with its ``limit``, ``seed`` and ``max_new_tokens``; None when it is off.
    ``server`` serves the checks under ``backend: vllm-server``."""
    from sparft.evaluation import load_benchmark
    from sparft.io import path_digest
    from sparft.training import use_bf16
    from sparft.training.heldout import JOURNAL, HeldoutCurve

    cfg = params.train.heldout
    if not cfg.every:
        return None
    ev = params.evaluate
    questions, _ = load_benchmark(ev.benchmarks[0], ev, params.data, params.arithmetic)
    base = path_digest(Path(model_path)) if cfg.cache_dir else None  # memoised: hashed once
    if cfg.backend != "vllm-server":
        server = None
    return HeldoutCurve(
        questions,
        params.prompt,
        cfg.every,
        ev.max_new_tokens,
        cfg.batch_size,
        journal=Path(params.train.checkpoint_dir) / JOURNAL,
        base_key=base,
        cache_dir=cfg.cache_dir,
        bf16=use_bf16(params.train),
        server=server,
    )


def _plots(history: pd.DataFrame, logs: pd.DataFrame, n_arms: int | None, name: str) -> None:
    """The arm picks (a curriculum without arms: the prompts it covered; the stage always
    writes the file it declares, or ``dvc commit`` of the stage fails) and training curves."""
    from sparft.plots import plot_arm_choices, plot_prompt_coverage, plot_training_curves

    if not history.empty:
        steps, rates = history["step"].to_numpy() + 1, history["solve_rate"].to_numpy()
        if n_arms is not None:
            plot_arm_choices(steps, history["arm"].to_numpy(), rates, n_arms, ARMS_PLOT)
        else:
            title = f"train.curriculum={name} has no arms: the prompts it covered"
            plot_prompt_coverage(steps, history["unique_seen"].to_numpy(), rates, title, ARMS_PLOT)
    curves = {
        title: (logs["step"].to_numpy(), logs[key].to_numpy(dtype=float))
        for title, key in CURVES.items()
        if key in logs and logs[key].notna().all()
    }
    plot_training_curves(curves, CURVES_PLOT)


def run(params: Params) -> dict[str, Any]:
    from time import perf_counter

    import numpy as np
    import pandas as pd

    from sparft.curricula import make_curriculum
    from sparft.curricula.allocation import fixed_run_note
    from sparft.io import write_json, write_parquet
    from sparft.models import prepare_model
    from sparft.training import log_history_frame, save_policy, summary_metrics, train
    from sparft.training.rollouts import ServedRollouts
    from sparft.training.setup import build_trainer

    cfg = params.train
    frame = training_frame(params)
    curriculum = make_curriculum(cfg.curriculum, frame, params)
    model_path = prepare_model(cfg.model or params.generation.model)
    report_to = ["mlflow"] if params.tracking.enabled else []
    server = served(params, model_path)
    curve = heldout_curve(params, model_path, server)
    callbacks = [curve] if curve else []
    trainer = build_trainer(cfg, model_path, frame, curriculum, params.prompt, report_to, callbacks)
    if curve:
        curve.trainer = trainer
    trainer.settings_fingerprint = settings_fingerprint(params, frame, model_path)
    started = perf_counter()
    try:
        if cfg.rollouts == "vllm-server":
            assert server is not None
            ServedRollouts(
                server, cfg.max_completion_length, cfg.temperature, seed=cfg.seed
            ).attach(trainer)
        resumed, note = train(trainer, cfg)
    finally:
        if server is not None:
            server.close()  # the checks' and rollouts' server, also when training fails
    if note:
        logging.getLogger(__name__).warning(note)
    seconds = perf_counter() - started
    save_policy(trainer, MODEL)
    history = pd.DataFrame(curriculum.history)
    logs = log_history_frame(trainer.state.log_history)
    sizes = list(history["group_sizes"]) if "group_sizes" in history else []
    fixed = fixed_run_note(
        curriculum.allocator.method, params.allocation, cfg.num_generations, sizes
    )
    if fixed:
        logging.getLogger(__name__).warning(fixed)
    summary: dict[str, Any] = {
        "curriculum": cfg.curriculum,
        "allocation": curriculum.allocator.method,
        "training_questions": len(frame),
        "resumed_from": str(resumed) if resumed else None,
        "notes": [n for n in (note, fixed) if n],
        "lora": hasattr(trainer.model, "peft_config"),
        "train_seconds": curve.train_seconds() if curve else seconds,
        **summary_metrics(history, logs),
    }
    if curve and curve.points:
        points = pd.DataFrame(curve.points)
        summary["heldout_accuracy_start"] = float(points["accuracy"].iloc[0])
        summary["heldout_accuracy_final"] = float(points["accuracy"].iloc[-1])
        summary["heldout_check_seconds"] = float(points["check_seconds"].sum())
        summary["series"] = {
            "heldout_accuracy": [[int(p["step"]), float(p["accuracy"])] for p in curve.points]
        }
    if not trainer.args.should_save:
        return summary
    labels: list[Any] = list(getattr(curriculum, "arm_labels", []))
    n_arms = len(labels) if labels and "arm" in history else None
    if n_arms is not None:
        picks = np.bincount(history["arm"].to_numpy(dtype=int), minlength=n_arms)
        summary["arm_picks"] = {str(labels[a]): int(c) for a, c in enumerate(picks)}
    write_parquet(history, HISTORY)
    write_parquet(logs, LOGS)
    # always written (empty without a curve), so DVC and the compare flow find it
    write_parquet(pd.DataFrame(curve.points if curve else [], columns=CURVE_COLUMNS), HELDOUT)
    write_json(summary, METRICS)
    _plots(history, logs, n_arms, cfg.curriculum)
    return summary


def _method_params() -> tuple[str, ...]:
    """Every registered method's section and the keys it reads: switching curriculum or
    changing any method's settings reruns training (imported here, not at the top, so the
    stages that import this module for its paths do not depend on the methods' code)."""
    from sparft.curricula.registry import params_read

    return params_read()


def _method_code(root: Path) -> tuple[str, ...]:
    from sparft.curricula.registry import source_files

    return source_files(root)


def reads(params: Params) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The inputs and params training under ``params`` reads, of all the stage declares (what
    any curriculum reads, as ``dvc.yaml`` must list it): the training file, the files of the
    columns its curriculum needs, the probe's answers, the data set (the held-out check leaves
    its questions out) and the curriculum's own files and settings. A comparison's variant key
    covers only these, so new clusters do not retrain a strategy that never reads them."""
    from sparft.curricula import frame_columns, method

    cfg = params.train
    found = method(cfg.curriculum)
    columns = frame_columns(cfg.curriculum, params)
    inputs = [params.data.out, str(PROBE), *found.inputs(found.settings_or_none(params))]
    if cfg.data == "subset":
        inputs.append(str(SUBSET))
    inputs += [str(path) for column, (path, _) in COLUMN_SOURCES.items() if column in columns]
    own = (*([found.section] if found.section else []), *found.reads)
    return tuple(inputs), (*STAGE.params, *own)


def _cell(value: Any) -> Any:
    """A table cell: numpy scalars as numbers, floats rounded, NaN empty, lists (a step's prompt
    ids and group sizes) as one space-separated string."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return " ".join(str(_cell(v)) for v in value)
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def artifact(config: Mapping[str, Any], max_rows: int = 1000) -> Artifact | None:
    """The per-step record (the curriculum's choices), as a table artifact of the flow run."""
    if not HISTORY.is_file():
        return None
    import pandas as pd

    history = pd.read_parquet(HISTORY)
    if history.empty:
        return None
    picks = ""
    if "arm" in history:
        counts = history["arm"].value_counts().sort_index()
        picks = ", ".join(f"arm {arm}: {n}" for arm, n in counts.items())
    rows = [
        {k: _cell(v) for k, v in row.items()}
        for row in history.tail(max_rows).to_dict(orient="records")
    ]
    description = f"curriculum choice per GRPO step ({HISTORY}); picks: {picks or 'n/a'}"
    return Artifact("sparft-arm-choices", description, table=rows)


STAGE = Stage(
    name="train",
    module=__name__,
    description="GRPO with the curriculum choosing every step's prompts and rollouts",
    inputs=(
        "${data.out}",
        str(CLUSTERS),
        str(SUBSET),
        str(PROBE),
        str(EMBEDDINGS),
        *DOTS_PREDICTOR.outs,
    ),
    outs=(str(MODEL), str(HISTORY), str(LOGS), str(HELDOUT)),
    metrics=(str(METRICS),),
    plots=(str(ARMS_PLOT), str(CURVES_PLOT)),
    params=("train", "allocation", "prompt", "generation.model", *HELDOUT_PARAMS),
    method_params=_method_params,
    method_code=_method_code,
    reads=reads,
    mlflow=(str(ARMS_PLOT), str(CURVES_PLOT), str(HISTORY), str(METRICS), str(HELDOUT)),
    policy=str(MODEL),
    where=(
        ("trained policy", f"{MODEL} (metrics: {METRICS})"),
        ("training plots", f"{ARMS_PLOT}, {CURVES_PLOT}"),
    ),
    artifact=artifact,
)
