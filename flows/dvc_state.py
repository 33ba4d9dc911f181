"""What the flows know of DVC, without Prefect: each stage's deps, params and outputs (from the
stage declarations, ``sparft.stages``), ``dvc.yaml`` generated from them, content digests and
cache keys, and ``dvc.lock`` kept in step with what ran.

A stage's deps are the data its declaration reads plus the source files of its module's import
closure (``sparft.stages.sources``), so ``dvc repro`` and ``sparft run`` rerun a stage whenever
code it runs changes. ``sparft dvc-yaml`` writes ``dvc.yaml``; a test holds the committed file
equal to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sparft.config import ConfigError, Params, load_params
from sparft.io import path_digest
from sparft.stages import STAGES
from sparft.stages.sources import ROOT as SOURCE_ROOT
from sparft.stages.sources import source_files
from sparft.stages.stage import Stage, lookup, resolve, template_keys

KEY_VERSION = 2  # bump when the key's layout changes, so old cache records are not reused
DVC_YAML_HEADER = (
    "# Generated from the stage declarations in sparft/stages/ by `sparft dvc-yaml`: do not edit\n"
    "# by hand. A stage's deps are the data it reads and the source files its module imports.\n"
)


@dataclass(frozen=True)
class StageSpec:
    """One stage's deps, params and outputs, ``${...}`` resolved against a configuration."""

    name: str
    deps: tuple[str, ...]
    params: tuple[str, ...]  # sections or dotted keys, plus the keys interpolated into paths
    outs: tuple[str, ...]  # outs, metrics and plots


def code_deps(stage: Stage, root: Path | None = None) -> list[str]:
    """The stage module's import closure, plus the registered methods' own modules it runs
    that live in the project folder ``root`` (default: the working directory)."""
    return [*source_files([stage.module]), *stage.method_sources(root or Path.cwd())]


def spec_of(stage: Stage, config: Mapping[str, Any]) -> StageSpec:
    try:
        inputs = [resolve(p, config) for p in stage.inputs]
        outs = tuple(resolve(p, config) for p in stage.written())
    except KeyError as err:
        raise ConfigError(f"stage {stage.name}: {err.args[0]}") from err
    deps = tuple(dict.fromkeys([*inputs, *code_deps(stage)]))
    params = tuple(dict.fromkeys([*stage.all_params(), *stage.template_params()]))
    return StageSpec(stage.name, deps, params, outs)


def all_specs(config: Mapping[str, Any]) -> dict[str, StageSpec]:
    """Every stage's spec, in pipeline order."""
    return {name: spec_of(stage, config) for name, stage in STAGES.items()}


def read_spec(spec: StageSpec, params: Params) -> StageSpec:
    """``spec`` less the inputs and params a run under ``params`` leaves unread (its stage's
    ``reads``; the train stage reads one method's): what a variant's key and working copy need.
    An input wrongly left out fails loudly there (the file is not linked); dvc.yaml keeps all."""
    stage = STAGES[spec.name]
    if stage.reads is None:
        return spec
    inputs, keys = stage.reads(params)
    config = params.model_dump(mode="json")
    unread = [p for p in stage.inputs if resolve(p, config) not in inputs]
    read = [p for p in stage.inputs if p not in unread]
    templates = {k for p in unread for k in template_keys(p)} - {
        k for p in read for k in template_keys(p)
    }
    skip_deps = {resolve(p, config) for p in unread}
    skip_params = (set(stage.all_params()) - set(keys)) | templates
    return StageSpec(
        spec.name,
        tuple(d for d in spec.deps if d not in skip_deps),
        tuple(k for k in spec.params if k not in skip_params),
        spec.outs,
    )


