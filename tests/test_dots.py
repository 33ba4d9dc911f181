"""DOTS: the attention-based difficulty predictor, its stage, and the selection it drives."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sparft.config import Params
from sparft.curricula import Group, make_curriculum
from sparft.curricula.dots import DotsConfig, recalibrate
from sparft.curricula.dots.predictor import (
    TrainSettings,
    error_metrics,
    load_predictor,
    predict,
    save_predictor,
    train_predictor,
)
from sparft.embed import Embeddings, save_embeddings
from sparft.training import TrainConfig


def synthetic(n: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings whose solve rate is a known smooth function of their position."""
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x, 1 / (1 + np.exp(-(2.5 * x[:, 0] - 1.0 * x[:, 1])))


def test_predictor_recovers_solve_rates_from_embeddings(tmp_path: Path) -> None:
    x, rates = synthetic(600)
    train, held = np.arange(480), np.arange(480, 600)
    settings = TrainSettings(hidden=64, epochs=30, batch_size=128, references=128)
    model, losses = train_predictor(x[train], rates[train], np.zeros(480), settings)
    assert losses[-1] < losses[0]
    refs = np.random.default_rng(1).choice(train, size=256, replace=False)
    predicted = predict(model, x[held], x[refs], rates[refs])
    ours = error_metrics(predicted, rates[held])
    constant = error_metrics(np.full(len(held), rates[train].mean()), rates[held])
    assert ours["mae"] < 0.75 * constant["mae"] and ours["pearson"] > 0.7
    save_predictor(model, tmp_path / "p.pt")
    again = predict(load_predictor(tmp_path / "p.pt"), x[held], x[refs], rates[refs])
    assert np.allclose(again, predicted)


def test_a_query_never_attends_to_itself() -> None:
    x, rates = synthetic(40)
    model, _ = train_predictor(x, rates, np.zeros(40), TrainSettings(hidden=16, epochs=2))
    with_self = predict(model, x[:5], x[:10], rates[:10])
    without = predict(model, x[:5], x[:10], rates[:10], np.arange(5), np.arange(10))
    assert not np.allclose(with_self, without)
    changed = rates.copy()
    changed[0] = 1 - changed[0]  # the query's own rate reaches it only through the
    moved = predict(model, x[:1], x[:10], changed[:10], np.arange(1), np.arange(10))
    assert abs(float(moved[0] - without[0])) < 0.01  # calibration's mean and spread


def test_recalibration_by_hand() -> None:
    assert recalibrate(np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.5, 0.7])) == pytest.approx(
        (0.1, 2.0)
    )
    assert recalibrate(np.array([0.4, 0.4]), np.array([0.1, 0.9])) == (0.0, 1.0)


def _curriculum(tmp_path: Path, every: int = 2) -> tuple[object, np.ndarray]:
    x, rates = synthetic(500)
    settings = TrainSettings(hidden=64, epochs=30, batch_size=128, references=128)
    model, _ = train_predictor(x[:400], rates[:400], np.zeros(400), settings)
    save_predictor(model, tmp_path / "p.pt")
    frame = pd.DataFrame({"id": [f"q{i}" for i in range(400, 500)], "embedding": list(x[400:])})
    cfg = DotsConfig(
        predictor=str(tmp_path / "p.pt"), reference_questions=40, reference_rollouts=16,
        every=every, tau=0.05,
    )  # fmt: skip
    params = SimpleNamespace(
        train=TrainConfig(prompts_per_step=4), dots=cfg, allocation=Params().allocation
    )
    cur = make_curriculum("dots", frame, params)
    true = dict(zip(frame["id"], rates[400:], strict=True))
    rng = np.random.default_rng(0)
    cur.bind_rollout(lambda ids, k, t: [(rng.random(k) < true[i]).astype(float) for i in ids])
    return cur, rates[400:]


