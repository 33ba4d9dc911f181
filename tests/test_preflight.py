"""Preflight checks: each fires where its method cannot do what its paper describes and is
cleared by the fix it names; pending before the probe, decided once its output is current; the
``--dry-run`` and ``--strict`` options of ``run`` and ``compare-strategies``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sparft.checks import AFTER_PROBE, Check
from sparft.cli import app
from sparft.config import ConfigError, Params, apply_overrides
from sparft.curricula.dots import effective_questions, tau_for
from sparft.preflight import (
    previous_seed_sd,
    run_checks,
    seed_power,
    strategy_params,
    strict_error,
)
from sparft.seed_stats import mde, min_p_value, min_seeds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "compare_all_8steps.json"
runner = CliRunner()

# settings under which no general check warns: one token budget
QUIET = {
    "probe": {"max_new_tokens": 48},
    "train": {"max_completion_length": 48},
    "evaluate": {"max_new_tokens": 48},
}


def params_of(*overrides: str, base: dict[str, Any] | None = None) -> Params:
    raw = json.loads(json.dumps(QUIET if base is None else base))
    return Params.model_validate(apply_overrides(raw, list(overrides)))


def cleared(params: Params, check: Check) -> Params:
    """``params`` with the check's fix applied, as ``--set`` would."""
    assert check.fix, check
    return Params.model_validate(apply_overrides(params.model_dump(mode="json"), check.overrides()))


def find(checks: list[Check], name: str, strategy: str | None = None) -> Check:
    (found,) = [c for c in checks if c.name == name and c.strategy == strategy]
    return found


def probe_frame(rates: list[float], k: int = 4, **columns: Any) -> pd.DataFrame:
    n = len(rates)
    return pd.DataFrame({"id": [f"q{i}" for i in range(n)], "solve_rate": rates, "k": k, **columns})


def assert_fires_and_clears(
    params: Params,
    name: str,
    strategy: str | None,
    probe: pd.DataFrame | None = None,
    keys: set[str] | None = None,
    **kwargs: Any,
) -> Check:
    """The check warns under ``params``, names ``keys``, and its fix clears it."""
    check = find(run_checks(params, probe, **kwargs), name, strategy)
    assert check.status == "warn", check
    if keys is not None:
        assert set(check.fix) == keys, check
    after = find(run_checks(cleared(params, check), probe, **kwargs), name, strategy)
    assert after.status == "ok", after
    return check


# --- general checks ------------------------------------------------------------------------


def test_token_budgets_name_the_three_keys_and_their_fix_clears_them() -> None:
    params = params_of("probe.max_new_tokens=384", "train.max_completion_length=64", base={})
    check = assert_fires_and_clears(
        params, "token budgets", None, keys={"probe.max_new_tokens", "evaluate.max_new_tokens"}
    )
    for key in ("probe.max_new_tokens=384", "train.max_completion_length=64"):
        assert key in check.message
    assert "evaluate.max_new_tokens=256" in check.message  # the held-out checks' budget
    assert check.fix == {"probe.max_new_tokens": 64, "evaluate.max_new_tokens": 64}
    labels = params_of(
        "probe.source=label", "evaluate.max_new_tokens=64", "train.max_completion_length=64"
    )
    assert find(run_checks(labels), "token budgets").status == "ok"  # a label probe generates none


def test_pool_of_never_or_always_solved_questions() -> None:
    params = params_of()
    assert find(run_checks(params), "learnable pool").status == "pending"
    assert find(run_checks(params), "learnable pool").message == AFTER_PROBE
    grades = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    rates = [1.0, 1.0, 0.5, 0.25, 0.0, 0.75, 0.0, 0.0]  # 5 of 8 never or always solved
    probe = probe_frame(rates, difficulty_label=grades)
    check = assert_fires_and_clears(
        params, "learnable pool", None, probe, keys={"arithmetic.grades"}
    )
    assert check.fix == {"arithmetic.grades": [1, 2, 3]}  # 3 of 6 extreme: at most half
    assert "never solved 38%, always solved 25%" in check.message
    other = params_of("data.spec=gsm8k")  # no grades to keep: the message says which way
    warned = find(run_checks(other, probe), "learnable pool")
    assert warned.warns and warned.fix == {} and "generation.model" in warned.message
    assert find(run_checks(params, probe_frame([0.5, 0.25, 0.0])), "learnable pool").status == "ok"


