"""Stage ``load``: the configured training set, normalised, to ``data/train.parquet``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparft.config import Params
from sparft.data import load_dataset
from sparft.io import write_json, write_parquet

REPORT = Path("data/load_report.json")
ARTIFACTS = (REPORT,)


def run(params: Params) -> dict[str, Any]:
    frame, report = load_dataset(params.data, params.arithmetic)
    write_parquet(frame, params.data.out)
    summary = report.as_dict()
    write_json(summary, REPORT)
    return summary
