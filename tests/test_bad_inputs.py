"""Bad input, one test per kind: the error names the file, the row and the field (or the
params key), the command exits with code 2, and the artifact already written stays as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sparft.cli import app

runner = CliRunner()
GOOD = {"question": "What is 1 + 1?", "answer": "2"}


def _jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


# name: (file name, its bytes, what the message must hold)
CASES: dict[str, tuple[str, Callable[[], bytes], list[str]]] = {
    "binary file": ("data.jsonl", lambda: bytes(range(256)) * 8, ["a binary file", "offset 0"]),
    "wrong encoding": (
        "data.jsonl",
        lambda: (
            _jsonl(GOOD)
            + json.dumps({"question": "Café?", "answer": "1"})
            .encode()
            .replace(b"\\u00e9", "é".encode("latin-1"))
        ),
        ["row 2", "not UTF-8", "byte 0xe9", "iconv"],
    ),
    "truncated jsonl": (
        "data.jsonl",
        lambda: _jsonl(GOOD) + b'{"question": "2 + 2?", "ans',
        ["row 2", "invalid JSON at column"],
    ),
    "json array of non-objects": ("data.json", lambda: b"[1, 2, 3]", ["row 1", "got a number"]),
    "json not a list": ("data.json", lambda: b'"just text"', ["expected a list of records"]),
    "missing field": (
        "data.jsonl",
        lambda: _jsonl(GOOD, {"question": "3 + 3?"}),
        ["row 2", "field 'answer'", "missing"],
    ),
    "mistyped field": (
        "data.jsonl",
        lambda: _jsonl({"question": 7, "answer": "1"}),
        ["row 1", "field 'question'", "expected a string, got int"],
    ),
    "list answer": (
        "data.jsonl",
        lambda: _jsonl(GOOD, {"question": "Roots?", "answer": [1, 2]}),
        ["row 2", "field 'answer'", "got list"],
    ),
    "object answer": (
        "data.jsonl",
        lambda: _jsonl({"question": "Roots?", "answer": {"x": 1}}),
        ["row 1", "field 'answer'", "got dict"],
    ),
    "empty field": (
        "data.jsonl",
        lambda: _jsonl(GOOD, {"question": "", "answer": "1"}),
        ["row 2", "field 'question'", "empty"],
    ),
    "whitespace-only field": (
        "data.jsonl",
        lambda: _jsonl({"question": " \t\n ", "answer": "1"}),
        ["row 1", "field 'question'", "empty"],
    ),
    "question over max_question_chars": (
        "data.jsonl",
        lambda: _jsonl(GOOD, {"question": "x" * 100_000, "answer": "1"}),
        ["row 2", "field 'question'", "100000 characters", "data.max_question_chars=8000"],
    ),
    "empty file": ("data.jsonl", lambda: b"", ["no rows", "empty"]),
    "empty csv": ("data.csv", lambda: b"", ["the file is empty"]),
    "corrupt parquet": ("data.parquet", lambda: b"PAR1 not really", ["not a readable parquet"]),
    "unsupported type": ("data.xlsx", lambda: b"PK", ["unsupported file type '.xlsx'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_located_and_the_old_artifact_kept(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name, content, expected = CASES[case]
    path = tmp_path / name
    path.write_bytes(content())
    out = tmp_path / "train.parquet"
    pd.DataFrame({"question": ["kept"]}).to_parquet(out)
    before = out.read_bytes()
    result = runner.invoke(app, ["data", "load", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert str(path) in message
    for part in expected:
        assert part in message, message
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "train.parquet"])


def test_long_question_skipped_under_skip(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(_jsonl(GOOD, {"question": "y" * 9000, "answer": "1"}))
    out = tmp_path / "train.parquet"
    result = runner.invoke(
        app, ["data", "load", str(path), "--out", str(out), "--on-bad-rows", "skip"]
    )
    assert result.exit_code == 0, result.output
    assert list(pd.read_parquet(out)["question"]) == [GOOD["question"]]
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["bad_rows"] == [
        f"{path}: row 2, field 'question': 9000 characters, over data.max_question_chars=8000"
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["cluster.method=spectral"], ["cluster.method", "'kmeans' or 'hdbscan'"]),
        (["bandit.algorithm=epsilon"], ["bandit.algorithm", "'thompson', 'exp3' or 'ucb1'"]),
        (["train.curriculum=magic"], ["train.curriculum", "unknown curriculum 'magic'"]),
        (["select.budget=0"], ["select.budget", "greater than or equal to 1"]),
        (["cluster.k=0"], ["cluster.k", "greater than or equal to 1"]),
        (["data.max_question_chars=0"], ["data.max_question_chars"]),
        (["probe.k=many"], ["probe.k"]),
        (["nosuchsection.key=1"], ["nosuchsection"]),
    ],
)
def test_invalid_params_name_the_key(
    overrides: list[str], expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [arg for o in overrides for arg in ("--set", o)]
    result = runner.invoke(app, ["config", "show", *args])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for part in expected:
        assert part in message, message


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with its stages up to ``select`` run (label difficulty: no probe model)."""
    import os

    root = tmp_path_factory.mktemp("project")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for name in ("load", "embed", "reduce", "probe", "cluster", "select"):
            result = runner.invoke(app, ["stage", name, *_TINY])
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    return root