def test_dots_picks_questions_near_the_target_and_counts_reference_rollouts(
    tmp_path: Path,
) -> None:
    cur, rates = _curriculum(tmp_path)
    true = dict(zip(cur.ids, rates, strict=True))
    rng = np.random.default_rng(1)
    picked = []
    for _ in range(6):
        plan = cur.plan(4, 16)
        picked += [true[a.prompt_id] for a in plan]
        groups = []
        for a in plan:
            correct = (rng.random(a.rollouts) < true[a.prompt_id]).astype(float)
            groups.append(Group(a.prompt_id, correct, correct, correct - correct.mean()))
        cur.observe(groups)
    assert np.mean(np.abs(np.array(picked) - 0.5)) < 0.6 * np.mean(np.abs(rates - 0.5))
    extra = [r.get("extra_rollouts", 0) for r in cur.history]
    assert extra == [40 * 16, 0, 40 * 16, 0, 40 * 16, 0]  # every mu = 2 steps
    assert cur.history[-1]["rollouts_total"] == 6 * 16 + 3 * 40 * 16


def test_a_re_estimate_window_trains_on_distinct_questions(tmp_path: Path) -> None:
    """With the code's tiny tau the nearest questions win every draw; within a window of 4
    steps they are still 16 distinct questions, and the next window may take them again."""
    cur, _ = _curriculum(tmp_path, every=4)
    cur.cfg = cur.cfg.model_copy(update={"tau": 1e-3})
    rng = np.random.default_rng(2)
    windows: list[list[str]] = [[], []]
    for step in range(8):
        plan = cur.plan(4, 16)
        windows[step // 4] += [a.prompt_id for a in plan]
        groups = []
        for a in plan:
            correct = (rng.random(a.rollouts) < 0.5).astype(float)
            groups.append(Group(a.prompt_id, correct, correct, correct - correct.mean()))
        cur.observe(groups)
    assert all(len(set(w)) == 16 for w in windows)
    restored = _curriculum(tmp_path, every=4)[0]
    restored.load_state_dict(cur.state_dict())
    assert restored.window == cur.window


def test_dots_needs_embeddings_and_a_matching_predictor(tmp_path: Path) -> None:
    _curriculum(tmp_path)
    frame = pd.DataFrame({"id": ["a", "b"], "embedding": [np.zeros(3), np.zeros(3)]})
    params = SimpleNamespace(
        train=TrainConfig(prompts_per_step=1),
        dots=DotsConfig(predictor=str(tmp_path / "p.pt")),
        allocation=Params().allocation,
    )
    with pytest.raises(ValueError, match="trained on 16-d embeddings"):
        make_curriculum("dots", frame, params)
    with pytest.raises(ValueError, match="needs an 'embedding' column"):
        make_curriculum("dots", frame.drop(columns="embedding"), params)


def test_predictor_stage_writes_predictor_metrics_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparft.stages import STAGES

    monkeypatch.chdir(tmp_path)
    x, rates = synthetic(120)
    ids = np.array([f"q{i}" for i in range(120)])
    save_embeddings(Embeddings(ids, x, "synthetic"), "data/embeddings.npz")
    k = 8
    correct = np.random.default_rng(0).binomial(k, rates)
    pd.DataFrame({"id": ids, "solve_rate": correct / k, "n_correct": correct, "k": k}).to_parquet(
        "data/probe.parquet"
    )
    params = Params(dots=DotsConfig(hidden=32, epochs=10))
    summary = STAGES["dots_predictor"].run(params)
    assert summary["questions"] == 120 and summary["held_out"] == 24
    assert Path("data/dots/predictor.pt").exists()
    metrics = json.loads(Path("data/dots/metrics.json").read_text())
    for key in ("predictor", "mean_baseline", "knn_baseline"):
        assert set(metrics[key]) == {"mae", "pearson"}
    assert metrics["predictor"]["mae"] < metrics["mean_baseline"]["mae"]
    assert Path("data/plots/dots_predictor.png").stat().st_size > 5000
