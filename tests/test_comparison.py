"""Strategy comparison: strategy names, the statistics on runs whose answers are known, the
held-out curve's journal and cache, the MLflow headline; then ``sparft compare-strategies`` for
real on the tiny model (slow)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import cli_env, fake_vllm_python

from sparft.comparison import (
    CompareConfig,
    RunCurve,
    analyse_report,
    bootstrap_means,
    compare_scores,
    parse_pair,
    pilot_power,
    reach,
    strategy_overrides,
    summarise,
)
from sparft.config import ConfigError, as_overrides, load_params
from sparft.testing import tiny_project
from sparft.tracking import headline_metrics, headline_params
from sparft.training.heldout import HeldoutCurve

ROOT = Path(__file__).resolve().parents[1]


def test_strategies_are_overrides_with_modifiers() -> None:
    overrides, probe = strategy_overrides("uniform")
    assert overrides == {"train.curriculum": "uniform", "train.data": "full"} and not probe
    overrides, probe = strategy_overrides("uniform+knapsack")
    assert overrides["train.allocation"] == "knapsack" and probe  # knapsack reads the probe
    overrides, _ = strategy_overrides("sparft-lp+replay")
    assert overrides["bandit.reward"] == "learning-progress"
    assert overrides["train.replay.enabled"] is True
    overrides, probe = strategy_overrides("uniform+bf16-mixed")
    assert overrides["train.precision"] == "bf16-mixed" and not probe
    p = load_params(ROOT / "params.yaml", as_overrides(overrides))
    assert p.train.precision == "bf16-mixed"
    overrides, probe = strategy_overrides("uniform+subset")  # the subset's effect alone
    assert overrides == {"train.curriculum": "uniform", "train.data": "subset"} and probe
    overrides, _ = strategy_overrides("sparft+full")  # the bandit's effect alone
    assert overrides["train.curriculum"] == "sparft" and overrides["train.data"] == "full"
    with pytest.raises(ValueError, match="unknown strategy 'grpo'"):
        strategy_overrides("grpo")
    with pytest.raises(ValueError, match="unknown modifier 'fast'"):
        strategy_overrides("sparft+fast")


def test_every_strategy_resolves_to_valid_params() -> None:
    for name in CompareConfig().strategies:
        overrides, _ = strategy_overrides(name)
        p = load_params(ROOT / "params.yaml", as_overrides(overrides))
        assert p.train.curriculum == overrides["train.curriculum"]


def test_compare_section_names_the_bad_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"compare\.strategies.*unknown strategy 'bogus'"):
        load_params(ROOT / "params.yaml", ['compare.strategies=["uniform", "bogus"]'])
    with pytest.raises(ConfigError, match="repeat"):
        load_params(ROOT / "params.yaml", ['compare.strategies=["uniform", "uniform"]'])
    with pytest.raises(ConfigError, match=r"compare\.seeds"):
        load_params(ROOT / "params.yaml", ["compare.seeds=[]"])


def test_scale_is_what_the_comparison_runs_under() -> None:
    """The default scale resolves to valid params at the powered design's size, and ``--set``
    after it wins."""
    from sparft.evaluation import load_benchmark

    cfg = load_params(ROOT / "params.yaml").compare
    p = load_params(ROOT / "params.yaml", [*as_overrides(cfg.scale), "train.max_steps=3"])
    assert p.train.max_steps == 3 and p.train.learning_rate == cfg.scale["train.learning_rate"]
    assert p.train.rollouts_per_step == 32 and p.select.budget == 48
    heldout, _ = load_benchmark(p.evaluate.benchmarks[0], p.evaluate, p.data, p.arithmetic)
    assert len(heldout) == 4 * 48  # grade 1 has 72 distinct questions: 24 train, 48 held out
    assert p.probe.k >= p.allocation.knapsack_min_observed  # knapsack reads the probe


def test_scale_refuses_keys_that_are_not_a_stage_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"compare\.scale.*'compare\.seeds'"):
        load_params(ROOT / "params.yaml", ['compare.scale={"compare.seeds": [1]}'])
    with pytest.raises(ConfigError, match=r"'max_steps'"):
        load_params(ROOT / "params.yaml", ['compare.scale={"max_steps": 4}'])
    cfg = load_params(ROOT / "params.yaml", ['compare.scale={"train.nope": 1}']).compare
    with pytest.raises(ConfigError, match=r"train\.nope"):
        load_params(ROOT / "params.yaml", as_overrides(cfg.scale))


def test_variants_go_seed_by_seed(tmp_path: Path) -> None:
    """A comparison stopped early holds every strategy at the same seeds."""
    from flows.compare_strategies import variants

    cfg = CompareConfig(strategies=["uniform", "sparft"], seeds=[0, 1], eval_every=2)
    planned = variants(cfg, tmp_path)
    assert [label for label, _ in planned] == [
        "uniform seed=0", "sparft seed=0", "uniform seed=1", "sparft seed=1"
    ]  # fmt: skip
    assert {"train.seed=1", "bandit.seed=1", "train.heldout.every=2"} <= set(planned[3][1])


def test_compare_scores_at_every_common_check_over_common_seeds() -> None:
    rng = np.random.default_rng(1)
    b = {step: {s: (rng.random(200) < 0.3).astype(float) for s in range(8)} for step in (0, 4)}
    same = compare_scores(b, b, reps=200)
    assert same is not None and same["difference"] == 0 and same["ci"] == [0.0, 0.0]
    assert same["verdict"] == "not separable" and same["p_value"] == 1.0
    a = {step: {s: row.copy() for s, row in seeds.items()} for step, seeds in b.items()}
    for row in a[4].values():
        row[:60] = 1.0  # a solves the first 60 questions in every seed at step 4
    a[4].pop(7)  # a seed only b ran is left out of the pairing
    out = compare_scores(a, b, reps=200)
    assert out is not None and out["step"] == 4 and out["seeds"] == list(range(7))
    gained = float(np.mean([(a[4][s] - b[4][s]).mean() for s in range(7)]))
    assert out["difference"] == pytest.approx(gained)
    assert 0 < out["ci"][0] < gained < out["ci"][1]
    assert out["p_value"] == pytest.approx(2 / 2**7) and out["verdict"] == "ahead"
    assert out["probability_of_improvement"] == 1.0
    assert [t["step"] for t in out["by_step"]] == [0, 4]
    assert out["by_step"][0]["verdict"] == "not separable"
    assert compare_scores(a, {8: b[4]}) is None  # no common check


def test_pairs_are_strategy_names_separated_by_a_colon() -> None:
    assert parse_pair("sparft:uniform+subset") == ("sparft", "uniform+subset")
    with pytest.raises(ValueError, match="want STRATEGY:STRATEGY"):
        parse_pair("sparft-uniform")
    with pytest.raises(ValueError, match=r"not in compare\.strategies"):
        CompareConfig(strategies=["uniform"], pairs=["sparft:uniform"])
    with pytest.raises(ValueError, match="unknown strategy"):
        CompareConfig(pairs=["bogus:uniform"])


def test_analyse_recomputes_a_saved_report_without_question_data() -> None:
    report = json.loads((ROOT / "benchmarks/results/compare_all_8steps.json").read_text())
    out = analyse_report(report, pairs=[("sparft", "dots")])
    assert out["level"] == 0.95 and out["baseline"] == "uniform"
    uniform = out["strategies"]["uniform"]
    assert "vs_uniform" not in uniform and uniform["question_level"] is False
    for name, entry in out["strategies"].items():
        if name == "uniform":
            continue
        vs = entry["vs_uniform"]
        # 3 seeds: the sign-flip test cannot go below p = 0.25, so nothing is separable
        assert vs["verdict"] == "not separable" and vs["p_value"] >= 0.25
        assert vs["ci"][0] < 0 < vs["ci"][1] and vs["mde"] > 0.3
        assert vs["seeds_needed"]["0.05"] >= 6 and vs["n_seeds"] == 3
    sparft = out["strategies"]["sparft"]["vs_uniform"]
    assert sparft["difference"] == pytest.approx(-0.234375)
    assert sparft["ci"] == pytest.approx([-0.69, 0.22], abs=0.01)  # the paired t
    assert out["pairs"]["sparft vs dots"]["verdict"] == "not separable"
    with pytest.raises(ValueError, match="no 'strategies'"):
        analyse_report({"strategy": "sparft"})
    with pytest.raises(ValueError, match="no 'uniform' strategy"):
        analyse_report({"strategies": {"sparft": report["strategies"]["sparft"]}})


def test_bootstrap_interval_covers_the_mean_and_widens_with_fewer_questions() -> None:
    rng = np.random.default_rng(2)
    many = (rng.random((3, 400)) < 0.5).astype(float)
    few = many[:, :40]
    wide = np.quantile(bootstrap_means(few, 2000, rng), [0.025, 0.975])
    narrow = np.quantile(bootstrap_means(many, 2000, rng), [0.025, 0.975])
    assert wide[0] < few.mean() < wide[1] and narrow[0] < many.mean() < narrow[1]
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])


def test_reach_is_the_first_step_at_the_target() -> None:
    assert reach([0, 5, 10], [0.2, 0.3, 0.4], 0.3) == 5
    assert reach([0, 5, 10], [0.2, 0.3, 0.4], 0.5) is None


def _run(strategy: str, seed: int, accuracies: list[float], arms: dict[str, int]) -> RunCurve:
    """A run whose checks solve the first ``accuracy x 100`` of 100 questions."""
    points = pd.DataFrame(
        [
            {
                "step": 5 * i,
                "correct": [q < round(acc * 100) for q in range(100)],
                "rollouts": 40 * i,
                "unique_seen": 10 * i,
                "train_seconds": 3.0 * i,
            }
            for i, acc in enumerate(accuracies)
        ]
    )
    history = pd.DataFrame({"step": range(10), "effective_prompt_ratio": [0.5] * 10})
    probe = 64 if strategy != "uniform" else 0
    return RunCurve(strategy, seed, points, history, probe, arms)


def test_summarise_pairs_against_uniform() -> None:
    runs = [
        *[_run("uniform", s, [0.2, 0.25, 0.3], {}) for s in (0, 1)],
        *[_run("sparft", s, [0.2, 0.3, 0.5], {"0": 3, "1": 7}) for s in (0, 1)],
    ]
    out, pairs = summarise(runs, CompareConfig(bootstrap=300), {"0": 0.1, "1": 0.5})
    uniform, sparft = out["uniform"], out["sparft"]
    assert pairs == {}
    assert [p["mean"] for p in uniform["curve"]] == pytest.approx([0.2, 0.25, 0.3])
    assert sparft["final"]["rollouts"] == 80 + 64  # the probe's rollouts counted
    assert uniform["final"]["rollouts"] == 80
    assert sparft["vs_uniform"]["difference"] == pytest.approx(0.2)
    vs = sparft["vs_uniform"]
    assert vs["ci"][0] > 0  # 20 more questions solved in every seed: the question term's width
    assert vs["verdict"] == "not separable" and vs["p_value"] == 0.5  # but 2 seeds prove nothing
    # 100 questions of which 20 differ: the question set alone keeps the MDE above 5 points,
    # so no number of seeds reaches it (more held-out questions would)
    assert vs["min_p_value"] == 0.5 and vs["seeds_needed"]["0.05"] is None
    assert sparft["final"]["correct"][0] == "1" * 50 + "0" * 50
    assert sparft["gain"]["difference"] == pytest.approx(0.3) and sparft["gain"]["ci"][0] > 0
    assert sparft["reach_uniform_final"] == {
        "target": 0.3,
        "step": 5,
        "rollouts": 40 + 64,
        "train_seconds": 3.0,
    }
    assert uniform["reach_uniform_final"]["step"] == 10
    assert [a["share"] for a in sparft["arms"]] == [0.3, 0.7]
    assert sparft["arms"][1]["probe_solve_rate"] == 0.5
    assert sparft["effective_prompt_ratio"]["per_step"][0] == [1, 0.5]
    assert "vs_uniform" not in uniform and uniform["arms"] == []


def test_table_metrics_tags_and_caption_carry_the_verdict() -> None:
    from flows.compare_strategies import (
        strategy_metrics,
        table_rows,
        verdict_caption,
        verdict_tags,
    )

    runs = [
        *[_run("uniform", s, [0.2, 0.3], {}) for s in range(6)],
        *[_run("sparft+full", s, [0.2, 0.3 + 0.01 * (s + 1)], {}) for s in range(6)],
    ]
    summary, _ = summarise(runs, CompareConfig(bootstrap=100))
    vs = summary["sparft+full"]["vs_uniform"]
    assert vs["verdict"] == "ahead" and vs["p_value"] == pytest.approx(2 / 64)
    row = next(r for r in table_rows(summary) if r["strategy"] == "sparft+full")
    assert row["verdict"] == "ahead" and row["mde"] == round(vs["mde"], 4)
    assert row["steps_to_uniform_final"] == 5 and row["train_s_to_uniform_final"] == 3.0
    metrics = strategy_metrics(summary)
    assert metrics["sparft_plus_full.vs_uniform_p"] == vs["p_value"]
    assert metrics["sparft_plus_full.mde"] == vs["mde"]
    assert verdict_tags(summary) == {"sparft_plus_full.verdict": "ahead"}
    assert "sparft+full: ahead (p=0.03" in verdict_caption(summary, 0.95)


def test_analyse_of_a_new_report_equals_the_flow_s_own_statistics() -> None:
    runs = [
        *[_run("uniform", s, [0.2, 0.3 + 0.02 * s], {}) for s in range(6)],
        *[_run("dots", s, [0.2, 0.35 + 0.01 * s], {}) for s in range(6)],
    ]
    cfg = CompareConfig(bootstrap=100, strategies=["uniform", "dots"], pairs=["dots:uniform"])
    summary, pairs = summarise(runs, cfg)
    report = json.loads(
        json.dumps({"settings": {"level": 0.95, "bootstrap": 100}, "strategies": summary})
    )
    out = analyse_report(report, pairs=[("dots", "uniform")])
    assert out["strategies"]["dots"]["question_level"] is True
    again, saved = out["strategies"]["dots"]["vs_uniform"], summary["dots"]["vs_uniform"]
    for key in ("difference", "ci", "p_value", "verdict", "mde", "question_se", "df"):
        assert again[key] == pytest.approx(saved[key]), key
    assert out["pairs"]["dots vs uniform"]["ci"] == pytest.approx(pairs["dots vs uniform"]["ci"])
    assert out["strategies"]["uniform"]["accuracy"]["ci"] == pytest.approx(
        summary["uniform"]["final"]["ci"]
    )


def test_summarise_refuses_unpaired_or_missing_checks() -> None:
    runs = [_run("uniform", 0, [0.2, 0.3], {}), _run("sparft", 1, [0.2, 0.3], {})]
    assert summarise(runs, CompareConfig(bootstrap=100))[0]["sparft"]["vs_uniform"] is None
    with pytest.raises(ValueError, match="seed repeated"):
        summarise([_run("uniform", 0, [0.2], {})] * 2, CompareConfig(bootstrap=100))


class _Curriculum:
    rollouts_total = 12
    seen = frozenset({"a", "b"})


class _Trainer:
    curriculum = _Curriculum()
    model = None
    processing_class = None


def _curve(tmp_path: Path, **kw: Any) -> HeldoutCurve:
    from sparft.prompts import PromptConfig

    questions = pd.DataFrame({"id": ["q1", "q2"], "question": ["1+1", "2+2"], "answer": ["2", "4"]})
    curve = HeldoutCurve(questions, PromptConfig(), 5, 16, 8, tmp_path / "heldout.jsonl", **kw)
    curve.trainer = _Trainer()
    return curve


def test_curve_journal_keeps_points_up_to_the_resumed_step(tmp_path: Path) -> None:
    curve = _curve(tmp_path)
    answers = iter([([True, False], [3, 16]), ([True, True], [3, 4]), ([False, False], [1, 1])])
    curve.measure = lambda model: next(answers)  # type: ignore[method-assign]
    for step in (0, 5, 10):
        curve.check(step)
    with curve.journal.open("a") as fh:
        fh.write('{"step": 15, "accur')  # a line cut off by a kill
    again = _curve(tmp_path)
    again.resume(5)
    assert [p["step"] for p in again.points] == [0, 5]
    assert [p["accuracy"] for p in again.points] == [0.5, 1.0]
    assert again.points[1] | {"train_seconds": 0} == {
        **again.points[1],
        "correct": [True, True],
        "tokens": [3, 4],
        "rollouts": 12,
        "unique_seen": 2,
        "train_seconds": 0,
    }
    lines = again.journal.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 5]  # the cut line is gone


def test_step_zero_is_cached_by_model_and_questions(tmp_path: Path) -> None:
    first = _curve(tmp_path / "a", base_key="model-digest", cache_dir=tmp_path / "cache")
    first.measure = lambda model: ([True, False], [5, 16])  # type: ignore[method-assign]
    assert not first.check(0)["cached"]

    def fail(model: Any) -> tuple[list[bool], list[int]]:
        raise AssertionError("measured although cached")

    second = _curve(tmp_path / "b", base_key="model-digest", cache_dir=tmp_path / "cache")
    second.measure = fail  # type: ignore[method-assign]
    point = second.check(0)
    assert point["cached"] and point["correct"] == [True, False] and point["truncated"] == 0.5
    other = _curve(tmp_path / "c", base_key="other-model", cache_dir=tmp_path / "cache")
    other.measure = lambda model: ([False, False], [1, 1])  # type: ignore[method-assign]
    assert not other.check(0)["cached"]  # another model: not the cached point
    second.measure = lambda model: ([False, True], [1, 1])  # type: ignore[method-assign]
    assert not second.check(5)["cached"]  # only step 0 is the base model's


def test_headline_from_stage_summaries() -> None:
    p = load_params(ROOT / "params.yaml", ["train.allocation=knapsack", "train.seed=3"])
    params = headline_params(p)
    assert params["strategy"] == "sparft + knapsack (thompson, target)"
    assert params["seed"] == "3" and params["model"] == "smollm2-135m"
    assert params["allocation"] == "knapsack" and params["replay"] == "false"
    summaries = {
        "probe": {"rollouts": 256},
        "train": {"effective_prompt_ratio": 0.4, "rollouts_total": 640.0, "train_seconds": 12.5},
        "evaluate": {
            "metrics": {
                "trained": {"gsm8k": {"pass_at_1": 0.3}, "math500": {"pass_at_1": 0.1}},
                "smollm2-135m": {"gsm8k": {"pass_at_1": 0.2}},
            }
        },
    }
    assert headline_metrics(summaries) == {
        "accuracy.gsm8k": 0.3,
        "accuracy.math500": 0.1,
        "heldout_accuracy": 0.3,
        "effective_prompt_ratio": 0.4,
        "rollouts": 640.0,
        "train_wall_s": 12.5,
        "probe_rollouts": 256.0,
    }
    curve_only = headline_metrics({"train": {"heldout_accuracy_final": 0.25}})
    assert curve_only == {"heldout_accuracy": 0.25}


# ------------------------------------------------------------------ the flow, for real (slow)


@pytest.mark.slow
def test_compare_strategies_on_the_tiny_model(tmp_path: Path, tiny_lm_dir: Path) -> None:
    """Two strategies x two seeds: curves with intervals, the paired difference, MLflow parent
    runs with headline params and metrics, plots; a rerun takes every variant from the cache."""
    root = tiny_project(
        tmp_path / "project",
        tiny_lm_dir,
        ROOT,
        {
            "tracking": {"log_model": False},
            "compare": {"eval_every": 1, "bootstrap": 200, "scale": {"evaluate.limit": 3}},
        },
    )
    db = root / "mlflow.db"
    env = cli_env(tmp_path / "prefect", ("MLFLOW_",), MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    args = ["sparft", "compare-strategies", "--strategy", "uniform", "--strategy", "sparft"]
    args += ["--seed", "0", "--seed", "1"]

    def run(*given: str) -> str:
        done = subprocess.run(
            list(given or args), cwd=root, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        return done.stdout + done.stderr

    out = run()
    assert "wrote data/compare/strategies.json" in out
    report = json.loads((root / "data/compare/strategies.json").read_text())
    settings = report["settings"]
    assert settings["heldout_questions"] == 3 and settings["scale"] == {"evaluate.limit": 3}
    assert settings["seeds"] == [0, 1]
    sparft, uniform = report["strategies"]["sparft"], report["strategies"]["uniform"]
    assert [p["step"] for p in sparft["curve"]] == [0, 1, 2]
    for entry in (sparft, uniform):
        first = entry["curve"][0]
        assert first["rollouts"] == entry["probe_rollouts"] and first["unique_seen"] == 0
        assert entry["curve"][-1]["rollouts"] == entry["probe_rollouts"] + 2 * 4  # 2 steps x 4
        for point in entry["curve"]:
            assert point["ci"][0] <= point["mean"] <= point["ci"][1]
    assert uniform["probe_rollouts"] == 0 and sparft["probe_rollouts"] == 9 * 2
    assert sparft["vs_uniform"]["step"] == 2 and len(sparft["arms"]) == 3
    assert sparft["vs_uniform"]["verdict"] == "not separable" and report["pairs"] == {}
    assert sum(a["picks"] for a in sparft["arms"]) == 2 * 2  # one arm per step, two seeds
    assert (root / "data/compare/strategies.png").stat().st_size > 0
    for variant in (root / "data/compare").glob("*_seed-*"):  # each saved one at its last step
        kept = variant / "data/checkpoints/train"
        assert not list(kept.glob("checkpoint-*")) and (kept / "heldout.jsonl").is_file()
    caches = list((root / "data/compare/heldout-cache").iterdir())
    assert len(caches) == 1  # the base model's step-0 check, once for all four variants
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    runs = mlflow.search_runs(experiment_names=["sparft"])
    variants = runs[runs["tags.mlflow.runName"].str.startswith("variant ")]
    assert len(variants) == 4
    assert set(variants["params.strategy"]) == {"uniform", "sparft (thompson, target)"}
    assert set(variants["params.seed"]) == {"0", "1"}
    assert variants["metrics.heldout_accuracy"].notna().all()
    assert (variants["metrics.rollouts"] == 8).all() and variants["metrics.wall_s"].gt(0).all()
    parents = runs[runs["tags.mlflow.runName"] == "compare-strategies"]
    assert len(parents) == 1
    parent = parents.iloc[0]
    assert parent["params.strategies"] == "uniform sparft"
    assert parent["metrics.sparft.vs_uniform"] == pytest.approx(sparft["vs_uniform"]["difference"])
    assert parent["metrics.sparft.vs_uniform_p"] == pytest.approx(sparft["vs_uniform"]["p_value"])
    assert parent["tags.sparft.verdict"] == "not separable"
    pipeline = runs[runs["tags.mlflow.runName"] == "pipeline"]
    assert pipeline["params.model"].eq(str(tiny_lm_dir)).all()
    assert pipeline["metrics.probe_rollouts"].eq(18).all()
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(parent["run_id"], "compare")}
    assert names == {"compare/strategies.json", "compare/strategies.png"}
    # what a merge needs: the runs, the digests of what they read, the machine
    assert set(report["design"]["inputs"]) >= {"data/probe.parquet", "data/clusters.parquet"}
    assert "train.seed" not in report["design"]["params"]["sparft"]
    assert report["design"]["code"]["sparft/bandit.py"] is not None
    assert len(report["runs"]) == 4 and report["settings"]["machine"]["cores"] >= 1
    parts = []
    for seed in ("0", "1"):  # the same four variants as two parts, each from the cache
        again = run(*args[:-4], "--part", "--seed", seed)
        assert again.count("Cached(type=COMPLETED)") >= 2 + 7  # two variants, seven stages
        parts.append(tmp_path / f"part{seed}.json")
        parts[-1].write_bytes((root / "data/compare/strategies.json").read_bytes())
    merged = root / "merged.json"
    said = run("sparft", "merge-reports", *map(str, parts), "--out", str(merged))
    assert "uniform, sparft x seeds [0, 1]" in said
    design = json.loads(merged.read_text())["settings"]["part_of"]  # params.yaml's compare
    assert len(design["strategies"]) * len(design["seeds"]) - 4 == 36
    assert "not complete: 36 run(s) of the design missing" in " ".join(said.split())
    assert json.loads(merged.read_text())["merged"]["code_differs"] == []
    merged_vs = json.loads(merged.read_text())["strategies"]["sparft"]["vs_uniform"]
    for key in ("difference", "ci", "p_value"):
        assert merged_vs[key] == pytest.approx(sparft["vs_uniform"][key]), key
    # new clusters retrain sparft, whose arms they are; uniform reads none, so stays cached
    args += ["--set", "cluster.k=2"]
    moved = run()
    for seed in (0, 1):
        assert f"'uniform seed={seed}' - Finished in state Cached(type=COMPLETED)" in moved
        assert f"'sparft seed={seed}' - Finished in state Completed()" in moved


@pytest.mark.slow
def test_compare_strategies_checks_the_pilot_s_power_before_the_other_seeds(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    """``compare.target_mde``: the first ``pilot_seeds`` seeds train, their spread predicts the
    MDE at all seeds (logged and in the report), then the other seeds train. Three seeds miss
    any target: their sign-flip test cannot reach p < 0.05, so without --strict it warns."""
    root = tiny_project(
        tmp_path / "project",
        tiny_lm_dir,
        ROOT,
        {
            "tracking": {"enabled": False},
            "compare": {
                "eval_every": 2,
                "bootstrap": 100,
                "scale": {"evaluate.limit": 3},
                "target_mde": 0.9,
                "pilot_seeds": 2,
            },
        },
    )
    env = cli_env(tmp_path / "prefect", ("SPARFT_",))
    args = ["sparft", "compare-strategies", "--strategy", "uniform", "--strategy", "sparft"]
    args += ["--seed", "0", "--seed", "1", "--seed", "2"]
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    said = " ".join((done.stdout + done.stderr).split())
    assert "power: the 2-seed pilot predicts the MDE against uniform at 3 seeds above" in said
    assert "sign-flip test needs 6 seeds" in said
    assert "measured MDE against uniform (target 0.900):" in said  # the run's own, at its end
    report = json.loads((root / "data/compare/strategies.json").read_text())
    power = report["power"]
    assert not power["passed"] and power["target_mde"] == 0.9 and power["seeds"] == 3
    assert power["strategies"]["sparft"]["pilot_seeds"] == 2
    assert report["strategies"]["sparft"]["seeds"] == [0, 1, 2]


@pytest.mark.slow
def test_compare_strategies_checks_through_one_shared_server(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    """``train.heldout.backend: vllm-server``: the flow starts one (stand-in) server for every
    variant, each non-cached check loads that variant's live weights into it first; a rerun
    from the cache starts none."""
    log = tmp_path / "server.log"
    requests = tmp_path / "requests.jsonl"
    scale = {"evaluate.limit": 3, "train.heldout.backend": "vllm-server"}
    root = tiny_project(
        tmp_path / "project",
        tiny_lm_dir,
        ROOT,
        {
            "tracking": {"enabled": False},
            "generation": {
                "server": {"python": str(fake_vllm_python(tmp_path)), "log_file": str(log)}
            },
            "compare": {"eval_every": 1, "bootstrap": 100, "scale": scale},
        },
    )
    env = cli_env(tmp_path / "prefect", ("SPARFT_",), FAKE_VLLM_REQUESTS=str(requests))
    args = ["sparft", "compare-strategies", "--strategy", "uniform", "--seed", "0", "--seed", "1"]
    for _ in range(2):  # the second from the cache
        done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert log.read_text().count("fake vllm started") == 1
    (started,) = [x for x in log.read_text().splitlines() if x.startswith("fake vllm started")]
    argv = json.loads(started.removeprefix("fake vllm started "))["argv"]
    served = Path(argv[argv.index("--model") + 1])
    assert served.name.startswith("sparft-heldout-serve-") and not served.exists()  # removed
    sent = [json.loads(line) for line in requests.read_text().splitlines()]
    reloads = [r for r in sent if r.get("endpoint") == "/collective_rpc"]
    # step 0 once (then cached), steps 1 and 2 for each seed
    assert len(reloads) == 1 + 2 * 2 and all(r["weights"] for r in reloads)
    assert len([r for r in sent if "messages" in r]) == 3 * len(reloads)
    report = json.loads((root / "data/compare/strategies.json").read_text())
    curve = report["strategies"]["uniform"]["curve"]
    assert [p["step"] for p in curve] == [0, 1, 2]
    assert len({p["mean"] for p in curve}) == 1  # the stand-in answers 4, whatever the weights


def test_analyse_command_writes_the_verdicts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sparft.cli import app

    report = ROOT / "benchmarks/results/compare_all_8steps.json"
    out = tmp_path / "out.json"
    done = CliRunner().invoke(
        app, ["analyse", str(report), "--json", str(out), "--pair", "sparft:dots"]
    )
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "per-seed accuracies only" in said
    assert "preflight: not in this report" in said
    written = json.loads(out.read_text())
    assert written["source"] == str(report) and written["preflight"] is None
    for name, entry in written["strategies"].items():
        if name != "uniform":
            assert set(entry["vs_uniform"]) >= {"difference", "ci", "p_value", "verdict", "mde"}
    bad = tmp_path / "bad.json"
    bad.write_text('{"strategies": {"sparft": {"seeds": [0]}}}')
    done = CliRunner().invoke(app, ["analyse", str(bad)])
    assert done.exit_code == 2 and "strategies.sparft: no 'curve'" in done.output
    assert str(bad) in done.output.replace("\n", "")


def test_analyse_command_says_how_the_report_s_preflight_came_out(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sparft.checks import Check
    from sparft.cli import app
    from sparft.preflight import report as preflight_report

    runs = [
        *[_run("uniform", s, [0.2, 0.3], {}) for s in range(6)],
        *[_run("dump", s, [0.2, 0.3], {}) for s in range(6)],
    ]
    summary, _ = summarise(runs, CompareConfig(bootstrap=100))
    checks = [
        Check("token budgets", "ok", "one budget"),
        Check("seeds", "ok", "6 seeds"),
        Check("arm pulls", "warn", "8 pulls over 8 arms", {"train.max_steps": 24}, "dump"),
    ]
    path = tmp_path / "report.json"
    power = pilot_power(summary, seeds=12, target=0.05)
    report = {
        "settings": {},
        "strategies": summary,
        "preflight": preflight_report(checks),
        "power": power,
    }
    path.write_text(json.dumps(report))
    done = CliRunner().invoke(app, ["analyse", str(path), "--json", str(tmp_path / "out.json")])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "preflight: 1 warning(s) (2 ok, 1 warn)" in said
    assert "arm pulls (dump): 8 pulls over 8 arms (clear it: train.max_steps=24)" in said
    assert "power: the 6-seed pilot predicts the MDE against uniform at 12 seeds within" in said
    dump_mde = summary["dump"]["vs_uniform"]["mde"]
    measured = f"measured MDE against uniform (target 0.050): within it for dump ({dump_mde:.3f})"
    assert dump_mde <= 0.05 and measured in said
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["preflight"]["warnings"] == [checks[2].line()]
    assert written["power"] == power


def test_remove_checkpoints_frees_them_and_keeps_the_journal(tmp_path: Path) -> None:
    from flows.grid import remove_checkpoints

    for step in (4, 8):
        (tmp_path / f"checkpoint-{step}" / "sub").mkdir(parents=True)
        (tmp_path / f"checkpoint-{step}" / "sub" / "optimizer.pt").write_bytes(b"x" * 100)
    (tmp_path / "heldout.jsonl").write_text("{}\n")
    assert remove_checkpoints(tmp_path) == 200
    assert [p.name for p in tmp_path.iterdir()] == ["heldout.jsonl"]
    assert remove_checkpoints(tmp_path / "missing") == 0


def test_pilot_power_predicts_the_mde_at_all_seeds_from_the_pilot_s_spread() -> None:
    from sparft.comparison import power_lines
    from sparft.seed_stats import mde

    steady = [0.30, 0.31, 0.29]  # differences against uniform: sd 0.01
    swinging = [0.10, 0.40, 0.25]  # sd 0.15
    runs = [
        *[_run("uniform", s, [0.2, 0.3], {}) for s in range(3)],
        *[_run("dump", s, [0.2, 0.3 + d - 0.3], {}) for s, d in enumerate(steady)],
        *[_run("sparft", s, [0.2, 0.3 + d - 0.3], {}) for s, d in enumerate(swinging)],
    ]
    summary, _ = summarise(runs, CompareConfig(bootstrap=100))
    power = pilot_power(summary, seeds=6, target=0.05)
    dump, sparft = power["strategies"]["dump"], power["strategies"]["sparft"]
    assert dump["pilot_seeds"] == 3 and dump["seed_sd"] == pytest.approx(0.01)
    question_var = dump["question_se"] ** 2
    assert dump["predicted_mde"] == pytest.approx(mde(0.01, 6, question_var))
    assert dump["meets"] and not sparft["meets"] and not power["passed"]
    assert sparft["seeds_needed"] > 6
    lines = power_lines(power)
    assert lines[0].startswith("power: the 3-seed pilot predicts the MDE against uniform at 6")
    assert "above the target 0.050" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("  sparft: predicted MDE")
    assert pilot_power(summary, seeds=6, target=0.9)["passed"]
    # a t-based MDE just within the target, but six seeds give the verdict's sign-flip test too
    # little power: the design misses, and the line says why
    edge = [
        *[_run("uniform", s, [0.2, 0.3], {}) for s in range(3)],
        *[_run("dump", s, [0.2, acc], {}) for s, acc in enumerate([0.30, 0.33, 0.35])],
    ]
    power = pilot_power(summarise(edge, CompareConfig(bootstrap=100))[0], seeds=6, target=0.05)
    dump = power["strategies"]["dump"]
    assert dump["predicted_mde"] <= 0.05 and dump["seeds_needed"] == 7 and not power["passed"]
    assert (
        "within the target, but the verdict's sign-flip test needs 7 seeds" in power_lines(power)[1]
    )


def _variant_folders(root: Path, runs: list[RunCurve]) -> None:
    """What ``read_curves`` reads of each variant's working copy."""
    from flows.compare_strategies import slug, variant_label
    from sparft.stages.train import HELDOUT, HISTORY, METRICS

    for run in runs:
        here = root / "data/compare" / slug(variant_label(run.strategy, run.seed))
        (here / HELDOUT).parent.mkdir(parents=True)
        run.points.to_parquet(here / HELDOUT)
        run.history.to_parquet(here / HISTORY)
        (here / METRICS).write_text(json.dumps({"arm_picks": run.arm_picks}))