_TINY = [
    "--set", "arithmetic.per_grade=3", "--set", "probe.source=label",
    "--set", "cluster.k=3", "--set", "select.budget=6", "--set", "tracking.enabled=false",
]  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "override", "expected", "kept"),
    [
        ("cluster", ["cluster.k=100"], ["cluster.k=100 but only 24 questions"], "clusters.parquet"),
        (
            "cluster",
            ["cluster.method=hdbscan", "cluster.min_cluster_size=50"],
            ["cluster.min_cluster_size=50 but only 24"],
            "clusters.parquet",
        ),
        (
            "select",
            ["select.budget=2"],
            ["select.budget=2 is smaller than the number of clusters (3)"],
            "subset.parquet",
        ),
    ],
)
def test_params_the_data_cannot_meet(
    clustered: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    override: list[str],
    expected: list[str],
    kept: str,
) -> None:
    monkeypatch.chdir(clustered)
    before = (clustered / "data" / kept).read_bytes()
    args = [arg for o in override for arg in ("--set", o)]
    result = runner.invoke(app, ["stage", stage, *_TINY, *args])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for part in expected:
        assert part in message, message
    assert (clustered / "data" / kept).read_bytes() == before


def test_budget_over_the_data_keeps_everything_and_says_so(
    clustered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an error: a budget of the whole set is how plain GRPO on every question is run."""
    monkeypatch.chdir(clustered)
    result = runner.invoke(app, ["stage", "select", *_TINY, "--set", "select.budget=1000"])
    assert result.exit_code == 0, result.output
    summary = json.loads((clustered / "data" / "select_summary.json").read_text())
    assert summary["selected"] == 24
    assert any("select.budget=1000 >= 24" in note for note in summary["notes"])


def test_jsonl_rows_are_lines_only_at_newlines(tmp_path: Path) -> None:
    """A raw line separator (U+2028) or next-line mark inside a JSON string is not a new row; CRLF
    files and a UTF-8 BOM load."""
    from sparft.data import DataConfig, load_dataset

    path = tmp_path / "data.jsonl"
    text = (
        '{"question": "a\u2028b\x85c\u2029?", "answer": "1"}\r\n'
        '{"question": "d?", "answer": "2"}\r\n'
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    frame, _ = load_dataset(DataConfig(spec=str(path)))
    assert list(frame["question"]) == ["a\u2028b\x85c\u2029?", "d?"]


def test_unknown_model_names_the_key(clustered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model name that is no preset, folder or cached hub id, offline: the error names the
    params key that holds it; the probe written before stays."""
    monkeypatch.chdir(clustered)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = (clustered / "data/probe.parquet").read_bytes()
    overrides = ["--set", "probe.source=model", "--set", "generation.model=smollm-999m"]
    result = runner.invoke(app, ["stage", "probe", *_TINY, *overrides])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "generation.model: model 'smollm-999m' is not a preset" in message, message
    assert (clustered / "data/probe.parquet").read_bytes() == before
