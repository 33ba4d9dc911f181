"""The stage declarations and what is derived from them: dvc.yaml, code dependencies from the
import closure, lazy stage loading, and no import cycle in the project."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from flows.dvc_state import all_specs, render_dvc_yaml
from sparft.config import Params
from sparft.stages import ORDER, STAGES
from sparft.stages.sources import ROOT, closure, imported_modules, module_file, source_files

PROJECT_PACKAGES = ("sparft", "flows")


def test_committed_dvc_yaml_is_generated_from_the_declarations() -> None:
    assert (ROOT / "dvc.yaml").read_text() == render_dvc_yaml(), "run: sparft dvc-yaml"


def test_every_stage_module_declares_its_stage() -> None:
    assert list(STAGES) == list(ORDER)
    for name, stage in STAGES.items():
        assert stage.name == name and stage.module == f"sparft.stages.{ORDER[name]}"
        assert stage.written(), f"{name} writes nothing"
        for path in stage.mlflow:
            assert path in stage.written() or Path(path).suffix in (".json", ".png", ".parquet")


def test_code_deps_are_the_import_closure() -> None:
    specs = all_specs(Params().model_dump(mode="json"))
    for name, stage in STAGES.items():
        code = [d for d in specs[name].deps if d.startswith(PROJECT_PACKAGES)]
        assert code == source_files([stage.module])
    # what the hand-written dvc.yaml used to miss
    for name in ("probe", "train", "evaluate"):
        assert "sparft/prompts.py" in specs[name].deps, name
    for name in ("train", "evaluate"):
        assert "sparft/models.py" in specs[name].deps, name
    assert "sparft/arithmetic.py" in specs["evaluate"].deps
    # another stage imported for its paths brings its declaration, not its run's imports
    assert "sparft/training/trainer.py" not in specs["evaluate"].deps
    assert "sparft/cluster.py" not in specs["train"].deps
    assert "sparft/config.py" not in specs["load"].deps  # imported for type hints only


def test_closure_follows_function_imports_and_skips_type_checking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparft.stages import sources

    pkg = tmp_path / "sparft"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sparft import heavy\n"
        "def run():\n    from .sub import b\n"
    )
    (pkg / "sub" / "b.py").write_text("import sparft.c\n")
    (pkg / "c.py").write_text("import os\n")
    (pkg / "heavy.py").write_text("")
    monkeypatch.setattr(sources, "ROOT", tmp_path)
    monkeypatch.setattr(sources, "module_file", lambda n, root=tmp_path: module_file(n, root))
    sources.closure.cache_clear()
    try:
        assert sources.closure("sparft.a") == (
            "sparft",
            "sparft.a",
            "sparft.c",
            "sparft.sub",
            "sparft.sub.b",
        )
    finally:
        sources.closure.cache_clear()


def _modules() -> dict[str, Path]:
    out = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


@pytest.mark.parametrize("type_checking", [False, True], ids=["runtime", "type-only too"])
def test_no_import_cycle_among_the_project_modules(type_checking: bool) -> None:
    modules = _modules()
    graph = {
        name: [
            m
            for m in imported_modules(path, name, type_checking=type_checking)
            if m in modules and m != name
        ]
        for name, path in modules.items()
    }
    # a package's __init__ that only hands its submodules' names on is not a cycle with them
    for name in graph:
        graph[name] = [m for m in graph[name] if not name.startswith(f"{m}.")]
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_library_knows_nothing_of_the_flows_or_the_cli() -> None:
    for name, path in _modules().items():
        if not name.startswith("sparft.") or name == "sparft.cli":
            continue
        imported = imported_modules(path, name)
        assert not [m for m in imported if m.startswith(("flows", "sparft.cli"))], name
        tree = ast.parse(path.read_text())
        banned = {"prefect", "dvc"}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in getattr(node, "names", [])]
                assert not {n.split(".")[0] for n in names} & banned, f"{name} imports {names}"


def test_declaring_the_stages_and_running_load_import_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sparft.config import Params\n"
        "from sparft.stages import STAGES\n"
        "STAGES['load'].run(Params.model_validate({'arithmetic': {'per_grade': 2}}))\n"
        "heavy = sorted({'torch', 'trl', 'transformers', 'mlflow', 'prefect'} & set(sys.modules))\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "data" / "train.parquet").is_file()


def test_dvc_yaml_command_writes_and_checks(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sparft.cli import app

    runner = CliRunner()
    out = tmp_path / "dvc.yaml"
    assert runner.invoke(app, ["dvc-yaml", "--out", str(out), "--check"]).exit_code == 1
    assert runner.invoke(app, ["dvc-yaml", "--out", str(out)]).exit_code == 0
    assert out.read_text() == render_dvc_yaml()
    checked = runner.invoke(app, ["dvc-yaml", "--out", str(out), "--check"])
    assert checked.exit_code == 0 and "is current" in checked.output
    assert closure("sparft.stages.load")[0] == "sparft"
