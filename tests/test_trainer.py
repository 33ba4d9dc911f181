"""GRPO training with a curriculum: TRL's trainer on a tiny model, resume, several processes,
and the train stage's outputs and MLflow records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from trl.trainer.utils import nanstd

from sparft.training import TrainConfig, latest_checkpoint
from sparft.training.advantages import group_advantages
from sparft.training.setup import grpo_args

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "scripts" / "tiny_grpo.py"
ACCELERATE = REPO / "configs" / "accelerate"
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)  # each project records into its own mlflow.db
    env.pop("DISABLE_MLFLOW_INTEGRATION", None)
    return env


def _use_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """MLflow pointed at the project's store for this test only (set_tracking_uri also sets
    the environment variable, which later subprocesses would inherit)."""
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return mlflow


def _history(work: Path, rank: int = 0) -> dict:
    return json.loads((work / f"history-rank{rank}.json").read_text())


def _choices(record: dict) -> list[tuple[Any, ...]]:
    """Per step: the arm (if any), prompts, group sizes and observed solve rate."""
    return [
        (r.get("arm"), tuple(r["prompt_ids"]), tuple(r["group_sizes"]), r["solve_rate"])
        for r in record["history"]
    ]


def test_grpo_args_map_one_generation_batch_to_one_step(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(prompts_per_step=3, num_generations=4, max_steps=7)
    args = grpo_args(cfg)
    assert args.per_device_train_batch_size == 12
    assert args.generation_batch_size == 12 and args.steps_per_generation == 1
    assert args.max_steps == 7 and args.logging_steps == 1
    monkeypatch.setenv("WORLD_SIZE", "5")
    with pytest.raises(ValueError, match="12 rollouts per step cannot be split over 5"):
        grpo_args(cfg)


@pytest.mark.parametrize(
    ("precision", "weights", "computes_in_bf16"),
    [("fp32", torch.float32, False), ("bf16", torch.bfloat16, True),
     ("bf16-mixed", torch.float32, True)],
)  # fmt: skip
def test_precision_picks_weights_and_autocast(
    tiny_lm_dir: Path, precision: str, weights: torch.dtype, computes_in_bf16: bool
) -> None:
    """bf16-mixed keeps fp32 master weights (an lr 1e-5 update survives) and asks TRL for bf16
    autocast; bf16 loads bf16 weights."""
    from sparft.training import use_bf16
    from sparft.training.setup import load_policy

    cfg = TrainConfig(precision=precision)
    model, _, _ = load_policy(str(tiny_lm_dir), cfg)
    assert next(model.parameters()).dtype == weights
    assert use_bf16(cfg) is computes_in_bf16 and grpo_args(cfg).bf16 is computes_in_bf16


def _trl_advantages(rewards_per_func: torch.Tensor, g: int, weights: torch.Tensor, scale: str,
                    aggregation: str) -> torch.Tensor:  # fmt: skip
    """TRL 1.16's own formulas for groups of a fixed size ``g`` (grpo_trainer.py)."""
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
        if scale == "batch":
            std = nanstd(rewards).expand_as(rewards)
        else:
            std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
        adv = rewards - mean
        return adv if scale == "none" else adv / (std + 1e-4)
    grouped = rewards_per_func.view(-1, g, rewards_per_func.shape[1])
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = nanstd(grouped, dim=1, keepdim=True)
    reward_k = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, rewards_per_func.shape[1])
    rewards = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
    return (rewards - torch.nanmean(rewards)) / (nanstd(rewards) + 1e-4)


@pytest.mark.parametrize(
    ("scale", "aggregation"),
    [("group", "sum_then_normalize"), ("batch", "sum_then_normalize"),
     ("none", "sum_then_normalize"), ("group", "normalize_then_sum")],
)  # fmt: skip
def test_group_advantages_equal_trl_for_equal_groups(scale: str, aggregation: str) -> None:
    torch.manual_seed(0)
    rewards = (torch.rand(24, 2) > 0.5).float() * torch.tensor([1.0, 0.5])
    weights = torch.tensor([1.0, 0.3])
    ours, _ = group_advantages(rewards, [4] * 6, weights, scale, aggregation)
    trl = _trl_advantages(rewards, 4, weights, scale, aggregation)
    assert torch.allclose(ours, torch.nan_to_num(trl, nan=0.0), atol=1e-6)


