"""Load any question/answer data set into one schema, with row-level errors that say where.

Schema (one row a question): ``id`` (content hash of the question, stable across sources and
runs), ``question``, ``answer`` (gold final answer as a string), ``source``,
``difficulty_label`` (float or null), ``meta`` (JSON object as a string: solution and any other
field of the source row).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from sparft.arithmetic import ArithmeticConfig
from sparft.arithmetic import generate as generate_arithmetic

COLUMNS = ["id", "question", "answer", "source", "difficulty_label", "meta"]


class FieldMap(BaseModel):
    """Which source field holds each schema field."""

    model_config = ConfigDict(extra="forbid")

    question: str = "question"
    answer: str = "answer"
    solution: str | None = Field(None, description="Worked solution, kept in meta for `verify`.")
    difficulty: str | None = Field(None, description="Numeric difficulty label, if any.")
    answer_delimiter: str | None = Field(
        None,
        description="Take the answer after the last occurrence of this marker (GSM8K: '####').",
    )


class DataConfig(BaseModel):
    """The ``data`` section: which training set the pipeline loads and how strictly."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(
        "arithmetic",
        description="Built-in name (arithmetic, gsm8k, math500, aime24, aime25, deepscaler), "
        "a local jsonl/json/parquet/csv file, or a Hugging Face dataset name.",
    )
    split: str | None = Field(None, description="Split of a built-in or Hugging Face data set.")
    subset: str | None = Field(None, description="Hugging Face dataset configuration name.")
    fields: FieldMap | None = Field(None, description="Field mapping for files and hub data sets.")
    on_bad_rows: Literal["error", "skip"] = "error"
    limit: int | None = Field(None, ge=1, description="Keep at most this many rows (after dedup).")
    max_question_chars: int | None = Field(
        8000,
        ge=1,
        description="Longest question accepted, in characters (longest in the shared "
        "benchmarks: 5154); a longer one is a bad row (on_bad_rows). null: no limit.",
    )
    shared_dir: str = Field(
        "../shared/data",
        description="Folder holding the benchmark files; env SPARFT_SHARED_DATA overrides.",
    )
    out: str = Field("data/train.parquet", description="Where the loaded set is written.")


@dataclass(frozen=True)
class BuiltinSource:
    files: dict[str, str]
    fields: FieldMap
    default_split: str