# --- bandits --------------------------------------------------------------------------------


def test_bandit_pulls_per_arm_from_params_then_from_the_clusters() -> None:
    uninformed = ("train.curriculum=sparft", "bandit.prior_weight=0")
    params = params_of(*uninformed, "train.max_steps=20", "cluster.k=8")
    check = assert_fires_and_clears(params, "arm pulls", "sparft", keys={"train.max_steps"})
    assert check.fix == {"train.max_steps": 24} and "cluster.k" in check.message
    # the cluster stage's output, where current, counts the arms: 3 clusters, 9 pulls is enough
    probe = probe_frame([0.5] * 6, cluster=[0, 0, 1, 1, 2, 2])
    assert find(run_checks(params, probe), "arm pulls", "sparft").status == "ok"
    hdbscan = params_of(*uninformed, "cluster.method=hdbscan")
    pending = find(run_checks(hdbscan), "arm pulls", "sparft")
    assert pending.status == "pending" and "cluster stage" in pending.message
    # the default informed prior starts every arm from the probe: no trial pulls to wait for
    informed = params_of("train.curriculum=sparft", "train.max_steps=20", "cluster.k=8")
    assert find(run_checks(informed), "arm pulls", "sparft").status == "ok"


def test_dump_draws_an_arm_per_prompt() -> None:
    params = params_of(
        "train.curriculum=dump", "train.max_steps=2", "train.prompts_per_step=4", "cluster.k=8"
    )
    check = assert_fires_and_clears(params, "arm pulls", "dump", keys={"train.max_steps"})
    assert check.fix == {"train.max_steps": 6}  # 6 steps x 4 prompts = 3 x 8 arms
    by_source = params_of("train.curriculum=dump", "dump.arms=source")
    assert find(run_checks(by_source), "arm pulls", "dump").status == "pending"
    probe = probe_frame([0.5] * 4, source=["a", "a", "b", "b"])
    assert find(run_checks(by_source, probe), "arm pulls", "dump").status == "ok"


def test_thompson_prior_at_the_best_reward_warns_and_the_midpoint_clears() -> None:
    params = params_of("train.curriculum=sparft", "train.max_steps=30", "bandit.prior_weight=0")
    check = assert_fires_and_clears(params, "bandit prior", "sparft", keys={"bandit.prior_mean"})
    assert check.fix == {"bandit.prior_mean": -0.5}  # rewards in [-1, 0]
    assert "[-1, 0]" in check.message
    for other in ("bandit.reward=learning-progress", "bandit.algorithm=ucb1"):
        p = params_of("train.curriculum=sparft", other)
        assert find(run_checks(p), "bandit prior", "sparft").status == "ok", other
    optimistic = params_of(
        "train.curriculum=sparft", "bandit.reward=learning-progress", "bandit.prior_mean=1"
    )
    fired = assert_fires_and_clears(optimistic, "bandit prior", "sparft")
    assert fired.fix == {"bandit.prior_mean": 0.5}


def test_an_arm_smaller_than_a_step_s_prompts_warns_and_a_larger_budget_clears() -> None:
    sparft = ("train.curriculum=sparft", "train.data=subset")
    params = params_of(*sparft, "cluster.k=8", "select.budget=48", "train.prompts_per_step=8")
    check = assert_fires_and_clears(params, "arm size", "sparft", keys={"select.budget"})
    assert check.fix == {"select.budget": 64} and "cluster.k=6" in check.message
    # the clusters in the probe's rows, cut to the budget as select allocates it (2 of 4, 2, 6)
    probe = probe_frame([0.5] * 12, cluster=[0] * 4 + [1] * 2 + [2] * 6)
    subset = params_of(*sparft, "select.budget=9", "train.prompts_per_step=3")
    fired = find(run_checks(subset, probe), "arm size", "sparft")
    assert fired.status == "warn" and "holds 2 questions" in fired.message, fired
    # no budget gives that cluster of 2 three questions, and the budget's 3 steps' worth of
    # prompts fill no fewer arms than the 3 there are: only smaller steps are left
    assert fired.fix == {"train.prompts_per_step": 2} and "cluster.k" not in fired.message, fired
    # with a fourth cluster, fewer, larger clusters are the fix: 9 // 3 = 3 of them
    four = probe_frame([0.5] * 16, cluster=[0] * 4 + [1] * 2 + [2] * 6 + [3] * 4)
    fired = find(run_checks(subset, four), "arm size", "sparft")
    assert fired.fix == {"cluster.k": 3} and "in the data is that small" in fired.message
    # every cluster holds 3 or more, the budget's equal shares do not: the smallest budget that
    # gives each 3 as select allocates it (6 gives 2, 2, 2; 9 gives 3, 3, 3)
    roomy = probe_frame([0.5] * 13, cluster=[0] * 4 + [1] * 3 + [2] * 6)
    short = params_of(*sparft, "select.budget=6", "train.prompts_per_step=3")
    check = assert_fires_and_clears(short, "arm size", "sparft", roomy, keys={"select.budget"})
    assert check.fix == {"select.budget": 9}, check
    enough = params_of(*sparft, "select.budget=9", "train.prompts_per_step=2")
    assert find(run_checks(enough, probe), "arm size", "sparft").status == "ok"
    full = params_of("train.curriculum=sparft", "train.data=full", "train.prompts_per_step=3")
    on_all = find(run_checks(full, probe), "arm size", "sparft")
    assert on_all.status == "warn" and on_all.fix == {"train.prompts_per_step": 2}, on_all
    hdbscan = params_of(*sparft, "cluster.method=hdbscan")
    assert find(run_checks(hdbscan), "arm size", "sparft").status == "pending"


