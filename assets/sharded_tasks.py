"""Splits and task encoding of a log larger than memory: the unsharded results, one user range at a time.

assets/sharded.py cleans a log in user shards cut by a hash of the user id. The splits and the
encoding need more: `assets/user_splits.py` draws one random number per row of the log sorted
by (user, item), so a shard can only draw its rows' numbers if it holds a contiguous run of
that order, i.e. a RANGE of user ids. So:

1. `cut_by_range` re-cuts the cleaned hash shards into user-id ranges of about equal rows
   (bounds from the per-user counts the cold-start selection already made), one hash shard at
   a time, each shard's share of a range a slice of it sorted by user.
2. `split_sharded` draws range by range. numpy's PCG64 spends one 64-bit output per double and
   `advance(k)` skips k outputs, so a range whose rows are preceded by k rows of the whole
   sorted log advances its generator by k and draws exactly the whole draw's numbers
   (`user_splits.uniform_draws`). The counts come from a first pass that reads only user ids.
   The 7:1:2 user permutation is over users only and runs whole.
3. `encode_sharded` builds the vocabularies from small tables first (the split users, a flag
   per catalogue item: used, rated by a training or warm user), learns each split's task
   count and longest support/query set in a first pass, writes a safetensors header for the
   final shapes, then encodes range by range with the functions of assets/meta_tasks.py and
   writes each range's rows at their place in the file.

Row data is in memory one range at a time; per-user tables (the cleaned users' encoded fields,
the split of each user, per-user counts) and the item catalogue are held whole: the encoding
peaked at 3.7 GiB at 10 M users, 1 GiB at 1 M (docs/benchmarks.md). The results equal
`user_splits_for` and `encode_tasks` on the whole log, frame for frame and tensor for tensor
(tests/test_sharded_tasks.py, 1 and 3 ranges). The final artifact has the layout of a stored
bundle (pipelines/store.py): frames/*.parquet, tensors.safetensors, info.json.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from assets.bundle import Bundle, StoredParts
from assets.meta_tasks import (
    VOCAB_SOURCE_SPLITS, item_arrays, split_arrays, split_members, split_user_table, splits_present, tasks_info,
    vocab_by_field, vocabularies,
)
from assets.sharded import AppendedParts
from assets.specs import DatasetSpec
from assets.user_splits import (
    TASK_SEPARATOR, WARM_SPLIT, cold_items, split_sorted_users, warm_chunk_size, warm_items,
)

RANGE_COLUMNS = ("user_id", "item_id", "label")  # what the splits read of a cleaned interaction
RECUT_BUFFER_ROWS = 4_000_000  # rows held while re-cutting, about 200 MB


@dataclass(frozen=True)
class RangeShards:
    """Cleaned interactions cut by user id: range r holds the users in [bounds[r - 1], bounds[r])."""

    directory: Path
    bounds: tuple[str, ...]
    schema: dict[str, pl.DataType]

    @property
    def shards(self) -> int:
        return len(self.bounds) + 1

    def _files(self, r: int) -> list[Path]:
        return sorted((self.directory / f"range={r}").glob("*.parquet"))

    def scan(self, r: int) -> pl.LazyFrame:
        """Range `r`'s rows in no particular order."""
        files = self._files(r)
        return pl.scan_parquet(files) if files else pl.LazyFrame(schema=self.schema)

    def part(self, r: int) -> pl.DataFrame:
        """Range `r`'s rows sorted by (user, item), the order the splits draw in."""
        return self.scan(r).collect().sort("user_id", "item_id")

    def slice_of(self, by_user: pl.DataFrame, r: int) -> pl.DataFrame:
        """The rows of `by_user` (sorted by user_id) whose user is in range `r`."""
        cuts = [0, *by_user["user_id"].search_sorted(pl.Series(self.bounds, dtype=pl.String), side="left").to_list(),
                by_user.height]
        return by_user.slice(cuts[r], cuts[r + 1] - cuts[r])


