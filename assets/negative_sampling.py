"""Sampled negatives for a click log of positives only (plays, purchases, likes).

A click spec's `label.negatives_per_positive = k` (docs/data.md) makes cleaning add, for every
kept user, k unclicked impressions per positive: label-0 rows for catalogue items (the cleaned
items) the user has no row for in the raw log, kept or rejected. Items are drawn uniformly,
without replacement within a user, from one numpy stream seeded by `label.negatives_seed` and
consumed in user-id order, so the same spec and files give the same rows whatever the thread
count. A user with fewer unseen catalogue items than k x positives gets all of them; one with a
row for every item gets none (its impressions stay all clicked).

A sampled row is an impression, not a line of the log: it carries the positive it was drawn for
(its time, its line, and its file named `<file> (sampled negative)`), so the per-file
accounting of rows read = kept + rejected leaves it out, and the count is in `clean_logs`' info.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

SAMPLED_SUFFIX = " (sampled negative)"  # a sampled row's source_file: the positive's file and this
NEGATIVE_LABEL = 0.0


@dataclass(frozen=True)
class SampledNegatives:
    """The rows sampled for a log and what they show.

    Attributes:
        rows: the sampled impressions in the cleaned interactions' schema, label 0.
        users_short: users who got fewer than k x positives (too few unseen catalogue items).
        users_without: users who got none (a row for every catalogue item).
    """

    rows: pl.DataFrame
    users_short: int
    users_without: int

    def info(self, per_positive: int, seed: int) -> dict[str, int]:
        """The facts `clean_logs` records (and its metadata shows)."""
        return {"sampled_negatives": self.rows.height, "negatives_per_positive": per_positive, "negatives_seed": seed,
                "users_short_of_negatives": self.users_short, "users_without_negatives": self.users_without}


def negatives_needed(positives: np.ndarray, unseen: np.ndarray, per_positive: int) -> np.ndarray:
    """Negatives to draw per user: k x positives, at most the catalogue items the user has no row for."""
    return np.minimum(per_positive * positives, unseen)


def draw_dense(need: np.ndarray, unseen: np.ndarray, users: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user, rank) of `need[u]` distinct ranks in [0, unseen[u]) for each of `users`, by random keys.

    For users who need at least half their unseen items: a random key per unseen item and the
    smallest `need` keys, so no draw is wasted; their unseen items number at most 2 x need.
    """
    sizes = unseen[users]
    owner = np.repeat(users, sizes)  # (sum of sizes,)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    order = np.lexsort((rng.random(owner.size), owner))  # by user, then key
    owner, rank = owner[order], rank[order]
    position = np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    keep = position < need[owner]
    return owner[keep], rank[keep]


def draw_sparse(need: np.ndarray, unseen: np.ndarray, users: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user, rank) of `need[u]` distinct ranks in [0, unseen[u]) for each of `users`, in draw order.

    For users who need less than half their unseen items: rounds of 2 x (still needed) draws with
    replacement, repeats dropped, until each has enough; a draw is new with probability over 1/2.
    """
    owner, rank = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    short = users
    while short.size:
        wanted = need[short] - np.bincount(owner, minlength=need.size)[short]
        new_owner = np.repeat(short, 2 * wanted)
        new_rank = rng.integers(0, unseen[new_owner])
        owner, rank = np.concatenate([owner, new_owner]), np.concatenate([rank, new_rank])
        # First draw of each (user, rank), back in draw order, then each user's first `need`.
        _, first = np.unique(owner * (unseen.max() + 1) + rank, return_index=True)
        first.sort()
        owner, rank = owner[first], rank[first]
        order = np.argsort(owner, kind="stable")
        counts = np.bincount(owner, minlength=need.size)
        starts = np.cumsum(counts) - counts
        position = np.empty(owner.size, dtype=np.int64)
        position[order] = np.arange(owner.size) - np.repeat(starts, counts)
        keep = position < need[owner]
        owner, rank = owner[keep], rank[keep]
        got = np.bincount(owner, minlength=need.size)
        short = users[got[users] < need[users]]
    order = np.argsort(owner, kind="stable")  # by user, each user's draws in draw order
    return owner[order], rank[order]


def unseen_item(owner: np.ndarray, rank: np.ndarray, seen_owner: np.ndarray, seen_item: np.ndarray,
                n_users: int, n_items: int) -> np.ndarray:
    """The catalogue index of each user's `rank`-th unseen item (0-based, in catalogue order).

    `seen_owner`, `seen_item`: each user's seen catalogue indices, sorted by (user, item), distinct.
    With s_0 < s_1 < ... a user's seen items, the r-th unseen item is r + #{i: s_i - i <= r}:
    one search over all users at once, each user's values lifted by user x (n_items + 1).
    """
    start = np.searchsorted(seen_owner, np.arange(n_users))  # each user's first seen row
    within = np.arange(seen_owner.size) - start[seen_owner]
    lift = n_items + 1
    gaps = seen_owner * lift + (seen_item - within)  # non-decreasing: sorted by user, then s_i - i
    before = np.searchsorted(gaps, owner * lift + rank, side="right") - start[owner]
    return rank + before


def draw_negatives(need: np.ndarray, unseen: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(user, rank) of `need[u]` distinct ranks in [0, unseen[u]) per user, sorted by user, from one stream.

    Users are indices in user-id order, so the stream is consumed in the same order on every run.
    """
    rng = np.random.default_rng(seed)
    users = np.flatnonzero(need > 0)
    dense = 2 * need[users] >= unseen[users]
    owner_d, rank_d = draw_dense(need, unseen, users[dense], rng)
    owner_s, rank_s = draw_sparse(need, unseen, users[~dense], rng)
    owner, rank = np.concatenate([owner_d, owner_s]), np.concatenate([rank_d, rank_s])
    order = np.argsort(owner, kind="stable")
    return owner[order], rank[order]


