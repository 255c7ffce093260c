"""Item factors of a biased matrix factorization, as an item feature for every method.

MeLU's item features (genre, director, actor, rating class) do not carry item identity, and
the collaborative signal that matrix factorization lives on needs it. Learning an identity
embedding end to end inside meta-training memorizes the training users (they are revisited
every epoch); a factorization fitted once on the training users' ratings, with ridge
penalties, gives every item a well-regularized factor q_i instead. The network's
dot-product head (models/network.py) then folds a new user in by Eq. (1)'s gradient steps on
its user factor, starting from a prior the meta-learner learns from the user's features.

Fitted on the rows the protocol allows (the training split's support and query ratings;
the warm users' too under the production protocol), never on validation or test users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.tasks import TaskSplit


@dataclass(frozen=True)
class FactorConfig:
    """Biased ALS settings: rank, ridge penalties (as pseudo-counts), sweeps, seed."""

    rank: int = 8
    reg: float = 10.0
    bias_reg: float = 10.0
    iterations: int = 10
    seed: int = 0


def split_triples(split: TaskSplit, parts: tuple[str, ...] = ("support", "query")) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user row, item row, label) of every observed entry of `parts` of `split`."""
    users, items, labels = [], [], []
    for part in parts:
        mask = getattr(split, f"{part}_mask").cpu().numpy()
        rows = np.broadcast_to(np.arange(mask.shape[0])[:, None], mask.shape)
        users.append(rows[mask])
        items.append(getattr(split, f"{part}_items").cpu().numpy()[mask])
        labels.append(getattr(split, f"{part}_labels").cpu().numpy()[mask])
    return np.concatenate(users), np.concatenate(items), np.concatenate(labels).astype(np.float64)


def ridge_rows(index: np.ndarray, cols: np.ndarray, target: np.ndarray, fixed: np.ndarray, n_rows: int, reg: float) -> np.ndarray:
    """Per row r: argmin_x sum_j (target_j - fixed[cols_j] . x)^2 + reg ||x||^2 over the entries of r."""
    rank = fixed.shape[1]
    order = np.argsort(index, kind="stable")
    index, cols, target = index[order], cols[order], target[order]
    bounds = np.searchsorted(index, np.arange(n_rows + 1))
    out = np.zeros((n_rows, rank))
    eye = reg * np.eye(rank)
    for row in range(n_rows):
        lo, hi = bounds[row], bounds[row + 1]
        if lo == hi:
            continue
        f = fixed[cols[lo:hi]]  # (n, r)
        out[row] = np.linalg.solve(f.T @ f + eye, f.T @ target[lo:hi])
    return out


def als(users: np.ndarray, items: np.ndarray, labels: np.ndarray, n_users: int, n_item_rows: int,
        config: FactorConfig, start: np.ndarray | None = None, iterations: int | None = None) -> np.ndarray:
    """(N+1, rank) item factors of mu + b_u + b_i + p_u . q_i fitted by alternating ridge steps.

    Biases first (a few alternating ridge sweeps), then ALS on the residuals from `start` (or a
    seeded random start). Items without ratings get q_i = 0; row 0 (padding) is 0.
    """
    mu = labels.mean() if labels.size else 0.0
    user_bias, item_bias = np.zeros(n_users), np.zeros(n_item_rows)
    for _ in range(5):
        item_bias = np.bincount(items, labels - mu - user_bias[users], n_item_rows) / (
            config.bias_reg + np.bincount(items, minlength=n_item_rows))
        user_bias = np.bincount(users, labels - mu - item_bias[items], n_users) / (
            config.bias_reg + np.bincount(users, minlength=n_users))
    residual = labels - mu - user_bias[users] - item_bias[items]
    if start is None:
        item_factors = np.random.default_rng(config.seed).normal(0.0, 0.1, (n_item_rows, config.rank))
    else:
        item_factors = start.copy()
    item_factors[np.bincount(items, minlength=n_item_rows) == 0] = 0.0
    for _ in range(config.iterations if iterations is None else iterations):
        user_factors = ridge_rows(users, items, residual, item_factors, n_users, config.reg)
        item_factors = ridge_rows(items, users, residual, user_factors, n_item_rows, config.reg)
    item_factors[0] = 0.0
    return item_factors


def fit_item_factors(splits: list[TaskSplit], n_item_rows: int, config: FactorConfig = FactorConfig(),
                     parts: tuple[str, ...] = ("support", "query"), folds: int = 0) -> torch.Tensor:
    """Item factors fitted on `parts` of `splits`: (N+1, rank), or with `folds` > 1 (folds + 1, N+1, rank).

    Cross-fitting (`folds` > 1): table 0 is fitted on every rating; table k (1..folds) leaves
    out the *query* ratings of the users in fold k (user row % folds == k - 1). A training user
    of fold k is then judged on query ratings its factors never saw, as a new user is, while
    the factors still learn from (almost) every rating. Every table starts from the same fit
    on support ratings only (no query rating of anyone), which keeps the factor spaces aligned
    without letting a left-out rating in through the start. Deterministic for a seed.
    """
    triples = [split_triples(s, parts) for s in splits]
    offsets = np.cumsum([0] + [len(s) for s in splits])
    users = np.concatenate([u + off for (u, _, _), off in zip(triples, offsets)])
    items = np.concatenate([i for _, i, _ in triples])
    labels = np.concatenate([y for _, _, y in triples])
    n_users = int(offsets[-1])
    if folds <= 1:
        return torch.from_numpy(als(users, items, labels, n_users, n_item_rows, config)).float()
    is_query = np.concatenate([
        np.concatenate([np.full(int(getattr(s, f"{part}_mask").sum()), part == "query") for part in parts])
        for s in splits])
    base = als(users[~is_query], items[~is_query], labels[~is_query], n_users, n_item_rows, config)
    tables = [als(users, items, labels, n_users, n_item_rows, config, start=base)]
    for fold in range(folds):
        keep = ~(is_query & (users % folds == fold))
        tables.append(als(users[keep], items[keep], labels[keep], n_users, n_item_rows, config, start=base))
    return torch.from_numpy(np.stack(tables)).float()
