"""Rollout replay: the buffer's rules, and the decoupled loss through TRL's on a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparft.training import ReplayBuffer, ReplayConfig, StoredGroup


def group(prompt_id: str, rewards: list[float], step: int = 0) -> StoredGroup:
    n = len(rewards)
    r = np.array(rewards, dtype=float)
    return StoredGroup(
        prompt_id=prompt_id,
        step=step,
        prompt_ids=[np.array([1, 2, 3])] * n,
        completion_ids=[np.array([4, 5])] * n,
        rewards=r[:, None],
        total=r,
        correct=r,
        behaviour_logps=[np.array([-1.0, -2.0])] * n,
    )


def test_buffer_keeps_informative_groups_one_per_question_and_evicts_the_oldest() -> None:
    buffer = ReplayBuffer(capacity=3)
    assert buffer.add([group("a", [1, 0]), group("b", [1, 1]), group("c", [0, 0, 1])]) == 2
    assert [g.prompt_id for g in buffer.groups] == ["a", "c"]  # b: all rewards equal
    buffer.add([group("a", [0, 1, 1], step=1)])  # a's newer group replaces its older one
    assert [(g.prompt_id, g.step) for g in buffer.groups] == [("c", 0), ("a", 1)]
    buffer.add([group("d", [1, 0]), group("e", [0, 1])])
    assert [g.prompt_id for g in buffer.groups] == ["a", "d", "e"]  # c, the oldest, evicted


def test_buffer_samples_whole_groups_that_fit() -> None:
    buffer = ReplayBuffer(capacity=10)
    buffer.add([group(f"q{i}", [1, 0] * (i + 1)) for i in range(5)])  # sizes 2, 4, 6, 8, 10
    rng = np.random.default_rng(0)
    for max_rows in (0, 3, 7, 12, 40):
        picked = buffer.sample(max_rows, rng)
        assert sum(len(g) for g in picked) <= max_rows
        assert len({g.prompt_id for g in picked}) == len(picked)
    assert sum(len(g) for g in buffer.sample(40, rng)) == 30


def test_buffer_state_round_trips(tmp_path: Path) -> None:
    from sparft.curricula.base import load_state, save_state

    buffer = ReplayBuffer(capacity=4)
    buffer.add([group("a", [1, 0]), group("b", [0, 1, 1])])
    save_state({"replay": buffer.state_dict()}, tmp_path)
    again = ReplayBuffer(capacity=1)
    again.load_state_dict(load_state(tmp_path)["replay"])
    assert again.capacity == 4 and [g.prompt_id for g in again.groups] == ["a", "b"]
    assert np.array_equal(again.groups[1].total, [0, 1, 1])
    assert np.array_equal(again.groups[0].behaviour_logps[1], [-1.0, -2.0])


# --- through the trainer ---------------------------------------------------------------------


def _trainer(tiny_lm_dir: Path, tmp_path: Path, replay: ReplayConfig) -> Any:
    from sparft.testing import sum_questions, tiny_trainer
    from sparft.training import TrainConfig

    cfg = TrainConfig(
        curriculum="uniform", prompts_per_step=2, num_generations=4, max_completion_length=6,
        beta=0.0, num_threads=1, checkpoint_dir=str(tmp_path / "c"), replay=replay,
    )  # fmt: skip
    trainer = tiny_trainer(cfg, tiny_lm_dir, sum_questions(6, plus=2), informative=True)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop in a real run
    return trainer


def _loss_and_grads(trainer: Any, batch: dict[str, Any]) -> tuple[float, list[torch.Tensor]]:
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    return loss.item(), grads


def test_sigma_one_is_trls_own_loss(tiny_lm_dir: Path, tmp_path: Path) -> None:
    plain = _trainer(tiny_lm_dir, tmp_path / "a", ReplayConfig(enabled=False))
    replaying = _trainer(tiny_lm_dir, tmp_path / "b", ReplayConfig(enabled=True, sigma=1.0))
    for _ in range(2):  # the second step has a filled buffer, and sigma = 1 leaves it unused
        torch.manual_seed(0)
        a = plain._generate_and_score_completions([{}] * 8)
        torch.manual_seed(0)
        b = replaying._generate_and_score_completions([{}] * 8)
        assert torch.equal(a["completion_ids"], b["completion_ids"])
        assert torch.allclose(a["advantages"], b["advantages"])
        assert _loss_and_grads(plain, a)[0] == pytest.approx(_loss_and_grads(replaying, b)[0])
    assert len(replaying.buffer) > 0 and replaying.curriculum.history[-1]["replay/rows"] == 0


def test_replayed_rows_follow_the_decoupled_loss(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """A step of 4 fresh rows and 4 replayed ones, after the policy moved: the trainer's loss
    and gradient equal the decoupled formula computed here by hand,
    sum_t (pi_old/mu) * -A * rho / tokens, with rho = pi/pi_old (1, with gradient)."""
    trainer = _trainer(tiny_lm_dir, tmp_path, ReplayConfig(enabled=True, sigma=0.5))
    torch.manual_seed(0)
    trainer._generate_and_score_completions([{}] * 8)
    stored = next(g for g in trainer.buffer.groups if len(g) == 4)
    with torch.no_grad():  # the policy moves after the replayed group was generated
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    trainer._draw_replay = lambda budget, procs: [(stored, np.arange(4))]
    batch = trainer._generate_and_score_completions([{}] * 8)
    assert batch["completion_ids"].shape[0] == 8 and batch["advantages"].dim() == 2
    loss, grads = _loss_and_grads(trainer, batch)

    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    mask = batch["completion_mask"].float()
    width = batch["completion_ids"].size(1)
    trainer.model.zero_grad()
    logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, width)
    total = torch.tensor(stored.total, dtype=torch.float32)
    replay_adv = (total - total.mean()) / (total.std() + 1e-4)  # its own group's baseline
    fresh_adv = batch["advantages"][:4, 0]
    mu = torch.zeros(4, width)
    for i, row in enumerate(stored.behaviour_logps):
        mu[i, : len(row)] = torch.as_tensor(row)
    weight = torch.ones(8, width)
    weight[4:] = torch.exp(logps[4:].detach() - mu) * mask[4:]
    adv = torch.cat([fresh_adv, replay_adv]).unsqueeze(1) * weight
    rho = torch.exp(logps - logps.detach())
    hand = (-(adv * rho) * mask).sum() / mask.sum()
    hand.backward()
    hand_grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert loss == pytest.approx(hand.item(), rel=1e-4, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, hand_grads, strict=True))
    assert not torch.allclose(weight[4:][mask[4:].bool()], torch.ones(1))  # the weight matters
    record = trainer.curriculum.history[-1]
    assert record["rollouts"] == 4 and record["replay/rows"] == 4