def positive_index(owner: np.ndarray, n_users: int, per_positive: int) -> np.ndarray:
    """Which of its user's positives each draw is for: the i-th draw of a user (sorted by user) is for positive i // k."""
    counts = np.bincount(owner, minlength=n_users)
    return (np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)) // per_positive


def sample_negatives(interactions: pl.DataFrame, items: pl.DataFrame, raw_interactions: pl.DataFrame,
                     per_positive: int, seed: int) -> SampledNegatives:
    """Up to `per_positive` unclicked impressions per positive of each user of `interactions`.

    Args:
        interactions: the cleaned log (source_file, line, user_id, item_id, label, ts).
        items: the cleaned catalogue (item_id, ...): the items negatives are drawn from.
        raw_interactions: the log as read (user_id, item_id as text): an item a user has any row for
            (even a rejected one) is never that user's negative.
        per_positive: k, sampled negatives per positive (label > 0); any k above the catalogue's size
            gives every user all its unseen items.
        seed: the numpy stream's seed.
    Returns:
        The sampled rows, in the cleaned interactions' schema, each at the time of its positive.
    """
    catalogue = items.select("item_id").unique().sort("item_id").with_row_index("_item")
    # Positives in file order, numbered within their user: the rows sampled negatives are drawn for.
    positives = (interactions.filter(pl.col("label") > 0).select("source_file", "line", "user_id", "ts")
                 .sort("user_id", "source_file", "line"))
    users = positives.select("user_id").unique().sort("user_id").with_row_index("_user")
    anchors = positives.join(users, on="user_id", maintain_order="left").with_columns(
        _positive=pl.int_range(pl.len()).over("_user"))
    seen = (raw_interactions.select(pl.col("user_id", "item_id").str.strip_chars())
            .join(users, on="user_id").join(catalogue, on="item_id")
            .select(pl.col("_user", "_item").cast(pl.Int64)).unique().sort("_user", "_item"))
    n_users, n_items = users.height, catalogue.height
    # A k beyond the catalogue asks for every unseen item, as k = n_items + 1 does; clipped, k x positives
    # stays within int64 (TOML allows k up to 2**63 - 1, and the product wrapped around to too few or none).
    per_positive = min(per_positive, n_items + 1)
    n_positive = anchors.group_by("_user").len().sort("_user")["len"].to_numpy().astype(np.int64)  # (n_users,)
    unseen = n_items - np.bincount(seen["_user"].to_numpy(), minlength=n_users)  # (n_users,)
    need = negatives_needed(n_positive, unseen, per_positive)
    owner, rank = draw_negatives(need, unseen, seed)
    drawn = pl.DataFrame({
        "_user": owner, "_positive": positive_index(owner, n_users, per_positive),
        "_item": unseen_item(owner, rank, seen["_user"].to_numpy(), seen["_item"].to_numpy(), n_users, n_items),
    }, schema={"_user": pl.UInt32, "_positive": pl.Int64, "_item": pl.UInt32})
    rows = (drawn.join(anchors, on=["_user", "_positive"], maintain_order="left")
            .join(catalogue, on="_item", maintain_order="left")
            .select((pl.col("source_file") + SAMPLED_SUFFIX).alias("source_file"), "line", "user_id", "item_id",
                    pl.lit(NEGATIVE_LABEL).alias("label"), "ts"))
    return SampledNegatives(rows=rows.cast(interactions.schema).select(interactions.columns),
                            users_short=int((need < per_positive * n_positive).sum()),
                            users_without=int((need == 0).sum()))
