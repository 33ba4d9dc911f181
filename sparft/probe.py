"""Difficulty of each question as a probe model's solve rate over k sampled answers.

Probing is the expensive stage, so it saves each finished batch to a journal as it goes and a
rerun with the same settings picks up after the batches saved. The questions are cut into fixed
batches, each sampled with a seed of its own index, so the rows are the same whether one process
probes them all, several workers share them (``probe_sharded``), or a rerun finishes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from sparft.answers import UNCHECKED_NOTE, batch_budget, is_correct
from sparft.parallel import deal, map_shards, unit_seed, workers
from sparft.prompts import PromptConfig, build_messages

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sparft.generation import GenerationBackend, GenerationConfig

# ``truncated``: share of the k answers cut at max_new_tokens (scored wrong, so a budget too small
# for the data shows up as difficulty).
PROBE_COLUMNS = ["id", "solve_rate", "n_correct", "k", "mean_completion_tokens", "truncated"]


class ProbeConfig(BaseModel):
    """The ``probe`` section: how difficulty is measured."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["model", "label"] = Field(
        "model", description="Solve rate of a probe model, or the data set's own difficulty label."
    )
    model: str | None = Field(None, description="Probe model; null uses generation.model.")
    k: int = Field(4, ge=1, le=256, description="Sampled answers per question.")
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    max_new_tokens: int = Field(384, ge=1)
    batch_questions: int = Field(16, ge=1, description="Questions per saved batch.")
    max_questions: int | None = Field(
        None, ge=1, description="Probe a seeded sample of at most this many questions."
    )
    seed: int = 0


def sample_questions(frame: pd.DataFrame, cfg: ProbeConfig) -> pd.DataFrame:
    """A seeded sample, stratified by difficulty label when there is one, in original order."""
    if cfg.max_questions is None or cfg.max_questions >= len(frame):
        return frame
    if frame["difficulty_label"].notna().all():
        groups = frame.groupby("difficulty_label", group_keys=False)
        share = cfg.max_questions / len(frame)
        picked = groups.apply(
            lambda g: g.sample(max(1, round(len(g) * share)), random_state=cfg.seed)
        )
    else:
        picked = frame.sample(cfg.max_questions, random_state=cfg.seed)
    return frame.loc[sorted(picked.index)]