# --- allocators ------------------------------------------------------------------------------


def test_variance_allocation_without_room_to_vary() -> None:
    params = params_of(
        "train.curriculum=cures", "train.num_generations=4", "allocation.variance_min=4"
    )
    check = assert_fires_and_clears(
        params, "variance room", "cures", keys={"allocation.variance_min"}
    )
    assert check.fix == {"allocation.variance_min": 2}
    capped = params_of(
        "train.curriculum=uniform",
        "train.allocation=variance",
        "train.num_generations=8",
        "allocation.variance_min=2",
        "allocation.variance_max=8",
    )
    fired = assert_fires_and_clears(capped, "variance room", "uniform")
    assert fired.fix == {"allocation.variance_max": 16}
    fixed = params_of("train.curriculum=cures", "train.allocation=fixed")
    warned = find(run_checks(fixed), "cures allocation", "cures")
    assert warned.warns and warned.fix == {"train.allocation": "auto"}


def test_knapsack_needs_enough_probe_rollouts() -> None:
    params = params_of(
        "train.curriculum=uniform",
        "train.allocation=knapsack",
        "probe.k=2",
        "allocation.knapsack_min_observed=4",
    )
    check = assert_fires_and_clears(
        params, "knapsack estimates", "uniform", keys={"allocation.knapsack_min_observed"}
    )
    assert check.fix == {"allocation.knapsack_min_observed": 2} and "probe.k" in check.message
    # the probe's own k column wins over probe.k once the probe has run
    assert (
        find(run_checks(params, probe_frame([0.5], k=8)), "knapsack estimates", "uniform").status
        == "ok"
    )
    labels = params_of(
        "train.curriculum=uniform", "train.allocation=knapsack", "probe.source=label"
    )
    assert find(run_checks(labels), "knapsack estimates", "uniform").fix == {
        "probe.source": "model"
    }


# --- DOTS ------------------------------------------------------------------------------------


def test_effective_questions_of_the_dots_draw() -> None:
    assert effective_questions(np.full(10, 0.3), 0.5, 1e-3) == pytest.approx(10)
    assert effective_questions(np.array([0.5, 0.5, 0.0, 1.0]), 0.5, 1e-3) == pytest.approx(2)
    assert effective_questions(np.array([0.5, 0.0, 1.0, np.nan]), 0.5, 1e-3) == pytest.approx(1)
    rates = np.linspace(0, 1, 50)
    widths = [effective_questions(rates, 0.5, tau) for tau in (1e-3, 1e-2, 1e-1, 1.0)]
    assert widths == sorted(widths) and widths[-1] < 50
    tau = tau_for(rates, 0.5, 1e-3, 16)
    assert tau is not None and effective_questions(rates, 0.5, tau) >= 16
    assert effective_questions(rates, 0.5, tau * 0.8) < 16  # about the smallest
    assert tau_for(rates[:4], 0.5, 1e-3, 8) is None  # 4 questions cannot make 8