def test_group_advantages_of_unequal_groups_by_hand() -> None:
    rewards = torch.tensor([[1.0], [0.0], [0.0], [1.0], [1.0], [1.0], [float("nan")], [0.0]])
    adv, zero_std = group_advantages(rewards, [3, 1, 2, 2], torch.tensor([1.0]))
    std = (((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2) ** 0.5  # Bessel, within the first group
    first = [(2 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4)]
    # one rollout: no baseline to compare with; equal rewards: 0; an unscorable row: 0 and
    # left out of its group's mean, so the other row of that group has advantage 0 too.
    assert adv.tolist() == pytest.approx([*first, 0.0, 0.0, 0.0, 0.0, 0.0], abs=1e-6)
    assert zero_std.tolist()[:6] == [False, False, False, True, True, True]
    with pytest.raises(ValueError, match="groups of"):
        group_advantages(rewards, [3, 3], torch.tensor([1.0]))


def test_unequal_groups_through_trl_generation_and_loss(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """One step on the tiny model with knapsack's unequal groups: the rows are the plan's, the
    advantages sum to zero within every group, and TRL's loss (dapo: tokens over the whole
    batch, ratio 1 on the first pass, beta 0) is the token-weighted mean of -advantage."""
    from sparft.answers import completion_text
    from sparft.config import Params
    from sparft.curricula import make_curriculum
    from sparft.curricula.allocation import AllocationConfig
    from sparft.prompts import PromptConfig
    from sparft.rewards import format_reward
    from sparft.training.setup import build_trainer

    def length_reward(completions: list[Any], **kwargs: Any) -> list[float]:
        return [float(len(completion_text(c)) % 3 == 0) for c in completions]

    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(6)],
            "question": [f"What is {i} + 1?" for i in range(6)],
            "answer": [str(i + 1) for i in range(6)],
            "probe_rollouts": 8,
            "probe_correct": [0, 4, 8, 0, 4, 8],  # p = 0, 0.5, 1: rollouts 6, 4, 2
        }
    )
    cfg = TrainConfig(
        curriculum="uniform", allocation="knapsack", prompts_per_step=6, num_generations=4,
        max_completion_length=6, beta=0.0, num_threads=1, checkpoint_dir=str(tmp_path / "c"),
    )  # fmt: skip
    settings = Params(train=cfg, allocation=AllocationConfig(knapsack_min_observed=1))
    curriculum = make_curriculum("uniform", frame, settings)
    trainer = build_trainer(
        cfg, str(tiny_lm_dir), frame, curriculum, PromptConfig(),
        reward_funcs=[length_reward, format_reward],
    )  # fmt: skip
    trainer.model.train()
    out = trainer._generate_and_score_completions([{}] * 24)
    record = curriculum.history[-1]
    sizes = record["group_sizes"]
    assert sorted(sizes) == [2, 2, 4, 4, 6, 6]
    adv, mask = out["advantages"], out["completion_mask"].float()
    assert adv.shape == (24,) and out["num_items_in_batch"] == mask.sum()
    for part in torch.split(adv, sizes):
        assert abs(float(part.sum())) < 1e-4
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop in a real run
    loss = trainer.compute_loss(trainer.model, out)
    expected = -(adv.unsqueeze(1) * mask).sum() / mask.sum()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_dynamic_sampling_trains_on_kept_groups_of_several_rounds(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """DAPO's dynamic sampling on the tiny model: questions marked flat always get the same
    reward (no gradient), the others alternate. The step generates rounds until two groups teach,
    the batch holds exactly those groups' rows (prompts decoded back), advantages sum to zero
    within each, TRL's loss runs on the assembled batch, and every rollout counts."""
    from sparft.config import Params
    from sparft.curricula import make_curriculum
    from sparft.curricula.dynamic_sampling import DynamicSamplingConfig
    from sparft.prompts import PromptConfig
    from sparft.training.setup import build_trainer

    def split_reward(prompts: list[Any], **kwargs: Any) -> list[float]:
        return [1.0 if "flat" in str(q) else float(i % 2) for i, q in enumerate(prompts)]

    def no_reward(completions: list[Any], **kwargs: Any) -> list[float]:
        return [0.0] * len(completions)

    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(8)],
            "question": [f"What is {i} + 1? {'flat' if i < 6 else 'teach'}" for i in range(8)],
            "answer": [str(i + 1) for i in range(8)],
        }
    )
    cfg = TrainConfig(
        curriculum="dynamic-sampling", prompts_per_step=2, num_generations=4,
        max_completion_length=4, beta=0.0, num_threads=1, checkpoint_dir=str(tmp_path / "c"),
    )  # fmt: skip
    settings = Params(train=cfg, dynamic_sampling=DynamicSamplingConfig(max_gen_batches=8))
    curriculum = make_curriculum("dynamic-sampling", frame, settings)
    trainer = build_trainer(
        cfg, str(tiny_lm_dir), frame, curriculum, PromptConfig(),
        reward_funcs=[split_reward, no_reward],
    )  # fmt: skip
    trainer.model.train()
    out = trainer._generate_and_score_completions([{}] * 8)
    record = curriculum.history[-1]
    assert record["prompt_ids"] == ["q6", "q7"] or record["prompt_ids"] == ["q7", "q6"]
    assert record["effective_prompt_ratio"] == 1.0 and record["rollouts"] == 8
    assert record["gen_batches"] > 1  # 6 of 8 questions are flat: one batch of 2 rarely fills
    assert record["rollouts_total"] == record["generated_rollouts"] == 8 * record["gen_batches"]
    assert out["completion_ids"].shape[0] == 8 and out["advantages"].shape == (8,)
    tokenizer = trainer.processing_class
    prompts = [
        tokenizer.decode(ids[mask.bool()])
        for ids, mask in zip(out["prompt_ids"], out["prompt_mask"], strict=True)
    ]
    for at, qid in enumerate(record["prompt_ids"]):
        assert all(f"What is {qid[1:]} + 1?" in p for p in prompts[4 * at : 4 * at + 4])
    for part in torch.split(out["advantages"], 4):
        assert abs(float(part.sum())) < 1e-4 and float(part.abs().sum()) > 0
    mask = out["completion_mask"].float()
    assert out["num_items_in_batch"] == mask.sum()
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(trainer.model, out)
    expected = -(out["advantages"].unsqueeze(1) * mask).sum() / mask.sum()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_extra_grpo_fields_pass_through() -> None:
    args = grpo_args(TrainConfig(grpo={"loss_type": "grpo", "scale_rewards": "none"}))
    assert args.loss_type == "grpo" and args.scale_rewards == "none"