def fingerprint(frame: pd.DataFrame, cfg: ProbeConfig, prompt: PromptConfig, model: str) -> str:
    """What saved progress must match to be resumed: same questions, settings, prompt, model."""
    payload = json.dumps(
        [list(frame["id"]), cfg.model_dump(mode="json"), prompt.model_dump(mode="json"), model]
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Batch:
    """Rows ``start:stop`` of the probed frame: the unit that is seeded, saved and resumed."""

    index: int
    start: int
    stop: int


def plan_batches(rows: int, size: int) -> list[Batch]:
    """The frame cut into batches of ``size`` rows, the same cut however many workers run."""
    return [
        Batch(i, start, min(start + size, rows)) for i, start in enumerate(range(0, rows, size))
    ]


class Journal:
    """Finished probe batches, one JSON line per batch, in append-only files in ``folder`` (one
    file per shard that wrote them). A line is whole or it is ignored (a kill mid-write), and a
    file written for other settings (another fingerprint) is ignored, so a rerun resumes after
    the batches that were really finished, whichever worker finished them."""

    def __init__(self, folder: Path | None, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def done(self) -> dict[int, list[dict[str, Any]]]:
        """Rows of every finished batch, by batch index."""
        found: dict[int, list[dict[str, Any]]] = {}
        if self.folder is None or not self.folder.is_dir():
            return found
        for path in sorted(self.folder.glob("*.jsonl")):
            with path.open(encoding="utf-8", errors="replace") as lines:
                header = _json_line(next(lines, ""))
                if header is None or header.get("fingerprint") != self.fingerprint:
                    continue
                for line in lines:
                    entry = _json_line(line)
                    if entry is not None and isinstance(entry.get("rows"), list):
                        found[int(entry["batch"])] = entry["rows"]
        return found

    def finished_rows(self) -> int:
        """How many question rows the journal holds."""
        return sum(len(rows) for rows in self.done().values())

    @contextmanager
    def writer(self, name: str) -> Iterator[Callable[[int, list[dict[str, Any]]], None]]:
        """``append(batch_index, rows)``, each line flushed to disk before it returns."""
        if self.folder is None:
            yield lambda _index, _rows: None
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}-{uuid.uuid4().hex[:8]}.jsonl"
        with path.open("a", encoding="utf-8") as handle:
            header = {"fingerprint": self.fingerprint, "columns": PROBE_COLUMNS}
            handle.write(json.dumps(header) + "\n")

            def append(index: int, rows: list[dict[str, Any]]) -> None:
                handle.write(json.dumps({"batch": index, "rows": rows}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

            yield append

    def clear(self) -> None:
        if self.folder is not None and self.folder.is_dir():
            shutil.rmtree(self.folder)


def _json_line(line: str) -> dict[str, Any] | None:
    if not line.endswith("\n"):
        return None  # cut off by a kill while it was written
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def score_batch(
    batch: pd.DataFrame,
    backend: GenerationBackend,
    cfg: ProbeConfig,
    prompt: PromptConfig,
    seed: int,
) -> list[dict[str, Any]]:
    """One probe row per question of ``batch``: ``cfg.k`` answers sampled with ``seed``."""
    results = backend.generate(
        [build_messages(q, prompt) for q in batch["question"]],
        n=cfg.k,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        progress=False,
        seed=seed,
    )
    rows = []
    with batch_budget() as budget:
        verdicts = [
            sum(is_correct(c.text, row["answer"]) for c in result.completions)
            for (_, row), result in zip(batch.iterrows(), results, strict=True)
        ]
    if budget.skipped:
        log.warning(UNCHECKED_NOTE, budget.skipped, budget.seconds)
    for (_, row), result, correct in zip(batch.iterrows(), results, verdicts, strict=True):
        tokens = [c.completion_tokens for c in result.completions]
        rows.append(
            {
                "id": str(row["id"]),
                "solve_rate": correct / cfg.k,
                "n_correct": int(correct),
                "k": cfg.k,
                "mean_completion_tokens": float(np.mean(tokens)),
                "truncated": float(
                    np.mean([c.finish_reason == "length" for c in result.completions])
                ),
            }
        )
    return rows


def run_batches(
    frame: pd.DataFrame,
    batches: Sequence[Batch],
    backend: GenerationBackend,
    cfg: ProbeConfig,
    prompt: PromptConfig,
    journal: Journal,
    name: str,
    on_batch: Callable[[int], None] | None = None,
) -> dict[int, pd.DataFrame]:
    """Probe ``batches`` of ``frame`` with one backend, saving each to ``journal`` as it ends.
    The rows are kept as columns: as Python records they would take six times the memory."""
    out: dict[int, pd.DataFrame] = {}
    with journal.writer(name) as append:
        for batch in batches:
            rows = score_batch(
                frame.iloc[batch.start : batch.stop],
                backend,
                cfg,
                prompt,
                unit_seed(cfg.seed, "probe", batch.index),
            )
            append(batch.index, rows)
            out[batch.index] = pd.DataFrame(rows, columns=PROBE_COLUMNS)
            if on_batch is not None:
                on_batch(len(rows))
    return out


def _assemble(frame: pd.DataFrame, done: dict[int, pd.DataFrame]) -> pd.DataFrame:
    parts = [done[index] for index in sorted(done)]
    probed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PROBE_COLUMNS)
    return frame[["id"]].merge(probed, on="id", how="left")


def _todo(
    frame: pd.DataFrame, cfg: ProbeConfig, journal: Journal
) -> tuple[list[Batch], dict[int, pd.DataFrame]]:
    done = {i: pd.DataFrame(rows, columns=PROBE_COLUMNS) for i, rows in journal.done().items()}
    batches = plan_batches(len(frame), cfg.batch_questions)
    return [b for b in batches if b.index not in done], done


def probe_with_model(
    frame: pd.DataFrame,
    backend: GenerationBackend,
    cfg: ProbeConfig,
    prompt: PromptConfig,
    model_name: str,
    progress_dir: Path | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Solve rate and mean completion length per question with one backend, in this process;
    resumable through ``progress_dir``. ``on_batch(done, total)`` follows each batch."""
    journal = Journal(progress_dir, fingerprint(frame, cfg, prompt, model_name))
    todo, done = _todo(frame, cfg, journal)
    count = sum(len(rows) for rows in done.values())
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("probing", total=len(frame), completed=count)

        def advance(rows: int) -> None:
            nonlocal count
            count += rows
            bar.advance(task, rows)
            if on_batch is not None:
                on_batch(count, len(frame))

        done |= run_batches(frame, todo, backend, cfg, prompt, journal, "probe", advance)
    return _assemble(frame, done)


@dataclass(frozen=True)
class Shard:
    """What one worker probes: its batches of ``frame`` (only their rows travel), with what it
    needs to load the model once and to save its progress."""

    frame: pd.DataFrame
    batches: tuple[Batch, ...]
    generation: GenerationConfig
    cfg: ProbeConfig
    prompt: PromptConfig
    progress_dir: Path | None
    fingerprint: str
    name: str


@dataclass
class ShardResult:
    rows: dict[int, pd.DataFrame]
    seconds: float
    peak_rss_mib: float
    pid: int


def probe_shard(shard: Shard) -> ShardResult:
    """Load the probe model once and probe the shard's batches (on whichever worker)."""
    from sparft.generation import make_backend, progress_bar

    start = time.perf_counter()
    journal = Journal(shard.progress_dir, shard.fingerprint)
    total = sum(b.stop - b.start for b in shard.batches)
    with (
        make_backend(shard.generation) as backend,
        progress_bar(sys.stderr.isatty(), total, f"probing ({shard.name})") as advance,
    ):
        rows = run_batches(
            shard.frame,
            shard.batches,
            backend,
            shard.cfg,
            shard.prompt,
            journal,
            shard.name,
            advance,
        )
    return ShardResult(rows, time.perf_counter() - start, peak_rss_mib(), os.getpid())


@dataclass
class ProbeRun:
    """What ``probe_sharded`` did: the rows, each shard's account, the questions resumed."""

    probed: pd.DataFrame
    shards: list[ShardResult]
    resumed: int


def probe_sharded(
    frame: pd.DataFrame,
    generation: GenerationConfig,
    cfg: ProbeConfig,
    prompt: PromptConfig,
    progress_dir: Path | None = None,
    shards: int | None = None,
) -> ProbeRun:
    """``probe_with_model`` spread over the current mapper's workers (``sparft.parallel``):
    the unfinished batches dealt into ``shards`` runs (default one per worker), each shard
    loading the model once. The rows are the single-process run's: each batch's sampling
    depends on its index alone."""
    journal = Journal(progress_dir, fingerprint(frame, cfg, prompt, generation.model))
    todo, done = _todo(frame, cfg, journal)
    resumed = sum(len(rows) for rows in done.values())
    runs = deal(todo, shards or workers())
    if Path(generation.model).exists():  # workers may start in another folder
        generation = generation.model_copy(update={"model": str(Path(generation.model).resolve())})
    units = []
    for number, run in enumerate(runs):
        # rows renumbered: each shard carries only the questions it probes
        first, last = run[0].start, run[-1].stop
        moved = tuple(Batch(b.index, b.start - first, b.stop - first) for b in run)
        part = frame.iloc[first:last][["id", "question", "answer"]].reset_index(drop=True)
        name = f"shard{number:03d}-batch{run[0].index:06d}"
        units.append(
            Shard(part, moved, generation, cfg, prompt, progress_dir, journal.fingerprint, name)
        )
    results = map_shards(probe_shard, units, "probe")
    for result in results:
        done |= result.rows
    return ProbeRun(_assemble(frame, done), results, resumed)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def probe_with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Difficulty from the data set's label, min-max scaled to [0, 1] and turned into a solve rate.

    A higher label means harder, so the solve-rate stand-in is ``1 - scaled label``.
    """
    labels = frame["difficulty_label"]
    if labels.isna().any():
        missing = frame.loc[labels.isna(), "id"].iloc[0]
        raise ValueError(f"probe.source=label, but question {missing} has no difficulty_label")
    low, high = labels.min(), labels.max()
    scaled = (labels - low) / (high - low) if high > low else labels * 0.0
    return pd.DataFrame(
        {
            "id": frame["id"],
            "solve_rate": 1.0 - scaled,
            "n_correct": np.nan,
            "k": 0,
            "mean_completion_tokens": np.nan,
            "truncated": np.nan,
        }
    )
