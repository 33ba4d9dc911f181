"""Pipeline stages: each reads its ``params.yaml`` section and its inputs under ``data/`` and
writes its outputs there atomically. ``sparft stage NAME`` and the Prefect flow both call
``STAGES[NAME]``; ``dvc.yaml`` declares the same stages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sparft.config import Params
from sparft.stages import cluster, embed, load, probe, reduce, selection

STAGES: dict[str, Callable[[Params], dict[str, Any]]] = {
    "load": load.run,
    "embed": embed.run,
    "reduce": reduce.run,
    "probe": probe.run,
    "cluster": cluster.run,
    "select": selection.run,
}
