"""Reading and cleaning a click log larger than memory: the same rules, one user shard at a time.

Every cleaning rule looks at one row, one user, or one (user, item) pair (duplicates,
merged impressions, users with too few clicks), never across users. So the log can be cut
by user: each raw line goes to the shard of its user (a hash of the trimmed user_id), every
shard goes through the very functions of assets/clean_logs.py with the small cleaned user
and item tables, and the result is the unsharded cleaning's, row for row (tests/test_sharded.py
checks it). Memory is then bounded by one day file while reading and by one shard while
cleaning, not by the log: shards are Parquet files on disk, written and read by polars.

Used by the data-step benchmark for synthetic Taobao logs of 1-10 million users. The Dagster
assets still pass whole frames between steps (the IO manager loads a dataset's bundle into
memory), so the pipeline's own steps are not bounded this way yet; neither are the splits and
the task encoding, which draw random numbers over all rows at once (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from assets.clean_logs import (
    CleaningRules, check_accounting, clean_interactions, clean_items, clean_users, drop_thin_users,
    malformed_rejections, rows_by_file,
)
from assets.raw_files import TAOBAO_ITEM_COLUMNS, TAOBAO_LOG_COLUMNS, TAOBAO_USER_COLUMNS, split_lines
from assets.specs import DatasetSpec

SHARD_HASH_SEED = 0


def shard_of(user_id: pl.Expr, shards: int) -> pl.Expr:
    """The shard of each row's user: a hash of the trimmed id (ids are trimmed by cleaning too)."""
    return (user_id.str.strip_chars().hash(seed=SHARD_HASH_SEED) % shards).cast(pl.UInt32)


@dataclass(frozen=True)
class ShardedLog:
    """A raw log cut by user: interactions as Parquet under `directory`/shard=<k>/, the rest in memory."""

    directory: Path
    shards: int
    users: pl.DataFrame
    items: pl.DataFrame
    malformed: pl.DataFrame
    read: pl.DataFrame  # rows read per source file (every file, interactions included)
    truth: pl.DataFrame | None

    def shard(self, k: int) -> pl.LazyFrame:
        """The raw interactions of shard `k`, in file and line order."""
        return pl.scan_parquet(sorted((self.directory / f"shard={k}").glob("*.parquet")))


def shard_taobao(directory: Path, out: Path, shards: int) -> ShardedLog:
    """Read a Taobao-like log directory (as assets/raw_files.read_taobao) into `shards` user shards.

    One day file is in memory at a time; its rows are appended to every shard as one Parquet
    part per day, so a shard's parts in name order are in file and line order.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    read = lambda path, cols: split_lines(  # noqa: E731
        path, f"taobao/{path.relative_to(directory)}", ",", cols, encoding="utf-8", header=True)
    users, bad_users = read(directory / "user_profile.csv", TAOBAO_USER_COLUMNS)
    items, bad_items = read(directory / "item_catalogue.csv", TAOBAO_ITEM_COLUMNS)
    malformed, read_counts = [bad_users, bad_items], [rows_by_file([users, bad_users, items, bad_items], "read")]
    day_files = sorted(directory.glob("logs/dt=*/impressions.csv"))
    for day, path in enumerate(day_files):
        rows, bad = read(path, TAOBAO_LOG_COLUMNS)
        rows = rows.rename({"clicked": "label"}).with_columns(_shard=shard_of(pl.col("user_id"), shards))
        for (k,), part in rows.partition_by("_shard", as_dict=True, maintain_order=True).items():
            target = out / f"shard={k}"
            target.mkdir(parents=True, exist_ok=True)
            part.drop("_shard").write_parquet(target / f"{day:05d}.parquet")
        malformed.append(bad)
        read_counts.append(rows_by_file([rows, bad], "read"))
        del rows, bad
    truth_path = directory / "_truth" / "user_groups.csv"
    truth = pl.read_csv(truth_path, schema={"user_id": pl.String, "true_group": pl.String}) if truth_path.is_file() else None
    return ShardedLog(out, shards, users, items, pl.concat(malformed), pl.concat(read_counts), truth)


@dataclass(frozen=True)
class ShardedClean:
    """Cleaned logs: interactions and their rejected rows per shard on disk, the rest in memory."""

    directory: Path
    shards: int
    users: pl.DataFrame
    items: pl.DataFrame
    rejected: pl.DataFrame  # rows rejected outside the interactions (users, items, malformed lines, thin users)
    accounting: pl.DataFrame
    truth: pl.DataFrame | None

    def interactions(self) -> pl.LazyFrame:
        """Every shard's cleaned interactions (each shard sorted by user and item)."""
        return pl.scan_parquet(sorted((self.directory / "interactions").glob("*.parquet")))

    def rejected_interactions(self) -> pl.LazyFrame:
        return pl.scan_parquet(sorted((self.directory / "rejected").glob("*.parquet")))


