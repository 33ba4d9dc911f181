"""Prefect flows: cache keys from dvc.yaml, retries, and the pipeline run for real in a
temporary git + DVC project with the tiny model: on the ephemeral API, then against a real
``prefect server`` whose API is queried for every task run's state, and as a served deployment.

Every Prefect process here gets its home, database and result storage under a temporary folder
(``tests/conftest.py`` sets PREFECT_HOME before any test module imports prefect), so ~/.prefect
is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparft.generation.server import free_port
from sparft.stages import STAGES
from sparft.testing import tiny_project

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGE_NAMES = list(STAGES)  # load, embed, reduce, probe, cluster, select, dots_predictor, ...


# ----------------------------------------------------------------------------- fast unit tests


def test_specs_come_from_the_stage_declarations() -> None:
    from flows.dvc_state import all_specs
    from sparft.config import Params

    config = Params().model_dump(mode="json")
    config["data"]["out"] = "data/elsewhere.parquet"
    specs = all_specs(config)
    assert list(specs) == STAGE_NAMES
    embed = specs["embed"]
    assert embed.deps[0] == "data/elsewhere.parquet"  # ${data.out} resolved from the config
    assert "sparft/stages/embed.py" in embed.deps and "sparft/embed.py" in embed.deps
    assert {"embed", "data.out"} <= set(embed.params)  # an interpolated key counts as a param
    assert "data/embed_summary.json" in embed.outs  # metrics are outputs too
    assert "generation.model" in specs["train"].params
    assert "data/plots/train_arms.png" in specs["train"].outs


def test_stage_key_follows_content_params_and_source(tmp_path: Path) -> None:
    from flows.dvc_state import StageSpec, stage_key

    (tmp_path / "data").mkdir()
    (tmp_path / "sparft").mkdir()
    source, data = tmp_path / "sparft" / "stage.py", tmp_path / "data" / "in.txt"
    source.write_text("x = 1\n")
    data.write_text("questions\n")
    spec = StageSpec("s", ("data/in.txt", "sparft/stage.py"), ("cluster", "generation.model"), ())
    config: dict[str, Any] = {"cluster": {"k": 8}, "generation": {"model": "m", "seed": 0}}
    key = stage_key(spec, config, tmp_path)

    os.utime(data, ns=(1, 1))  # same content, other mtime
    assert stage_key(spec, config, tmp_path) == key
    other = {**config, "generation": {"model": "m", "seed": 1}}  # a key the stage does not use
    assert stage_key(spec, other, tmp_path) == key
    changed = {**config, "cluster": {"k": 6}}
    assert stage_key(spec, changed, tmp_path) != key
    source.write_text("x = 2\n")
    assert stage_key(spec, config, tmp_path) != key
    source.write_text("x = 1\n")
    data.write_text("other questions\n")
    assert stage_key(spec, config, tmp_path) != key
    data.unlink()
    assert stage_key(spec, config, tmp_path) != key


def test_retries_only_transient_errors() -> None:
    from prefect.states import Failed

    from flows.tasks import transient
    from sparft.config import ConfigError
    from sparft.data import DataError

    def retried(err: BaseException) -> bool:
        return transient(None, None, Failed(data=err))  # type: ignore[arg-type]

    assert retried(ConnectionResetError("peer reset"))
    assert retried(RuntimeError("CUDA out of memory"))
    assert not retried(ConfigError("probe.k: must be >= 1"))
    assert not retried(DataError("data/train.parquet: no such file"))
    assert not retried(FileNotFoundError("data/probe.parquet"))
    assert not retried(KeyError("arm"))


def test_compare_grid_and_inputs() -> None:
    from flows.dvc_state import all_specs
    from flows.grid import expand, metrics_table, variant_inputs
    from sparft.config import Params

    variants = expand({"train.curriculum": ["sparft", "uniform"], "train.seed": [0, 1]})
    assert [label for label, _ in variants] == [
        "curriculum=sparft,seed=0",
        "curriculum=sparft,seed=1",
        "curriculum=uniform,seed=0",
        "curriculum=uniform,seed=1",
    ]
    assert variants[1][1] == ['train.curriculum="sparft"', "train.seed=1"]
    specs = all_specs(Params().model_dump(mode="json"))
    inputs = variant_inputs([specs["train"], specs["evaluate"]])
    # what train and evaluate read but do not write; the model they pass on is not copied
    assert inputs == [
        "data/train.parquet",
        "data/clusters.parquet",
        "data/subset.parquet",
        "data/probe.parquet",
        "data/embeddings.npz",
        "data/dots/predictor.pt",
    ]
    rows = metrics_table(
        [{"label": "a", "mlflow_run_id": "r", "metrics": {"trained": {"b": {"pass@1": 0.25}}}}]
    )
    assert rows == [
        {"variant": "a", "model": "trained", "benchmark": "b", "pass@1": 0.25, "mlflow_run_id": "r"}
    ]


def test_a_variant_reads_only_its_method_s_inputs_and_settings(tmp_path: Path) -> None:
    from flows.dvc_state import StageSpec, all_specs, read_spec
    from flows.grid import variant_inputs, variant_key
    from sparft.config import Params, with_overrides

    def read(*overrides: str) -> tuple[Params, list[StageSpec]]:
        params = with_overrides(Params(), list(overrides), "test")
        specs = all_specs(params.model_dump(mode="json"))
        return params, [read_spec(specs[name], params) for name in ("train", "evaluate")]

    uniform, uniform_specs = read("train.curriculum=uniform", "train.data=full")
    assert variant_inputs(uniform_specs) == ["data/train.parquet", "data/probe.parquet"]
    assert "bandit" not in uniform_specs[0].params and "train" in uniform_specs[0].params
    assert "dots.predictor" not in uniform_specs[0].params
    sparft, sparft_specs = read("train.curriculum=sparft", "train.data=subset")
    assert variant_inputs(sparft_specs) == [
        "data/train.parquet", "data/clusters.parquet", "data/subset.parquet", "data/probe.parquet"
    ]  # fmt: skip
    assert "bandit" in sparft_specs[0].params and "dump" not in sparft_specs[0].params
    _, dots_specs = read("train.curriculum=dots", "train.data=full")
    assert variant_inputs(dots_specs)[-2:] == ["data/embeddings.npz", "data/dots/predictor.pt"]
    # new clusters (another cluster.k) change sparft's key and leave uniform's
    (tmp_path / "data").mkdir()
    for name in ("train.parquet", "probe.parquet", "subset.parquet", "clusters.parquet"):
        (tmp_path / "data" / name).write_text(name)

    def keys() -> tuple[str, str]:
        return (
            variant_key("u", uniform_specs, uniform.model_dump(), tmp_path, tmp_path / "u"),
            variant_key("s", sparft_specs, sparft.model_dump(), tmp_path, tmp_path / "s"),
        )

    before = keys()
    (tmp_path / "data" / "clusters.parquet").write_text("other clusters")
    after = keys()
    assert after[0] == before[0] and after[1] != before[1]


def test_the_old_grid_flow_name_still_runs_with_a_deprecation_note() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flows.compare", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--grid" in done.stdout
    assert "use python -m flows.grid" in done.stderr


def test_stage_headline_lists_the_summary_numbers() -> None:
    from flows.tasks import headline

    summary = {"questions": 64, "solve_rate": 0.21875, "noisy": True, "by_label": {"1": 0.5}}
    assert headline(summary) == ": questions 64, solve_rate 0.2188"
    assert headline(summary, keys=("solve_rate",)) == ": solve_rate 0.2188"
    assert headline({"notes": []}) == ""
    assert headline({f"m{i}": i for i in range(9)}, most=2) == ": m0 0, m1 1"


def test_dvc_lock_is_skipped_outside_a_dvc_repo(tmp_path: Path) -> None:
    from flows.dvc_state import DvcLock, StageSpec

    lock = DvcLock(tmp_path)
    assert lock.commit([StageSpec("load", (), ("data",), ())], {"data": {}}) == []
    assert lock.notes == [f"{tmp_path} is not a DVC repository: dvc.lock not updated"]


# ------------------------------------------------------------------- the pipeline, for real


@dataclass
class Server:
    """A ``prefect server start`` of this test module, with its own home and database."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait(self, timeout: float = 180) -> str:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise AssertionError(f"prefect server not healthy after {timeout} s")


