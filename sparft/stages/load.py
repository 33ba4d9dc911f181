"""Stage ``load``: the configured training set, normalised, to ``data.out``
(``data/train.parquet``), and a report of what was read, kept and dropped."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparft.stages.stage import Report, Stage

if TYPE_CHECKING:
    from sparft.config import Params

REPORT = Path("data/load_report.json")


def run(params: Params) -> dict[str, Any]:
    from sparft.data import load_dataset
    from sparft.io import write_json, write_parquet

    frame, report = load_dataset(params.data, params.arithmetic)
    write_parquet(frame, params.data.out)
    summary = report.as_dict()
    write_json(summary, REPORT)
    return summary


def report(summary: dict[str, Any], params: Params) -> list[Report]:
    rows = [("read", str(summary["rows_read"])), ("kept", str(summary["rows_kept"]))]
    rows += [(f"dropped: {k}", str(n)) for k, n in sorted(summary["dropped"].items())]
    if summary["conflicting_duplicates"]:
        rows.append(("duplicates with a different answer", str(summary["conflicting_duplicates"])))
    bad = summary["bad_rows"]
    rows += [("skipped", str(line)) for line in bad[:20]]
    if len(bad) > 20:
        rows.append(("skipped", f"... and {len(bad) - 20} more (see {REPORT})"))
    return [Report(f"loaded {summary['source']} into {params.data.out}", rows, ("rows", "count"))]


STAGE = Stage(
    name="load",
    module=__name__,
    description="load and normalise the training set",
    outs=("${data.out}",),
    metrics=(str(REPORT),),
    params=("data", "arithmetic"),
    mlflow=(str(REPORT),),
    report=report,
)
