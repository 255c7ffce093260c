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

from models.references import BiasConfig, MFConfig, Ratings, fit_mf
from models.tasks import TaskSplit


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


@dataclass(frozen=True)
class FactorTables:
    """Fitted item sides, one table per fit (T = 1, or folds + 1 cross-fitted): mu (T,), b_i (T, N+1), q_i (T, N+1, r)."""

    mu: torch.Tensor
    item_bias: torch.Tensor
    factors: torch.Tensor


def fit_item_factors(splits: list[TaskSplit], n_item_rows: int, mf: MFConfig = MFConfig(), bias: BiasConfig = BiasConfig(),
                     parts: tuple[str, ...] = ("support", "query"), folds: int = 0) -> FactorTables:
    """Item sides of the reference MF (models/references.py `fit_mf`) fitted on `parts` of `splits`:
    one table, or with `folds` > 1 folds + 1 tables.

    Cross-fitting (`folds` > 1): table 0 is fitted on every rating; table k (1..folds) leaves
    out the *query* ratings of the users in fold k (user row % folds == k - 1). A training user
    of fold k is then judged on query ratings its factors never saw, as a new user is, while
    the factors still learn from (almost) every rating. Every table starts from the same fit
    on support ratings only (no query rating of anyone), which keeps the factor spaces aligned
    without letting a left-out rating in through the start. Deterministic for a seed.
    """
    triples = [split_triples(s, parts) for s in splits]
    offsets = np.cumsum([0] + [len(s) for s in splits])
    users = np.concatenate([u + off for (u, _, _), off in zip(triples, offsets)]).astype(np.int64)
    items = np.concatenate([i for _, i, _ in triples]).astype(np.int64)
    labels = np.concatenate([y for _, _, y in triples])
    n_users = int(offsets[-1])

    def fit(keep: np.ndarray, start: np.ndarray | None = None):
        return fit_mf(Ratings(users[keep], items[keep], labels[keep], n_users, n_item_rows), mf, bias, start)

    everything = np.ones(len(labels), dtype=bool)
    if folds <= 1:
        fits = [fit(everything)]
    else:
        is_query = np.concatenate([
            np.concatenate([np.full(int(getattr(s, f"{part}_mask").sum()), part == "query") for part in parts])
            for s in splits])
        start = fit(~is_query).item_factors
        fits = [fit(everything, start)] + [fit(~(is_query & (users % folds == fold)), start) for fold in range(folds)]
    return FactorTables(mu=torch.tensor([f.mu for f in fits], dtype=torch.float32),
                        item_bias=torch.from_numpy(np.stack([f.item_bias for f in fits])).float(),
                        factors=torch.from_numpy(np.stack([f.item_factors for f in fits])).float())
