"""The ``train`` section of ``params.yaml`` and the precision it implies, kept apart from the
trainer so that reading params, or picking the dtype the held-out checks serve weights in, never
imports TRL: ``sparft.config`` imports this module everywhere, and torch is imported only inside
the two functions that ask it about the hardware (``use_bf16``, ``policy_dtype``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparft.curricula.allocation import Allocation
from sparft.curricula.registry import curricula
from sparft.training.replay import ReplayConfig

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16", "bf16-mixed"]

LORA_AUTO_THRESHOLD = 300_000_000


class HeldoutConfig(BaseModel):
    """``train.heldout``: the learning curve on the evaluate stage's first benchmark."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(0, ge=0, description="Steps between checks (0: no curve).")
    backend: Literal["hf", "vllm-server"] = Field(
        "hf",
        description="hf: transformers' generate on the live policy, in the training process. "
        "vllm-server: the policy's weights are loaded into a vLLM server before each check "
        "(LoRA merged; 2x faster on this project's AMX CPU, benchmarks/heldout.py).",
    )
    server_url: str | None = Field(
        None,
        description="vllm-server: a running server (/v1 URL) of the policy's architecture, "
        "started with VLLM_SERVER_DEV_MODE=1; null: $SPARFT_HELDOUT_SERVER_URL (the compare "
        "flow's shared server), else sparft starts one (generation.server) for the run.",
    )
    batch_size: int = Field(
        64, ge=1, description="hf: questions per generate call; vllm-server: requests in flight."
    )
    cache_dir: str | None = Field(
        None, description="Where step-0 points are cached by model and questions (null: none)."
    )


class TrainConfig(BaseModel):
    """The ``train`` section: GRPO with a curriculum, on the selected subset or the full set."""

    model_config = ConfigDict(extra="forbid")

    curriculum: str = Field(
        "sparft", description="sparft (bandit over clusters) | uniform | cures | dump"
    )
    allocation: Allocation = Field(
        "auto",
        description="Rollouts per prompt: auto (the curriculum's own: variance for cures, fixed "
        "otherwise) | fixed (num_generations each) | knapsack (Knapsack RL) | variance (CurES).",
    )
    data: Literal["subset", "full"] = Field(
        "subset", description="subset: the select stage's output; full: every loaded question."
    )
    model: str | None = Field(None, description="Policy to train; null uses generation.model.")
    max_steps: int = Field(20, ge=1, description="Optimizer steps (one generation batch each).")
    prompts_per_step: int = Field(2, ge=1, description="Prompts (groups) per step.")
    num_generations: int = Field(
        4,
        ge=2,
        description="GRPO group size; the step's rollout budget is prompts_per_step x this, "
        "split between the prompts by the allocation.",
    )
    max_completion_length: int = Field(48, ge=1)
    temperature: float = Field(0.7, gt=0.0, le=5.0)
    learning_rate: float = Field(1e-5, gt=0.0)
    beta: float = Field(0.02, ge=0.0, description="KL coefficient; 0 skips the reference model.")
    format_weight: float = Field(
        0.0, ge=0.0, description="Weight of the \\boxed{} format reward beside correctness (1)."
    )
    replay: ReplayConfig = Field(
        default_factory=ReplayConfig, description="Rollout replay (DOTS+RR); any curriculum."
    )
    rollouts: Literal["hf", "vllm-server"] = Field(
        "hf",
        description="Where training rollouts are sampled. hf: transformers' generate in the "
        "training process. vllm-server: a vLLM server (make vllm-env; the held-out checks' "
        "server when they use one) with the policy's weights loaded in place at each new "
        "step (LoRA merged), and TRL's importance-sampling correction on its "
        "log-probabilities.",
    )
    heldout: HeldoutConfig = Field(
        default_factory=HeldoutConfig,
        description="Learning curve: greedy accuracy on the evaluate stage's first benchmark.",
    )
    lora: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: LoRA for models over 300M parameters, full fine-tuning below."
    )
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_target_modules: str | list[str] = "all-linear"
    precision: Precision = Field(
        "auto",
        description="auto: bf16 on a GPU that supports it, else fp32. bf16: bf16 weights; "
        "bf16-mixed: fp32 weights, bf16 autocast (fine updates survive; CPUs with AMX).",
    )
    save_steps: int = Field(10, ge=1, description="Checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1)
    resume: Literal["auto", "always", "never"] = Field(
        "auto",
        description="auto: continue from the newest complete checkpoint when it was saved under "
        "the same settings (else start afresh, with a note); always: from the newest checkpoint "
        "whatever its settings; never: start afresh (true/false read as always/never).",
    )
    checkpoint_dir: str = "data/checkpoints/train"
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; null: default.")
    seed: int = 0
    grpo: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra GRPOConfig fields (e.g. loss_type, scale_rewards), passed through.",
    )

    @field_validator("curriculum")
    @classmethod
    def _known_curriculum(cls, value: str) -> str:
        if value not in curricula():
            raise ValueError(f"unknown curriculum {value!r} (allowed: {', '.join(curricula())})")
        return value

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    @field_validator("resume", mode="before")
    @classmethod
    def _resume_switch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "always" if value else "never"
        return value

    @field_validator("lora", mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted ``on``/``off`` (``lora: off``, ``--set train.lora=on``) as a
        boolean; take it as the word the user wrote."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    def use_lora(self, n_parameters: int) -> bool:
        if self.lora == "auto":
            return n_parameters > LORA_AUTO_THRESHOLD
        return self.lora == "on"


def use_bf16(cfg: TrainConfig) -> bool:
    """Whether training computes in bf16 (bf16 weights, or bf16 autocast over fp32 ones)."""
    import torch

    if cfg.precision == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cfg.precision in ("bf16", "bf16-mixed")


def policy_dtype(cfg: TrainConfig) -> torch.dtype:
    """The dtype of the trained weights: bf16 ones, or fp32 (also the master weights under
    bf16-mixed's autocast)."""
    import torch

    mixed = cfg.precision == "bf16-mixed"
    return torch.bfloat16 if use_bf16(cfg) and not mixed else torch.float32
