"""Which users form each meta-batch: full-random, or length-bucketed so little arithmetic is padding.

A meta-batch is padded to its longest support and query set (TaskSplit.select), and every
inner step does its matrix products on the padded width. ML-1M support sets hold 72 items on
average but a random batch of 32 is padded to about 178, so most of the work was padding.

"bucketed": each epoch, the users are shuffled (seeded), cut into pools of `pool_batches`
meta-batches, each pool is sorted by support length (then query length; ties stay in their
shuffled order) and cut into meta-batches, and the batches are shuffled again. Every user is
still seen once per epoch, the batches differ from epoch to epoch, and a batch holds users
of similar length. "random": the previous behaviour, one permutation cut in order (it draws
the same numbers from the generator, so it reproduces earlier runs batch for batch).
"""

from __future__ import annotations

import torch

from models.configs import BATCHING  # noqa: F401 (re-exported)


def epoch_batches(support_lengths: torch.Tensor, query_lengths: torch.Tensor, batch_size: int,
                  generator: torch.Generator, mode: str = "bucketed", pool_batches: int = 16) -> list[torch.Tensor]:
    """One epoch's meta-batches as index tensors into the split (every user exactly once).

    Args:
        support_lengths: (U,) support items per user.
        query_lengths: (U,) query items per user.
        batch_size: users per meta-batch.
        generator: the training run's seeded generator (CPU).
        mode: "bucketed" or "random".
        pool_batches: "bucketed": meta-batches per sorted pool; 1 = random, all users = fully sorted.
    """
    if mode not in BATCHING:
        raise ValueError(f"unknown batching {mode!r}; known: {', '.join(BATCHING)}")
    if batch_size < 1 or pool_batches < 1:
        raise ValueError(f"need batch_size >= 1 and pool_batches >= 1, got {batch_size} and {pool_batches}")
    order = torch.randperm(len(support_lengths), generator=generator)
    if mode == "random":
        return list(order.split(batch_size))
    # One sort key: support length first (the inner steps run on it), query length second.
    key = support_lengths.long() * (int(query_lengths.max()) + 1 if len(query_lengths) else 1) + query_lengths.long()
    batches: list[torch.Tensor] = []
    for pool in order.split(batch_size * pool_batches):
        by_length = pool[torch.argsort(key[pool], stable=True)]  # stable: equal keys keep the shuffle's order
        batches += list(by_length.split(batch_size))
    shuffle = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in shuffle.tolist()]


def padding_share(batches: list[torch.Tensor], lengths: torch.Tensor) -> float:
    """Share of a padded (users x longest) layout that is padding, over `batches`."""
    slots = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    used = sum(int(lengths[b].sum()) for b in batches)
    return 1.0 - used / slots if slots else 0.0


def length_order(support_lengths: torch.Tensor) -> torch.Tensor:
    """(U,) users sorted by support length (stable): evaluation batches of similar length."""
    return torch.argsort(support_lengths, stable=True)
