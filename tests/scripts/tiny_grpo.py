"""Train a tiny model with a curriculum for the resume and multi-process tests.

The solve signal is a reward that depends on the sampled text, so identical arm choices after a
resume require the model, optimiser, RNG and curriculum states all to be restored exactly.
Usage: tiny_grpo.py MODEL_DIR WORK_DIR MAX_STEPS [--kill-at STEP] [--resume]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback

from sparft.answers import completion_text
from sparft.bandit import BanditConfig
from sparft.config import Params
from sparft.curricula import make_curriculum
from sparft.curricula.dots import DotsConfig
from sparft.curricula.dots.predictor import TrainSettings, save_predictor, train_predictor
from sparft.prompts import PromptConfig
from sparft.rewards import format_reward
from sparft.training import ReplayConfig, TrainConfig, train
from sparft.training.setup import build_trainer


def length_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    return [1.0 if len(completion_text(c)) % 3 == 0 else 0.0 for c in completions]


class KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("work", type=Path)
    parser.add_argument("steps", type=int)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--curriculum", default="sparft")
    parser.add_argument("--allocation", default="auto")
    parser.add_argument("--generations", type=int, default=4, help="train.num_generations")
    parser.add_argument("--replay", action="store_true", help="train.replay on, sigma 0.5")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frame = pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(16)],
            "question": [f"What is {i} + {i % 5}?" for i in range(16)],
            "answer": [str(i + i % 5) for i in range(16)],
            "cluster": [i % 4 for i in range(16)],
            # as if probed: 8 answers each, so every allocator has estimates from the start
            "probe_rollouts": 8,
            "probe_correct": [i % 9 for i in range(16)],
        }
    )
    cfg = TrainConfig(
        max_steps=args.steps,
        prompts_per_step=2,
        num_generations=args.generations,
        max_completion_length=12,
        save_steps=2,
        resume=args.resume,
        checkpoint_dir=str(args.work / "checkpoints"),
        num_threads=1,
        beta=0.02,
        learning_rate=1e-3,
        curriculum=args.curriculum,
        allocation=args.allocation,
        replay=ReplayConfig(enabled=args.replay, sigma=0.5),
    )
    dots = DotsConfig(
        predictor=str(args.work / "predictor.pt"), reference_questions=4, reference_rollouts=2,
        tau=0.05,
    )  # fmt: skip
    if args.curriculum == "dots":
        frame["embedding"] = list(np.random.default_rng(0).normal(size=(16, 8)).astype("f4"))
        if not Path(dots.predictor).exists():  # the resumed run reuses the killed run's
            x = np.stack(frame["embedding"].to_numpy())
            rates = frame["probe_correct"].to_numpy() / 8
            model, _ = train_predictor(x, rates, np.zeros(16), TrainSettings(hidden=16, epochs=2))
            save_predictor(model, dots.predictor)
    params = Params(train=cfg, bandit=BanditConfig(seed=3), dots=dots)
    curriculum = make_curriculum(cfg.curriculum, frame, params)
    callbacks = [KillAt(args.kill_at)] if args.kill_at else []
    trainer = build_trainer(
        cfg,
        args.model,
        frame,
        curriculum,
        PromptConfig(),
        callbacks=callbacks,
        reward_funcs=[length_reward, format_reward],
    )
    train(trainer, cfg)
    rank = trainer.accelerator.process_index
    record = {
        "history": curriculum.history,
        "global_step": trainer.state.global_step,
        "world": trainer.accelerator.num_processes,
    }
    (args.work / f"history-rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
