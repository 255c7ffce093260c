"""User splits 7:1:2 and each user's support/query split 80:20 (paper, steps 2 and 4).

Beside the paper's splits of the cold-start users, the warm users (the most active 20%, whose
ratings the paper's protocol discards but a deployed system always has) are kept as a fourth
split, `warm`, for the production protocol (docs/protocol.md). A warm user's history is cut
at random into chunks of the cold-start users' median size, each chunk one more training
task with its own 80:20 support/query split: pseudo-users that look like the cold-start
users the model is for. Warm users are never validation or test users.
"""


import shutil
from pathlib import Path

import numpy as np
import polars as pl

from assets.bundle import Bundle
from assets.clean_logs import CleaningError
from assets.specs import SUPPORT_SHARE, USER_SPLIT

SPLIT_NAMES = ("train", "val", "test")
WARM_SPLIT = "warm"
TASK_SEPARATOR = "#"  # a warm chunk's task key is "<user_id>#<chunk>"


class TooFewUsersError(CleaningError):
    """Too few cold-start users for every split to get one: later steps tune on val and score on test."""


def require_every_split(users: pl.DataFrame, dataset: str) -> None:
    """Raise a TooFewUsersError naming the split sizes when train, val or test has no user."""
    counts = {name: 0 for name in SPLIT_NAMES} | dict(users.group_by("split").len().iter_rows())
    empty = [name for name in SPLIT_NAMES if counts[name] == 0]
    if empty:
        sizes = ", ".join(f"{name} {counts[name]}" for name in SPLIT_NAMES)
        raise TooFewUsersError(
            f"{dataset}: {sum(counts[n] for n in SPLIT_NAMES)} cold-start users split 7:1:2 leave {' and '.join(empty)} "
            f"without a user ({sizes}); the cold-start users are the 80% of cleaned users with the fewest logs, and "
            f"{fills_every_split()} or more of them fill every split"
        )


class OneClassError(CleaningError):
    """A click dataset whose training users' impressions are all clicked: nothing to tell clicks from non-clicks."""


def require_both_click_classes(users: pl.DataFrame, items: pl.LazyFrame, dataset: str) -> None:
    """Raise a OneClassError when every impression of the training users is clicked.

    The models, the reference rows and NEL's normalizer H(ctr) (He et al. 2014) are fitted on
    the training users; with click rate 1, H(ctr) = 0 and AUC has no negatives, so training
    stopped later in a bare `binary_entropy` error. (All unclicked cannot get here: cleaning
    keeps users with at least 2 clicked items.)
    """
    train = users.filter(pl.col("split") == "train").select("user_id").lazy()
    counts = (items.join(train, on="user_id", how="semi")
              .select(n=pl.len(), clicked=(pl.col("label") > 0).sum()).collect(engine="streaming").row(0, named=True))
    if counts["n"] and counts["clicked"] == counts["n"]:
        raise OneClassError(
            f"{dataset}: all {counts['n']} impressions of the training users are clicked (label 1, none 0): with one "
            "class the training click rate is 1, so AUC, log-loss and NEL are undefined. A click log needs unclicked "
            "impressions; a log of positives only (purchases, likes) needs sampled negatives (label 0) first: "
            "negatives_per_positive in its spec's [label] (docs/data.md)"
        )


def require_usable_splits(splits: Bundle, task: str, dataset: str) -> None:
    """The checks a dataset's splits pass before any model trains on them: every split has a user
    (`require_every_split`) and, for clicks, the training users' impressions hold both classes."""
    require_every_split(splits.frame("users"), dataset)
    if task == "ctr":
        require_both_click_classes(splits.frame("users"), splits.scan("items"), dataset)


# Fewer validation or test users than this: the user_splits step warns (`few_users_note`). Not a rule of the
# paper; at such sizes one user moves a mean by a tenth or more.
FEW_SPLIT_USERS = 10


def few_users_note(counts: dict[str, int], dataset: str, minimum: int = FEW_SPLIT_USERS) -> str:
    """A warning naming the validation and test splits with fewer than `minimum` users ('' when none has):
    a dataset that fills every split with 1-3 users runs to the report, whose numbers then rest on them."""
    few = {name: counts.get(name, 0) for name in ("val", "test") if counts.get(name, 0) < minimum}
    if not few:
        return ""
    sizes = " and ".join(f"{n} {'validation' if name == 'val' else 'test'} user{'' if n == 1 else 's'}" for name, n in few.items())
    what = {"val": "the choice of each model's step and of the reference rows' settings", "test": "every metric of the report"}
    return (f"{dataset}: {sizes}: {' and '.join(what[name] for name in few)} rest{'s' if len(few) == 1 else ''} on so few "
            "users; a log with more users gives numbers to compare")


def fills_every_split(ratios: tuple[int, ...] = USER_SPLIT, search: int = 1000) -> int:
    """The least number of users from which on every split of `ratios` gets at least one (`split_boundaries`)."""
    def fills(n: int) -> bool:
        bounds = [0, *split_boundaries(n, ratios)]
        return all(b > a for a, b in zip(bounds, bounds[1:]))
    return 1 + max(n for n in range(search) if not fills(n))  # fills(0) is False