def test_dots_references_and_distinct_questions() -> None:
    params = params_of(
        "train.curriculum=dots",
        "dots.reference_questions=16",
        "dots.every=4",
        "train.prompts_per_step=4",
    )
    assert_fires_and_clears(params, "dots references", "dots", keys={"dots.reference_questions"})
    assert find(run_checks(params), "dots questions", "dots").status == "pending"
    # k = 4: only the three questions at exactly 0.5 sit at alpha, against 16 prompts a window
    probe = probe_frame([0.5, 0.5, 0.5] + [0.0, 0.25, 0.75, 1.0] * 10)
    check = assert_fires_and_clears(params, "dots questions", "dots", probe, keys={"dots.tau"})
    assert "3.0 effective questions" in check.message and "dots.every=4" in check.message
    small = probe_frame([0.5, 0.25, 0.75, 0.0, 1.0, 0.5])  # 6 questions: a window of 16 cannot
    fired = find(run_checks(params, small), "dots questions", "dots")
    assert fired.warns and fired.fix["dots.every"] == 1
    assert find(run_checks(cleared(params, fired), small), "dots questions", "dots").status == "ok"


# --- seeds -----------------------------------------------------------------------------------


def test_seeds_below_what_a_sign_flip_test_needs() -> None:
    need = min_seeds()
    assert need == 6 and min_p_value(5) > 0.05 > min_p_value(6)
    params = params_of("compare.seeds=[0,1,2]")
    check = assert_fires_and_clears(params, "seeds", None, keys={"compare.seeds"}, strategies=[])
    assert check.fix == {"compare.seeds": [0, 1, 2, 3, 4, 5]}
    assert f"{mde(1.0, 3):.2f} x the seed sd" in check.message and "2/2^3" in check.message
    assert find(run_checks(params, seeds=[7], strategies=[]), "seeds").fix == {
        "compare.seeds": [7, 8, 9, 10, 11, 12]
    }


def test_mde_in_points_from_a_previous_report_old_and_new_format() -> None:
    old = json.loads(RESULTS.read_text())
    sd = previous_seed_sd(old)
    uniform = np.array(old["strategies"]["uniform"]["curve"][-1]["per_seed"])
    sds = [
        np.std(np.array(e["curve"][-1]["per_seed"]) - uniform, ddof=1)
        for name, e in old["strategies"].items()
        if name != "uniform"
    ]
    assert sd == pytest.approx(float(np.sqrt(np.mean(np.square(sds)))))
    check = seed_power([0, 1, 2], old)
    assert f"= {mde(1.0, 3) * sd:.3f} accuracy" in check.message
    new = {"strategies": {"uniform": {}, "a": {"vs_uniform": {"seed_sd": 0.03}}}}
    assert previous_seed_sd(new) == pytest.approx(0.03)
    assert previous_seed_sd(None) is None and previous_seed_sd({"strategies": {}}) is None


# --- collecting ------------------------------------------------------------------------------


def test_comparison_checks_each_strategy_under_its_overrides() -> None:
    params = params_of("compare.seeds=[0,1,2,3,4,5]", "cluster.k=8", "train.max_steps=4")
    checks = run_checks(params, strategies=["uniform", "sparft", "cures+knapsack", "dots"])
    by = {(c.name, c.strategy) for c in checks}
    assert ("arm pulls", "sparft") in by and ("arm pulls", "uniform") not in by
    assert ("knapsack estimates", "cures+knapsack") in by  # the modifier's allocator
    assert ("variance room", "cures+knapsack") not in by
    assert ("dots questions", "dots") in by and ("seeds", None) in by
    assert strategy_params(params, "dots").train.replay.enabled
    run = run_checks(params_of("train.curriculum=uniform"))
    assert [c.name for c in run] == ["token budgets", "learnable pool"]  # uniform: nothing own


def test_strict_error_names_every_warning() -> None:
    assert strict_error(run_checks(params_of("train.curriculum=uniform"))) is None
    checks = run_checks(
        params_of(
            "train.curriculum=sparft", "bandit.prior_weight=0", "cluster.k=8", "train.max_steps=2"
        )
    )
    error = strict_error(checks)
    assert isinstance(error, ConfigError)
    assert "arm pulls (sparft)" in str(error) and "train.max_steps=24" in str(error)
    for check in checks:
        assert Check.from_dict(json.loads(json.dumps(check.as_dict()))) == check


# --- the current probe, and the flows' part ---------------------------------------------------


