"""Pipeline stages: each reads its ``params.yaml`` section and its inputs under ``data/`` and
writes its outputs there atomically. ``sparft stage NAME`` and the Prefect flow both call
``STAGES[NAME]``; ``dvc.yaml`` declares the same stages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from sparft.config import Params
from sparft.stages import (
    cluster,
    dots_predictor,
    embed,
    evaluate,
    load,
    probe,
    reduce,
    selection,
    train,
)

MODULES: dict[str, ModuleType] = {
    "load": load,
    "embed": embed,
    "reduce": reduce,
    "probe": probe,
    "cluster": cluster,
    "select": selection,
    "dots_predictor": dots_predictor,
    "train": train,
    "evaluate": evaluate,
}
STAGES: dict[str, Callable[[Params], dict[str, Any]]] = {
    name: module.run for name, module in MODULES.items()
}
ARTIFACTS: dict[str, tuple[Path, ...]] = {
    name: tuple(module.ARTIFACTS) for name, module in MODULES.items()
}
