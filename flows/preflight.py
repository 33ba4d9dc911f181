"""The preflight checks (``sparft.preflight``) as the CLI and the flows run them: which stage
outputs are current for the settings, the probe's rows handed to the checks when they are, the
result logged to MLflow, and ``strict`` turned into an error before any training.

A stage's output is current when a cached run of the stage under these settings recorded
exactly the files on disk (the flows' own cache test, ``flows.tasks.current_record`` over
``flows.dvc_state.stage_key``), or when ``dvc.lock`` vouches for it under params.yaml's
settings (``DvcLock.current``). Before the flow, a check that needs the probe is pending unless
the probe is current so; the flows run the checks again once the probe and cluster stages have
run, so every check is decided before training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from flows.dvc_state import DvcLock, output_digests, spec_of, stage_key
from sparft.checks import Check
from sparft.comparison import CompareConfig
from sparft.config import ConfigError, Params, as_overrides, load_params, with_overrides
from sparft.preflight import report, run_checks, strict_error
from sparft.stages import STAGES
from sparft.stages.cluster import OUT as CLUSTERS
from sparft.stages.probe import OUT as PROBE

PREVIOUS = Path("data/compare/strategies.json")  # flows.compare_strategies.OUT


def stage_current(name: str, params: Params, root: Path) -> bool:
    """Whether stage ``name``'s outputs in ``root`` are what it makes under ``params``."""
    from flows.tasks import current_record, stage_task  # Prefect, only when there is a probe

    config = params.model_dump(mode="json")
    spec = spec_of(STAGES[name], config)
    if not all((root / out).exists() for out in spec.outs):
        return False
    key = stage_key(spec, config, root)
    if current_record(key, output_digests(root, list(spec.outs)), stage_task(name)):
        return True
    return DvcLock(root).current(spec, config)


def probe_rows(params: Params, root: Path) -> pd.DataFrame | None:
    """The probe's rows if its output is current (None otherwise), with each question's
    ``difficulty_label`` and ``source`` from the data it probed and its ``cluster`` where the
    cluster stage's output is current too."""
    if not (root / PROBE).is_file() or not stage_current("probe", params, root):
        return None
    rows = pd.read_parquet(root / PROBE)
    data = root / params.data.out  # the probe's key holds this file's digest: what it probed
    if data.is_file():
        labels = pd.read_parquet(data, columns=["id", "difficulty_label", "source"])
        rows = rows.merge(labels, on="id", how="left")
    if (root / CLUSTERS).is_file() and stage_current("cluster", params, root):
        clusters = pd.read_parquet(root / CLUSTERS, columns=["id", "cluster"])
        rows = rows.merge(clusters, on="id", how="left")
    return rows


def compare_setup(
    params_file: str,
    overrides: list[str],
    strategies: list[str] | None = None,
    seeds: list[int] | None = None,
    parallel: int | None = None,
    pairs: list[str] | None = None,
    part: bool = False,
) -> tuple[Params, CompareConfig]:
    """A comparison's settings: the params every stage runs under (``compare.scale``, then
    ``overrides``) and the ``compare`` section with the given strategies, seeds, parallelism
    and pairs; what the flow runs and its preflight checks. The file is read once. A ``part``
    runs some of the design's strategies and seeds (``params.compare``'s), none besides."""
    base = load_params(params_file)
    params = with_overrides(base, overrides, params_file)
    given = {"strategies": strategies, "seeds": seeds, "parallel": parallel, "pairs": pairs}
    if part:
        design = params.compare
        for key, values in (("strategies", strategies), ("seeds", seeds)):
            outside = [v for v in values or [] if v not in getattr(design, key)]
            if outside:
                raise ConfigError(
                    f"--part: {outside} not in compare.{key} {getattr(design, key)}: a part runs "
                    "some of the design's strategies and seeds"
                )
    try:
        cfg = CompareConfig.model_validate(
            params.compare.model_dump() | {k: v for k, v in given.items() if v is not None}
        )
    except ValidationError as err:
        found = "; ".join(
            f"compare.{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ConfigError(found.replace("compare.: ", "compare: ")) from err
    scaled = [*as_overrides(cfg.scale), *overrides]
    try:
        return with_overrides(base, scaled, params_file), cfg
    except ConfigError as err:
        raise ConfigError(f"compare.scale: {err}") from err


def checks_for(
    params: Params,
    root: Path,
    strategies: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Check]:
    """``sparft.preflight.run_checks`` with the probe's rows where they are current and, for a
    comparison, the previous comparison's report (its seed spread gives the MDE in points)."""
    previous = None
    if strategies is not None and (root / PREVIOUS).is_file():
        try:
            previous = json.loads((root / PREVIOUS).read_text())
        except (OSError, ValueError):
            previous = None
    return run_checks(params, probe_rows(params, root), seeds, strategies, previous)


def after_probe(
    params: Params,
    root: Path,
    mlrun: Any,
    strict: bool,
    log: Callable[[str], None],
    strategies: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The checks once the shared stages have run (so the probe is decided): every warning
    logged, the checks on the flow's MLflow run (``preflight.json``, tag
    ``preflight.warnings``); under ``strict`` a warning raises ``ConfigError`` before training.
    Returns what the flow's report keeps (``checks``, ``warnings``)."""
    checks = checks_for(params, root, strategies, seeds)
    payload = report(checks)
    for line in payload["warnings"]:
        log(f"preflight: {line}")
    if mlrun is not None:
        from sparft.tracking import log_preflight

        log_preflight(mlrun, payload)
    error = strict_error(checks) if strict else None
    if error is not None:
        raise error
    return payload
