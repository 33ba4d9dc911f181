"""MLflow wiring: flattened params, stage runs nested under a pipeline run, FAILED status on
error, and the comparison of pipeline runs."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sparft.config import Params
from sparft.stages.stage import Stage
from sparft.tracking import flatten, numeric_metrics, pipeline_runs, run_stage, summarise_runs
from sparft.tracking import tracked_run as tracked


@pytest.fixture
def params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Params.model_validate(
        {"tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"}}
    )


def _client(params: Params):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=params.tracking.uri)


def test_flatten_and_numeric_metrics() -> None:
    flat = flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None, "f": {}})
    assert flat == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None", "f": "{}"}
    metrics = numeric_metrics({"x": 1, "ok": True, "s": "text", "n": {"y z": 2.5}})
    assert metrics == {"x": 1.0, "ok": 1.0, "n.y_z": 2.5}


def fake_stage(name: str, fn: Any, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> Stage:
    """A stage whose module is ``fn`` (its ``run``), as a real stage declares one."""
    module = f"fake_stage_{name}"
    monkeypatch.setitem(sys.modules, module, SimpleNamespace(run=fn))
    return Stage(name=name, module=module, description=name, **fields)


def test_stage_runs_nest_under_the_pipeline_run_and_failures_are_marked(
    params: Params, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "summary.txt").write_text("3 rows\n")
    declared = (str(tmp_path / "summary.txt"),)
    load = fake_stage("load", lambda p: {"rows": 3}, monkeypatch, mlflow=declared)
    boom = fake_stage("embed", lambda p: (_ for _ in ()).throw(RuntimeError("boom")), monkeypatch)
    with tracked("pipeline", params, tags={"sparft.kind": "pipeline"}) as parent:
        summary = run_stage(load, params)
        with pytest.raises(RuntimeError, match="boom"):
            run_stage(boom, params)
    assert summary == {"rows": 3}
    client = _client(params)
    runs = {r.data.tags.get("sparft.stage", "pipeline"): r for r in client.search_runs(
        [client.get_experiment_by_name("t").experiment_id])}  # fmt: skip
    assert runs["load"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert runs["load"].data.metrics == {"rows": 3.0}
    assert runs["load"].data.params["train.curriculum"] == "sparft"
    artifacts = {a.path for a in client.list_artifacts(runs["load"].info.run_id, "load")}
    assert artifacts == {"load/summary.txt"}
    assert runs["embed"].info.status == "FAILED"
    assert runs["embed"].data.tags["error"] == "RuntimeError: boom"
    assert runs["pipeline"].info.status == "FINISHED"


def _with(params: Params, section: str, **values: object) -> Params:
    return params.model_copy(update={section: getattr(params, section).model_copy(update=values)})


def test_tracking_off_runs_the_stage_without_mlflow(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = _with(params, "tracking", enabled=False)
    assert run_stage(fake_stage("load", lambda p: {"rows": 1}, monkeypatch), off) == {"rows": 1}
    assert not (tmp_path / "mlflow.db").exists()


def _pipeline(
    params: Params, curriculum: str, seed: int, accuracy: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    p = _with(params, "train", curriculum=curriculum, seed=seed)
    metrics = {"trained": {"heldout": {"pass_at_1": accuracy, "pass_at_1_se": 0.05}}}
    train = fake_stage("train", lambda _: {"training_questions": 32, "steps": 20}, monkeypatch)
    evaluate = fake_stage("evaluate", lambda _: {"metrics": metrics}, monkeypatch)
    with tracked("pipeline", p, tags={"sparft.kind": "pipeline"}):
        run_stage(train, _with(p, "tracking", log_model=False))
        run_stage(evaluate, p)
    assert mlflow.active_run() is None


def test_pipeline_runs_are_compared_per_strategy(
    params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed, acc in enumerate([0.3, 0.5]):
        _pipeline(params, "sparft", seed, acc, monkeypatch)
    _pipeline(params, "uniform", 0, 0.2, monkeypatch)
    with tracked("pipeline", params, tags={"sparft.kind": "pipeline"}):
        pass  # no train/evaluate stages: not comparable, left out
    runs = pipeline_runs(params.tracking)
    assert len(runs) == 3
    assert set(runs["strategy"]) == {"sparft (thompson, target)", "uniform"}
    summary = summarise_runs(runs).set_index("strategy")
    sparft = summary.loc["sparft (thompson, target)"]
    assert sparft["runs"] == 2 and sparft["mean:heldout"] == pytest.approx(0.4)
    assert sparft["sd:heldout"] == pytest.approx(0.1414, abs=1e-3)
    assert summary.loc["uniform", "mean:heldout"] == pytest.approx(0.2)
    assert summary.loc["uniform", "training_questions"] == 32
    with pytest.raises(ValueError, match="does not exist"):
        pipeline_runs(params.tracking, "nope")
