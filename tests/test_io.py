"""Atomic artifact writes: all or nothing, with ordinary file permissions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from sparft.io import atomic_path, write_json, write_parquet


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
