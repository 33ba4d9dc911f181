"""DOTS's adaptive difficulty predictor (Sun et al. 2025): attention over reference questions
with measured solve rates.

A question's predicted solve rate is the attention-weighted mean of the reference questions'
measured rates. Queries and references are frozen question embeddings (the embed stage's, so
any sentence-transformers model serves), each passed through its own projection
``LayerNorm -> Linear -> GELU -> Dropout -> Linear -> GELU -> Dropout -> Linear -> LayerNorm``;
the attention scores are ``r . q / sqrt(hidden)`` (softmax, temperature 1). A calibration head,
an MLP ``2 -> 10 -> 2`` on the mean and spread of the reference rates, gives a temperature
(softplus, clamped to [0.01, 10]) and a bias (tanh), and the output is
``sigmoid(logit(p) / temperature + bias)``. Trained with binary cross-entropy on measured
solve rates (soft labels), references drawn per batch from the same group (probe model) as the
queries, a query never among its own references; Adam with warm-up then linear decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparft.io import atomic_path

_EPS = 1e-4


class Projection(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
        )


class DifficultyPredictor(nn.Module):
    """Predicted solve rates of queries from references with measured rates."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim, self.hidden, self.dropout = dim, hidden, dropout
        self.query = Projection(dim, hidden, dropout)
        self.reference = Projection(dim, hidden, dropout)
        self.calibration = nn.Sequential(nn.Linear(2, 10), nn.GELU(), nn.Linear(10, 2))

    def forward(
        self,
        queries: torch.Tensor,
        references: torch.Tensor,
        rates: torch.Tensor,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``queries`` (B, d), ``references`` (R, d), ``rates`` (R,); ``exclude`` (B, R) marks
        references a query may not attend to (itself). Returns (B,) solve rates in (0, 1)."""
        q, r = self.query(queries), self.reference(references)
        scores = q @ r.T / math.sqrt(self.hidden)
        if exclude is not None:
            scores = scores.masked_fill(exclude, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        p = (weights @ rates).clamp(_EPS, 1 - _EPS)
        stats = torch.stack([rates.mean(), rates.std(unbiased=False)]).unsqueeze(0)
        out = self.calibration(stats)[0]
        temperature = nn.functional.softplus(out[0]).clamp(0.01, 10.0)
        bias = torch.tanh(out[1])
        return torch.sigmoid(torch.logit(p) / temperature + bias)


@dataclass(frozen=True)
class TrainSettings:
    hidden: int = 256
    dropout: float = 0.1
    references: int = 256
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_share: float = 0.1
    seed: int = 0


def _exclusion(query_index: np.ndarray, ref_index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(query_index[:, None] == ref_index[None, :])


def train_predictor(
    embeddings: np.ndarray, rates: np.ndarray, groups: np.ndarray, settings: TrainSettings
) -> tuple[DifficultyPredictor, list[float]]:
    """Fit a predictor on rows (question embedding, measured rate, group); returns it (in eval
    mode) and the mean training loss per epoch."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    y = torch.from_numpy(np.asarray(rates, dtype=np.float32))
    model = DifficultyPredictor(x.shape[1], settings.hidden, settings.dropout)
    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    batches_per_epoch = sum(math.ceil(len(m) / settings.batch_size) for m in members.values())
    total = max(1, settings.epochs * batches_per_epoch)
    warmup = max(1, int(settings.warmup_share * total))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / warmup
            if step < warmup
            else max(0.0, (total - step) / max(1, total - warmup))
        ),
    )
    losses = []
    model.train()
    for _ in range(settings.epochs):
        epoch_loss, count = 0.0, 0
        for rows in members.values():
            order = rng.permutation(rows)
            for start in range(0, len(order), settings.batch_size):
                query = order[start : start + settings.batch_size]
                refs = rng.choice(rows, size=min(settings.references, len(rows)), replace=False)
                exclude = _exclusion(query, refs)
                if exclude.all(dim=1).any():  # a query whose only reference is itself
                    continue
                pred = model(x[query], x[refs], y[refs], exclude)
                loss = nn.functional.binary_cross_entropy(pred, y[query])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                epoch_loss += loss.item() * len(query)
                count += len(query)
        losses.append(epoch_loss / max(count, 1))
    model.eval()
    return model, losses


@torch.no_grad()
def predict(
    model: DifficultyPredictor,
    queries: np.ndarray,
    references: np.ndarray,
    rates: np.ndarray,
    query_index: np.ndarray | None = None,
    ref_index: np.ndarray | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Predicted solve rates of ``queries`` given ``references`` and their measured ``rates``;
    with indices, a query never attends to itself among the references."""
    model.eval()
    r = torch.from_numpy(np.asarray(references, dtype=np.float32))
    y = torch.from_numpy(np.asarray(rates, dtype=np.float32))
    out = []
    for start in range(0, len(queries), batch_size):
        q = torch.from_numpy(np.asarray(queries[start : start + batch_size], dtype=np.float32))
        exclude = None
        if query_index is not None and ref_index is not None:
            exclude = _exclusion(query_index[start : start + batch_size], ref_index)
            if exclude.all(dim=1).any():
                exclude = None
        out.append(model(q, r, y, exclude).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def save_predictor(model: DifficultyPredictor, path: str | Path) -> Path:
    """Weights and the shape settings in one torch file, written atomically."""
    payload = {
        "config": {"dim": model.dim, "hidden": model.hidden, "dropout": model.dropout},
        "state_dict": model.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_predictor(path: str | Path) -> DifficultyPredictor:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (run the dots_predictor stage first)")
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    model = DifficultyPredictor(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model


def error_metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Mean absolute error and Pearson correlation (NaN when either side is constant)."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    mae = float(np.mean(np.abs(predicted - measured)))
    if predicted.std() == 0 or measured.std() == 0:
        return {"mae": mae, "pearson": float("nan")}
    return {"mae": mae, "pearson": float(np.corrcoef(predicted, measured)[0, 1])}


def knn_rates(
    queries: np.ndarray, references: np.ndarray, rates: np.ndarray, k: int = 10
) -> np.ndarray:
    """The baseline DOTS improves on: mean rate of the k most similar references (cosine)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-12)
    r = references / np.linalg.norm(references, axis=1, keepdims=True).clip(1e-12)
    k = min(k, len(r))
    nearest = np.argsort(-(q @ r.T), axis=1)[:, :k]
    return np.asarray(rates)[nearest].mean(axis=1)
