"""Reference predictors a practitioner tries first, scored on exactly the same query sets.

- global mean: the mean training label (the training click rate for CTR);
- item mean: each item's mean training label, shrunk toward the global mean;
- user + item bias: mu + b_item (from training users) + b_user fitted on the user's own
  support set, both ridge-regularized (Koren, Bell, Volinsky 2009, baseline predictors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.tasks import TaskData, TaskSplit

REFERENCES = ("global_mean", "item_mean", "user_item_bias")


@dataclass(frozen=True)
class BiasConfig:
    """Ridge strengths (pseudo-counts) of the bias estimates."""

    item_shrinkage: float = 10.0
    user_shrinkage: float = 5.0


def training_labels(data: TaskData) -> tuple[np.ndarray, np.ndarray]:
    """(item rows, labels) of every training user's support and query items."""
    split = data.splits["train"]
    items, labels = [], []
    for part in ("support", "query"):
        mask = getattr(split, f"{part}_mask").numpy()
        items.append(getattr(split, f"{part}_items").numpy()[mask])
        labels.append(getattr(split, f"{part}_labels").numpy()[mask])
    return np.concatenate(items), np.concatenate(labels).astype(np.float64)


def item_biases(data: TaskData, mu: float, shrinkage: float) -> np.ndarray:
    """b_i = sum(r - mu) / (shrinkage + n_i) per item row (0 for unseen items)."""
    items, labels = training_labels(data)
    n_rows = int(data.items.fields.shape[0])
    sums = np.bincount(items, weights=labels - mu, minlength=n_rows)
    counts = np.bincount(items, minlength=n_rows)
    return sums / (shrinkage + counts)


def predict_reference(name: str, data: TaskData, split: TaskSplit, config: BiasConfig = BiasConfig()) -> np.ndarray:
    """(U, Q) predictions of reference `name` for `split`'s query items."""
    _, labels = training_labels(data)
    mu = float(labels.mean())
    query_items = split.query_items.numpy()
    if name == "global_mean":
        return np.full(query_items.shape, mu)
    item_bias = item_biases(data, mu, config.item_shrinkage)
    if name == "item_mean":
        return mu + item_bias[query_items]
    if name == "user_item_bias":
        support_items, support_mask = split.support_items.numpy(), split.support_mask.numpy()
        residual = (split.support_labels.numpy() - mu - item_bias[support_items]) * support_mask
        user_bias = residual.sum(1) / (config.user_shrinkage + support_mask.sum(1))  # (U,)
        return mu + item_bias[query_items] + user_bias[:, None]
    raise ValueError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")


def clip_for_task(pred: np.ndarray, task: str, eps: float = 1e-4) -> np.ndarray:
    """Click probabilities must stay inside (0, 1); ratings are left as they are."""
    return np.clip(pred, eps, 1 - eps) if task == "ctr" else pred
