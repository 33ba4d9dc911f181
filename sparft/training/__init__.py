"""GRPO training with a curriculum: the ``train`` section (``config``), rollout replay's buffer
(``replay``), GRPO advantages for unequal groups (``advantages``), TRL's trainer extended for
curricula and replay (``trainer``), building it (``setup``), checkpoints and resuming
(``checkpoints``), a run's logs and summary numbers (``metrics``) and the held-out learning curve
(``heldout``). Only the light modules' names are handed on here, since ``sparft.config`` imports
this package everywhere and must not load torch, TRL or transformers; the trainer, its setup, the
advantages and the held-out checks are imported from their modules (``from
sparft.training.setup import build_trainer``).
"""

from sparft.training.checkpoints import (
    SETTINGS_FILE,
    latest_checkpoint,
    resume_point,
    save_policy,
    train,
)
from sparft.training.config import HeldoutConfig, Precision, TrainConfig, policy_dtype, use_bf16
from sparft.training.metrics import log_history_frame, summary_metrics
from sparft.training.replay import ReplayBuffer, ReplayConfig, StoredGroup

__all__ = [
    "SETTINGS_FILE",
    "HeldoutConfig",
    "Precision",
    "ReplayBuffer",
    "ReplayConfig",
    "StoredGroup",
    "TrainConfig",
    "latest_checkpoint",
    "log_history_frame",
    "policy_dtype",
    "resume_point",
    "save_policy",
    "summary_metrics",
    "train",
    "use_bf16",
]
