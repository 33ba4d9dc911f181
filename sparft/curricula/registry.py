"""The method registry: what the rest of sparft knows of a data-selection method, declared once in
the method's own module.

A method's module holds its config class, its curriculum class and a ``Method`` entry: its name
(the ``train.curriculum`` value), the ``params.yaml`` section holding its settings, the further
params it reads, the training-frame columns it needs, its preflight checks and the strategies
``sparft compare-strategies`` runs it as. ``register`` makes it known; everything else is derived
from the entries: the ``Params`` sections (``sparft.config``), the train stage's params (DVC's and
the flow's cache keys), ``STRATEGIES``, and the method table of the docs.

Built-in methods are registered by ``sparft.curricula``. A method of your own is one module that
calls ``register``, made known to sparft by naming the module in ``params.yaml``'s ``methods``
list (importable from the project folder) or, from an installed package, by the ``sparft.methods``
entry point group.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd

    from sparft.checks import Check
    from sparft.curricula.base import Curriculum

ENTRY_POINTS = "sparft.methods"
C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True)
class Strategy:
    """Params overrides of one method as ``compare-strategies`` runs it, and whether it reads the
    probe stage's measurements (their rollouts then count in its total)."""

    overrides: dict[str, Any]
    uses_probe: bool
    description: str


def _no_columns(cfg: Any) -> tuple[str, ...]:
    return ()


def _no_inputs(cfg: Any) -> tuple[str, ...]:
    return ()


def _no_checks(cfg: Any, params: Any, probe: pd.DataFrame | None) -> list[Check]:
    return []


@dataclass(frozen=True)
class Method(Generic[C]):
    """One data-selection method, as the harness sees it."""

    name: str  # ``train.curriculum`` value (for an allocator-only method: its strategy's name)
    title: str  # how people call it: "DOTS + rollout replay"
    paper: str  # authors, year, arXiv id
    summary: str  # what it does, one sentence
    curriculum: type[Curriculum] | None = None  # None: an allocator used with another curriculum
    config: type[C] | None = None  # its settings' class
    section: str | None = None  # the ``params.yaml`` section holding them
    reads: tuple[str, ...] = ()  # further params (sections or dotted keys) the method reads
    # training-frame columns it needs beyond id/question/answer, given its settings
    columns: Callable[[Any], tuple[str, ...]] = _no_columns
    # files it reads beyond the training frame, given its settings (DOTS: its predictor)
    inputs: Callable[[Any], tuple[str, ...]] = _no_inputs
    # what must hold before training for it to do what its paper describes: (its settings, the
    # whole ``sparft.config.Params``, the probe's rows or None) -> checks
    preflight: Callable[[Any, Any, pd.DataFrame | None], list[Check]] = _no_checks
    strategies: Mapping[str, Strategy] = field(default_factory=dict)
    page: str | None = None  # its page under docs/methods/, without ``.md``

    def __post_init__(self) -> None:
        if (self.config is None) != (self.section is None):
            raise ValueError(f"method {self.name!r}: give both config and section, or neither")

    def settings(self, params: Any) -> C:
        """The method's settings section of ``params`` (a ``sparft.config.Params``, not named
        here: the config imports this module), typed as its config class."""
        if self.section is None:
            raise ValueError(f"method {self.name!r} has no settings")
        return cast(C, getattr(params, self.section))

    def settings_or_none(self, params: Any) -> C | None:
        return None if self.section is None else self.settings(params)

    def default_allocation(self) -> str:
        """The allocator ``train.allocation: auto`` gives it (an allocator method: itself)."""
        return self.curriculum.default_allocation if self.curriculum is not None else self.name


METHODS: dict[str, Method[Any]] = {}
STRATEGIES: dict[str, Strategy] = {}  # every registered method's, in registration order
_listeners: list[Callable[[Method[Any]], None]] = []