def test_lora_by_size() -> None:
    assert not TrainConfig().use_lora(135_000_000)
    assert TrainConfig().use_lora(630_000_000)
    assert TrainConfig(lora="on").use_lora(1000)
    assert not TrainConfig(lora="off").use_lora(10**10)


def test_latest_checkpoint_ignores_incomplete(tmp_path: Path) -> None:
    for step, files in {2: ["trainer_state.json", "curriculum_state.json"], 4: ["x"]}.items():
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_auto_resume_only_under_the_same_settings(tmp_path: Path) -> None:
    from sparft.training import SETTINGS_FILE, resume_point

    for step, fingerprint in ((2, "old"), (4, "same")):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("trainer_state.json", "curriculum_state.json"):
            (folder / name).write_text("{}")
        (folder / SETTINGS_FILE).write_text(json.dumps({"fingerprint": fingerprint}))
    cfg = TrainConfig(checkpoint_dir=str(tmp_path))
    assert cfg.resume == "auto"
    assert resume_point(cfg, "same") == (tmp_path / "checkpoint-4", None)
    checkpoint, note = resume_point(cfg, "other")
    assert checkpoint is None and note is not None and "other settings" in note
    assert resume_point(cfg.model_copy(update={"resume": "always"}), "other")[0] is not None
    assert resume_point(cfg.model_copy(update={"resume": "never"}), "same") == (None, None)
    assert TrainConfig(resume=True).resume == "always"  # the old boolean spelling
    assert TrainConfig(resume=False).resume == "never"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("curriculum", "allocation", "replay"),
    [("sparft", "auto", False), ("cures", "auto", False), ("dots", "auto", True)],
)
def test_sigkilled_run_resumes_with_the_same_choices(
    tiny_lm_dir: Path, tmp_path: Path, curriculum: str, allocation: str, replay: bool
) -> None:
    """Killed after step 5 (last checkpoint: step 4) and resumed, the run plans the same prompts
    and group sizes and observes the same solve rates as one never interrupted; the solve signal
    depends on the sampled text, so this needs weights, optimiser, RNG and curriculum (bandit,
    posterior, DOTS's predictions, the replay buffer) all restored."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    base = [sys.executable, str(SCRIPT), str(tiny_lm_dir)]
    method = ["--curriculum", curriculum, "--allocation", allocation]
    if curriculum == "cures":  # a budget of 2 x 8 leaves CurES's [4, 16] rollouts room to vary
        method += ["--generations", "8"]
    if replay:
        method += ["--replay"]
    subprocess.run([*base, str(whole), "8", *method], env=_env(), check=True, capture_output=True)
    crash = subprocess.run(
        [*base, str(killed), "8", "--kill-at", "5", *method], env=_env(), capture_output=True
    )
    assert crash.returncode == -9
    assert latest_checkpoint(killed / "checkpoints").name == "checkpoint-4"
    assert not (killed / "history-rank0.json").exists()
    subprocess.run(
        [*base, str(killed), "8", "--resume", *method],
        env=_env(),
        check=True,
        capture_output=True,
    )
    expected, resumed = _history(whole), _history(killed)
    assert resumed["global_step"] == 8
    assert len(resumed["history"]) == 8
    assert _choices(resumed) == _choices(expected)
    if curriculum == "sparft":
        assert len({step[0] for step in _choices(expected)}) > 1
    elif curriculum == "cures":
        assert any(len(set(step[2])) > 1 for step in _choices(expected)), "no unequal groups"
    else:
        assert [r["replay/rows"] for r in resumed["history"]] == [
            r["replay/rows"] for r in expected["history"]
        ]
        assert sum(r["replay/rows"] for r in expected["history"]) > 0, "nothing replayed"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("curriculum", "allocation", "replay"),
    [
        ("sparft", "auto", False),
        ("sparft", "knapsack", False),
        ("sparft", "auto", True),
        ("dynamic-sampling", "auto", False),
    ],
)
def test_two_processes_make_the_same_choices(
    tiny_lm_dir: Path, tmp_path: Path, curriculum: str, allocation: str, replay: bool
) -> None:
    """``accelerate launch`` with the project's 2-process CPU config (gloo): both ranks plan
    the same prompts and group sizes from the gathered rewards (with knapsack, groups of
    unequal size straddle the two ranks' rows; with replay, both hold the same buffer and take
    their own share of the replayed rows) and training completes."""
    cmd = [
        str(BIN / "accelerate"), "launch", "--config_file", str(ACCELERATE / "ddp_cpu.yaml"),
        str(SCRIPT), str(tiny_lm_dir), str(tmp_path), "4", "--allocation", allocation,
        "--curriculum", curriculum, *(["--replay"] if replay else []),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [_history(tmp_path, r) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["global_step"] for r in ranks] == [4, 4]
    assert _choices(ranks[0]) == _choices(ranks[1])
    assert len(ranks[0]["history"]) == 4
    if allocation == "knapsack":
        assert any(len(set(step[2])) > 1 for step in _choices(ranks[0])), "no unequal groups"
    if curriculum == "dynamic-sampling":  # rows kept from other ranks' rounds: same batch
        assert any(r.get("gen_batches", 1) > 1 for r in ranks[0]["history"]), "one round only"
    if replay:
        replayed = [r["replay/rows"] for r in ranks[0]["history"]]
        assert replayed == [r["replay/rows"] for r in ranks[1]["history"]] and sum(replayed) > 0


def _project(root: Path, model: Path, **train: object) -> Path:
    """A project folder with a selected subset in place, ready for ``sparft stage train``."""
    (root / "data").mkdir(parents=True)
    n = 12
    pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "question": [f"What is {i} + 1?" for i in range(n)],
            "answer": [str(i + 1) for i in range(n)],
            "source": "test",
            "difficulty_label": None,
            "meta": "{}",
            "cluster": [i % 3 for i in range(n)],
            "difficulty": 0.5,
            "rank": 0,
        }
    ).to_parquet(root / "data" / "subset.parquet")
    params = {
        "generation": {"model": str(model)},
        "train": {
            "max_steps": 4,
            "prompts_per_step": 2,
            "num_generations": 2,
            "max_completion_length": 8,
            "save_steps": 2,
            "num_threads": 1,
            **train,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.mark.slow
def test_train_stage_writes_model_history_plots_and_mlflow_steps(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "p", tiny_lm_dir)
    done = subprocess.run(
        [str(BIN / "sparft"), "stage", "train"],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "data/train/model/config.json").exists()
    assert (root / "data/train/model/tokenizer_config.json").exists()
    history = pd.read_parquet(root / "data/train/history.parquet")
    assert list(history["step"]) == [0, 1, 2, 3]
    assert set(history["cluster"]) <= {0, 1, 2}
    assert (history["rollouts"] == 4).all() and list(history["rollouts_total"]) == [4, 8, 12, 16]
    assert [list(s) for s in history["group_sizes"]] == [[2, 2]] * 4
    assert all(len(ids) == 2 for ids in history["prompt_ids"])
    metrics = json.loads((root / "data/train/metrics.json").read_text())
    assert metrics["steps"] == 4 and sum(metrics["arm_picks"].values()) == 4
    for plot in ("train_arms.png", "train_curves.png"):
        assert (root / "data/plots" / plot).stat().st_size > 10_000

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("sparft").experiment_id],
        filter_string="tags.`sparft.stage` = 'train'",
    )
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == "4"
    arms = client.get_metric_history(run.info.run_id, "curriculum/arm")
    assert [m.step for m in arms] == [1, 2, 3, 4]
    assert [m.value for m in arms] == list(history["arm"].astype(float))
    logged = ("reward", "reward_std", "kl", "completions/mean_length", "time/generation_s")
    logged += ("time/update_s", "curriculum/effective_prompt_ratio", "curriculum/arm0/pulls")
    logged += ("curriculum/rollouts_total", "curriculum/unique_seen", "time/curriculum_s")
    for key in logged:
        assert len(client.get_metric_history(run.info.run_id, key)) == 4, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "train")}
    assert "train/train_arms.png" in artifacts
    (version,) = client.search_model_versions("name='sparft-policy'")
    assert version.run_id == run.info.run_id
    assert version.tags["strategy"] == "sparft" and version.tags["training_questions"] == "12"
    assert version.tags["lora"] == "false"
    _use_store(root, monkeypatch)
    requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/sparft-policy/1")).read_text()
    assert "torch==" in requirements and "transformers==" in requirements


def _kill_when(process: subprocess.Popen[str], ready: Any, timeout: float = 300) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.2)
    os.killpg(process.pid, 9)
    process.wait()


@pytest.mark.slow
def test_killed_train_stage_resumes_by_itself_and_its_runs_are_marked_killed(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """``sparft stage train`` SIGKILLed after its step-2 checkpoint: the rerun, with no flag,
    continues from it (same settings), ends with the choices of a run never interrupted, and
    marks the killed attempt's MLflow run KILLED. Changed settings start afresh with a note."""
    import mlflow

    settings = {"max_steps": 6, "heldout": {"every": 2}, "save_total_limit": 3}
    whole = _project(tmp_path / "whole", tiny_lm_dir, **settings)
    killed = _project(tmp_path / "killed", tiny_lm_dir, **settings)
    for root in (whole, killed):
        (root / "params.yaml").write_text(
            (root / "params.yaml").read_text() + "evaluate:\n  max_new_tokens: 8\n  limit: 6\n"
        )
    args = [str(BIN / "sparft"), "stage", "train"]
    done = subprocess.run(args, cwd=whole, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    process = subprocess.Popen(
        args, cwd=killed, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    _kill_when(process, lambda: latest_checkpoint(killed / "data/checkpoints/train") is not None)
    assert not (killed / "data/train/history.parquet").exists()
    again = subprocess.run(args, cwd=killed, env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((killed / "data/train/metrics.json").read_text())
    assert summary["resumed_from"] and "checkpoint-" in summary["resumed_from"]
    assert summary["notes"] == []
    columns = ["step", "prompt_ids", "group_sizes", "solve_rate"]
    expected = pd.read_parquet(whole / "data/train/history.parquet")[columns]
    resumed = pd.read_parquet(killed / "data/train/history.parquet")[columns]
    assert resumed.astype(str).equals(expected.astype(str))
    curve = pd.read_parquet(killed / "data/train/heldout.parquet")
    assert list(curve["step"]) == [0, 2, 4, 6]  # the journaled checks kept, the rest made
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{killed / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sparft").experiment_id])
    states = sorted(r.info.status for r in runs)
    assert states == ["FINISHED", "KILLED"]
    (dead,) = [r for r in runs if r.info.status == "KILLED"]
    assert "ended without closing this run" in dead.data.tags["sparft.killed"]
    changed = subprocess.run(
        [*args, "--set", "train.learning_rate=0.001"], cwd=killed, env=_env(),
        capture_output=True, text=True,
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr[-3000:]
    fresh = json.loads((killed / "data/train/metrics.json").read_text())
    assert fresh["resumed_from"] is None and "other settings" in fresh["notes"][0]


@pytest.mark.slow
def test_a_dead_rollout_server_is_named_and_the_rerun_resumes_with_a_new_one(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """``train.rollouts: vllm-server`` against a server that dies in step 3: the stage fails
    naming the server, its exit code and its log; the rerun starts a new server and continues
    from the step-2 checkpoint. A server that never answers /health fails within
    ``startup_timeout_s``."""
    from conftest import fake_vllm_python

    root = _project(tmp_path / "p", tiny_lm_dir, rollouts="vllm-server", heldout={"every": 0})
    requests = tmp_path / "requests.jsonl"
    log = tmp_path / "server.log"
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["generation"]["server"] = {"log_file": str(log), "startup_timeout_s": 60}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**_env(), "SPARFT_VLLM_PYTHON": str(fake_vllm_python(tmp_path)),
           "FAKE_VLLM_REQUESTS": str(requests)}  # fmt: skip
    args = [str(BIN / "sparft"), "stage", "train"]
    rows_per_step = 2 * 2
    dying = {**env, "FAKE_VLLM_DIE_AFTER": str(2 * rows_per_step)}
    done = subprocess.run(args, cwd=root, env=dying, capture_output=True, text=True)
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "training rollouts: the vLLM server sparft started at" in said, said[-3000:]
    assert "exited with code 17" in said and "fake engine died" in said
    assert latest_checkpoint(root / "data/checkpoints/train") is not None

    again = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((root / "data/train/metrics.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
    assert log.read_text().count("fake vllm started") == 2
    sent = [json.loads(line) for line in requests.read_text().splitlines()]
    completions = [r for r in sent if "endpoint" not in r]
    assert len(completions) == 4 * rows_per_step  # steps 1-2, then 3-4 on the new server
    assert all(r["return_token_ids"] and r["logprobs"] == 0 for r in completions)

    never = {**env, "FAKE_VLLM_NEVER_READY": "1"}
    params["generation"]["server"]["startup_timeout_s"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    stuck = subprocess.run(
        [*args, "--set", "train.resume=never"], cwd=root, env=never, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert stuck.returncode != 0
    assert "was not ready after 3 s (generation.server.startup_timeout_s)" in (
        stuck.stdout + stuck.stderr
    )


@pytest.mark.slow
def test_lora_training_saves_an_adapter_and_a_failed_stage_is_marked(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "p", tiny_lm_dir, lora="on", curriculum="uniform", max_steps=2)
    run = [str(BIN / "sparft"), "stage", "train"]
    done = subprocess.run(run, cwd=root, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "data/train/model/adapter_config.json").exists()
    assert not (root / "data/train/model/model.safetensors").exists()
    # uniform has no arms: the declared plot shows the prompts it covered (DVC needs the file)
    assert (root / "data/plots/train_arms.png").stat().st_size > 0

    (root / "data/subset.parquet").unlink()
    failed = subprocess.run(run, cwd=root, env=_env(), capture_output=True, text=True)
    assert failed.returncode != 0
    assert "data/subset.parquet: no such file (run the select stage first)" in failed.stdout
    assert (root / "data/train/model/adapter_config.json").exists()

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sparft").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    failed_run = next(r for r in runs if r.info.status == "FAILED")
    assert "run the select stage first" in failed_run.data.tags["error"]
    (version,) = client.search_model_versions("name='sparft-policy'")
    assert version.tags["lora"] == "true" and version.tags["strategy"] == "uniform"
    finished = next(r for r in runs if r.info.status == "FINISHED")
    adapter = {a.path for a in client.list_artifacts(finished.info.run_id, "adapter")}
    assert "adapter/adapter_config.json" in adapter
    _use_store(root, monkeypatch)
    pipe = mlflow.transformers.load_model(f"models:/sparft-policy/{version.version}")
    assert pipe.model.config.num_hidden_layers == 2


@pytest.mark.parametrize(
    ("name", "kind", "sharding"),
    [
        ("ddp_cpu", "MULTI_GPU", None),
        ("ddp", "MULTI_GPU", None),
        ("zero2", "DEEPSPEED", 2),
        ("zero3", "DEEPSPEED", 3),
        ("fsdp", "FSDP", 2),
    ],
)
def test_accelerate_configs_load(name: str, kind: str, sharding: int | None) -> None:
    """The documented GPU configs are not run here (no GPU): at least accelerate reads each
    as the setup it claims, and the sharded ones save one consolidated policy."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE / f"{name}.yaml"))
    assert config.distributed_type.value == kind
    assert config.num_processes == (2 if name == "ddp_cpu" else 8)
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == sharding
        if sharding == 3:
            assert config.deepspeed_config["zero3_save_16bit_model"] is True
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == sharding
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_known_deprecation_warnings_are_quiet_and_only_they(tiny_lm_dir: Path) -> None:
    """The config is built under transformers' new checkpointing names (no warning at the
    source); TRL's per-generation toggling through the old names is filtered; any other
    FutureWarning still shows, and a user's ``gradient_checkpointing`` still counts."""
    import warnings

    from transformers import AutoModelForCausalLM

    from sparft.training.trainer import quiet_known_warnings

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = grpo_args(TrainConfig())
        off = grpo_args(TrainConfig(grpo={"gradient_checkpointing": False}))
        quiet_known_warnings()
        model.gradient_checkpointing_enable()
        assert model.is_gradient_checkpointing
        model.gradient_checkpointing_disable()
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True
    assert off.activation_checkpointing is False