def split_boundaries(n_users: int, ratios: tuple[int, ...] = USER_SPLIT) -> list[int]:
    """Cumulative cut points for `ratios` over `n_users` (rounded, last = n_users)."""
    total = sum(ratios)
    cumulative = np.cumsum(ratios) / total
    return [int(round(c * n_users)) for c in cumulative]


def assign_user_splits(user_ids: list[str], seed: int, ratios: tuple[int, ...] = USER_SPLIT) -> pl.DataFrame:
    """Shuffle users (sorted first, so input order does not matter) and cut into splits."""
    return split_sorted_users(pl.Series("user_id", sorted(user_ids), dtype=pl.String), seed, ratios)


def split_sorted_users(ordered: pl.Series, seed: int, ratios: tuple[int, ...] = USER_SPLIT) -> pl.DataFrame:
    """`assign_user_splits` for ids already sorted (a polars sort: UTF-8 byte order is code point order,
    as Python's `sorted`), without a Python list: 8 M ids stay a few hundred MB.

    The permutation is over users only, so a sharded log uses it whole.
    """
    order = np.random.default_rng(seed).permutation(ordered.len())
    cuts = [0, *split_boundaries(ordered.len(), ratios)]
    which = np.full(ordered.len(), -1, dtype=np.int64)
    for position, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        which[order[lo:hi]] = position
    names = dict(enumerate(SPLIT_NAMES[: len(cuts) - 1]))
    return pl.DataFrame({"user_id": ordered.alias("user_id").cast(pl.String), "_which": which}).select(
        "user_id", pl.col("_which").replace_strict(names, default=None, return_dtype=pl.String).alias("split"))


def uniform_draws(seed: int, n: int, offset: int = 0) -> np.ndarray:
    """Draws `offset` .. `offset + n - 1` of `np.random.default_rng(seed).random`.

    numpy's PCG64 spends one 64-bit output per double and `advance(k)` skips k outputs in
    O(log k) steps, so the rows `offset` .. of a sorted log cut into shards get exactly the
    numbers one draw over the whole log gives them (tests/test_sharded_tasks.py checks it).
    """
    rng = np.random.default_rng(seed)
    if offset:
        rng.bit_generator.advance(offset)
    return rng.random(n)


def query_size(n_items: pl.Expr, support_share: float = SUPPORT_SHARE) -> pl.Expr:
    """Items in the query set: round((1 - share) * n), at least 1, leaving at least 1 for support."""
    wanted = ((1 - support_share) * n_items).round(0).cast(pl.Int64)
    return pl.min_horizontal(pl.max_horizontal(wanted, pl.lit(1)), n_items - 1)


def assign_support_query(
    interactions: pl.DataFrame, seed: int, support_share: float = SUPPORT_SHARE, offset: int = 0,
) -> pl.DataFrame:
    """Put each user's items at random into support (80%) or query (20%).

    Rows are sorted by (user, item) before drawing, so the result depends on the seed only.
    Every user with at least 2 items gets at least one support and one query item.
    `offset`: rows of the whole sorted log before these (whole users), for a shard of it.
    """
    rows = interactions.select("user_id", "item_id", "label").sort("user_id", "item_id")
    draw = uniform_draws(seed, rows.height, offset)
    rows = rows.with_columns(_key=pl.Series(draw)).with_columns(
        _rank=pl.col("_key").rank("ordinal").over("user_id"),
        _n=pl.len().over("user_id"),
    )
    return rows.select(
        "user_id", "item_id", "label",
        pl.when(pl.col("_rank") <= query_size(pl.col("_n"), support_share))
        .then(pl.lit("query")).otherwise(pl.lit("support")).alias("set"),
    )