def register(method: Method[Any]) -> Method[Any]:
    """Make ``method`` known (again, for the same module re-imported); returns it."""
    old = METHODS.get(method.name)
    if old is not None and _origin(old) != _origin(method):
        raise ValueError(
            f"method {method.name!r} is registered twice: {_origin(old)} and {_origin(method)}"
        )
    taken = {s: m.name for m in METHODS.values() if m.name != method.name for s in m.strategies}
    clash = [s for s in method.strategies if s in taken]
    if clash:
        raise ValueError(
            f"method {method.name!r}: strategy {clash[0]!r} belongs to {taken[clash[0]]!r}"
        )
    for listener in _listeners:
        listener(method)
    METHODS[method.name] = method
    STRATEGIES.update(method.strategies)
    return method


def on_register(listener: Callable[[Method[Any]], None]) -> None:
    """Call ``listener`` with every method registered so far and every one registered later."""
    _listeners.append(listener)
    for method in METHODS.values():
        listener(method)


def curricula() -> dict[str, Method[Any]]:
    """The methods selectable as ``train.curriculum``."""
    return {name: m for name, m in METHODS.items() if m.curriculum is not None}


def method(name: str) -> Method[Any]:
    """The registered curriculum ``name``; an error listing the known ones otherwise."""
    found = curricula().get(name)
    if found is None:
        raise ValueError(f"unknown curriculum {name!r} (allowed: {', '.join(curricula())})")
    return found


def sections() -> dict[str, type[BaseModel]]:
    """Each registered method's settings section and its class, in registration order."""
    return {m.section: m.config for m in METHODS.values() if m.section and m.config}


def params_read() -> tuple[str, ...]:
    """Every params section or key some registered method reads: the train stage's, so a change
    to any of them reruns training."""
    keys = [k for m in METHODS.values() for k in (*([m.section] if m.section else []), *m.reads)]
    return tuple(dict.fromkeys(keys))


def _origin(method: Method[Any]) -> str:
    cls = method.curriculum or method.config
    return cls.__module__ if cls is not None else method.name


def source_files(root: Path) -> tuple[str, ...]:
    """The files of registered methods that live in the project folder ``root`` outside sparft
    (methods named in ``params.yaml``), relative to it: code the train stage runs."""
    found: list[str] = []
    for m in METHODS.values():
        module = sys.modules.get(_origin(m))
        path = Path(getattr(module, "__file__", "") or "")
        if not path.is_file():
            continue
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        if rel.parts[0] not in ("sparft", "flows"):
            found.append(str(rel))
    return tuple(sorted(set(found)))


def load_plugins(modules: Sequence[str] = (), where: str = "methods") -> None:
    """Import the installed ``sparft.methods`` entry points and ``modules`` (names importable from
    the working directory), each of which registers its method."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        entry.load()
    for name in modules:
        if str(Path.cwd()) not in sys.path and "" not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"{where}: cannot import method module {name!r}: {err}") from err


def method_table(methods: Iterable[Method[Any]]) -> list[str]:
    """The docs' table of methods (Markdown rows), from the entries."""
    rows = [
        "| method | paper | `train.curriculum` | section | `auto` allocation "
        "| strategies | what it does | page |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in methods:
        curriculum = f"`{m.name}`" if m.curriculum else "any"
        section = f"`{m.section}`" if m.section else "—"
        strategies = ", ".join(f"`{s}`" for s in m.strategies) or "—"
        page = f"[{m.page}]({m.page}.md)" if m.page else "—"
        summary = m.summary.replace("|", "\\|")
        rows.append(
            f"| {m.title} | {m.paper} | {curriculum} | {section} | `{m.default_allocation()}` "
            f"| {strategies} | {summary} | {page} |"
        )
    return rows


def strategy_table(strategies: Mapping[str, Strategy]) -> list[str]:
    """The docs' table of strategies and their overrides, from the entries."""
    rows = ["| strategy | overrides | reads the probe |", "| --- | --- | --- |"]
    for name, s in strategies.items():
        overrides = ", ".join(f"`{k}={_yaml(v)}`" for k, v in s.overrides.items())
        rows.append(f"| `{name}` | {overrides} | {'yes' if s.uses_probe else 'no'} |")
    return rows


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
