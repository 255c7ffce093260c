"""Pareto cold-start selection (paper, "Experimental Setup", step 1)."""


import math

import polars as pl

from assets.specs import COLD_START_SHARE


def select_cold_start(interactions: pl.DataFrame | pl.LazyFrame, share: float = COLD_START_SHARE) -> pl.DataFrame:
    """Rank users by number of logs and flag the `share` with the fewest as cold-start.

    Ties in the log count are broken by user id, so the selection is deterministic.
    Returns one row per user: user_id, n_logs, rank (1 = fewest logs), is_cold_start.
    A LazyFrame (e.g. a scan of Parquet shards) is counted by polars' streaming engine, so
    only one row per user is ever in memory.
    """
    if not 0 < share <= 1:
        raise ValueError(f"cold-start share must be in (0, 1], got {share}")
    counts = (interactions.lazy().group_by("user_id").agg(n_logs=pl.len().cast(pl.Int64))
              .sort("n_logs", "user_id").collect(engine="streaming"))
    n_cold = math.floor(share * counts.height)
    return counts.with_columns(
        rank=pl.int_range(1, counts.height + 1, dtype=pl.Int64),
    ).with_columns(is_cold_start=pl.col("rank") <= n_cold)


# -- Dagster asset ---------------------------------------------------------------------
import dagster as dg  # noqa: E402

from assets.bundle import Bundle  # noqa: E402
from pipelines.outputs import bundle_output  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars"}, code_version="1",
    description="Pareto cold-start selection: the 80% of users with the fewest logs (ties by user id).",
)
def cold_start_users(clean_logs: Bundle) -> dg.Output[Bundle]:
    users = select_cold_start(clean_logs.scan("interactions"))  # parts stream through: one row per user in memory
    cold = users.filter("is_cold_start")
    bundle = Bundle(frames={"users": users}, info={"share": COLD_START_SHARE, "max_logs": int(cold["n_logs"].max() or 0)})
    return bundle_output(bundle, n_cold_start=cold.height, max_logs_of_cold_start=bundle.info["max_logs"])