def range_bounds(counts: pl.DataFrame, shards: int) -> tuple[str, ...]:
    """Bounds cutting the users (user_id, n_logs) in id order into `shards` ranges of about equal rows.

    Each cut goes before or after the user holding the target row, whichever is nearer. A user
    is never cut; a user with more rows than a range leaves fewer ranges (bounds deduplicated).
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    ordered = counts.select("user_id", "n_logs").sort("user_id")
    n = ordered["n_logs"].to_numpy().astype(np.int64)
    before = np.cumsum(n) - n  # rows of the users before each
    targets = np.array([r * int(n.sum()) / shards for r in range(1, shards)])
    holder = np.searchsorted(before, targets, side="right") - 1  # the user holding each target row
    cut = np.where(2 * (targets - before[holder]) < n[holder], holder, holder + 1)
    return tuple(dict.fromkeys(ordered["user_id"][int(i)] for i in cut if 0 < i < ordered.height))


def cut_by_range(
    files: Sequence[Path], counts: pl.DataFrame, shards: int, out: Path, buffer_rows: int = RECUT_BUFFER_ROWS,
) -> RangeShards:
    """Re-cut the cleaned interaction `files` (any cut by user, e.g. hash shards) into user-id ranges.

    `counts`: one row per user with `n_logs` (select_cold_start's output). Files are read one
    at a time; their rows wait in memory, up to `buffer_rows`, then each range's share is
    appended to out/range=<r>/part.parquet as one row group. (Appending each file's share of
    each range would make files x ranges row groups, a number quadratic in the log: 410,000 at
    10,000,000 users and 640 shards.)
    """
    bounds = range_bounds(counts, shards)
    schema: dict[str, pl.DataType] = {}
    pending: dict[int, list[pl.DataFrame]] = {}
    held = 0
    with AppendedParts(out, prefix="range=") as parts:
        def flush() -> None:
            for r in sorted(pending):
                parts.append(r, pl.concat(pending[r]))
            pending.clear()

        for path in files:
            rows = pl.read_parquet(path, columns=list(RANGE_COLUMNS)).sort("user_id")
            schema = dict(rows.schema)
            # Sorted by user, a file's share of each range is one slice: no grouping, no copy.
            cuts = [0, *rows["user_id"].search_sorted(pl.Series(bounds, dtype=pl.String), side="left").to_list(), rows.height]
            for r, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
                if hi > lo:
                    pending.setdefault(r, []).append(rows.slice(lo, hi - lo))
            held += rows.height
            del rows
            if held >= buffer_rows:
                flush()
                held = 0
        flush()
    if not schema:
        raise ValueError(f"no cleaned interaction files to cut into ranges (got {len(files)} paths)")
    return RangeShards(out, bounds, schema)


def check_task_order(warm_ids: pl.Series) -> None:
    """Raise unless appending TASK_SEPARATOR and a chunk number keeps the sorted warm ids in order.

    The warm chunks' support/query draw runs over task keys "<user>#<chunk>"; a range's tasks
    are a contiguous run of that order only if no id is a prefix of the next one followed by a
    character at or below '#' (e.g. "u1" and "u1 b"). Checking neighbours suffices: such a pair
    anywhere implies one between an id and its successor.
    """
    pairs = pl.DataFrame({"user_id": warm_ids.sort()}).with_columns(after=pl.col("user_id").shift(-1))
    bad = pairs.filter(
        pl.col("after").str.starts_with(pl.col("user_id"))
        & (pl.col("after").str.slice(pl.col("user_id").str.len_chars(), 1) <= TASK_SEPARATOR)
    )
    if bad.height:
        first, after = bad.row(0)
        raise ValueError(
            f"warm user ids {first!r} and {after!r} sort the other way round as task keys "
            f"('{first}{TASK_SEPARATOR}0' > '{after}{TASK_SEPARATOR}0'), so the sharded splits cannot draw "
            f"the unsharded numbers ({bad.height} such pairs); split this log with one range")


@dataclass(frozen=True)
class ShardedSplits:
    """`user_splits_for`'s result: `users` in memory, `items` one Parquet file per user range."""

    directory: Path
    ranges: RangeShards
    users: pl.DataFrame  # user_id, split (cold-start users in id order, then the warm ones)
    chunk_size: int

    @property
    def shards(self) -> int:
        return self.ranges.shards

    def items(self, r: int) -> pl.DataFrame:
        """Range `r`'s rows: user_id, item_id, label, set, chunk."""
        return pl.read_parquet(self.directory / "items" / f"{r:05d}.parquet")

    def scan_items(self) -> pl.LazyFrame:
        return pl.scan_parquet(sorted((self.directory / "items").glob("*.parquet")))


def split_sharded(ranges: RangeShards, cold_start: pl.DataFrame, seed: int, out: Path) -> ShardedSplits:
    """assets/user_splits.user_splits_for, one user range at a time (the same numbers for the same seed)."""
    flags = cold_start.select("user_id", "is_cold_start").sort("user_id")
    users = split_sorted_users(flags.filter("is_cold_start")["user_id"], seed)
    warm_ids = flags.filter(~pl.col("is_cold_start"))["user_id"]
    if ranges.shards > 1:
        check_task_order(warm_ids)
    # First pass, user ids only: each range's cold and warm rows (the draws' offsets) and the
    # cold users' counts (the warm chunk size is their median).
    cold_counts, n_cold, n_warm = [], [], []
    for r in range(ranges.shards):
        per_user = (ranges.scan(r).group_by("user_id").agg(n=pl.len()).collect()
                    .join(ranges.slice_of(flags, r), on="user_id", how="inner"))
        cold_counts.append(per_user.filter("is_cold_start")["n"])
        n_cold.append(int(cold_counts[-1].sum()))
        n_warm.append(int(per_user.filter(~pl.col("is_cold_start"))["n"].sum()))
    chunk_size = warm_chunk_size(pl.concat(cold_counts))
    staging = fresh_directory(out)
    (staging / "items").mkdir()
    for r in range(ranges.shards):
        rows, range_flags = ranges.part(r), ranges.slice_of(flags, r)
        cold_rows = rows.join(range_flags.filter("is_cold_start").select("user_id"), on="user_id", how="semi")
        warm_rows = rows.join(range_flags.filter(~pl.col("is_cold_start")).select("user_id"), on="user_id", how="semi")
        if (cold_rows.height, warm_rows.height) != (n_cold[r], n_warm[r]):
            raise RuntimeError(f"range {r} under {ranges.directory} changed between passes: "
                               f"{cold_rows.height}/{warm_rows.height} cold/warm rows, counted {n_cold[r]}/{n_warm[r]}")
        parts = [cold_items(cold_rows, seed, offset=sum(n_cold[:r]))]
        if warm_ids.len():
            parts.append(warm_items(warm_rows, chunk_size, seed, offset=sum(n_warm[:r])))
        pl.concat(parts).write_parquet(staging / "items" / f"{r:05d}.parquet")
        del rows, cold_rows, warm_rows, parts
    if warm_ids.len():
        users = pl.concat([users, pl.DataFrame({"user_id": warm_ids}).with_columns(split=pl.lit(WARM_SPLIT))])
    users.write_parquet(staging / "users.parquet")
    publish(staging, out)
    return ShardedSplits(out, ranges, users, chunk_size)


def fresh_directory(out: Path) -> Path:
    """An empty staging directory beside `out`; `publish` renames it to `out` when complete,
    so a killed run leaves no half-written `out`."""
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


SAFETENSORS_DTYPES = {np.dtype(np.int64): "I64", np.dtype(np.float32): "F32", np.dtype(np.bool_): "BOOL"}


class TensorFile:
    """A safetensors file written in pieces: the header first (every shape known), then row blocks
    at their offsets with `pwrite`, so no tensor is ever whole in memory (nor mapped into it).

    Use it in a `with` block: leaving it without an error raises unless each tensor got as
    many rows as its shape has.
    """

    def __init__(self, path: Path, layout: dict[str, tuple[np.dtype, tuple[int, ...]]]):
        header, offset = {}, 0
        self._row_bytes: dict[str, int] = {}
        self._start: dict[str, int] = {}
        for name, (dtype, shape) in layout.items():
            self._row_bytes[name] = math.prod(shape[1:]) * np.dtype(dtype).itemsize
            size = shape[0] * self._row_bytes[name]
            header[name] = {"dtype": SAFETENSORS_DTYPES[np.dtype(dtype)], "shape": list(shape),
                            "data_offsets": [offset, offset + size]}
            self._start[name] = offset
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data start 8-byte aligned, as safetensors writes it
        self.path, self.layout, self._data = path, layout, 8 + len(text)
        self._rows_written = dict.fromkeys(layout, 0)
        with path.open("wb") as handle:
            handle.write(struct.pack("<Q", len(text)) + text)
            handle.truncate(self._data + offset)
        self._fd = os.open(path, os.O_WRONLY)

    def __enter__(self) -> "TensorFile":
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        os.close(self._fd)
        if error_type is None:
            self.check_complete()

    def write_rows(self, name: str, first_row: int, array: np.ndarray) -> None:
        """Write `array` as rows first_row.. of tensor `name`."""
        dtype, shape = self.layout[name]
        if array.dtype != dtype or tuple(array.shape[1:]) != tuple(shape[1:]) or first_row + len(array) > shape[0]:
            raise ValueError(f"{self.path}: rows {first_row}..{first_row + len(array)} of {name} "
                             f"{shape} {dtype}: got {array.shape} {array.dtype}")
        data = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        position = self._data + self._start[name] + first_row * self._row_bytes[name]
        while data.nbytes:
            written = os.pwrite(self._fd, data, position)
            data, position = data[written:], position + written
        self._rows_written[name] += len(array)

    def check_complete(self) -> None:
        short = {n: (self._rows_written[n], shape[0]) for n, (_, shape) in self.layout.items()
                 if self._rows_written[n] != shape[0]}
        if short:
            raise RuntimeError(f"{self.path}: rows written / expected per tensor: {short}")


@dataclass(frozen=True)
class ShardedTasks:
    """`encode_tasks`'s result on disk, laid out as a stored bundle: frames/, tensors.safetensors, info.json."""

    directory: Path
    info: dict

    def load(self) -> tuple[dict[str, pl.DataFrame], dict, dict]:
        """(frames, tensors, info) as `encode_tasks` returns them: needs the tensors' size in memory."""
        from safetensors.torch import load_file

        frames = {p.stem: pl.read_parquet(p) for p in sorted((self.directory / "frames").glob("*.parquet"))}
        return frames, load_file(str(self.directory / "tensors.safetensors")), self.info


def split_layout(split: str, n_tasks: int, widths: dict[str, int], n_user_fields: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Dtypes and shapes of one split's tensors, named and ordered as `split_arrays` returns them."""
    layout: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    if split == WARM_SPLIT:
        layout["user_index"] = (np.dtype(np.int64), (n_tasks,))
    layout["user_fields"] = (np.dtype(np.int64), (n_tasks, n_user_fields))
    for part in ("support", "query"):
        layout[f"{part}_items"] = (np.dtype(np.int64), (n_tasks, widths[part]))
        layout[f"{part}_labels"] = (np.dtype(np.float32), (n_tasks, widths[part]))
        layout[f"{part}_mask"] = (np.dtype(np.bool_), (n_tasks, widths[part]))
    return {f"{split}__{name}": value for name, value in layout.items()}


def encode_sharded(
    users: pl.DataFrame, items: pl.DataFrame, splits: ShardedSplits, spec: DatasetSpec, out: Path,
    backoff_min_count: int = 0,
) -> ShardedTasks:
    """assets/meta_tasks.encode_tasks, one user range of `splits` at a time, written to `out`.

    `users` and `items` are the cleaned per-user and per-item tables (held whole).
    """
    ranges, user_split = splits.ranges, splits.users
    # Only the encoded fields: the user table's file and line columns would double its size.
    fields = list(dict.fromkeys(["user_id", *spec.user_fields, *(field for field, _ in spec.backoff)]))
    split_users = split_user_table(users.select(fields), user_split, spec, backoff_min_count).sort("user_id")
    known_users = user_split.filter(pl.col("split").is_in(VOCAB_SOURCE_SPLITS)).select("user_id").sort("user_id")
    present = splits_present(user_split)
    catalogue = items.select("item_id")
    # Which catalogue items some row uses, and some vocabulary user rated: one flag per item, so
    # memory does not grow with ranges x items (a list of each range's ids did: 1.5 GB at 10 M users).
    used = np.zeros(items.height, dtype=bool)
    known = np.zeros(items.height, dtype=bool)
    # First pass: the item ids in use, those the vocabulary users rated, and per split the
    # tasks per range, the longest support/query set (the tensors' widths) and warm users per range.
    n_tasks = {s: [0] * splits.shards for s in present}
    widths = {s: {"support": 0, "query": 0} for s in present}
    warm_users = [0] * splits.shards
    for r in range(splits.shards):
        rows = splits.items(r)
        used |= catalogue["item_id"].is_in(rows["item_id"].unique().implode()).to_numpy()
        known |= catalogue["item_id"].is_in(
            rows.join(ranges.slice_of(known_users, r), on="user_id", how="semi")["item_id"].unique().implode()).to_numpy()
        tasks = (rows.select("user_id", "chunk").unique()
                 .join(ranges.slice_of(split_users, r).select("user_id", "split"), on="user_id", how="inner"))
        for split, count in tasks.group_by("split").len().iter_rows():
            n_tasks[split][r] = count
        warm_users[r] = tasks.filter(pl.col("split") == WARM_SPLIT)["user_id"].n_unique()
        longest = (rows.join(catalogue, on="item_id", how="semi").join(tasks, on=["user_id", "chunk"], how="inner")
                   .group_by("split", "user_id", "chunk", "set").len()
                   .group_by("split", "set").agg(pl.col("len").max()))
        for split, part, length in longest.iter_rows():
            widths[split][part] = max(widths[split][part], int(length))
        del rows, tasks
    known_items = items.filter(pl.Series(known))
    vocab = vocabularies(split_users, known_items, spec)
    by_field = vocab_by_field(vocab, spec)
    used_items = items.filter(pl.Series(used)).sort("item_id")
    item_index = used_items.select("item_id", pl.int_range(1, used_items.height + 1, dtype=pl.Int64).alias("row"))

    staging = fresh_directory(out)
    (staging / "frames").mkdir()
    vocab.write_parquet(staging / "frames" / "vocab.parquet")
    item_index.write_parquet(staging / "frames" / "items.parquet")
    item_tensors, truncated = item_arrays(used_items, by_field, spec)
    layout = {name: (a.dtype, a.shape) for name, a in item_tensors.items()}
    for split in present:
        layout |= split_layout(split, sum(n_tasks[split]), widths[split], len(spec.user_fields))
    with TensorFile(staging / "tensors.safetensors", layout) as tensors:
        for name, array in item_tensors.items():
            tensors.write_rows(name, 0, array)
        # Second pass: each range's tasks at their rows of the whole split.
        first = dict.fromkeys(present, 0)
        for r in range(splits.shards):
            range_items = splits.items(r)
            rows = range_items.join(item_index, on="item_id", how="inner")
            chunks = range_items.select("user_id", "chunk").unique()
            range_users = ranges.slice_of(split_users, r)
            for split in present:
                members = split_members(range_users, chunks, split, first[split])
                if members.height != n_tasks[split][r]:
                    raise RuntimeError(f"range {r} of {splits.directory}: {members.height} {split} tasks, counted {n_tasks[split][r]}")
                columns = ["user_id", "chunk", "user_row"] if split == WARM_SPLIT else ["user_id", "user_row"]
                (staging / "parts" / split).mkdir(parents=True, exist_ok=True)
                members.select(columns).write_parquet(staging / "parts" / split / f"{r:05d}.parquet")
                arrays = split_arrays(members, rows, by_field, spec, split == WARM_SPLIT, widths[split])
                if split == WARM_SPLIT:
                    arrays["user_index"] += sum(warm_users[:r])  # dense ranks continue across ranges
                for name, array in arrays.items():
                    tensors.write_rows(f"{split}__{name}", first[split], array)
                first[split] += members.height
            del range_items, rows, chunks
    for split in present:
        (pl.scan_parquet(sorted((staging / "parts" / split).glob("*.parquet")))
         .sink_parquet(staging / "frames" / f"users__{split}.parquet"))
    shutil.rmtree(staging / "parts")
    info = tasks_info(spec, by_field, used_items.height, {s: first[s] for s in present}, backoff_min_count, truncated)
    (staging / "info.json").write_text(json.dumps({"info": info, "sources": []}, indent=1))
    publish(staging, out)
    return ShardedTasks(out, info)


# -- as bundles: what the Dagster assets store between steps ----------------------------------------
def splits_bundle(splits: ShardedSplits, info: dict, scratch: Path) -> Bundle:
    """`split_sharded`'s result as the `user_splits` Bundle: `users` a frame, `items` parts (one file per
    range, `<r>.parquet`); the ranges' bounds and the warm chunk size in `info`, for `splits_of`."""
    info = {**info, "shards": splits.shards, "range_bounds": list(splits.ranges.bounds), "chunk_size": splits.chunk_size}
    return Bundle(frames={"users": splits.users}, parts={"items": StoredParts.under(splits.directory / "items")},
                  info=info, scratch=(scratch,))


def splits_of(bundle: Bundle) -> ShardedSplits:
    """The ShardedSplits a `splits_bundle` (stored or not) holds; the range files stay where they are
    (the encoding reads each range's split rows, and of the ranges only their bounds)."""
    items = bundle.parts["items"]
    expected = tuple(f"{r:05d}.parquet" for r in range(int(bundle.info["shards"])))
    if items.names != expected:
        raise ValueError(f"{items.root}: expected the range files {expected[0]}..{expected[-1]}, found {len(items.names)} files")
    ranges = RangeShards(items.root, tuple(bundle.info["range_bounds"]), {})
    return ShardedSplits(items.root.parent, ranges, bundle.frame("users"), int(bundle.info["chunk_size"]))


def tasks_bundle(tasks: ShardedTasks, scratch: Path) -> Bundle:
    """`encode_sharded`'s directory as the `meta_tasks` Bundle: its frames (one row per task at most)
    read, its tensor file adopted as it is."""
    frames = {p.stem: pl.read_parquet(p) for p in sorted((tasks.directory / "frames").glob("*.parquet"))}
    return Bundle(frames=frames, tensor_file=tasks.directory / "tensors.safetensors", info=tasks.info, scratch=(scratch,))
