"""Building the trainer a run trains with: the policy (weights in the configured precision, a
left-padding tokenizer, a LoRA config when it applies), TRL's ``GRPOConfig`` mapping one
generation batch to one optimizer step, and the training set in TRL's conversational format;
``build_trainer`` puts them together into a ``CurriculumGRPOTrainer``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from trl import GRPOConfig

from sparft.curricula import Curriculum
from sparft.prompts import PromptConfig, build_messages
from sparft.rewards import correctness_reward, format_reward
from sparft.training.config import TrainConfig, policy_dtype, use_bf16
from sparft.training.trainer import CurriculumGRPOTrainer


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


CHECKPOINTING_RENAMES = (
    ("gradient_checkpointing", "activation_checkpointing"),
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)


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
    bf16 = use_bf16(cfg)
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
    grpo = dict(cfg.grpo)
    for old, new in CHECKPOINTING_RENAMES:  # transformers' new names: no deprecation warning
        if old in grpo:
            grpo.setdefault(new, grpo.pop(old))
    kwargs["activation_checkpointing"] = True  # TRL's default for GRPO, under the new name
    kwargs.update(grpo)
    return GRPOConfig(**kwargs)


def load_policy(path: str, cfg: TrainConfig) -> tuple[Any, Any, Any]:
    """Model, left-padding tokenizer and (when LoRA applies) the peft config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=policy_dtype(cfg))
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
        replay=cfg.replay,
    )