class _IndentedDumper(yaml.SafeDumper):
    """Lists indented under their key (``deps:`` then ``  - path``), as DVC's docs write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def render_dvc_yaml() -> str:
    """``dvc.yaml`` for every stage, paths left as templates for DVC to resolve."""
    stages: dict[str, Any] = {}
    for name, stage in STAGES.items():
        entry: dict[str, Any] = {
            "cmd": f"sparft stage {name}",
            "deps": list(dict.fromkeys([*stage.inputs, *code_deps(stage)])),
            "params": list(stage.all_params()),
        }
        if stage.outs:
            entry["outs"] = list(stage.outs)
        for kind in ("metrics", "plots"):
            paths = getattr(stage, kind)
            if paths:
                entry[kind] = [{path: {"cache": False}} for path in paths]
        stages[name] = entry
    body = yaml.dump(
        {"stages": stages}, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False
    )
    # a blank line between stages, as a person would write it
    return DVC_YAML_HEADER + body.replace("\n  ", "\n\n  ").replace("\n\n    ", "\n    ")


def locate(root: Path, rel: str) -> Path:
    """A dep's path: in the project, else (for source files the project has no copy of) in the
    installed sparft source, which is the code that actually runs."""
    path = Path(rel)
    if path.is_absolute():
        return path
    here = root / path
    if here.exists() or path.parts[0] not in ("sparft", "flows"):
        return here
    return SOURCE_ROOT / path


def stage_key(spec: StageSpec, config: Mapping[str, Any], root: Path) -> str:
    """Cache key: digests of the deps, values of the params, the project folder."""
    payload = {
        "version": KEY_VERSION,
        "stage": spec.name,
        "project": str(root),
        "deps": {dep: path_digest(locate(root, dep)) for dep in spec.deps},
        "params": {key: lookup(config, key) for key in spec.params},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"sparft-{spec.name}-{hashlib.sha256(blob).hexdigest()[:40]}"


def output_digests(root: Path, outs: list[str] | tuple[str, ...]) -> dict[str, str | None]:
    return {out: path_digest(root / out) for out in outs}


class DvcLock:
    """Keeps ``dvc.lock`` in step with what the flow ran (``dvc commit -f STAGE``).

    A stage is committed only when the settings it ran with are the ones ``params.yaml`` gives
    it: otherwise the lock would vouch for outputs made with other settings (``--set``, another
    ``--params`` file); such a stage is left for ``dvc repro`` to rerun, with a note.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notes: list[str] = []
        self.dvc_config: dict[str, Any] | None = None
        if not ((root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()):
            self.notes.append(f"{root} is not a DVC repository: dvc.lock not updated")
        elif not (root / "params.yaml").is_file():
            self.notes.append(f"{root}/params.yaml missing: dvc.lock not updated")
        else:
            self.dvc_config = load_params(root / "params.yaml").model_dump(mode="json")

    def _consistent(self, spec: StageSpec, config: Mapping[str, Any]) -> bool:
        assert self.dvc_config is not None
        differ = [k for k in spec.params if lookup(config, k) != lookup(self.dvc_config, k)]
        if differ:
            self.notes.append(
                f"stage {spec.name} ran with {', '.join(differ)} different from params.yaml: "
                "not committed to dvc.lock (dvc repro would rerun it)"
            )
        return not differ

    def current(self, spec: StageSpec, config: Mapping[str, Any]) -> bool:
        """Whether ``dvc.lock`` vouches for the stage's outputs under ``config``: the settings
        are params.yaml's (those the lock records) and ``dvc status`` finds nothing changed."""
        if self.dvc_config is None or not self._consistent(spec, config):
            return False
        from dvc.repo import Repo

        try:
            with Repo(str(self.root)) as repo:
                return spec.name not in repo.status(targets=[spec.name])
        except Exception:  # no lock entry yet, a broken repository: not vouched for
            return False

    def commit(
        self, specs: list[StageSpec], config: Mapping[str, Any], only_stale: bool = False
    ) -> list[str]:
        """Record the stages' deps, params and outputs in ``dvc.lock``; with ``only_stale``, only
        those ``dvc status`` reports as changed. Returns the committed stage names."""
        if self.dvc_config is None or not specs:
            return []
        names = [spec.name for spec in specs if self._consistent(spec, config)]
        if not names:
            return []
        from dvc.repo import Repo

        dvc_logger = logging.getLogger("dvc")
        level = dvc_logger.level
        dvc_logger.setLevel(logging.WARNING)  # the flow logs one line per commit instead
        try:
            with Repo(str(self.root)) as repo:
                if only_stale:
                    changed = repo.status(targets=names)
                    names = [name for name in names if name in changed]
                for name in names:
                    repo.commit(name, force=True)
        except Exception as err:  # the run's results stand; only the lock file lags behind
            self.notes.append(f"dvc commit of {', '.join(names)} failed ({err}): run dvc commit")
            return []
        finally:
            dvc_logger.setLevel(level)
        return names
