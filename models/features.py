"""Rating statistics as features: the item's training mean and count, the user's support stats.

A documented feature choice of ours (issue 4), applied to every method alike. MeLU's
network sees only side features, so it cannot tell a loved film from a panned one with
the same genre and director, nor a generous rater from a harsh one; the user + item bias
reference wins on exactly that. These statistics give the network both, without leaks:

- item statistics come from the *training users' support sets* only, so no query label
  of any user (and no validation or test label) reaches a feature;
- user statistics come from the user's own support set, which a cold-start user gives
  at prediction time anyway.

Every statistic is scaled to roughly unit range with constants fitted on the same
training support labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.tasks import TaskData

USER_STATS = ("support_mean", "support_sd", "support_log_count")
ITEM_STATS = ("item_mean", "item_log_count")


@dataclass(frozen=True)
class LabelScale:
    """Centre and spread of the training support labels, and the count normalizers."""

    center: float
    scale: float
    user_log_count: float  # log1p of the largest support set among training users
    item_log_count: float  # log1p of the most support ratings any item has


def training_support(data: TaskData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(item rows, labels, per-user support counts) of the training users' support sets."""
    split = data.splits["train"]
    mask = split.support_mask
    return split.support_items[mask], split.support_labels[mask].double(), mask.sum(1)


def label_scale(data: TaskData) -> LabelScale:
    """Fit the scaling constants on the training support labels (1.0 where undefined)."""
    items, labels, counts = training_support(data)
    n_rows = int(data.items.fields.shape[0])
    item_counts = torch.bincount(items, minlength=n_rows)
    center = float(labels.mean()) if labels.numel() else 0.0
    spread = float(labels.std()) if labels.numel() > 1 else 0.0
    return LabelScale(
        center=center, scale=spread if spread > 0 else 1.0,
        user_log_count=max(float(torch.log1p(counts.max().double())) if counts.numel() else 0.0, 1.0),
        item_log_count=max(float(torch.log1p(item_counts.max().double())), 1.0),
    )


def item_statistics(data: TaskData, scale: LabelScale, shrinkage: float = 10.0) -> torch.Tensor:
    """(N+1, 2) per item row: [(shrunk mean - c) / s, log1p(n_i) / log1p(max n)].

    The mean is shrunk toward the centre with `shrinkage` pseudo-ratings, so an item rated
    once is not taken at its word; unrated items (and the padding row) sit at the centre.
    """
    items, labels, _ = training_support(data)
    n_rows = int(data.items.fields.shape[0])
    sums = torch.bincount(items, weights=labels - scale.center, minlength=n_rows)
    counts = torch.bincount(items, minlength=n_rows).double()
    mean = sums / (counts + shrinkage) / scale.scale
    return torch.stack([mean, torch.log1p(counts) / scale.item_log_count], dim=1).float()


def support_statistics(labels: torch.Tensor, mask: torch.Tensor, scale: LabelScale) -> torch.Tensor:
    """(B, 3) per user from the support set: [(mean - c) / s, sd / s, log1p(n) / log1p(max n)].

    Padded slots are ignored; an empty support set gives the centre, sd 0, count 0. The
    scale's fields may be floats or 0-d tensors (a network's buffers: no device sync).
    """
    weights = mask.to(labels.dtype)
    count = weights.sum(-1)
    mean = (labels * weights).sum(-1) / count.clamp_min(1.0)
    mean = torch.where(count > 0, mean, torch.as_tensor(scale.center, dtype=mean.dtype, device=mean.device))
    var = (((labels - mean.unsqueeze(-1)) ** 2) * weights).sum(-1) / count.clamp_min(1.0)
    return torch.stack([
        (mean - scale.center) / scale.scale,
        var.sqrt() / scale.scale,
        torch.log1p(count) / scale.user_log_count,
    ], dim=-1)