def write_probe_outputs(root: Path) -> pd.DataFrame:
    """The load and probe stages' outputs, as if they had run here (6 arithmetic questions)."""
    from sparft.stages import STAGES

    data = root / "data"
    (data / "plots").mkdir(parents=True)
    ids = [f"q{i}" for i in range(6)]
    pd.DataFrame(
        {"id": ids, "difficulty_label": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0], "source": "arithmetic"}
    ).to_parquet(data / "train.parquet")
    probe = probe_frame([1.0, 1.0, 0.0, 0.0, 0.0, 0.5])
    probe["id"] = ids
    probe.to_parquet(data / "probe.parquet")
    for out in STAGES["probe"].written()[1:]:
        (root / out).write_text("{}")
    return probe


def record_cached_run(root: Path, params: Params, stage: str) -> None:
    """What the flow's cached task leaves behind: a result under the stage's key recording the
    outputs on disk."""
    from flows.dvc_state import output_digests, spec_of, stage_key
    from flows.tasks import result_store, stage_task
    from sparft.stages import STAGES

    config = params.model_dump(mode="json")
    spec = spec_of(STAGES[stage], config)
    outputs = output_digests(root, list(spec.outs))
    key = stage_key(spec, config, root)
    result_store(stage_task(stage)).write(obj={"outputs": outputs}, key=key)


def test_probe_rows_only_when_the_probe_output_is_current(tmp_path: Path) -> None:
    from flows.preflight import probe_rows

    params = params_of()
    assert probe_rows(params, tmp_path) is None  # no probe yet
    write_probe_outputs(tmp_path)
    assert probe_rows(params, tmp_path) is None  # on disk, but nothing says it is current
    record_cached_run(tmp_path, params, "probe")
    rows = probe_rows(params, tmp_path)
    assert rows is not None and len(rows) == 6
    assert {"difficulty_label", "source"} <= set(rows.columns) and "cluster" not in rows
    other = params_of("probe.k=8")  # other settings: the same files are not current for them
    assert probe_rows(other, tmp_path) is None
    (tmp_path / "data" / "probe.parquet").write_bytes(b"rewritten")  # outputs differ: stale
    assert probe_rows(params, tmp_path) is None


def test_after_probe_records_and_strict_raises(tmp_path: Path) -> None:
    from flows.preflight import after_probe

    logged: list[str] = []
    params = params_of("train.curriculum=sparft", "train.max_steps=2", "bandit.prior_weight=0")
    payload = after_probe(params, tmp_path, None, False, logged.append)
    assert payload["warnings"] and len(logged) == len(payload["warnings"])
    assert {"warn", "pending"} <= {c["status"] for c in payload["checks"]}
    with pytest.raises(ConfigError, match="preflight"):
        after_probe(params, tmp_path, None, True, logged.append)
    quiet = params_of("train.curriculum=uniform")
    assert after_probe(quiet, tmp_path, None, True, logged.append)["warnings"] == []


# --- command line -----------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding the repository's params.yaml (as the reviewer runs it in the
    checkout), whose flows fail the test if they start."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)

    def no_flow(**kwargs: Any) -> dict[str, Any]:
        raise AssertionError(f"a flow started: {kwargs}")

    import flows.compare_strategies
    import flows.pipeline

    monkeypatch.setattr(flows.pipeline, "pipeline", no_flow)
    monkeypatch.setattr(flows.compare_strategies, "compare_strategies", no_flow)
    return tmp_path


REVIEWER = [
    "compare-strategies", "--dry-run", "--strategy", "uniform", "--strategy", "cures",
    "--seed", "0", "--set", "probe.max_new_tokens=384", "--set", "train.max_completion_length=64",
]  # fmt: skip


def test_compare_strategies_dry_run_prints_the_checks_and_trains_nothing(project: Path) -> None:
    result = runner.invoke(app, REVIEWER)
    assert result.exit_code == 0, result.output
    assert "preflight checks" in result.output and "pending" in result.output
    lines = result.output.splitlines()
    assert "2 preflight warning(s):" in lines
    budgets = "token budgets: probe.max_new_tokens=384, train.max_completion_length=64, "
    assert any(line.startswith(f"  {budgets}evaluate.max_new_tokens=32") for line in lines)
    fixes = [line for line in lines if line.startswith("clear them with:")]
    assert fixes == [
        "clear them with: --set probe.max_new_tokens=64 --set evaluate.max_new_tokens=64 "
        "--set compare.seeds=[0,1,2,3,4,5]"
    ]  # variance_min 2 leaves CurES's counts room at 4 rollouts
    assert not (project / "data").exists()
    strict = runner.invoke(app, [*REVIEWER, "--strict"])
    assert strict.exit_code == 2, strict.output
    assert (
        "error: preflight (--strict): 2 warning(s): token budgets (all), seeds (all)"
        in strict.output
    )