def clean_sharded(log: ShardedLog, spec: DatasetSpec, out: Path, rules: CleaningRules = CleaningRules()) -> ShardedClean:
    """assets/clean_logs.clean_logs_from_raw, one shard at a time (same rules, same rows kept and rejected)."""
    users, rejected_users = clean_users(log.users, spec, rules)
    items, _, rejected_items = clean_items(log.items, spec)
    raw_user_ids = log.users["user_id"]
    user_shard = users.with_columns(_shard=shard_of(pl.col("user_id"), log.shards))
    kept_users, thin_users, kept_counts, rejected_counts = [], [], [], []
    for directory in ("interactions", "rejected"):
        (out / directory).mkdir(parents=True, exist_ok=True)
    for k in range(log.shards):
        raw = log.shard(k).collect() if (log.directory / f"shard={k}").is_dir() else None
        shard_users = user_shard.filter(pl.col("_shard") == k).drop("_shard")
        if raw is None:  # no interaction landed here: every user of the shard is too thin
            raw = pl.DataFrame(schema={"source_file": pl.String, "line": pl.Int64,
                                       **{c: pl.String for c in ("user_id", "item_id", "ts", "label")}})
        interactions, rejected_rows = clean_interactions(raw, users, items, raw_user_ids, spec)
        del raw
        shard_users, interactions, rejected_thin = drop_thin_users(shard_users, interactions, spec, rules)
        kept_users.append(shard_users)
        thin_users.append(rejected_thin[0])
        rejected = pl.concat([*rejected_rows, rejected_thin[1]])
        interactions.sort("user_id", "item_id").write_parquet(out / "interactions" / f"{k:05d}.parquet")
        rejected.write_parquet(out / "rejected" / f"{k:05d}.parquet")
        kept_counts.append(rows_by_file([interactions], "kept"))
        rejected_counts.append(rows_by_file([rejected], "rejected"))
    users = pl.concat(kept_users).sort("user_id")
    rejected_rest = pl.concat([malformed_rejections(log.malformed, spec.name), *rejected_users, *rejected_items, *thin_users])
    kept = pl.concat([*kept_counts, rows_by_file([users, items], "kept")]).group_by("source_file").agg(pl.col("kept").sum())
    rejected = pl.concat([*rejected_counts, rows_by_file([rejected_rest], "rejected")]).group_by("source_file").agg(
        pl.col("rejected").sum())
    accounting = (log.read.group_by("source_file").agg(pl.col("read").sum())
                  .join(kept, on="source_file", how="full", coalesce=True)
                  .join(rejected, on="source_file", how="full", coalesce=True)
                  .with_columns(pl.col("read", "kept", "rejected").fill_null(0).cast(pl.Int64)).sort("source_file"))
    check_accounting(accounting, spec.name)
    truth = log.truth.join(users.select("user_id"), on="user_id", how="semi").sort("user_id") if log.truth is not None else None
    return ShardedClean(out, log.shards, users, items.sort("item_id"), rejected_rest, accounting, truth)
