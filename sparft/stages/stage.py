"""What a pipeline stage declares, once, in its own module: what it reads and writes, which
params sections it uses, and how its results are shown.

Everything else reads these declarations: ``dvc.yaml`` is generated from them
(``sparft dvc-yaml``), the Prefect flow's cache keys and artifacts come from them, the CLI's
tables and "where the results are" too, and MLflow logs the files they name. A stage's
dependencies on code are not written by hand: they are the import closure of its module
(``sparft.stages.sources``), so a change to any module a stage runs reruns it.

A stage module stays light at import (its declaration, and ``run`` importing the library
inside), so listing or declaring stages never loads torch.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparft.config import Params

_VAR = re.compile(r"\$\{\s*([^}\s]+)\s*\}")


@dataclass(frozen=True)
class Report:
    """A table for people: ``columns`` with ``rows``, or key/value rows without a header."""

    title: str
    rows: Sequence[tuple[str, ...]]
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Artifact:
    """What the Prefect flow publishes after the stage: a table or a markdown text."""

    key: str
    description: str
    table: list[dict[str, Any]] | None = None
    markdown: str | None = None


def scalar_report(title: str, summary: Mapping[str, Any]) -> Report:
    """The summary's single values (floats to four figures) and its notes, as key/value rows."""
    rows: list[tuple[str, ...]] = []
    for key, value in summary.items():
        if isinstance(value, float):
            rows.append((key, f"{value:.4g}"))
        elif isinstance(value, str | int | bool) or value is None:
            rows.append((key, str(value)))
        elif key == "notes" and value:
            rows.append((key, "\n".join(map(str, value))))
    return Report(title, rows)


def lookup(config: Mapping[str, Any], dotted: str) -> Any:
    """``section.key`` in the nested configuration; None where it does not exist."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def resolve(text: str, config: Mapping[str, Any]) -> str:
    """``${section.key}`` in a path replaced by its value in the configuration."""

    def value(match: re.Match[str]) -> str:
        found = lookup(config, match.group(1))
        if found is None:
            raise KeyError(f"no value for {match[0]}")
        return str(found)

    return _VAR.sub(value, text)


def template_keys(text: str) -> list[str]:
    """The ``section.key`` names a path template interpolates."""
    return _VAR.findall(text)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage. Paths may interpolate params (``${data.out}``)."""

    name: str
    module: str  # the module holding ``run(params) -> summary`` and this declaration
    description: str
    inputs: tuple[str, ...] = ()  # data the stage reads
    outs: tuple[str, ...] = ()  # what it writes that DVC caches
    metrics: tuple[str, ...] = ()  # small JSON results (DVC metrics, not cached)
    plots: tuple[str, ...] = ()  # pictures (DVC plots, not cached)
    params: tuple[str, ...] = ()  # params sections or dotted keys it reads
    # further params and source files known once the methods are registered (the train stage
    # reads every registered method's section and runs the modules of methods of your own)
    method_params: Callable[[], Sequence[str]] | None = None
    method_code: Callable[[Path], Sequence[str]] | None = None
    # what a run under given params reads of ``inputs`` (resolved) and ``all_params()``, where
    # that is less than any configuration's (the train stage reads one method's): None, all
    reads: Callable[[Params], tuple[Sequence[str], Sequence[str]]] | None = None
    mlflow: tuple[str, ...] = ()  # files logged as the stage's MLflow artifacts
    policy: str | None = None  # a model folder the stage trains, logged as an MLflow model
    where: tuple[tuple[str, str], ...] = ()  # "where the results are" rows
    report: Callable[[dict[str, Any], Params], list[Report]] | None = None
    artifact: Callable[[Mapping[str, Any]], Artifact | None] | None = None
    headline: tuple[str, ...] = field(default=())  # summary keys for the flow's log line

    def run(self, params: Params) -> dict[str, Any]:
        """Run the stage: its module's ``run`` (imported now, so declaring costs nothing)."""
        fn: Callable[[Params], dict[str, Any]] = importlib.import_module(self.module).run
        return fn(params)

    def reports(self, summary: dict[str, Any], params: Params) -> list[Report]:
        if self.report is not None:
            return self.report(summary, params)
        return [scalar_report(f"{self.name} summary", summary)]

    def all_params(self) -> tuple[str, ...]:
        """``params`` and, after them, the registered methods' (when the stage reads those)."""
        extra = self.method_params() if self.method_params else ()
        return tuple(dict.fromkeys([*self.params, *extra]))

    def method_sources(self, root: Path) -> tuple[str, ...]:
        """Source files of registered methods under ``root`` that the stage runs, relative."""
        return tuple(self.method_code(root)) if self.method_code else ()

    def written(self) -> tuple[str, ...]:
        """Every path the stage writes (outs, metrics, plots), unresolved."""
        return self.outs + self.metrics + self.plots

    def template_params(self) -> list[str]:
        """The params its paths interpolate (they are part of what the stage depends on)."""
        return [k for path in self.inputs + self.written() for k in template_keys(path)]
