"""A data-selection method of one's own is one module: it registers itself, ``params.yaml`` names
it, and the harness takes it from there (its section is validated, the train stage depends on
its settings and code under DVC and the flow, ``compare-strategies`` runs it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import cli_env

from sparft.testing import tiny_project

ROOT = Path(__file__).resolve().parents[1]

# The whole method: config, curriculum, checks, strategy and registration, in one file.
TOY_METHOD = '''
"""Toy: every stride-th question in turn, one cluster's worth of bookkeeping."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from sparft.checks import Check, ok, warn
from sparft.curricula.base import Curriculum
from sparft.curricula.registry import Method, Strategy, register


class ToyConfig(BaseModel):
    """The ``toy`` section."""

    model_config = ConfigDict(extra="forbid")

    stride: int = Field(1, ge=1, description="Questions skipped between picks.")


class ToyCurriculum(Curriculum):
    def __init__(self, frame: pd.DataFrame, cfg: ToyConfig, seed: int = 0) -> None:
        super().__init__(frame, seed=seed)
        self.cfg = cfg
        self.position = 0

    def _select(self, n: int) -> tuple[list[str], dict[str, Any]]:
        picked = [self.ids[(self.position + i * self.cfg.stride) % len(self.ids)] for i in range(n)]
        self.position += n * self.cfg.stride
        return picked, {"toy_clusters": int(self.frame["cluster"].nunique())}

    def _method_state(self) -> dict[str, Any]:
        return {"position": self.position}

    def _load_method_state(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def preflight(cfg: ToyConfig, params: Any, probe: pd.DataFrame | None) -> list[Check]:
    if cfg.stride < params.train.max_steps:
        return [ok("toy stride", f"toy.stride={cfg.stride}")]
    return [warn("toy stride", "toy.stride >= train.max_steps", {"toy.stride": 1})]


METHOD = register(
    Method(
        name="toy",
        title="Toy",
        paper="none",
        summary="Every stride-th question in turn.",
        curriculum=ToyCurriculum,
        config=ToyConfig,
        section="toy",
        columns=lambda cfg: ("cluster",),
        preflight=preflight,
        strategies={
            "toy": Strategy({"train.curriculum": "toy", "train.data": "full"}, False, "toy")
        },
    )
)
'''


def write_toy(folder: Path) -> None:
    (folder / "toy_method.py").write_text(TOY_METHOD.lstrip())


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The toy module in a project folder (the working directory), registered by reading a
    params file naming it; the registry and ``Params`` are put back afterwards."""
    from sparft.config import Params
    from sparft.curricula import registry

    write_toy(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    fields = dict(Params.__pydantic_fields__)
    methods, strategies = dict(registry.METHODS), dict(registry.STRATEGIES)
    yield tmp_path
    registry.METHODS.clear()
    registry.METHODS.update(methods)
    registry.STRATEGIES.clear()
    registry.STRATEGIES.update(strategies)
    Params.__pydantic_fields__ = fields
    Params.model_rebuild(force=True)
    sys.modules.pop("toy_method", None)


def _params_file(folder: Path, **toy: object) -> Path:
    path = folder / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {"methods": ["toy_method"], "train": {"curriculum": "toy"}, "toy": dict(toy)}
        )
    )
    return path


def test_a_method_module_named_in_params_is_selectable(toy: Path) -> None:
    from sparft.comparison import STRATEGIES
    from sparft.config import ConfigError, Params, load_params
    from sparft.curricula import make_curriculum
    from sparft.preflight import run_checks, strategy_params

    assert "toy" not in Params.model_fields  # nothing registered until a params file names it
    params = load_params(_params_file(toy, stride=2))
    assert params.train.curriculum == "toy" and params.toy.stride == 2
    assert "toy" in STRATEGIES and strategy_params(params, "toy").train.curriculum == "toy"
    with pytest.raises(ConfigError, match=r"toy\.nope: unknown key \(allowed: stride\)"):
        load_params(_params_file(toy, nope=1))
    with pytest.raises(ConfigError, match=r"toy\.stride: Input should be greater than"):
        load_params(_params_file(toy, stride=0))

    frame = pd.DataFrame({"id": ["a", "b", "c"], "question": ["q"] * 3, "answer": ["1"] * 3})
    curriculum = make_curriculum("toy", frame.assign(cluster=[0, 1, 1]), params)
    plan = curriculum.plan(params.train.prompts_per_step, params.train.rollouts_per_step)
    assert [a.prompt_id for a in plan][:2] == ["a", "c"]
    checks = {c.name: c for c in run_checks(params)}
    assert checks["toy stride"].status == "ok" and checks["toy stride"].strategy == "toy"


def test_its_settings_and_code_are_what_the_train_stage_depends_on(toy: Path) -> None:
    from flows.dvc_state import all_specs, render_dvc_yaml, stage_key
    from sparft.config import load_params

    def keys(**settings: object) -> dict[str, str]:
        config = load_params(_params_file(toy, **settings)).model_dump(mode="json")
        return {n: stage_key(s, config, toy) for n, s in all_specs(config).items()}

    first, changed = keys(stride=1), keys(stride=2)
    assert [n for n in first if first[n] != changed[n]] == ["train"]
    (toy / "toy_method.py").write_text((toy / "toy_method.py").read_text() + "\n# edited\n")
    edited = keys(stride=2)
    assert [n for n in first if edited[n] != changed[n]] == ["train"]

    stages = yaml.safe_load(render_dvc_yaml())["stages"]
    assert "toy" in stages["train"]["params"] and "toy_method.py" in stages["train"]["deps"]
    assert "toy" not in stages["evaluate"]["params"]


def test_a_module_that_is_not_there_is_named(tmp_path: Path) -> None:
    from sparft.config import ConfigError, load_params

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"methods": ["no_such_method_module"]}))
    with pytest.raises(ConfigError, match=r"params\.yaml: methods: cannot import method module"):
        load_params(path)


# ----------------------------------------------------------------- for real, on the tiny model


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def _toy_project(root: Path, tiny_lm_dir: Path, settings: dict[str, dict[str, object]]) -> Path:
    project = tiny_project(root, tiny_lm_dir, ROOT, settings)
    write_toy(project)
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.update(methods=["toy_method"], toy={"stride": 1})
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return project


@pytest.mark.slow
def test_changing_its_settings_reruns_train_under_dvc_and_the_flow(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    project = _toy_project(tmp_path / "project", tiny_lm_dir, {"train": {"curriculum": "toy"}})
    env = cli_env(tmp_path / "prefect", ("MLFLOW_",), PREFECT_LOCAL_STORAGE_PATH=str(tmp_path))
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["sparft", "dvc-yaml"],
    ):
        _run(cmd, project, env)
    dvc_yaml = yaml.safe_load((project / "dvc.yaml").read_text())
    assert "toy" in dvc_yaml["stages"]["train"]["params"]

    _run(["sparft", "run"], project, env)
    history = pd.read_parquet(project / "data/train/history.parquet")
    assert (history["toy_clusters"] == 3).all() and len(history) == 2
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project, env)

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["toy"]["stride"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run(["dvc", "status"], project, env)
    assert re.search(r"train:\s+changed deps:\s+params\.yaml:\s+modified:\s+toy\n", status)
    assert "probe:" not in status, status

    again = _run(["sparft", "run"], project, env)
    ran, cached = set(re.findall(r"(\w+): finished in", again)), re.findall(r"(\w+): cached", again)
    assert "train" in ran and "probe" not in ran and "probe" in cached, again[-3000:]
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project, env)


@pytest.mark.slow
def test_compare_strategies_runs_it_on_the_tiny_model(tmp_path: Path, tiny_lm_dir: Path) -> None:
    project = _toy_project(
        tmp_path / "project",
        tiny_lm_dir,
        {
            "tracking": {"enabled": False},
            "compare": {"eval_every": 1, "bootstrap": 200, "scale": {"evaluate.limit": 3}},
        },
    )
    env = cli_env(tmp_path / "prefect", ("MLFLOW_",))
    args = ["sparft", "compare-strategies", "--strategy", "uniform", "--strategy", "toy"]
    _run([*args, "--seed", "0", "--seed", "1"], project, env)
    report = json.loads((project / "data/compare/strategies.json").read_text())
    toy = report["strategies"]["toy"]
    assert [p["step"] for p in toy["curve"]] == [0, 1, 2]
    assert toy["vs_uniform"]["verdict"] == "not separable"
    assert toy["curve"][-1]["rollouts"] == 2 * 4  # 2 steps x 4 rollouts, no probe counted
