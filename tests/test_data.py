"""Loading and normalising data sets: schema, errors that name file/row/field, dedup, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_DATA as SHARED
from conftest import needs_shared

from sparft.data import (
    COLUMNS,
    BadRowError,
    DataConfig,
    DataError,
    FieldMap,
    load_dataset,
    parse_spec,
    question_id,
    read_dataset,
)
from sparft.io import write_parquet


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_jsonl_schema_and_dedup(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"q": "What is 1+1?", "a": 2, "level": "Level 3"},
            {"q": "What  is 1+1? ", "a": 2, "level": 1},
            {"q": "What is 2+2?", "a": "4", "level": 2.0},
        ],
    )
    cfg = DataConfig(spec=str(path), fields=FieldMap(question="q", answer="a", difficulty="level"))
    frame, report = load_dataset(cfg)
    assert list(frame.columns) == COLUMNS
    assert list(frame["answer"]) == ["2", "4"]
    assert list(frame["difficulty_label"]) == [3.0, 2.0]
    assert report.rows_read == 3 and report.rows_kept == 2
    assert report.dropped == {"duplicate question": 1}
    assert frame["id"].iloc[0] == question_id("What is 1+1?") == question_id(" What is  1+1?")
    assert json.loads(frame["meta"].iloc[0]) == {"level": "Level 3"}


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"question": "  ", "answer": "1"}, "question", "empty"),
        ({"question": "Q?"}, "answer", "missing"),
        ({"question": ["Q?"], "answer": "1"}, "question", "expected a string, got list"),
        ({"question": "Q?", "answer": {"x": 1}}, "answer", "expected a string or number, got dict"),
        ({"question": "Q?", "answer": True}, "answer", "expected a string or number, got bool"),
    ],
)
def test_bad_row_names_file_row_and_field(
    tmp_path: Path, row: dict[str, object], field: str, reason: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok?", "answer": "1"}, row])
    with pytest.raises(BadRowError) as err:
        load_dataset(DataConfig(spec=str(path)))
    assert (err.value.row, err.value.field, err.value.reason) == (2, field, reason)
    assert str(path) in str(err.value) and "row 2" in str(err.value)


def test_skip_bad_rows_reports_each(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"question": "a?", "answer": "1"}, {"question": "", "answer": "1"}, {"question": "b?"}],
    )
    frame, report = load_dataset(DataConfig(spec=str(path), on_bad_rows="skip"))
    assert len(frame) == 1
    assert report.dropped == {"bad question: empty": 1, "bad answer: missing": 1}
    assert [line.split(": ", 1)[1] for line in report.bad_rows] == [
        "row 2, field 'question': empty",
        "row 3, field 'answer': missing",
    ]


def test_malformed_json_line_and_empty_set(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "a?", "answer": "1"}\n{"question": \n')
    with pytest.raises(DataError, match=r"broken.jsonl: row 2: invalid JSON"):
        load_dataset(DataConfig(spec=str(path)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"no rows \(the file or split is empty\)"):
        load_dataset(DataConfig(spec=str(empty)))


def test_csv_parquet_json_and_delimiter(tmp_path: Path) -> None:
    rows = [{"question": "x?", "answer": "so 3 #### 3"}, {"question": "y?", "answer": "#### 1,000"}]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    fields = FieldMap(answer_delimiter="####")
    for name in ("d.csv", "d.parquet", "d.json"):
        frame, _ = load_dataset(DataConfig(spec=str(tmp_path / name), fields=fields))
        assert list(frame["answer"]) == ["3", "1,000"], name
    with pytest.raises(BadRowError, match="row 1, field 'answer': no '##!' marker"):
        load_dataset(
            DataConfig(spec=str(tmp_path / "d.csv"), fields=FieldMap(answer_delimiter="##!"))
        )


def test_unknown_builtin_split_and_spec_parsing(tmp_path: Path) -> None:
    assert parse_spec("gsm8k:train", None) == ("gsm8k", "train")
    assert parse_spec("gsm8k:train", "test") == ("gsm8k", "test")
    with pytest.raises(DataError, match=r"unknown split 'dev' \(allowed: train, test\)"):
        load_dataset(DataConfig(spec="gsm8k:dev"))


def test_hub_name_fails_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="neither a built-in data set"):
        load_dataset(DataConfig(spec="no-such-owner/no-such-dataset"))


def test_arithmetic_is_loadable_and_roundtrips(tmp_path: Path) -> None:
    from sparft.arithmetic import ArithmeticConfig

    frame, report = load_dataset(DataConfig(), ArithmeticConfig(per_grade=5))
    assert report.rows_kept == 40 and not report.dropped
    assert sorted(frame["difficulty_label"].unique()) == [1, 2, 3, 4, 5, 6, 7, 8]
    out = write_parquet(frame, tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(read_dataset(out), frame)
    with pytest.raises(DataError, match="missing columns"):
        read_dataset(write_parquet(frame.drop(columns=["meta"]), tmp_path / "b.parquet"))


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize(
    ("spec", "count"),
    [
        ("gsm8k:test", 1319),
        ("gsm8k:train", 7473),
        ("math500", 500),
        ("aime24", 30),
        ("aime25", 30),
        ("deepscaler:math", None),
        ("deepscaler:aime", None),
        ("deepscaler:test-amc", None),
    ],
)
def test_real_builtin_sets(spec: str, count: int | None) -> None:
    skip = "skip" if spec == "deepscaler:math" else "error"
    frame, report = load_dataset(DataConfig(spec=spec, shared_dir=str(SHARED), on_bad_rows=skip))
    assert frame["question"].str.len().min() > 0 and frame["answer"].str.len().min() > 0
    assert frame["id"].is_unique
    assert report.rows_kept + sum(report.dropped.values()) == report.rows_read
    if count is not None:
        assert report.rows_read == count
    if spec == "gsm8k:test":
        assert frame["answer"].iloc[0] == "18"  # Janet's ducks: text after '####'
    if spec == "aime24":
        assert "025" in set(frame["answer"])
    if spec == "deepscaler:math":
        assert report.rows_read == 7474
        # Four rows of the real file have no answer (null or empty): skipped and reported.
        assert sum(v for k, v in report.dropped.items() if k.startswith("bad answer")) == 4
        with pytest.raises(BadRowError, match=r"math.json: row 887, field 'answer': missing"):
            load_dataset(DataConfig(spec=spec, shared_dir=str(SHARED)))
        assert set(frame["difficulty_label"].dropna().unique()) <= {0, 1, 2, 3, 4, 5}
    if spec == "math500":
        assert frame["difficulty_label"].between(1, 5).all()
