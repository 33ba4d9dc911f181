"""Pipeline stages: each reads its ``params.yaml`` section and its inputs under ``data/`` and
writes its outputs there atomically. ``sparft stage NAME`` and the Prefect flow both call
``STAGES[NAME]``; ``dvc.yaml`` declares the same stages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparft.config import Params
from sparft.stages import cluster, embed, evaluate, load, probe, reduce, selection, train

STAGES: dict[str, Callable[[Params], dict[str, Any]]] = {
    "load": load.run,
    "embed": embed.run,
    "reduce": reduce.run,
    "probe": probe.run,
    "cluster": cluster.run,
    "select": selection.run,
    "train": train.run,
    "evaluate": evaluate.run,
}

ARTIFACTS: dict[str, tuple[Path, ...]] = {
    name: tuple(getattr(module, "ARTIFACTS", ()))
    for name, module in {
        "load": load,
        "embed": embed,
        "reduce": reduce,
        "probe": probe,
        "cluster": cluster,
        "select": selection,
        "train": train,
        "evaluate": evaluate,
    }.items()
}
