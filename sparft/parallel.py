"""Shards: how a stage spreads its questions over workers without knowing who the workers are.

A shardable stage cuts its questions into fixed units (probe batches, embedding chunks,
evaluation chunks), each seeded from the stage's seed and the unit's index alone, and deals the
units out to shards, one shard per worker, each loading its model once. ``map_shards`` runs the
shards through whatever mapper the caller installed with ``using_mapper``: in order in this
process by default, on Ray workers under ``sparft run --runner ray`` (``flows.runners``). A
unit's result depends on nothing but the unit, so the results are those of the single-process
run whatever the number of workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Mapper(Protocol):
    """Runs ``fn`` on every unit, returning the results in the units' order."""

    @property
    def workers(self) -> int: ...

    def __call__(self, fn: Callable[[Any], Any], units: Sequence[Any], label: str) -> list[Any]: ...


@dataclass(frozen=True)
class SerialMapper:
    """Every shard in this process, one after the other."""

    workers: int = 1

    def __call__(self, fn: Callable[[Any], Any], units: Sequence[Any], label: str) -> list[Any]:
        return [fn(unit) for unit in units]


_MAPPER: ContextVar[Mapper | None] = ContextVar("sparft_mapper", default=None)
_SERIAL = SerialMapper()


def current_mapper() -> Mapper:
    return _MAPPER.get() or _SERIAL


@contextmanager
def using_mapper(mapper: Mapper) -> Iterator[Mapper]:
    """Run the shards of every stage inside this block through ``mapper``."""
    token = _MAPPER.set(mapper)
    try:
        yield mapper
    finally:
        _MAPPER.reset(token)


def workers() -> int:
    """How many workers the current mapper has: the number of shards worth cutting."""
    return max(1, current_mapper().workers)


def in_process() -> bool:
    """Whether the shards run in this process (no flow installed other workers): stages then
    keep their single-process path, progress bar included."""
    return isinstance(current_mapper(), SerialMapper)


def map_shards(fn: Callable[[T], R], units: Sequence[T], label: str) -> list[R]:
    """``[fn(u) for u in units]`` through the current mapper; ``label`` names the work."""
    if not units:
        return []
    # even one shard goes through the mapper: its worker may hold what this process lacks (a GPU)
    return current_mapper()(fn, units, label)


def deal(units: Sequence[T], shards: int) -> list[list[T]]:
    """``units`` in at most ``shards`` contiguous runs of near-equal length (none empty)."""
    shards = max(1, min(shards, len(units)))
    size, extra = divmod(len(units), shards)
    out, start = [], 0
    for index in range(shards):
        stop = start + size + (index < extra)
        out.append(list(units[start:stop]))
        start = stop
    return [run for run in out if run]


def unit_seed(seed: int, *keys: object) -> int:
    """A 31-bit seed for one unit of work, from the stage's seed and the unit's identity alone
    (not from how many calls came before), so a unit samples the same on any worker, alone or
    after a resume."""
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF
