"""User splits 7:1:2 and each user's support/query split 80:20 (paper, steps 2 and 4).

Beside the paper's splits of the cold-start users, the warm users (the most active 20%, whose
ratings the paper's protocol discards but a deployed system always has) are kept as a fourth
split, `warm`, for the production protocol (docs/protocol.md). A warm user's history is cut
at random into chunks of the cold-start users' median size, each chunk one more training
task with its own 80:20 support/query split: pseudo-users that look like the cold-start
users the model is for. Warm users are never validation or test users.
"""


import numpy as np
import polars as pl

from assets.specs import SUPPORT_SHARE, USER_SPLIT

SPLIT_NAMES = ("train", "val", "test")
WARM_SPLIT = "warm"


def split_boundaries(n_users: int, ratios: tuple[int, ...] = USER_SPLIT) -> list[int]:
    """Cumulative cut points for `ratios` over `n_users` (rounded, last = n_users)."""
    total = sum(ratios)
    cumulative = np.cumsum(ratios) / total
    return [int(round(c * n_users)) for c in cumulative]


def assign_user_splits(user_ids: list[str], seed: int, ratios: tuple[int, ...] = USER_SPLIT) -> pl.DataFrame:
    """Shuffle users (sorted first, so input order does not matter) and cut into splits."""
    ordered = sorted(user_ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    cuts = [0, *split_boundaries(len(ordered), ratios)]
    split = np.empty(len(ordered), dtype=object)
    for name, lo, hi in zip(SPLIT_NAMES, cuts[:-1], cuts[1:]):
        split[order[lo:hi]] = name
    return pl.DataFrame({"user_id": ordered, "split": split.tolist()}, schema={"user_id": pl.String, "split": pl.String})


def query_size(n_items: pl.Expr, support_share: float = SUPPORT_SHARE) -> pl.Expr:
    """Items in the query set: round((1 - share) * n), at least 1, leaving at least 1 for support."""
    wanted = ((1 - support_share) * n_items).round(0).cast(pl.Int64)
    return pl.min_horizontal(pl.max_horizontal(wanted, pl.lit(1)), n_items - 1)


def assign_support_query(interactions: pl.DataFrame, seed: int, support_share: float = SUPPORT_SHARE) -> pl.DataFrame:
    """Put each user's items at random into support (80%) or query (20%).

    Rows are sorted by (user, item) before drawing, so the result depends on the seed only.
    Every user with at least 2 items gets at least one support and one query item.
    """
    rows = interactions.select("user_id", "item_id", "label").sort("user_id", "item_id")
    draw = np.random.default_rng(seed).random(rows.height)
    rows = rows.with_columns(_key=pl.Series(draw)).with_columns(
        _rank=pl.col("_key").rank("ordinal").over("user_id"),
        _n=pl.len().over("user_id"),
    )
    return rows.select(
        "user_id", "item_id", "label",
        pl.when(pl.col("_rank") <= query_size(pl.col("_n"), support_share))
        .then(pl.lit("query")).otherwise(pl.lit("support")).alias("set"),
    )


def assign_chunks(interactions: pl.DataFrame, chunk_size: int, seed: int) -> pl.DataFrame:
    """Cut each user's items at random into chunks of at most `chunk_size` (as equal as possible).

    Returns the rows with a `chunk` column (0, 1, ...); deterministic for a seed (rows are
    sorted by (user, item) before drawing).
    """
    if chunk_size < 2:
        raise ValueError(f"chunk_size must be >= 2 (a support and a query item), got {chunk_size}")
    rows = interactions.sort("user_id", "item_id")
    draw = np.random.default_rng(seed).random(rows.height)
    return rows.with_columns(_key=pl.Series(draw)).with_columns(
        _rank=pl.col("_key").rank("ordinal").over("user_id") - 1,
        _chunks=((pl.len().over("user_id") + chunk_size - 1) // chunk_size).cast(pl.Int64),
    ).with_columns(chunk=(pl.col("_rank") % pl.col("_chunks")).cast(pl.Int64)).drop("_key", "_rank", "_chunks")


def user_splits_for(cold_start: pl.DataFrame, interactions: pl.DataFrame, seed: int) -> dict[str, pl.DataFrame]:
    """Splits: `users` (user_id, split) and `items` (user_id, item_id, label, set, chunk).

    Cold-start users get train/val/test; warm users the `warm` split, their items in chunks.
    """
    cold_ids = cold_start.filter("is_cold_start")["user_id"]
    users = assign_user_splits(cold_ids.to_list(), seed)
    cold_rows = interactions.join(users.select("user_id"), on="user_id", how="semi")
    # A second, independent stream for the item draw: changing the user split must not move items.
    items = assign_support_query(cold_rows, seed + 1).with_columns(chunk=pl.lit(0, dtype=pl.Int64))
    warm = cold_start.filter(~pl.col("is_cold_start")).select("user_id").sort("user_id")
    if warm.height:
        counts = cold_rows.group_by("user_id").len()["len"]
        chunk_size = max(int(counts.median()), 2) if counts.len() else 2
        warm_rows = assign_chunks(interactions.join(warm, on="user_id", how="semi").select("user_id", "item_id", "label"),
                                  chunk_size, seed + 2)
        warm_items = (
            assign_support_query(warm_rows.with_columns(_task=pl.format("{}#{}", "user_id", "chunk")).select(
                pl.col("_task").alias("user_id"), "item_id", "label"), seed + 3)
            .join(warm_rows.select(pl.format("{}#{}", "user_id", "chunk").alias("user_id"), "chunk",
                                   pl.col("user_id").alias("_user"), "item_id"), on=["user_id", "item_id"])
            .select(pl.col("_user").alias("user_id"), "item_id", "label", "set", "chunk")
        )
        users = pl.concat([users, warm.with_columns(split=pl.lit(WARM_SPLIT))])
        items = pl.concat([items, warm_items])
    return {"users": users, "items": items}


# -- Dagster asset ---------------------------------------------------------------------
import dagster as dg  # noqa: E402
from pydantic import Field  # noqa: E402

from assets.bundle import Bundle  # noqa: E402
from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402


class SplitConfig(dg.Config):
    """Seed of the user split and the support/query split."""

    seed: int = Field(default=0, description="Seed for the 7:1:2 user split (items use seed + 1).")


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars", "duckdb"}, code_version="1",
    description="Cold-start users split 7:1:2 train/val/test; each user's items 80:20 support/query.",
)
def user_splits(config: SplitConfig, clean_logs: Bundle, cold_start_users: Bundle) -> dg.Output[Bundle]:
    frames = user_splits_for(cold_start_users.frame("users"), clean_logs.frame("interactions"), config.seed)
    counts = frames["users"].group_by("split").agg(users=pl.len()).sort("split")
    bundle = Bundle(frames=frames, info={"seed": config.seed, "ratios": list(USER_SPLIT), "support_share": SUPPORT_SHARE})
    return bundle_output(bundle, users_per_split=table(counts))
