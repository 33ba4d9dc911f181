"""GRPO training where a curriculum plans every generation batch: TRL's GRPOTrainer, extended
only where it must be.

TRL's own sampler is fed by a prefetching dataloader, so a sampler-based curriculum would pick
one step behind the rewards it learns from, and TRL assumes every prompt has
``num_generations`` rollouts (``rewards.view(-1, num_generations)``). ``CurriculumGRPOTrainer``
instead asks the curriculum for the step's plan in ``_generate_and_score_completions`` (zero
lag): each planned prompt repeated by its own rollout count, the step's rows split evenly over
the processes. TRL then generates and scores as usual, with its group size set to 1 for the
call so that nothing reshapes by a fixed size, and the advantages are recomputed here within
each prompt's own group from the rewards TRL gathered over all processes
(``group_advantages``, the same formulas as TRL's). The loss is TRL's, untouched: its
normalisation counts completion tokens and rows, not groups. Every process computes the same
plan from the same seed and the same gathered rewards, then takes its own slice, so DDP ranks
never disagree.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import pandas as pd
import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import nanstd

from sparft.curricula import Curriculum, Group
from sparft.curricula.base import STATE_JSON, load_state, save_state
from sparft.prompts import PromptConfig, build_messages
from sparft.rewards import correctness_reward, format_reward
from sparft.train_config import TrainConfig

CURRICULUM_STATE = STATE_JSON
CHECKPOINT_PREFIX = "checkpoint-"


def group_advantages(
    rewards_per_func: torch.Tensor,
    sizes: Sequence[int],
    weights: torch.Tensor,
    scale_rewards: str = "group",
    aggregation: str = "sum_then_normalize",
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO advantages for consecutive groups of the given sizes, and whether each row's group
    (or batch, under ``scale_rewards="batch"``) had zero reward spread.

    TRL's formulas with the group taken from ``sizes`` instead of a fixed ``num_generations``:
    rewards are the weighted sum over reward functions (NaN where every function returned
    None, left out of means and spreads); ``sum_then_normalize`` subtracts the group mean and
    divides by the group's (Bessel) standard deviation + 1e-4 (``scale_rewards="batch"``: the
    batch's; ``"none"``: no division); ``normalize_then_sum`` normalises each function within
    the group, sums, then normalises over the batch. A group of one rollout has advantage 0.
    """
    bounds = np.cumsum([0, *sizes])
    if bounds[-1] != rewards_per_func.shape[0]:
        raise ValueError(f"groups of {list(sizes)} rollouts but {rewards_per_func.shape[0]} rows")
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    weights = weights.to(rewards_per_func.device)
    spans = list(itertools.pairwise(bounds))

    def per_group(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        parts = [fn(x[a:b]).expand(b - a, *x.shape[1:]) for a, b in spans]
        return torch.cat(parts)

    def group_std(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            return torch.zeros_like(x[0])
        return nanstd(x, dim=0)

    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable] = torch.nan
        mean = per_group(rewards, lambda x: torch.nanmean(x))
        if scale_rewards in ("group", "none"):
            std = per_group(rewards, group_std)
        elif scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else rewards * 0
        else:
            raise ValueError(f"unknown scale_rewards {scale_rewards!r}")
        advantages = rewards - mean
        if scale_rewards != "none":
            advantages = advantages / (std + 1e-4)
    elif aggregation == "normalize_then_sum":
        mean_k = per_group(rewards_per_func, lambda x: torch.nanmean(x, dim=0))
        std_k = per_group(rewards_per_func, group_std)
        rewards = (((rewards_per_func - mean_k) / (std_k + 1e-4)) * weights.unsqueeze(0)).nansum(1)
        rewards[unscorable] = torch.nan
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else rewards * 0
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)
    else:
        raise ValueError(f"unknown multi_objective_aggregation {aggregation!r}")
    zero_std = torch.isclose(std, torch.zeros_like(std))
    return torch.nan_to_num(advantages, nan=0.0), zero_std


class CurriculumGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose generation batches, group sizes included, come from a ``Curriculum``."""

    def __init__(
        self, *args: Any, curriculum: Curriculum, solve_reward: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.curriculum = curriculum
        self._rows = {str(row["id"]): row for row in self.train_dataset}
        self._solve_index = self.reward_func_names.index(solve_reward)
        self._gathered: torch.Tensor | None = None
        self._generation_seconds = 0.0

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[no-untyped-def]
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered = rewards
        return rewards

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        started = perf_counter()
        budget = self.args.generation_batch_size
        plan = self.curriculum.plan(budget // self.num_generations, budget)
        rows = [self._rows[a.prompt_id] for a in plan for _ in range(a.rollouts)]
        start = self.accelerator.process_index * len(inputs)
        local = [dict(r) for r in rows[start : start + len(inputs)]]
        self._gathered = None
        own_seconds = perf_counter() - started
        group = self.num_generations
        self.num_generations = 1  # nothing in TRL may reshape rewards by a fixed group size
        try:
            output = super()._generate_and_score_completions(local)
        finally:
            self.num_generations = group
        scored = perf_counter()
        gathered = self._gathered
        if gathered is None:
            raise RuntimeError("GRPOTrainer did not compute rewards through _calculate_rewards")
        sizes = [a.rollouts for a in plan]
        advantages, zero_std = group_advantages(
            gathered,
            sizes,
            self.reward_weights,
            self.scale_rewards,
            self.multi_objective_aggregation,
        )
        output["advantages"] = advantages[start : start + len(inputs)]
        metrics = self._metrics["train"]
        metrics["frac_reward_zero_std"][-1] = zero_std.float().mean().item()
        self._logs["advantages"].clear()
        self._logs["advantages"].extend(advantages.tolist())
        record = self.curriculum.observe(self._groups(plan, gathered, advantages))
        elapsed = perf_counter() - started
        self._generation_seconds += elapsed
        for key in ("solve_rate", "effective_prompt_ratio", "unique_seen", "rollouts_total"):
            metrics[f"curriculum/{key}"].append(float(record[key]))
        if "arm" in record:
            metrics["curriculum/arm"].append(float(record["arm"]))
        metrics["curriculum/max_group"].append(float(record["max_group"]))
        for key, value in self.curriculum.metrics().items():
            metrics[f"curriculum/{key}"].append(value)
        metrics["time/generation_s"].append(elapsed)
        metrics["time/curriculum_s"].append(own_seconds + perf_counter() - scored)
        return output

    def _groups(self, plan: Sequence[Any], gathered: torch.Tensor, advantages: torch.Tensor):  # type: ignore[no-untyped-def]
        """One ``Group`` per planned prompt from the gathered rewards and the advantages."""
        weights = self.reward_weights.to(gathered.device).unsqueeze(0)
        total = (gathered * weights).nansum(dim=1)
        total[torch.isnan(gathered).all(dim=1)] = torch.nan
        solved = torch.nan_to_num(gathered[:, self._solve_index], nan=0.0)
        total, solved = total.cpu().numpy(), solved.cpu().numpy()
        adv = advantages.detach().cpu().numpy()
        groups, at = [], 0
        for a in plan:
            span = slice(at, at + a.rollouts)
            groups.append(Group(a.prompt_id, total[span], solved[span], adv[span]))
            at += a.rollouts
        return groups

    def training_step(self, model, inputs, num_items_in_batch):  # type: ignore[no-untyped-def]
        before = self._generation_seconds
        started = perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        spent = perf_counter() - started - (self._generation_seconds - before)
        self._metrics["train"]["time/update_s"].append(spent)
        return loss

    def _save_checkpoint(self, model, trial):  # type: ignore[no-untyped-def]
        # Written before TRL's files, whose trainer_state.json marks the checkpoint complete.
        folder = Path(self._get_output_dir(trial=trial))
        folder = folder / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        if self.args.should_save:
            save_state(self.curriculum.state_dict(), folder)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):  # type: ignore[no-untyped-def]
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.curriculum.load_state_dict(load_state(checkpoint))


def latest_checkpoint(folder: str | Path) -> Path | None:
    """Newest checkpoint holding both TRL's state and the curriculum's (i.e. fully written)."""
    root = Path(folder)
    if not root.is_dir():
        return None
    complete = [
        p
        for p in root.glob(f"{CHECKPOINT_PREFIX}*")
        if p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (p / "trainer_state.json").exists()
        and (p / CURRICULUM_STATE).exists()
    ]
    return max(complete, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), default=None)


def training_dataset(frame: pd.DataFrame, prompt: PromptConfig) -> Any:
    """TRL's conversational format: ``prompt`` messages, plus ``answer`` and ``id`` columns."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "id": frame["id"].astype(str).tolist(),
            "prompt": [build_messages(q, prompt) for q in frame["question"]],
            "answer": frame["answer"].astype(str).tolist(),
        }
    )


