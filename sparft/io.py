"""Atomic artifact writes: a reader never sees half a file where the next stage looks."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

LEFTOVER_AGE_S = 60.0


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same folder so ``os.replace`` is atomic on POSIX; on any
    error it is removed and an existing ``path`` stays untouched. The writer creates it, so it
    gets the umask's permissions like any other file (``mkstemp`` would leave it owner-only).
    Its name carries the writer's pid, so the next successful write of ``path`` removes what a
    killed writer left (``sweep_leftovers``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sweep_leftovers(target)


def sweep_leftovers(target: Path, min_age_s: float = LEFTOVER_AGE_S) -> list[Path]:
    """Remove ``target``'s temporary siblings that a killed writer left: their pid is not a
    live process here and they are older than ``min_age_s`` (a writer on another host sharing
    the folder gets that long). Returns what was removed."""
    removed = []
    now = time.time()
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 :].split("-", 1)[0]
        try:
            old = now - tmp.stat().st_mtime > min_age_s
        except FileNotFoundError:
            continue
        if old and pid.isdigit() and not psutil.pid_exists(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime, inode): a stage's outputs are hashed
    once per process although they are checked as outputs and then keyed as the next inputs."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def path_digest(path: Path) -> str | None:
    """Digest of a file or of a folder's files (names and contents); None when absent."""
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
        return "dir:" + digest.hexdigest()
    return None