@dataclass
class Project:
    root: Path
    results: Path  # Prefect result storage shared by every run: the cache lives there

    def env(self, api_url: str | None, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        env.update(
            PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
            PREFECT_HOME=str(home),
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
            PREFECT_LOCAL_STORAGE_PATH=str(self.results),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
            PREFECT_RUNNER_POLL_FREQUENCY="2",
            OMP_NUM_THREADS="1",
        )
        if api_url:
            env["PREFECT_API_URL"] = api_url
        return env

    def run(self, args: list[str], api_url: str | None = None, home: str = "client") -> str:
        done = subprocess.run(
            args,
            cwd=self.root,
            env=self.env(api_url, self.root.parent / f"prefect-{home}"),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{args}\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
        return done.stdout + done.stderr

    def set_params(self, section: str, **values: Any) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        params[section].update(values)
        path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Started at once, waited for only where used, so it boots while the first run works."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/server.db",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    log = home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    yield Server(url, process, log)
    _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path, server: Server) -> Project:
    """A git + DVC project with the tiny settings, after one ``sparft run`` on the ephemeral
    API (the server fixture only boots meanwhile)."""
    base = tmp_path_factory.mktemp("flows")
    root = tiny_project(base / "project", tiny_lm_dir, ROOT)
    proj = Project(root, base / "prefect-results")
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
    ):
        proj.run(cmd)
    out = proj.run(["sparft", "run"], home="ephemeral")
    assert "Starting temporary server" in out  # no PREFECT_API_URL: Prefect's ephemeral API
    assert "probe solve rate over 9 questions" in out and "where the results are" in out
    return proj


