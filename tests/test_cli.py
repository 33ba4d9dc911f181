"""The command line, through typer's runner: config, overrides, data load, verify, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sparft.cli import app
from sparft.stages import STAGES
from sparft.testing import tiny_overrides

runner = CliRunner()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_help_on_every_command() -> None:
    for args in (
        [],
        ["config", "show"],
        ["data", "load"],
        ["verify"],
        ["models", "list"],
        ["models", "prepare"],
        ["generate"],
        ["stage"],
        ["run"],
        ["serve"],
        ["summarise-runs"],
        ["simulate"],
        ["compare"],
        ["eval"],
    ):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_config_show_with_overrides() -> None:
    result = runner.invoke(app, ["config", "show", "--set", "probe.k=7", "--set", "data.limit=5"])
    assert result.exit_code == 0, result.output
    assert "k: 7" in result.output and "limit: 5" in result.output


def test_bad_override_exits_with_message() -> None:
    result = runner.invoke(app, ["config", "show", "--set", "probe.kk=7"])
    assert result.exit_code == 2
    assert "probe.kk: unknown key" in result.output and "allowed:" in result.output


def test_data_load_writes_schema_and_report(in_tmp: Path) -> None:
    source = in_tmp / "q.jsonl"
    source.write_text(
        json.dumps({"problem": "1+1?", "final": "2"})
        + "\n"
        + json.dumps({"problem": "", "final": "3"})
        + "\n"
    )
    args = [
        "data",
        "load",
        str(source),
        "--out",
        "out.parquet",
        "--field",
        "question=problem",
        "--field",
        "answer=final",
    ]
    failed = runner.invoke(app, args)
    assert failed.exit_code == 2
    assert "row 2, field 'problem': empty" in failed.output
    assert not (in_tmp / "out.parquet").exists()
    result = runner.invoke(app, [*args, "--on-bad-rows", "skip"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(in_tmp / "out.parquet")
    assert list(frame["answer"]) == ["2"]
    report = json.loads((in_tmp / "out.report.json").read_text())
    assert report["rows_read"] == 2 and report["rows_kept"] == 1


def test_verify_generated_set_and_threshold() -> None:
    result = runner.invoke(
        app, ["verify", "arithmetic", "--set", "arithmetic.per_grade=5", "--min-agreement", "1.0"]
    )
    assert result.exit_code == 0, result.output
    assert "40/40 agree (100.00%)" in result.output


def test_unknown_stage_and_preset() -> None:
    result = runner.invoke(app, ["stage", "nope"])
    assert result.exit_code == 2 and "unknown stage 'nope'" in result.output
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert "smollm2-135m" in listed.output and "minilm" in listed.output


@pytest.mark.slow
def test_run_executes_every_stage(in_tmp: Path, tiny_lm_dir: Path) -> None:
    overrides = [f"generation.model={tiny_lm_dir}", *tiny_overrides()]
    result = runner.invoke(app, ["run", *[a for o in overrides for a in ("--set", o)]])
    assert result.exit_code == 0, result.output
    assert "probe solve rate over 9 questions" in result.output
    subset = pd.read_parquet(in_tmp / "data" / "subset.parquet")
    assert len(subset) == 6 and subset["cluster"].nunique() == 3
    summary = json.loads((in_tmp / "data" / "probe_summary.json").read_text())
    assert set(summary["solve_rate_by_label"]) == {"1", "2", "3"}
    assert (in_tmp / "data" / "plots" / "cluster_map.png").stat().st_size > 0
    assert (in_tmp / "data" / "train" / "model" / "config.json").exists()
    assert (in_tmp / "data" / "plots" / "train_arms.png").stat().st_size > 0

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{in_tmp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sparft").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sparft.kind") == "pipeline"]
    children = {r.data.tags["sparft.stage"]: r for r in runs if r is not parent}
    assert list(children) != [] and set(children) == set(STAGES)
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
    compared = runner.invoke(app, ["summarise-runs"])
    assert compared.exit_code == 0, compared.output
    assert "1 pipeline runs" in compared.output
    old_name = runner.invoke(app, ["compare"])  # the deprecated alias, for one release
    assert old_name.exit_code == 0 and "1 pipeline runs" in old_name.output
    assert "use sparft summarise-runs" in old_name.output
    assert (in_tmp / "data" / "plots" / "compare.png").stat().st_size > 0
