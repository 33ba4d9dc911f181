"""MLflow wiring: flattened params, stage runs nested under a pipeline run, FAILED status on
error, and the comparison of pipeline runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparft.config import Params
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


def test_stage_runs_nest_under_the_pipeline_run_and_failures_are_marked(params: Params) -> None:
    artifact = Path("summary.txt")
    with tracked("pipeline", params, tags={"sparft.kind": "pipeline"}) as parent:
        summary = run_stage("load", params, lambda p: {"rows": 3}, (artifact,))
        with pytest.raises(RuntimeError, match="boom"):
            run_stage("embed", params, lambda p: (_ for _ in ()).throw(RuntimeError("boom")))
    assert summary == {"rows": 3}
    client = _client(params)
    runs = {r.data.tags.get("sparft.stage", "pipeline"): r for r in client.search_runs(
        [client.get_experiment_by_name("t").experiment_id])}  # fmt: skip
    assert runs["load"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert runs["load"].data.metrics == {"rows": 3.0}
    assert runs["load"].data.params["train.curriculum"] == "sparft"
    assert runs["embed"].info.status == "FAILED"
    assert runs["embed"].data.tags["error"] == "RuntimeError: boom"
    assert runs["pipeline"].info.status == "FINISHED"


def _with(params: Params, section: str, **values: object) -> Params:
    return params.model_copy(update={section: getattr(params, section).model_copy(update=values)})


def test_tracking_off_runs_the_stage_without_mlflow(params: Params, tmp_path: Path) -> None:
    off = _with(params, "tracking", enabled=False)
    assert run_stage("load", off, lambda p: {"rows": 1}) == {"rows": 1}
    assert not (tmp_path / "mlflow.db").exists()


def _pipeline(params: Params, curriculum: str, seed: int, accuracy: float) -> None:
    import mlflow

    p = _with(params, "train", curriculum=curriculum, seed=seed)
    metrics = {"trained": {"heldout": {"pass_at_1": accuracy, "pass_at_1_se": 0.05}}}
    with tracked("pipeline", p, tags={"sparft.kind": "pipeline"}):
        train = _with(p, "tracking", log_model=False)
        run_stage("train", train, lambda _: {"training_questions": 32, "steps": 20})
        run_stage("evaluate", p, lambda _: {"metrics": metrics})
    assert mlflow.active_run() is None


def test_pipeline_runs_are_compared_per_strategy(params: Params) -> None:
    for seed, acc in enumerate([0.3, 0.5]):
        _pipeline(params, "sparft", seed, acc)
    _pipeline(params, "uniform", 0, 0.2)
    with tracked("pipeline", params, tags={"sparft.kind": "pipeline"}):
        pass  # no train/evaluate stages: not comparable, left out
    runs = pipeline_runs(params.tracking)
    assert len(runs) == 3
    assert set(runs["strategy"]) == {"sparft (thompson, negated-solve-rate)", "uniform"}
    summary = summarise_runs(runs).set_index("strategy")
    sparft = summary.loc["sparft (thompson, negated-solve-rate)"]
    assert sparft["runs"] == 2 and sparft["mean:heldout"] == pytest.approx(0.4)
    assert sparft["sd:heldout"] == pytest.approx(0.1414, abs=1e-3)
    assert summary.loc["uniform", "mean:heldout"] == pytest.approx(0.2)
    assert summary.loc["uniform", "training_questions"] == 32
    with pytest.raises(ValueError, match="does not exist"):
        pipeline_runs(params.tracking, "nope")