def _use_bf16(cfg: TrainConfig) -> bool:
    if cfg.precision == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cfg.precision == "bf16"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def grpo_args(cfg: TrainConfig, report_to: Sequence[str] = ()) -> GRPOConfig:
    """TRL's GRPOConfig for ``cfg``: one generation batch per optimizer step, logged every step."""
    rollouts = cfg.rollouts_per_step
    procs = world_size()
    if rollouts % procs:
        raise ValueError(
            f"train.prompts_per_step x train.num_generations = {rollouts} rollouts per step "
            f"cannot be split over {procs} processes"
        )
    bf16 = _use_bf16(cfg)
    kwargs: dict[str, Any] = {
        "output_dir": cfg.checkpoint_dir,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": rollouts // procs,
        "gradient_accumulation_steps": 1,
        "num_generations": cfg.num_generations,
        "max_completion_length": cfg.max_completion_length,
        "temperature": cfg.temperature,
        "learning_rate": cfg.learning_rate,
        "beta": cfg.beta,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "bf16": bf16,
        "fp16": False,
        "use_cpu": not torch.cuda.is_available(),
        "report_to": list(report_to) or "none",
        "reward_weights": [1.0, cfg.format_weight],
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,
    }
    kwargs.update(cfg.grpo)
    return GRPOConfig(**kwargs)


def load_policy(path: str, cfg: TrainConfig) -> tuple[Any, Any, Any]:
    """Model, left-padding tokenizer and (when LoRA applies) the peft config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if _use_bf16(cfg) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_config = None
    if cfg.use_lora(model.num_parameters()):
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            task_type="CAUSAL_LM",
        )
    return model, tokenizer, peft_config


RewardFunc = Callable[..., list[float]]


def build_trainer(
    cfg: TrainConfig,
    model_path: str,
    frame: pd.DataFrame,
    curriculum: Curriculum,
    prompt: PromptConfig,
    report_to: Sequence[str] = (),
    callbacks: Sequence[Any] = (),
    reward_funcs: Sequence[RewardFunc] | None = None,
) -> CurriculumGRPOTrainer:
    """The trainer, ready for ``train()``. The first reward function is the solve signal the
    curriculum sees (correctness by default; tests may pass another)."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    model, tokenizer, peft_config = load_policy(model_path, cfg)
    funcs = list(reward_funcs or (correctness_reward, format_reward))
    return CurriculumGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=grpo_args(cfg, report_to),
        train_dataset=training_dataset(frame, prompt),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
        curriculum=curriculum,
        solve_reward=funcs[0].__name__,
    )


def train(trainer: Any, cfg: TrainConfig) -> Path | None:
    """Run training, resuming when asked and possible; returns the checkpoint resumed from."""
    checkpoint = latest_checkpoint(cfg.checkpoint_dir) if cfg.resume else None
    if not cfg.resume and Path(cfg.checkpoint_dir).exists() and trainer.args.should_save:
        shutil.rmtree(cfg.checkpoint_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return checkpoint


def save_policy(trainer: Any, out: str | Path) -> Path:
    """Final model (full weights or LoRA adapter) plus tokenizer, swapped in atomically."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    if trainer.args.should_save:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if trainer.args.should_save:
        trainer.processing_class.save_pretrained(str(tmp))
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    return out


def log_history_frame(log_history: list[dict[str, Any]]) -> pd.DataFrame:
    """Trainer's per-step logs (loss, reward, KL, lengths, timings) as one row per step."""
    return pd.DataFrame([r for r in log_history if "step" in r and "loss" in r])


def summary_metrics(history: pd.DataFrame, logs: pd.DataFrame) -> dict[str, float]:
    """Run-level numbers for DVC metrics and MLflow."""
    out: dict[str, float] = {"steps": float(len(history))}
    if not history.empty:
        out["solve_rate_mean"] = float(history["solve_rate"].mean())
        tail = history.tail(max(1, len(history) // 4))
        out["solve_rate_last_quarter"] = float(tail["solve_rate"].mean())
        out["effective_prompt_ratio"] = float(history["effective_prompt_ratio"].mean())
        out["unique_questions_seen"] = float(history["unique_seen"].iloc[-1])
    for key in ("time/generation_s", "time/update_s", "kl", "completions/mean_length"):
        if key in logs and logs[key].notna().any():
            out["mean_" + key.replace("/", "_")] = float(logs[key].mean())
    return {k: v for k, v in out.items() if math.isfinite(v)}
