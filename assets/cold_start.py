"""Cold-start predictions for a new user: encode the profile, adapt on a few ratings, score items.

This is what the method is for: a user the model has never seen gives a profile and a
handful of ratings (or clicks); the learner adapts its decision layers on them, with the
user's own inner learning rate, and ranks every other item.
"""

import numpy as np
import polars as pl
import torch

from assets.bundle import Bundle
from assets.meta_tasks import PAD_INDEX, UNKNOWN_INDEX
from models.tasks import TaskSplit, task_data_from_tensors


class ColdStartInputError(ValueError):
    """A profile field or an item the model does not know, named in the message."""


def encode_profile(profile: dict[str, str], vocab: pl.DataFrame, fields: tuple[str, ...]) -> list[int]:
    """Field values -> vocabulary indices (unseen values -> unknown); every field is required."""
    missing = [f for f in fields if f not in profile]
    extra = sorted(set(profile) - set(fields))
    if missing or extra:
        raise ColdStartInputError(f"profile needs exactly the fields {', '.join(fields)}; missing {missing}, unknown {extra}")
    codes = []
    for field in fields:
        match = vocab.filter((pl.col("field") == field) & (pl.col("value") == str(profile[field])))
        codes.append(int(match["index"][0]) if match.height else UNKNOWN_INDEX)
    return codes


def recommend(model: Bundle, tasks: Bundle, profile: dict[str, str], ratings: dict[str, float],
              top: int = 10, seed: int | None = None) -> tuple[pl.DataFrame, float]:
    """Adapt `model` (one seed) to a new user and rank all items they have not rated.

    Returns (item_id, score, rank) for the `top` items and the user's inner learning rate.
    """
    from assets.method_assets import load_learner

    data = task_data_from_tensors(tasks.tensors, tasks.info)
    item_rows = dict(tasks.frame("items").iter_rows())
    unknown = sorted(i for i in ratings if i not in item_rows)
    if unknown:
        raise ColdStartInputError(f"items not in the model's catalogue: {', '.join(unknown[:10])}")
    if not ratings:
        raise ColdStartInputError("give at least one rating (or click) to adapt on")
    user_fields = torch.tensor([encode_profile(profile, tasks.frame("vocab"), data.user_fields)])
    support = torch.tensor([[item_rows[i] for i in ratings]])
    candidates = sorted(set(item_rows) - set(ratings))
    query = torch.tensor([[item_rows[i] for i in candidates]])
    one_user = TaskSplit(
        user_fields=user_fields, support_items=support,
        support_labels=torch.tensor([list(ratings.values())], dtype=torch.float32),
        support_mask=torch.ones_like(support, dtype=torch.bool), query_items=query,
        query_labels=torch.zeros(query.shape), query_mask=query != PAD_INDEX,
    )
    learner = load_learner(model, data, model.info["seeds"][0] if seed is None else seed)
    learner.eval()
    outcome = learner.run(one_user, data.items, training=False)
    scores = outcome.query_pred.detach()[0]
    if data.task == "ctr":
        scores = torch.sigmoid(scores)
    order = np.argsort(-scores.numpy(), kind="stable")[:top]
    ranked = pl.DataFrame({
        "rank": np.arange(1, len(order) + 1), "item_id": [candidates[i] for i in order],
        "score": scores.numpy()[order].astype(np.float64),
    })
    return ranked, float(outcome.lr_per_user[0])
