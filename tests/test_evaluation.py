"""Evaluation: pass@k, aggregation, the held-out set, scoring on gold solutions, the stage end
to end on a tiny model, LoRA adapters merged once, and errors that say what is allowed."""

from __future__ import annotations

import json
import math
import shutil
from itertools import combinations
from pathlib import Path

import pandas as pd
import pytest
from conftest import needs_shared
from pydantic import ValidationError
from typer.testing import CliRunner

from sparft import evaluation, models
from sparft.arithmetic import ArithmeticConfig
from sparft.cli import app
from sparft.config import ConfigError, Params, load_params
from sparft.data import DataConfig, DataError, load_dataset
from sparft.evaluation import (
    HELDOUT,
    RESULT_COLUMNS,
    EvaluateConfig,
    aggregate,
    evaluate,
    limit_questions,
    load_benchmark,
    locate_model,
    metrics_dict,
    paired_difference,
    pass_at_k,
    score_results,
)
from sparft.generation import Completion, GenerationConfig, PromptResult
from sparft.io import write_parquet
from sparft.models import ModelNotAvailableError, resolve_model
from sparft.prompts import PromptConfig
from sparft.stages import evaluate as stage

runner = CliRunner()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARFT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_pass_at_k_matches_brute_force() -> None:
    """Share of all k-subsets of n samples (the first c correct) holding a correct one."""
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))
                hits = sum(any(i < c for i in s) for s in subsets)
                assert math.isclose(pass_at_k(n, c, k), hits / len(subsets)), (n, c, k)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)


def _rows(model: str, benchmark: str, n: int, n_correct: list[int]) -> list[dict]:
    return [
        {
            "model": model,
            "benchmark": benchmark,
            "n": n,
            "n_correct": c,
            "completion_tokens": [10 * (i + 1)] * n,
            "finish_reasons": ["length" if i == 0 else "stop"] * n,
        }
        for i, c in enumerate(n_correct)
    ]


def test_aggregate_per_model_and_benchmark() -> None:
    results = pd.DataFrame(_rows("trained", "gsm8k", 4, [4, 2, 0]) + _rows("base", "gsm8k", 4, [1]))
    timings = pd.DataFrame(
        [
            {"model": "trained", "benchmark": "gsm8k", "generate_s": 2.0, "score_s": 0.5},
            {"model": "base", "benchmark": "gsm8k", "generate_s": 1.0, "score_s": 0.0},
        ]
    )
    table = aggregate(results, [1, 2, 8], timings).set_index("model")
    trained, base = table.loc["trained"], table.loc["base"]
    assert trained["questions"] == 3 and trained["pass@1"] == pytest.approx(0.5)
    assert trained["pass@1_se"] == pytest.approx(0.5 / math.sqrt(3))  # std of [1, .5, 0] is .5
    assert trained["pass@2"] == pytest.approx((1 + 5 / 6 + 0) / 3)
    assert "pass@8" not in table.columns  # k > n is skipped
    assert trained["mean_completion_tokens"] == pytest.approx(20.0)
    assert trained["truncated_share"] == pytest.approx(1 / 3)
    assert trained["wall_s"] == pytest.approx(2.5)
    assert trained["questions_per_s"] == pytest.approx(3 / 2.5)
    assert trained["tokens_per_s"] == pytest.approx(240 / 2.0)
    assert base["pass@1"] == pytest.approx(0.25) and pd.isna(base["pass@1_se"])
    metrics = metrics_dict(table.reset_index())
    assert set(metrics) == {"trained", "base"} and metrics["base"]["gsm8k"]["pass@1_se"] is None
    json.dumps(metrics, allow_nan=False)  # valid JSON for DVC: no NaN


def test_heldout_is_disjoint_from_training_and_reproducible(in_tmp: Path) -> None:
    arithmetic = ArithmeticConfig(per_grade=6, grades=[1, 2, 3])
    cfg = EvaluateConfig(heldout_per_grade=6)
    # The worst case: the training file is exactly what the held-out seed draws first.
    heldout_seed = arithmetic.seed + evaluation.HELDOUT_SEED_OFFSET
    train, _ = load_dataset(DataConfig(), arithmetic.model_copy(update={"seed": heldout_seed}))
    write_parquet(train, "data/train.parquet")
    section_set, _ = load_dataset(DataConfig(), arithmetic)
    heldout, notes = load_benchmark(HELDOUT, cfg, DataConfig(), arithmetic)
    assert not set(heldout["id"]) & (set(train["id"]) | set(section_set["id"]))
    assert heldout.groupby("difficulty_label").size().tolist() == [6, 6, 6] and not notes
    again, _ = load_benchmark(HELDOUT, cfg, DataConfig(), arithmetic)
    assert again.equals(heldout)
    # Without a training file the arithmetic section's own set is still excluded.
    Path("data/train.parquet").unlink()
    plain, _ = load_benchmark(HELDOUT, cfg, DataConfig(), arithmetic)
    assert not set(plain["id"]) & set(section_set["id"])
    with pytest.raises(DataError, match="another seed"):
        load_benchmark(HELDOUT, EvaluateConfig(heldout_seed=0), DataConfig(), arithmetic)
    sample = limit_questions(heldout, 5, seed=3)
    assert sample.equals(limit_questions(heldout, 5, seed=3)) and len(sample) == 5
    positions = [heldout.index[heldout["id"] == i][0] for i in sample["id"]]
    assert positions == sorted(positions)  # a sample, in the benchmark's order


@needs_shared
@pytest.mark.parametrize("name", ["gsm8k", "math500"])
def test_gold_solutions_score_full_marks(name: str) -> None:
    """Gold worked solutions fed through the evaluation's scoring path as completions."""
    from conftest import SHARED_DATA

    data = DataConfig(shared_dir=str(SHARED_DATA))
    questions, _ = load_benchmark(name, EvaluateConfig(), data, ArithmeticConfig())
    results = [
        PromptResult(0, [Completion(json.loads(meta)["solution"], 1, "stop")])
        for meta in questions["meta"]
    ]
    scored = score_results(questions, results, name, "gold")
    wrong = scored.loc[scored["n_correct"] == 0, ["id", "answer", "extracted"]]
    assert len(scored) == {"gsm8k": 1319, "math500": 500}[name]
    assert wrong.empty, wrong.head(10).to_string()


def _paired(model: str, correct: list[int], benchmark: str = "b") -> list[dict]:
    return [
        {"model": model, "benchmark": benchmark, "id": f"q{i}", "n": 1, "n_correct": c}
        for i, c in enumerate(correct)
    ]


def test_paired_difference_matches_a_paired_t_test_over_questions() -> None:
    from scipy import stats

    trained, base = [1, 1, 0, 1, 0, 1, 1, 0], [0, 1, 0, 0, 0, 1, 0, 1]
    rows = _paired("trained", trained) + _paired("base", base) + _paired("base", [1], "other")
    out = paired_difference(pd.DataFrame(rows), "trained", "base")
    assert set(out) == {"b"}  # a benchmark only one model answered has no pair
    d = out["b"]
    test = stats.ttest_rel(trained, base)
    low, high = test.confidence_interval(0.95)
    assert d["difference"] == pytest.approx(2 / 8) and d["questions"] == 8
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert d["p_value"] == pytest.approx(test.pvalue) and (d["better"], d["worse"]) == (3, 1)
    # questions matched by id, not by row order
    shuffled = pd.DataFrame(rows[::-1])
    assert paired_difference(shuffled, "trained", "base")["b"]["difference"] == d["difference"]
    same = paired_difference(pd.DataFrame(_paired("trained", base) + _paired("base", base)),
                             "trained", "base")["b"]  # fmt: skip
    assert (same["difference"], same["ci_low"], same["ci_high"], same["p_value"]) == (0, 0, 0, 1)


def _tiny_params(tiny_lm_dir: Path, **evaluate_cfg: object) -> Params:
    return Params(
        generation=GenerationConfig(model=str(tiny_lm_dir), num_threads=1, batch_size=8),
        arithmetic=ArithmeticConfig(per_grade=2, grades=[1, 2]),
        evaluate=EvaluateConfig(**evaluate_cfg),
    )


def test_stage_end_to_end_on_tiny_model(in_tmp: Path, tiny_lm_dir: Path) -> None:
    shutil.copytree(tiny_lm_dir, in_tmp / "data" / "train" / "model")
    params = _tiny_params(tiny_lm_dir, n=2, temperature=1.0, k=[1, 2], max_new_tokens=6)
    summary = stage.run(params)
    results = pd.read_parquet(stage.RESULTS)
    assert list(results.columns) == RESULT_COLUMNS
    assert results.groupby("model").size().to_dict() == {"trained": 4, "base": 4}
    assert results["completions"].map(len).eq(2).all() and results["n"].eq(2).all()
    assert (results["n_correct"] == results["correct"].map(sum)).all()
    metrics = json.loads(stage.METRICS.read_text())
    assert set(metrics) == {"trained", "base"}
    for label in metrics:
        row = metrics[label][HELDOUT]
        assert row["questions"] == 4 and 0 <= row["pass@1"] <= 1 and 0 <= row["pass@2"] <= 1
        assert row["mean_completion_tokens"] > 0 and row["tokens_per_s"] > 0
    # Same weights, same seed: the copy under data/train/model answers exactly like the base.
    by_model = {m: g["completions"].map(list).tolist() for m, g in results.groupby("model")}
    assert by_model["trained"] == by_model["base"]
    assert stage.PLOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pass_at_1" in summary["metrics"]["trained"][HELDOUT]  # MLflow-safe spelling
    vs_base = json.loads(stage.VS_BASE.read_text())[HELDOUT]
    assert vs_base == summary["vs_base"][HELDOUT]
    assert (vs_base["difference"], vs_base["p_value"], vs_base["questions"]) == (0, 1, 4)
    tables = stage.report(summary)
    assert tables[1].rows[0][0] == HELDOUT and tables[1].rows[0][-1] == "not separable"


def _make_adapter(tiny_lm_dir: Path, out: Path) -> Path:
    """A LoRA adapter with non-zero random weights (so merging changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(out)
    return out


def test_lora_adapter_is_merged_once_and_evaluated(
    in_tmp: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = _make_adapter(tiny_lm_dir, in_tmp / "adapter")
    merges: list[Path] = []
    real_merge = models._merge

    def counting_merge(*args: object) -> None:
        merges.append(Path(str(args[0])))
        real_merge(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(models, "_merge", counting_merge)
    merged = Path(resolve_model(str(adapter)))
    assert merged.parent == in_tmp / "cache" / "merged" and (merged / "config.json").is_file()
    assert resolve_model(str(adapter)) == str(merged) and len(merges) == 1

    ids = torch.tensor([[1, 5, 9, 14, 20]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
        expected = PeftModel.from_pretrained(base, adapter)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
    assert torch.allclose(expected, got, atol=1e-5)

    params = _tiny_params(tiny_lm_dir, model=str(adapter), limit=2, max_new_tokens=4)
    report = evaluate(
        params.evaluate, params.generation, PromptConfig(), params.data, params.arithmetic
    )
    assert report.models == {"adapter": str(merged), "base": str(tiny_lm_dir)}
    assert set(report.aggregates["model"]) == {"adapter", "base"} and len(merges) == 1

    # A changed adapter is a different model: merged again, into its own folder.
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 16}))
    assert resolve_model(str(adapter)) != str(merged) and len(merges) == 2


def test_unknown_benchmark_lists_the_allowed_ones(in_tmp: Path) -> None:
    with pytest.raises(ValidationError, match="allowed: gsm8k, math500, aime24, aime25"):
        EvaluateConfig(benchmarks=["gsm9k"])
    with pytest.raises(ConfigError, match=r"evaluate\.benchmarks.*unknown benchmark 'mmlu'"):
        load_params(in_tmp / "none.yaml", ["evaluate.benchmarks=[mmlu]"])
    result = runner.invoke(app, ["eval", "--benchmark", "gsm9k"])
    assert result.exit_code == 2 and "arithmetic-heldout" in result.output
    missing = runner.invoke(app, ["eval", "--benchmark", "nothere.jsonl"])
    assert missing.exit_code == 2 and "nothere.jsonl" in missing.output


def test_missing_trained_model_says_what_to_do(in_tmp: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="run the train stage first or set evaluate"):
        locate_model("trained", in_tmp / "data" / "train" / "model")
    result = runner.invoke(app, ["eval"])
    assert result.exit_code == 2 and "run the train stage first" in result.output


def test_cli_eval_on_a_local_file(in_tmp: Path, tiny_lm_dir: Path) -> None:
    rows = [{"question": f"What is {a} + 1?", "answer": a + 1} for a in range(3)]
    Path("mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_lm_dir),
            "--benchmark",
            "mine.jsonl",
            "--max-new-tokens",
            "4",
            "--no-base",
            "--out",
            "out",
            "--set",
            "generation.num_threads=1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output and "mine.jsonl" in result.output
    metrics = json.loads(Path("out/metrics.json").read_text())
    assert list(metrics) == [tiny_lm_dir.name]  # a folder is labelled by its own name
    assert len(pd.read_parquet("out/results.parquet")) == 3
    assert Path("out/eval_accuracy.png").is_file()