def assign_chunks(interactions: pl.DataFrame, chunk_size: int, seed: int, offset: int = 0) -> pl.DataFrame:
    """Cut each user's items at random into chunks of at most `chunk_size` (as equal as possible).

    Returns the rows with a `chunk` column (0, 1, ...); deterministic for a seed (rows are
    sorted by (user, item) before drawing). `offset` as in `assign_support_query`.
    """
    if chunk_size < 2:
        raise ValueError(f"chunk_size must be >= 2 (a support and a query item), got {chunk_size}")
    rows = interactions.sort("user_id", "item_id")
    draw = uniform_draws(seed, rows.height, offset)
    return rows.with_columns(_key=pl.Series(draw)).with_columns(
        _rank=pl.col("_key").rank("ordinal").over("user_id") - 1,
        _chunks=((pl.len().over("user_id") + chunk_size - 1) // chunk_size).cast(pl.Int64),
    ).with_columns(chunk=(pl.col("_rank") % pl.col("_chunks")).cast(pl.Int64)).drop("_key", "_rank", "_chunks")


def cold_items(cold_rows: pl.DataFrame, seed: int, offset: int = 0) -> pl.DataFrame:
    """The cold-start users' rows with their support/query set (chunk 0)."""
    # A second, independent stream for the item draw: changing the user split must not move items.
    return assign_support_query(cold_rows, seed + 1, offset=offset).with_columns(chunk=pl.lit(0, dtype=pl.Int64))


def warm_chunk_size(cold_counts: pl.Series) -> int:
    """Chunk size of warm users' histories: the cold-start users' median item count (at least 2)."""
    return max(int(cold_counts.median()), 2) if cold_counts.len() else 2


def warm_items(warm_rows: pl.DataFrame, chunk_size: int, seed: int, offset: int = 0) -> pl.DataFrame:
    """The warm users' rows cut into chunks, each chunk with its own support/query set.

    Both draws run over the rows sorted by (user, item) and by ("user#chunk", item): for a shard
    of whole users the same `offset` holds for both when no user id orders differently with
    TASK_SEPARATOR appended (assets/sharded_tasks.py checks that).
    """
    chunked = assign_chunks(warm_rows.select("user_id", "item_id", "label"), chunk_size, seed + 2, offset)
    task = pl.format(f"{{}}{TASK_SEPARATOR}{{}}", "user_id", "chunk")
    return (
        assign_support_query(chunked.select(task.alias("user_id"), "item_id", "label"), seed + 3, offset=offset)
        .join(chunked.select(task.alias("user_id"), "chunk", pl.col("user_id").alias("_user"), "item_id"),
              on=["user_id", "item_id"])
        .select(pl.col("_user").alias("user_id"), "item_id", "label", "set", "chunk")
    )


def user_splits_for(cold_start: pl.DataFrame, interactions: pl.DataFrame, seed: int) -> dict[str, pl.DataFrame]:
    """Splits: `users` (user_id, split) and `items` (user_id, item_id, label, set, chunk).

    Cold-start users get train/val/test; warm users the `warm` split, their items in chunks.
    """
    cold_ids = cold_start.filter("is_cold_start")["user_id"]
    users = assign_user_splits(cold_ids.to_list(), seed)
    cold_rows = interactions.join(users.select("user_id"), on="user_id", how="semi")
    items = cold_items(cold_rows, seed)
    warm = cold_start.filter(~pl.col("is_cold_start")).select("user_id").sort("user_id")
    if warm.height:
        chunk_size = warm_chunk_size(cold_rows.group_by("user_id").len()["len"])
        warm_rows = interactions.join(warm, on="user_id", how="semi")
        users = pl.concat([users, warm.with_columns(split=pl.lit(WARM_SPLIT))])
        items = pl.concat([items, warm_items(warm_rows, chunk_size, seed)])
    return {"users": users, "items": items}


def splits_in_ranges(clean_logs: Bundle, cold_start: pl.DataFrame, seed: int, info: dict, scratch: Path) -> Bundle:
    """user_splits_for on cleaned interactions stored in shards: re-cut into as many user-id ranges,
    drawn range by range (assets/sharded_tasks.py; the same numbers)."""
    from assets.sharded_tasks import cut_by_range, split_sharded, splits_bundle

    ranges = cut_by_range(clean_logs.parts["interactions"].files, cold_start, int(clean_logs.info["shards"]), scratch / "ranges")
    splits = split_sharded(ranges, cold_start, seed, scratch / "splits")
    shutil.rmtree(scratch / "ranges")  # the splits hold every row again; of the ranges, only their bounds are kept
    return splits_bundle(splits, info, scratch)


# -- Dagster asset ---------------------------------------------------------------------
import dagster as dg  # noqa: E402
from pydantic import Field  # noqa: E402

from models.runtime import SEED_MAX  # noqa: E402

from assets.specs import spec_for  # noqa: E402
from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402


class SplitConfig(dg.Config):
    """Seed of the user split and the support/query split."""

    seed: int = Field(default=0, ge=0, le=SEED_MAX, description="Seed for the 7:1:2 user split (items use seed + 1).")


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars", "duckdb"}, code_version="1",
    description="Cold-start users split 7:1:2 train/val/test; each user's items 80:20 support/query.",
)
def user_splits(context: dg.AssetExecutionContext, config: SplitConfig, clean_logs: Bundle, cold_start_users: Bundle,
                paml: PamlResource) -> dg.Output[Bundle]:
    info = {"seed": config.seed, "ratios": list(USER_SPLIT), "support_share": SUPPORT_SHARE}
    if "interactions" in clean_logs.parts:  # cleaned in user shards: split one user-id range at a time
        bundle = splits_in_ranges(clean_logs, cold_start_users.frame("users"), config.seed, info,
                                  paml.scratch(context.run.run_id, f"user_splits-{context.partition_key}"))
    else:
        frames = user_splits_for(cold_start_users.frame("users"), clean_logs.frame("interactions"), config.seed)
        bundle = Bundle(frames=frames, info=info)
    require_usable_splits(bundle, spec_for(context.partition_key).task, context.partition_key)
    counts = bundle.frame("users").group_by("split").agg(users=pl.len()).sort("split")
    if note := few_users_note(dict(counts.iter_rows()), context.partition_key):
        context.log.warning(note)
    return bundle_output(bundle, users_per_split=table(counts))

