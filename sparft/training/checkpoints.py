"""Checkpoints and resuming: which checkpoint is complete (TRL's state and the curriculum's both
written), whether it was saved under the run's settings (the fingerprint ``train.resume: auto``
compares), running training from it or afresh, and swapping the final policy in atomically. It
imports neither TRL nor torch: the trainer is passed in, so finding or checking a checkpoint is
cheap.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sparft.curricula.base import STATE_JSON
from sparft.training.config import TrainConfig

CURRICULUM_STATE = STATE_JSON
CHECKPOINT_PREFIX = "checkpoint-"
SETTINGS_FILE = "sparft_settings.json"  # in each checkpoint: the settings fingerprint it holds


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


def checkpoint_settings(checkpoint: Path) -> str | None:
    """The settings fingerprint a checkpoint was saved under (None: saved by an older sparft)."""
    path = checkpoint / SETTINGS_FILE
    if not path.is_file():
        return None
    return str(json.loads(path.read_text()).get("fingerprint"))


def resume_point(cfg: TrainConfig, fingerprint: str | None) -> tuple[Path | None, str | None]:
    """The checkpoint to resume from under ``cfg.resume``, and a note when one was passed over."""
    if cfg.resume == "never":
        return None, None
    checkpoint = latest_checkpoint(cfg.checkpoint_dir)
    if checkpoint is None or cfg.resume == "always":
        return checkpoint, None
    saved = checkpoint_settings(checkpoint)
    if fingerprint is not None and saved == fingerprint:
        return checkpoint, None
    return None, (
        f"{checkpoint} was saved under other settings (or data, or model): training starts "
        "afresh (train.resume: always would continue from it)"
    )


def train(trainer: Any, cfg: TrainConfig) -> tuple[Path | None, str | None]:
    """Run training, resuming as ``cfg.resume`` says; returns the checkpoint resumed from and a
    note when a checkpoint was passed over. A fresh start clears the checkpoint folder."""
    checkpoint, note = resume_point(cfg, getattr(trainer, "settings_fingerprint", None))
    if checkpoint is None and Path(cfg.checkpoint_dir).exists() and trainer.args.should_save:
        shutil.rmtree(cfg.checkpoint_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return checkpoint, note


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