def test_pilot_check_warns_or_stops_before_the_other_seeds(tmp_path: Path) -> None:
    from flows.compare_strategies import check_pilot

    runs = [
        *[_run("uniform", s, [0.2, 0.3], {}) for s in range(2)],
        *[_run("dump", s, [0.2, acc], {}) for s, acc in enumerate([0.2, 0.5])],
    ]
    _variant_folders(tmp_path, runs)
    cfg = CompareConfig(
        strategies=["uniform", "dump"], seeds=list(range(6)), pilot_seeds=2, target_mde=0.05
    )
    warned: list[str] = []
    power = check_pilot(cfg, tmp_path, strict=False, warn=warned.append)
    assert not power["passed"] and power["seeds"] == 6
    assert len(warned) == 1 and "dump: predicted MDE" in warned[0]
    with pytest.raises(ConfigError, match=r"stopped under --strict before seeds \[2, 3, 4, 5\]"):
        check_pilot(cfg, tmp_path, strict=True, warn=warned.append)
    # a part holding the pilot's seeds predicts for the whole design's seeds
    assert check_pilot(cfg, tmp_path, False, warned.append, design_seeds=12)["seeds"] == 12
    loose = cfg.model_copy(update={"target_mde": 0.99})
    assert check_pilot(loose, tmp_path, strict=True, warn=warned.append)["passed"]


def test_target_line_splits_the_strategies_by_their_measured_mde() -> None:
    from sparft.comparison import target_line

    strategies = {
        "uniform": {},
        "dump": {"vs_uniform": {"mde": 0.08}},
        "static-filter": {"vs_uniform": {"mde": 0.032}},
        "sparft": {"vs_uniform": {"mde": None}},  # fewer than 2 seeds: no MDE, not listed
    }
    assert target_line(strategies, 0.05) == (
        "measured MDE against uniform (target 0.050): within it for static-filter (0.032); "
        "above it for dump (0.080)"
    )
    assert target_line({"uniform": {}}, 0.05).endswith("no strategy besides the baseline")