BUILTINS: dict[str, BuiltinSource] = {
    "gsm8k": BuiltinSource(
        {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
        FieldMap(question="question", answer="answer", solution="answer", answer_delimiter="####"),
        "test",
    ),
    "math500": BuiltinSource(
        {"test": "math500/test.jsonl"},
        FieldMap(question="problem", answer="answer", solution="solution", difficulty="level"),
        "test",
    ),
    "aime24": BuiltinSource(
        {"test": "aime24/test.jsonl"},
        FieldMap(question="problem", answer="answer", solution="solution"),
        "test",
    ),
    "aime25": BuiltinSource({"test": "aime25/test.jsonl"}, FieldMap(question="problem"), "test"),
    "deepscaler": BuiltinSource(
        {
            "math": "deepscaler/train/math.json",
            "aime": "deepscaler/train/aime.json",
            "test-math": "deepscaler/test/math.json",
            "test-aime": "deepscaler/test/aime.json",
            "test-amc": "deepscaler/test/amc.json",
        },
        FieldMap(question="problem", solution="solution", difficulty="difficulty"),
        "math",
    ),
}


class DataError(ValueError):
    """Input that cannot be loaded; the message names the file, row and field."""


class BadRowError(DataError):
    def __init__(self, where: str, row: int, field_name: str, reason: str) -> None:
        self.where, self.row, self.field, self.reason = where, row, field_name, reason
        super().__init__(f"{where}: row {row}, field '{field_name}': {reason}")


@dataclass
class LoadReport:
    """What happened to every row read: printed by the CLI, saved beside the artifact."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    bad_rows: list[str] = field(default_factory=list)
    conflicting_duplicates: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
            "bad_rows": self.bad_rows,
            "conflicting_duplicates": self.conflicting_duplicates,
        }


def shared_data_dir(configured: str | Path = "../shared/data") -> Path:
    return Path(os.environ.get("SPARFT_SHARED_DATA", configured)).expanduser()


def question_id(question: str) -> str:
    """Stable id: hash of the whitespace-normalised question, so reloads and reorders agree."""
    return hashlib.sha256(normalise_question(question).encode()).hexdigest()[:16]


def normalise_question(question: str) -> str:
    return " ".join(question.split())


def parse_spec(spec: str, split: str | None) -> tuple[str, str | None]:
    """Split ``name:split`` (``gsm8k:test``); a path with a colon is left whole."""
    if ":" in spec and not Path(spec).exists() and "://" not in spec:
        name, _, spec_split = spec.partition(":")
        return name, split or spec_split
    return spec, split


BINARY_PROBE = 8192  # bytes looked at for a NUL: text files have none


def read_text(path: Path, unit: str = "line") -> str:
    """The file as UTF-8 text (a BOM allowed), or a ``DataError`` that says where it is not:
    a binary file, or the ``unit`` (row of a jsonl, line otherwise) and column of the first
    byte that is not UTF-8."""
    data = path.read_bytes()
    nul = data.find(b"\x00", 0, BINARY_PROBE)
    if nul >= 0:
        raise DataError(
            f"{path}: a binary file, not {path.suffix.lstrip('.')} text (NUL byte at offset {nul})"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}: {unit} {line}: not UTF-8 (byte 0x{data[err.start]:02x} at column "
            f"{column}); re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from err


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based row number, record) from jsonl/json/parquet/csv; errors name the row."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if suffix == ".jsonl":
        # "\n" only: splitlines() would also cut at U+2028 and others, legal inside a JSON string
        for line_no, line in enumerate(read_text(path, "row").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path}: row {line_no}: invalid JSON at column {err.colno} ({err.msg})"
                ) from err
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}: row {line_no}: expected a JSON object, got {_json_kind(record)}"
                )
            yield line_no, record
    elif suffix == ".json":
        text = read_text(path)
        if not text.strip():
            raise DataError(f"{path}: the file is empty")
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}: invalid JSON at line {err.lineno}, column {err.colno} ({err.msg})"
            ) from err
        if isinstance(payload, dict):
            lists = [v for v in payload.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataError(f"{path}: expected a list of records or an object with one list")
            payload = lists[0]
        if not isinstance(payload, list):
            raise DataError(f"{path}: expected a list of records, got {_json_kind(payload)}")
        for index, record in enumerate(payload, start=1):
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}: row {index}: expected a JSON object, got {_json_kind(record)}"
                )
            yield index, record
    elif suffix in {".parquet", ".csv"}:
        frame = _read_table(path, suffix)
        for index, record in enumerate(frame.to_dict(orient="records"), start=1):
            yield index, {k: _none_if_nan(v) for k, v in record.items()}
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use jsonl, json, parquet, csv)")


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _read_table(path: Path, suffix: str) -> pd.DataFrame:
    """A parquet or csv file as a frame; what pandas or pyarrow cannot read, as a DataError."""
    import io

    import pyarrow as pa

    if suffix == ".csv":
        text = read_text(path)
        if not text.strip():
            raise DataError(f"{path}: the file is empty")
        try:
            return pd.read_csv(io.StringIO(text))
        except pd.errors.ParserError as err:
            raise DataError(f"{path}: not valid CSV ({err})") from err
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})") from err


def _none_if_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _answer_text(value: Any, where: str, row: int, name: str, delimiter: str | None) -> str:
    if value is None:
        raise BadRowError(where, row, name, "missing")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRowError(
            where, row, name, f"expected a string or number, got {type(value).__name__}"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRowError(where, row, name, f"not a finite number: {value}")
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        text = str(value)
    if delimiter is not None:
        if delimiter not in text:
            raise BadRowError(where, row, name, f"no '{delimiter}' marker before the final answer")
        text = text.rsplit(delimiter, 1)[1]
    text = text.strip()
    if not text:
        raise BadRowError(where, row, name, "empty")
    return text


def normalise_row(
    record: dict[str, Any],
    row: int,
    where: str,
    source: str,
    fields: FieldMap,
    max_chars: int | None = None,
) -> dict[str, Any]:
    """Map one source record onto the schema or raise ``BadRowError``."""
    question = record.get(fields.question)
    if question is None:
        raise BadRowError(where, row, fields.question, "missing")
    if not isinstance(question, str):
        raise BadRowError(
            where, row, fields.question, f"expected a string, got {type(question).__name__}"
        )
    if not question.strip():
        raise BadRowError(where, row, fields.question, "empty")
    if max_chars is not None and len(question) > max_chars:
        raise BadRowError(
            where,
            row,
            fields.question,
            f"{len(question)} characters, over data.max_question_chars={max_chars}",
        )
    answer = _answer_text(
        record.get(fields.answer), where, row, fields.answer, fields.answer_delimiter
    )
    difficulty: float | None = None
    if fields.difficulty is not None and record.get(fields.difficulty) is not None:
        raw = record[fields.difficulty]
        try:
            difficulty = float(raw.removeprefix("Level ") if isinstance(raw, str) else raw)
        except (TypeError, ValueError) as err:
            raise BadRowError(where, row, fields.difficulty, f"not a number: {raw!r}") from err
        if not math.isfinite(difficulty):
            raise BadRowError(where, row, fields.difficulty, f"not a finite number: {raw!r}")
    meta = {k: v for k, v in record.items() if k not in {fields.question, fields.answer}}
    if fields.solution is not None and record.get(fields.solution) is not None:
        meta["solution"] = record[fields.solution]
    return {
        "id": question_id(question),
        "question": question.strip(),
        "answer": answer,
        "source": source,
        "difficulty_label": difficulty,
        "meta": json.dumps(meta, sort_keys=True, default=str),
    }


def build_frame(
    records: Iterable[tuple[int, dict[str, Any]]],
    where: str,
    source: str,
    fields: FieldMap,
    on_bad_rows: Literal["error", "skip"] = "error",
    limit: int | None = None,
    max_chars: int | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Normalise, validate and de-duplicate records; duplicates keep their first occurrence."""
    report = LoadReport(source=where)
    rows: list[dict[str, Any]] = []
    answers: dict[str, str] = {}
    for row_number, record in records:
        report.rows_read += 1
        try:
            row = normalise_row(record, row_number, where, source, fields, max_chars)
        except BadRowError as err:
            if on_bad_rows == "error":
                raise
            report.dropped[f"bad {err.field}: {err.reason}"] += 1
            report.bad_rows.append(str(err))
            continue
        if row["id"] in answers:
            report.dropped["duplicate question"] += 1
            if answers[row["id"]] != row["answer"]:
                report.conflicting_duplicates += 1
            continue
        if limit is not None and len(rows) >= limit:
            report.dropped["over limit"] += 1
            continue
        answers[row["id"]] = row["answer"]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["difficulty_label"] = frame["difficulty_label"].astype("float64")
    report.rows_kept = len(frame)
    if report.rows_read == 0:
        raise DataError(f"{where}: no rows (the file or split is empty)")
    if frame.empty:
        why = "; ".join(f"{n} {reason}" for reason, n in report.dropped.items())
        raise DataError(f"{where}: no usable rows: {report.rows_read} read, dropped: {why}")
    return frame, report


def _hf_records(
    name: str, subset: str | None, split: str | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a Hugging Face hub data set (online use; offline mode makes this fail clearly)."""
    import datasets

    try:
        loaded = datasets.load_dataset(name, subset, split=split or "train")
    except Exception as err:
        raise DataError(
            f"'{name}' is neither a built-in data set ({', '.join(['arithmetic', *BUILTINS])}), "
            f"nor an existing file, nor a loadable Hugging Face dataset: {err}"
        ) from err
    for index, record in enumerate(loaded, start=1):
        yield index, dict(record)


def load_dataset(
    cfg: DataConfig, arithmetic: ArithmeticConfig | None = None
) -> tuple[pd.DataFrame, LoadReport]:
    """Load ``cfg.spec`` into the schema; ``arithmetic`` configures the generated default set."""
    name, split = parse_spec(cfg.spec, cfg.split)
    if name == "arithmetic":
        generated = generate_arithmetic(arithmetic or ArithmeticConfig())
        records = enumerate(generated.to_dict(orient="records"), start=1)
        return build_frame(
            records,
            name,
            name,
            FieldMap(solution="solution", difficulty="grade"),
            cfg.on_bad_rows,
            cfg.limit,
            cfg.max_question_chars,
        )
    if name in BUILTINS:
        builtin = BUILTINS[name]
        split = split or builtin.default_split
        if split not in builtin.files:
            raise DataError(
                f"{name}: unknown split '{split}' (allowed: {', '.join(builtin.files)})"
            )
        path = shared_data_dir(cfg.shared_dir) / builtin.files[split]
        return build_frame(
            read_records(path),
            str(path),
            f"{name}:{split}",
            cfg.fields or builtin.fields,
            cfg.on_bad_rows,
            cfg.limit,
            cfg.max_question_chars,
        )
    path = Path(name).expanduser()
    if path.exists():
        return build_frame(
            read_records(path),
            str(path),
            path.stem,
            cfg.fields or FieldMap(),
            cfg.on_bad_rows,
            cfg.limit,
            cfg.max_question_chars,
        )
    source = f"{name}:{split}" if split else name
    return build_frame(
        _hf_records(name, cfg.subset, split),
        source,
        source,
        cfg.fields or FieldMap(),
        cfg.on_bad_rows,
        cfg.limit,
    )


def read_dataset(path: str | Path) -> pd.DataFrame:
    """Read a schema parquet written by ``sparft data load``, checking its columns."""
    frame = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a sparft data set, missing columns {missing}")
    return frame