def test_run_dry_run_and_strict(project: Path) -> None:
    clean = runner.invoke(app, ["run", "--dry-run", "--strict"])  # the offline default
    assert clean.exit_code == 0, clean.output
    assert "preflight warning" not in clean.output
    uninformed = ["run", "--dry-run", "--set", "bandit.prior_weight=0"]
    result = runner.invoke(app, uninformed)
    assert result.exit_code == 0, result.output
    assert "--set train.max_steps=24 --set bandit.prior_mean=-0.5" in result.output
    strict = runner.invoke(app, [*uninformed, "--strict"])
    assert strict.exit_code == 2, strict.output
    assert "arm pulls (sparft), bandit prior (sparft)" in strict.output
    assert not (project / "data").exists()


def test_run_passes_strict_to_the_flow_and_prints_the_decided_checks(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.pipeline

    seen: dict[str, Any] = {}
    decided = [Check("learnable pool", "ok", "never solved 0%, always solved 0% of 9 questions")]

    def fake(**kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        report = {"checks": [c.as_dict() for c in decided], "warnings": []}
        return {"stages": {}, "notes": [], "preflight": report}

    monkeypatch.setattr(flows.pipeline, "pipeline", fake)
    result = runner.invoke(app, ["run", "--strict"])  # the offline default: no warning
    assert result.exit_code == 0, result.output
    assert seen["strict"] is True
    assert "preflight checks after the probe" in result.output
    assert "of 9 questions" in " ".join(result.output.split())


def test_dry_run_decides_the_probe_checks_when_the_probe_is_current(project: Path) -> None:
    from sparft.config import load_params

    write_probe_outputs(project)
    pending = runner.invoke(app, ["run", "--dry-run"])
    assert "│ pending │" in pending.output
    record_cached_run(project, load_params(project / "params.yaml"), "probe")
    result = runner.invoke(app, ["run", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "│ pending │" not in result.output
    assert "--set arithmetic.grades=[3]" in result.output  # grade 3: 1 of 2 never solved


@pytest.mark.slow
def test_pipeline_checks_after_the_probe_and_strict_stops_before_training(
    tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny model solves nothing: before the flow the pool check is pending, so --strict
    starts it; once the probe has run the check warns and the flow stops before training. The
    dry run then finds the probe current; a plain run trains and records the checks."""
    import mlflow

    from sparft.testing import tiny_overrides

    monkeypatch.chdir(tmp_path)
    # absolute: MLflow caches a store per URI, so a relative one would follow this test's
    # folder into the next test that runs a pipeline in this process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    quiet = [f"generation.model={tiny_lm_dir}", *tiny_overrides(), "train.curriculum=uniform"]
    quiet += ["probe.max_new_tokens=8", "tracking.log_model=false"]
    args = [a for o in quiet for a in ("--set", o)]
    strict = runner.invoke(app, ["run", "--strict", *args])
    assert strict.exit_code == 2, strict.output
    assert "│ pending │" in strict.output  # before the flow
    assert "error: preflight (--strict): 1 warning(s):" in strict.output
    assert "learnable pool: never solved 100%" in strict.output
    assert (tmp_path / "data" / "probe.parquet").exists()
    assert not (tmp_path / "data" / "train" / "model").exists()
    dry = runner.invoke(app, ["run", "--dry-run", *args])
    assert dry.exit_code == 0, dry.output
    assert "│ pending │" not in dry.output and "learnable pool: never solved 100%" in dry.output
    done = runner.invoke(app, ["run", *args])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "data" / "train" / "model" / "config.json").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sparft").experiment_id])
    parents = [r for r in runs if r.data.tags.get("sparft.kind") == "pipeline"]
    assert sorted(r.info.status for r in parents) == ["FAILED", "FINISHED"]
    for parent in parents:
        assert parent.data.tags["preflight.warnings"] == "1"
        names = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert "preflight.json" in names
