"""Atomic artifact writes: all or nothing, with ordinary file permissions, and no leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sparft.io import atomic_path, write_json, write_parquet

_OUT: dict[str, Any] = {"capture_output": True, "text": True, "check": True}


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = write_json({"rows": 1}, tmp_path / "summary.json")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text('{"rows": ')
        raise RuntimeError("killed halfway")
    assert json.loads(path.read_text()) == {"rows": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_artifacts_get_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        written = [
            write_json({"a": 1}, tmp_path / "a.json"),
            write_parquet(pd.DataFrame({"id": ["q1"]}), tmp_path / "sub" / "a.parquet"),
        ]
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in written] == [0o644, 0o644]


def test_next_write_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    dead_pid = int(dead.stdout)
    path = tmp_path / "summary.json"
    left = tmp_path / f".summary.json.{dead_pid}-0123.tmp"  # a killed writer's, a while ago
    young = tmp_path / f".summary.json.{dead_pid}-4567.tmp"  # maybe a writer on another host
    live = tmp_path / f".summary.json.{os.getpid()}-89ab.tmp"  # a writer still at work
    other = tmp_path / f".other.json.{dead_pid}-cdef.tmp"  # another artifact's
    for tmp in (left, young, live, other):
        tmp.write_text("{")
    an_hour_ago = time.time() - 3600
    for tmp in (left, live, other):
        os.utime(tmp, (an_hour_ago, an_hour_ago))
    write_json({"rows": 1}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, young.name, live.name, other.name]
    )
