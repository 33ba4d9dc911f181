"""A comparison run in parts: reports keep their runs, and merge only where they are one design."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sparft.comparison import CompareConfig, RunCurve, summarise
from sparft.merge_reports import design_params, run_from_record, run_record

SEEDS = range(6)


def _run(strategy: str, seed: int, final: float) -> RunCurve:
    """Checks at steps 0 and 4 over 100 questions; step 0 solves the first 30, step 4 the first
    ``final x 100``; per-step effective prompt ratios, and arms for sparft."""
    points = pd.DataFrame(
        [
            {
                "step": step,
                "correct": [q < round(acc * 100) for q in range(100)],
                "rollouts": 32.0 * step,
                "unique_seen": 8.0 * step,
                "train_seconds": 40.0 * step + seed,
            }
            for step, acc in ((0, 0.3), (4, final))
        ]
    )
    history = pd.DataFrame({"step": range(4), "effective_prompt_ratio": [0.5, 0.25, 0.75, 1.0]})
    arms = {"0": 3, "1": 1} if strategy == "sparft" else {}
    return RunCurve(strategy, seed, points, history, 64 if strategy == "sparft" else 0, arms)


def _runs(seeds: Any = SEEDS) -> list[RunCurve]:
    return [
        *[_run("uniform", s, 0.40 + 0.01 * s) for s in seeds],
        *[_run("sparft", s, 0.45 + 0.02 * s) for s in seeds],
    ]


def _report(runs: list[RunCurve], **changes: Any) -> dict[str, Any]:
    """A report as the flow writes it, of ``runs``; ``changes`` replace settings or design."""
    from flows.compare_strategies import assemble
    from sparft.checks import Check
    from sparft.preflight import report, seed_power

    strategies = list(dict.fromkeys(r.strategy for r in runs))
    seeds = sorted({r.seed for r in runs})
    settings = {
        "model": "smollm2-135m",
        "benchmark": "arithmetic-heldout",
        "heldout_questions": 100,
        "max_steps": 4,
        "eval_every": 4,
        "scale": {"cluster.k": 6},
        "strategies": strategies,
        "seeds": seeds,
        "pairs": [],
        "bootstrap": 200,
        "level": 0.95,
        "wall_seconds": 100.0,
        "machine": {"cpu": "AMD EPYC", "cores": 2, "cpu_bf16": False, "gpu": None},
    }
    common = {"train.learning_rate": 1e-5, "train.max_steps": 4}
    design = {
        "code": {"sparft/bandit.py": "b1"},
        "inputs": {"data/arithmetic.parquet": "aaa", "data/probe.parquet": "ppp"},
        "params": {
            "uniform": {**common, "train.curriculum": "uniform"},
            "sparft": {**common, "train.curriculum": "sparft", "bandit.target": 0.5},
        },
    }
    for key, value in changes.items():
        where = design if key in design else settings
        where[key] = value
    cfg = CompareConfig(strategies=strategies, seeds=seeds, bootstrap=200)
    checks = [Check("token budgets", "ok", "one budget"), seed_power(seeds)]
    return assemble(
        runs,
        cfg,
        {"0": 0.6, "1": 0.3},
        settings=settings,
        design=design,
        preflight=report(checks),
        power=None,
        variants={},
    )


def _write(tmp_path: Path, name: str, report: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return path


def test_a_run_record_reads_back_as_the_run() -> None:
    run = _run("sparft", 3, 0.55)
    back = run_from_record(json.loads(json.dumps(run_record(run))), "r.json: runs[0]")
    assert (back.strategy, back.seed, back.probe_rollouts) == ("sparft", 3, 64)
    assert back.arm_picks == {"0": 3, "1": 1}
    pd.testing.assert_frame_equal(back.history, run.history.astype({"step": int}))
    assert back.points["correct"].tolist() == run.points["correct"].tolist()
    assert back.points["train_seconds"].tolist() == [3.0, 163.0]
    with pytest.raises(ValueError, match=r"r.json: runs\[0\]: no 'checks' field"):
        run_from_record({"strategy": "uniform", "seed": 0}, "r.json: runs[0]")


def test_design_params_leave_the_per_run_keys_out() -> None:
    heldout = {"cache_dir": "/x", "every": 4}
    values = {"train": {"seed": 3, "learning_rate": 1e-5, "heldout": heldout, "num_threads": 8}}
    assert design_params({**values, "bandit.seed": 3}) == {
        "train.heldout.every": 4,
        "train.learning_rate": 1e-5,
    }


def test_parts_merge_into_the_report_of_all_their_runs(tmp_path: Path) -> None:
    from flows.compare_strategies import merged_report

    first = _write(tmp_path, "a.json", _report(_runs(range(3))))
    second = _write(tmp_path, "b.json", _report(_runs(range(3, 6)), wall_seconds=50.0))
    merged = merged_report([first, second])
    whole = summarise(_runs(), CompareConfig(strategies=["uniform", "sparft"], bootstrap=200))[0]
    vs, expected = merged["strategies"]["sparft"]["vs_uniform"], whole["sparft"]["vs_uniform"]
    for key in ("difference", "ci", "p_value", "verdict", "mde", "seeds"):
        assert vs[key] == pytest.approx(expected[key]), key
    assert vs["seeds"] == list(SEEDS) and vs["verdict"] == "ahead"
    arms = merged["strategies"]["sparft"]["arms"]
    assert [(a["picks"], a["probe_solve_rate"]) for a in arms] == [(18, 0.6), (6, 0.3)]
    settings = merged["settings"]
    assert settings["seeds"] == list(SEEDS) and settings["wall_seconds"] == 150.0
    assert settings["machine"]["cpu"] == "AMD EPYC"  # one machine: kept as it was
    # the seeds check again over the six seeds: no warning that three allow no verdict
    seeds_check = [c for c in merged["preflight"]["checks"] if c["name"] == "seeds"]
    assert len(seeds_check) == 1 and seeds_check[0]["status"] == "ok"
    assert "6 seeds" in seeds_check[0]["message"] and merged["preflight"]["warnings"] == []
    parts = merged["merged"]["parts"]
    assert [p["file"] for p in parts] == [str(first), str(second)]
    assert [p["seeds"] for p in parts] == [[0, 1, 2], [3, 4, 5]] and len(parts[0]["sha256"]) == 64
    assert len(merged["runs"]) == 12 and merged["merged"]["reproduced"] == []
    again = merged_report([first, _write(tmp_path, "m.json", merged)])  # a merge merges on
    assert again["merged"]["reproduced"] == [
        {"strategy": s, "seed": n} for s in ("uniform", "sparft") for n in range(3)
    ]


def test_a_run_in_two_parts_must_reproduce(tmp_path: Path) -> None:
    from flows.compare_strategies import merged_report

    first = _write(tmp_path, "a.json", _report(_runs(range(3))))
    same = _write(tmp_path, "b.json", _report([_run("uniform", 0, 0.40), _run("sparft", 0, 0.45)]))
    assert len(merged_report([first, same])["merged"]["reproduced"]) == 2
    other = _write(tmp_path, "c.json", _report([_run("uniform", 1, 0.43)]))
    with pytest.raises(ValueError, match=r"uniform seed 1 differs from .*a.json's \(step 4: 2 of"):
        merged_report([first, other])


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"inputs": {"data/probe.parquet": "qqq"}}, "another data/probe.parquet than"),
        ({"max_steps": 8}, "other settings than .*max_steps: 8 against 4"),
        (
            {"params": {"uniform": {"train.learning_rate": 2e-5, "train.curriculum": "uniform"}}},
            "uniform ran with train.learning_rate=2e-05, .* with train.learning_rate=1e-05",
        ),
    ],
)
def test_parts_of_other_designs_are_refused(
    tmp_path: Path, change: dict[str, Any], said: str
) -> None:
    from flows.compare_strategies import merged_report

    first = _write(tmp_path, "a.json", _report(_runs(range(3))))
    second = _write(tmp_path, "b.json", _report(_runs(range(3, 6)), **copy.deepcopy(change)))
    with pytest.raises(ValueError, match=said):
        merged_report([first, second])


def test_parts_that_ran_other_code_merge_with_the_files_named(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sparft.cli import app

    first = _write(tmp_path, "a.json", _report(_runs(range(3)), code={"sparft/bandit.py": "b1"}))
    code = {"sparft/bandit.py": "b2", "sparft/rewards.py": "r1"}
    second = _write(tmp_path, "b.json", _report(_runs(range(3, 6)), code=code))
    out = tmp_path / "m.json"
    done = CliRunner().invoke(app, ["merge-reports", str(first), str(second), "--out", str(out)])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "other code in 2 file(s): sparft/bandit.py, sparft/rewards.py" in said
    assert json.loads(out.read_text())["merged"]["code_differs"] == [
        "sparft/bandit.py",
        "sparft/rewards.py",
    ]


def test_a_strategy_may_set_its_own_keys_in_another_part(tmp_path: Path) -> None:
    """sparft's bandit.target is its own; a part with only uniform does not have it at all,
    and train.curriculum differs by strategy without making two designs."""
    from flows.compare_strategies import merged_report

    first = _write(tmp_path, "a.json", _report([_run("uniform", s, 0.4) for s in SEEDS]))
    second = _write(tmp_path, "b.json", _report([_run("sparft", s, 0.5) for s in SEEDS]))
    merged = merged_report([first, second])
    assert merged["strategies"]["sparft"]["vs_uniform"]["verdict"] == "ahead"


def test_merge_command_writes_the_report_and_refuses_an_old_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sparft.cli import app

    first = _write(tmp_path, "a.json", _report(_runs(range(3))))
    second = _write(tmp_path, "b.json", _report(_runs(range(3, 6))))
    out = tmp_path / "merged.json"
    done = CliRunner().invoke(app, ["merge-reports", str(first), str(second), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "uniform, sparft x seeds [0, 1, 2, 3, 4, 5]" in " ".join(done.output.split())
    assert out.is_file() and out.with_suffix(".png").stat().st_size > 0
    done = CliRunner().invoke(app, ["analyse", str(out)])
    assert done.exit_code == 0 and "ahead" in done.output, done.output
    said = " ".join(done.output.split())
    assert "merged from 2 parts" in said and f"{first}: seeds [0, 1, 2]" in said
    old = Path(__file__).parent.parent / "benchmarks/results/compare_powered_k6.json"
    done = CliRunner().invoke(app, ["merge-reports", str(old), str(first), "--out", str(out)])
    said = " ".join(done.output.split())
    assert done.exit_code == 2 and "no 'runs', 'design'" in said and "rerun" in said


def test_a_part_runs_only_the_design_s_strategies_and_seeds(tmp_path: Path) -> None:
    from flows.preflight import compare_setup
    from sparft.config import ConfigError

    params = Path(__file__).parent.parent / "params.yaml"
    _, cfg = compare_setup(str(params), [], ["uniform"], [5, 6, 7], part=True)
    assert cfg.seeds == [5, 6, 7] and cfg.strategies == ["uniform"]
    with pytest.raises(ConfigError, match=r"--part: \[9\] not in compare.seeds"):
        compare_setup(str(params), [], None, [7, 9], part=True)
    with pytest.raises(ConfigError, match=r"--part: \['mopps'\] not in compare.strategies"):
        compare_setup(str(params), [], ["mopps"], None, part=True)


def test_parts_of_a_design_say_what_it_still_misses(tmp_path: Path) -> None:
    from flows.compare_strategies import merged_report

    design = {"strategies": ["uniform", "sparft"], "seeds": list(range(8))}
    first = _write(tmp_path, "a.json", _report(_runs(range(3)), part_of=design))
    second = _write(tmp_path, "b.json", _report(_runs(range(3, 6)), part_of=design))
    merged = merged_report([first, second])
    assert merged["settings"]["part_of"] == design == merged["merged"]["design"]
    assert merged["merged"]["missing"] == [
        {"strategy": s, "seed": n} for s in ("uniform", "sparft") for n in (6, 7)
    ]
    other = {"strategies": ["uniform", "sparft"], "seeds": list(range(6))}
    third = _write(tmp_path, "c.json", _report(_runs(range(3, 6)), part_of=other))
    with pytest.raises(ValueError, match="parts of two designs"):
        merged_report([first, third])


def test_design_holds_what_each_strategy_s_training_reads(tmp_path: Path) -> None:
    """The files a variant's key covers, by kind: the data (absent here: None) and the source
    files that run (sparft's own where the project has no copy); params but the per-run keys."""
    from flows.compare_strategies import design
    from flows.preflight import compare_setup

    params_file = Path(__file__).parent.parent / "params.yaml"
    params, cfg = compare_setup(str(params_file), [], ["uniform", "sparft"], [3])
    held = design(params, cfg, tmp_path)
    assert {"data/probe.parquet", "data/clusters.parquet", "data/subset.parquet"} <= set(
        held["inputs"]
    )
    assert held["inputs"]["data/probe.parquet"] is None
    assert held["code"]["sparft/bandit.py"] is not None
    assert "sparft/stages/train.py" in held["code"]
    uniform, sparft = held["params"]["uniform"], held["params"]["sparft"]
    assert "train.seed" not in sparft and "train.heldout.cache_dir" not in sparft
    assert sparft["train.heldout.every"] == cfg.eval_every
    assert any(k.startswith("bandit.") for k in sparft)
    assert not any(k.startswith("bandit.") for k in uniform)  # uniform reads no bandit