@contextmanager
def prefect_client(url: str) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        yield client


def _flow_runs(client: Any) -> dict[str, Any]:
    return {str(run.id): run for run in client.read_flow_runs()}


def _task_states(client: Any, flow_run_id: str, expected: int) -> dict[str, str]:
    """Final state per task run name. The server records task runs from the events clients
    send, a moment after the flow run ends: wait until all ``expected`` are in."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def final_states() -> dict[str, str] | None:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        states = {run.name: run.state.name for run in runs if run.state and run.state.is_final()}
        return states if len(states) >= expected else None

    return _wait_for(final_states, 60)


def _run_on_server(project: Project, server: Server) -> tuple[str, dict[str, str], str]:
    """One ``sparft run`` against the server: its flow run id, task states, and output."""
    with prefect_client(server.wait()) as client:
        before = set(_flow_runs(client))
        out = project.run(["sparft", "run"], api_url=server.url)
        (flow_run_id,) = set(_flow_runs(client)) - before
        assert client.read_flow_run(flow_run_id).state.name == "Completed"
        return flow_run_id, _task_states(client, flow_run_id, len(STAGE_NAMES)), out


def _dvc_is_clean(project: Project) -> None:
    assert "Data and pipelines are up to date" in project.run(["dvc", "status"])
    assert "Running stage" not in project.run(["dvc", "repro"])


@pytest.mark.slow
def test_flow_run_leaves_dvc_up_to_date(project: Project) -> None:
    for artifact in (
        "train.parquet",
        "subset.parquet",
        "train/model/config.json",
        "eval/metrics.json",
    ):
        assert (project.root / "data" / artifact).stat().st_size > 0
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert list(lock["stages"]) == STAGE_NAMES
    _dvc_is_clean(project)


@pytest.mark.slow
@pytest.mark.server
def test_second_run_takes_every_stage_from_cache(project: Project, server: Server) -> None:
    flow_run_id, states, out = _run_on_server(project, server)
    assert states == dict.fromkeys(STAGE_NAMES, "Cached")
    assert "evaluate cached" in out and "where the results are" in out

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project.root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sparft").experiment_id
    (parent,) = client.search_runs(
        [experiment], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'"
    )
    assert parent.data.tags["sparft.kind"] == "pipeline"
    assert parent.data.tags["sparft.stage.train"] == "cached"
    with prefect_client(server.url) as prefect:
        assert f"mlflow-run:{parent.info.run_id}" in prefect.read_flow_run(flow_run_id).tags
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    keys = {a.key for a in artifacts}
    assert {"sparft-mlflow", "sparft-clusters", "sparft-arm-choices", "sparft-evaluation"} <= keys
    (evaluation,) = [a for a in artifacts if a.key == "sparft-evaluation"]
    assert "arithmetic-heldout" in str(evaluation.data) and "pass@1" in str(evaluation.data)
    assert "minus base (paired)" in str(evaluation.data)  # trained against its base
    _dvc_is_clean(project)


@pytest.mark.slow
@pytest.mark.server
def test_missing_output_reruns_only_its_stage(project: Project, server: Server) -> None:
    (project.root / "data" / "plots" / "subset_map.png").unlink()  # an output of select
    _, states, _ = _run_on_server(project, server)
    # select rewrites the same subset, so train's inputs and everything after are unchanged
    assert states == {**dict.fromkeys(STAGE_NAMES, "Cached"), "select": "Completed"}
    assert (project.root / "data" / "plots" / "subset_map.png").stat().st_size > 0
    _dvc_is_clean(project)


@pytest.mark.slow
@pytest.mark.server
def test_param_change_reruns_the_same_stages_as_dvc_repro(project: Project, server: Server) -> None:
    from flows.dvc_state import path_digest

    model = project.root / "data" / "train" / "model"
    model_before = path_digest(model)
    project.set_params("select", budget=4)
    twin = project.root.parent / "twin"
    shutil.copytree(project.root, twin, symlinks=True)
    repro = Project(twin, project.results).run(["dvc", "repro"])
    dvc_skipped = {s for s in STAGE_NAMES if f"Stage '{s}' didn't change, skipping" in repro}

    _, states, _ = _run_on_server(project, server)
    ran = {name for name, state in states.items() if state == "Completed"}
    assert {"select", "train"} <= ran
    assert set(STAGE_NAMES[:5]) <= {n for n, s in states.items() if s == "Cached"}
    # evaluate reruns exactly when training changed the model's bytes (content-keyed, as DVC)
    assert ("evaluate" in ran) == (path_digest(model) != model_before)
    assert ran == set(STAGE_NAMES) - dvc_skipped
    _dvc_is_clean(project)


@pytest.mark.slow
@pytest.mark.server
def test_served_deployment_runs_on_trigger(project: Project, server: Server) -> None:
    from prefect.deployments import run_deployment

    url = server.wait()
    serve = subprocess.Popen(
        [str(BIN / "sparft"), "serve", "--cron", "0 3 * * *", "--name", "nightly"],
        cwd=project.root,
        env=project.env(url, project.root.parent / "prefect-serve"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with prefect_client(url) as client:
            deployment = _wait_for(lambda: _deployment(client, "sparft-pipeline/nightly"), 180)
            assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
            assert deployment.parameters["project_dir"] == str(project.root)
            assert deployment.parameters["params_file"] == str(project.root / "params.yaml")
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: url}):
                flow_run = run_deployment("sparft-pipeline/nightly", timeout=0)
            final = _wait_for(lambda: _final(client, flow_run.id), 300)
            assert final.state.name == "Completed", final.state.message
            assert _task_states(client, str(flow_run.id), len(STAGE_NAMES)) == dict.fromkeys(
                STAGE_NAMES, "Cached"
            )
    finally:
        _stop(serve)


def _deployment(client: Any, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def _final(client: Any, flow_run_id: Any) -> Any:
    run = client.read_flow_run(flow_run_id)
    return run if run.state is not None and run.state.is_final() else None


def _wait_for(probe: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(1)
    raise AssertionError(f"gave up after {timeout} s")


@pytest.mark.slow
@pytest.mark.server
def test_grid_flow_maps_variants_in_working_copies(project: Project, server: Server) -> None:
    args = [sys.executable, "-m", "flows.grid", "--grid", "train.curriculum=sparft,uniform"]
    env = project.env(server.wait(), project.root.parent / "prefect-client")
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [*args, "--no-base", "--parallel", "2"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter

    with prefect_client(server.url) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["sparft-grid"]))
        )
        assert run.state.name == "Completed"
        states = _task_states(client, str(run.id), 3)
        # the shared stages ran as a pipeline subflow (one task run stands for it), all cached
        assert states == {
            "sparft-pipeline-0": "Completed",
            "curriculum=sparft": "Completed",
            "curriculum=uniform": "Completed",
        }
        (subflow,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["sparft-pipeline"])),
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [run.id]}),
        )
        shared = STAGE_NAMES[: STAGE_NAMES.index("train")]
        assert _task_states(client, str(subflow.id), len(shared)) == dict.fromkeys(shared, "Cached")
        artifacts = {a.key: a for a in client.read_artifacts() if a.flow_run_id == run.id}
    for label in ("curriculum-sparft", "curriculum-uniform"):
        workdir = project.root / "data" / "compare" / label
        assert (workdir / "data" / "train" / "model" / "config.json").is_file()
        assert (workdir / "data" / "eval" / "metrics.json").is_file()
    table = str(artifacts["sparft-grid"].data)
    assert "curriculum=sparft" in table and "curriculum=uniform" in table
    strategies = str(artifacts["sparft-grid-summary"].data)
    assert "sparft (thompson, target)" in strategies and "uniform" in strategies
    assert (project.root / "data" / "compare" / "compare.png").stat().st_size > 0
    assert "Data and pipelines are up to date" in project.run(["dvc", "status"])
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project.root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["sparft"])
    (grid_id,) = runs.loc[runs["tags.mlflow.runName"] == "grid", "run_id"]
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(grid_id, "grid")]
    assert logged == ["grid/compare.png"]
    children = runs[runs["tags.mlflow.parentRunId"] == grid_id]
    variants = children[children["tags.mlflow.runName"].str.startswith("variant ")]
    assert len(variants) == 2  # beside them, the shared stages' pipeline run
    assert set(variants["params.curriculum"]) == {"sparft", "uniform"}  # headline params
    assert variants["metrics.heldout_accuracy"].notna().all()


@pytest.mark.slow
@pytest.mark.server
def test_editing_the_prompt_code_reruns_probe_train_and_evaluate(
    project: Project, server: Server
) -> None:
    """The stages that build prompts depend on ``sparft/prompts.py`` through their import
    closure: a change to it reruns them in ``dvc repro`` and in ``sparft run`` alike, and the
    stages that never build a prompt stay cached."""
    prompts = project.root / "sparft" / "prompts.py"
    prompts.write_text(prompts.read_text() + "\n# a change to the prompt builder's code\n")
    twin = project.root.parent / "twin-prompts"
    shutil.copytree(project.root, twin, symlinks=True)
    repro = Project(twin, project.results).run(["dvc", "repro"])
    for stage in ("probe", "train", "evaluate"):
        assert f"Running stage '{stage}'" in repro, stage
    for stage in ("load", "embed", "reduce"):
        assert f"Running stage '{stage}'" not in repro, stage

    _, states, _ = _run_on_server(project, server)
    for stage in ("probe", "train", "evaluate"):
        assert states[stage] == "Completed", (stage, states)
    for stage in ("load", "embed", "reduce"):
        assert states[stage] == "Cached", (stage, states)
    _dvc_is_clean(project)
