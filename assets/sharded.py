"""Reading and cleaning a click log larger than memory: the same rules, one user shard at a time.

Every cleaning rule looks at one row, one user, or one (user, item) pair (duplicate ids,
duplicate impressions, merged impressions, users with too few clicks), never across users.
So the log can be cut by user: each raw line of the user profile and of the day files goes to
the shard of its user (a hash of the trimmed user_id), every shard goes through the very
functions of assets/clean_logs.py, and the result is the unsharded cleaning's, row for row
(tests/test_sharded.py checks it). Files are read in blocks of about BLOCK_BYTES, and shards
are Parquet files on disk, so memory is bounded by a block while reading and by a shard (plus
the item table) while cleaning, not by the log.

The Dagster assets take this path for taobao when PAML_SHARDS > 0: the shards travel between
steps as stored Parquet files (`Bundle.parts`, `log_bundle` / `log_of`, `clean_bundle`), the
splits and the task encoding follow one user-id range at a time (assets/sharded_tasks.py).
The data-step benchmark times the same functions on synthetic logs of 1-10 million users.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import polars as pl
import pyarrow.parquet as pq

from assets.bundle import Bundle, SourceFile, StoredParts
from assets.clean_logs import (
    CleaningRules, check_accounting, clean_interactions, clean_items, clean_users, drop_thin_users,
    malformed_rejections, rows_by_file,
)
from assets.dataset_spec import CustomDataset, load_builtin
from assets.raw_files import require_rows, split_lines
from assets.raw_text import decoding_of
from assets.specs import DatasetSpec

SHARD_HASH_SEED = 0
BLOCK_BYTES = 64 << 20  # a file is split into fields this much at a time (about 1.7 M impression lines)


def shard_of(user_id: pl.Expr, shards: int) -> pl.Expr:
    """The shard of each row's user: a hash of the trimmed id (ids are trimmed by cleaning too)."""
    return (user_id.str.strip_chars().hash(seed=SHARD_HASH_SEED) % shards).cast(pl.UInt32)


def file_blocks(path: Path, block_bytes: int, scratch: Path) -> Iterator[tuple[Path, int]]:
    """`path` cut at line ends into files of about `block_bytes`, each starting with the header
    line; yields (block file, number of the file's line before the block's first data line, minus 1).

    Whatever follows the last line end (a cut-off last line) joins the last block, so the file's
    ending, with or without a final newline, is the last block's, and no block is only a
    fragment.
    """
    with path.open("rb") as handle:
        header = handle.readline()
        lines_before, rest, pending, index = 1, b"", None, 0

        def block(body: bytes) -> Path:
            target = scratch / f"block{index:05d}"
            target.write_bytes(header + body)
            return target

        while True:
            chunk = handle.read(block_bytes)
            data = rest + chunk
            if chunk:
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    rest = data  # no line end yet: read on
                    continue
                body, rest = data[:cut], data[cut:]
                if pending is not None:
                    yield block(pending), lines_before - 1
                    lines_before += pending.count(b"\n")
                    index += 1
                pending = body
                continue
            yield block((pending or b"") + data), lines_before - 1
            return


def split_in_blocks(path: Path, label: str, names: tuple[str, ...], block_bytes: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """assets/raw_files.split_lines (comma-separated UTF-8 with a header), one block of the file at a time.

    The whole file's bytes are checked first, so an encoding error names the file and its line.
    Errors name the file, not its scratch block, and lines of the file; a block without one good
    line is read as the whole file would read it (its lines malformed), and only a file without
    one good line is an error, after its last block.
    """
    source = decoding_of(path, label, "utf-8").source  # a compressed file's decompressed copy
    n_rows, unread = 0, []
    with tempfile.TemporaryDirectory() as scratch:
        for block, offset in file_blocks(source, block_bytes, Path(scratch)):
            rows, malformed = split_lines(block, label, ",", names, encoding="utf-8", header=True, shown_as=path,
                                          require=False)
            block.unlink()
            rows, malformed = rows.with_columns(pl.col("line") + offset), malformed.with_columns(pl.col("line") + offset)
            n_rows += rows.height
            if not n_rows:  # kept only while no line was good: what the error quotes
                unread.append(malformed)
            yield rows, malformed
    if not n_rows:
        require_rows(rows.clear(), pl.concat(unread), label, path, len(names))


def detached(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with buffers of its own (an Arrow IPC round trip).

    A few rows filtered out of a block keep the block's whole string buffers alive (polars'
    string views share them): kept for every block, the malformed lines held a copy of the
    log, 1.3 GiB at 1,000,000 users.
    """
    buffer = io.BytesIO()
    frame.write_ipc(buffer)
    buffer.seek(0)
    return pl.read_ipc(buffer)


@dataclass(frozen=True)
class ShardedLog:
    """A raw log cut by user: users and interactions as Parquet under `directory`, the rest in memory."""

    directory: Path
    shards: int
    items: pl.DataFrame
    malformed: pl.DataFrame
    read: pl.DataFrame  # rows read per source file (every file, interactions included)
    truth: pl.DataFrame | None

    def part(self, name: str, k: int) -> pl.LazyFrame | None:
        """The raw `name` ('users' or 'interactions') of shard `k` in file and line order, or None."""
        files = sorted((self.directory / name / f"shard={k}").glob("*.parquet"))
        return pl.scan_parquet(files) if files else None


class AppendedParts:
    """One Parquet file per key under `target` (`<prefix><key>/part.parquet`), each write appended
    as a row group: K inputs cut K ways make K files, not K x K small ones.

    The files are complete once the `with` block exits; rows read back in write order.
    """

    def __init__(self, target: Path, prefix: str = "shard="):
        self.target, self.prefix = target, prefix
        self._writers: dict[int, pq.ParquetWriter] = {}

    def path(self, key: int) -> Path:
        return self.target / f"{self.prefix}{key}" / "part.parquet"

    def append(self, key: int, rows: pl.DataFrame) -> None:
        table = rows.rechunk().to_arrow()  # a frame of many chunks converts 10x slower
        if key not in self._writers:
            self.path(key).parent.mkdir(parents=True, exist_ok=True)
            self._writers[key] = pq.ParquetWriter(self.path(key), table.schema, compression="zstd")
        writer = self._writers[key]
        writer.write_table(table if table.schema == writer.schema else table.cast(writer.schema))

    def __enter__(self) -> "AppendedParts":
        return self

    def __exit__(self, *exc) -> None:
        for writer in self._writers.values():
            writer.close()


def write_shards(rows: pl.DataFrame, shards: int, parts: AppendedParts) -> None:
    """Append `rows` to their users' shards, one row group per shard.

    One file per shard, not one per block and shard: the files grew with blocks x shards, both
    of which grow with the log (77,000 files at 10,000,000 users, about a millisecond each).
    """
    rows = rows.with_columns(_shard=shard_of(pl.col("user_id"), shards))
    for (k,), part in rows.partition_by("_shard", as_dict=True, maintain_order=True).items():
        parts.append(k, part.drop("_shard"))


def taobao_columns() -> CustomDataset:
    """How the taobao files are written (assets/builtin_specs/taobao.toml): their columns, the label column.

    The sharded reader takes its users and items straight from the files, so the spec's feature
    names must be its column names (they are).
    """
    return load_builtin("taobao")


def shard_taobao(directory: Path, out: Path, shards: int, block_bytes: int = BLOCK_BYTES,
                 days: Sequence[str] | None = None) -> ShardedLog:
    """Read a Taobao-like log directory (as assets/raw_files.read_taobao) into `shards` user shards.

    One block of one file is in memory at a time; the item catalogue is read whole (it is
    small). Each shard is one Parquet file, its row groups in file and line order. `days`
    (YYYY-MM-DD): read only those days' files (a log window); None: every day.
    """
    from assets.taobao_logs import day_files, day_files_of, profile_files, read_truth, taobao_dataset  # the whole log's checks

    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    taobao_dataset(directory)  # the missing files, named (without logs, nothing would be read and all succeed)
    available = day_files(directory) if days is None else day_files_of(directory, sorted(days))
    spec = taobao_columns()
    label = lambda path: f"taobao/{path.relative_to(directory)}"  # noqa: E731
    profiles = profile_files(directory)  # each file, or the compressed copy kept in its place
    catalogue = profiles["item_catalogue.csv"]
    items, bad_items = split_lines(catalogue, label(catalogue), ",", spec.items.columns, encoding="utf-8", header=True)
    malformed, read = [bad_items], [rows_by_file([items, bad_items], "read")]
    files = [("users", profiles["user_profile.csv"], spec.users.columns)]
    files += [("interactions", path, spec.interactions.columns) for path in available.values()]
    with AppendedParts(out / "users") as users, AppendedParts(out / "interactions") as interactions:
        for kind, path, names in files:
            for rows, bad in split_in_blocks(path, label(path), names, block_bytes):
                if kind == "interactions":
                    rows = rows.rename({spec.interaction_columns["label"]: "label"})
                write_shards(rows, shards, users if kind == "users" else interactions)
                malformed.append(detached(bad))
                read.append(rows_by_file([rows, bad], "read"))
    truth = read_truth(directory)
    read_per_file = pl.concat(read).group_by("source_file").agg(pl.col("read").sum()).sort("source_file")
    return ShardedLog(out, shards, items, pl.concat(malformed), read_per_file, truth)


@dataclass(frozen=True)
class ShardedClean:
    """Cleaned logs: users, interactions and their rejected rows per shard on disk; items in memory."""

    directory: Path
    shards: int
    items: pl.DataFrame
    rejected: pl.DataFrame  # rows rejected outside the shards (items, malformed lines)
    accounting: pl.DataFrame
    truth: pl.DataFrame | None

    def _scan(self, name: str) -> pl.LazyFrame:
        return pl.scan_parquet(sorted((self.directory / name).glob("*.parquet")))

    def users(self) -> pl.DataFrame:
        """Every cleaned user, sorted by id (one row per user)."""
        return self._scan("users").collect().sort("user_id")

    def interactions(self) -> pl.LazyFrame:
        """Every shard's cleaned interactions (each shard sorted by user and item)."""
        return self._scan("interactions")

    def interaction_files(self) -> list[Path]:
        """The cleaned interactions' Parquet files, one per shard (assets/sharded_tasks.cut_by_range reads them)."""
        return sorted((self.directory / "interactions").glob("*.parquet"))

    def rejected_in_shards(self) -> pl.LazyFrame:
        """Rows rejected by the user and interaction rules, shard by shard."""
        return self._scan("rejected")


def clean_sharded(log: ShardedLog, spec: DatasetSpec, out: Path, rules: CleaningRules = CleaningRules()) -> ShardedClean:
    """assets/clean_logs.clean_logs_from_raw, one shard at a time (same rules, same rows kept and rejected).

    A user and every row naming it are in the same shard, so the user rules, the interaction
    rules (which only ask whether the row's user exists and was kept), duplicates, merged
    impressions and the minimum item count see exactly what they see in the whole log.
    """
    items, _, rejected_items, _ = clean_items(log.items, spec)  # the taobao layout has no numeric item feature
    for name in ("users", "interactions", "rejected"):
        (out / name).mkdir(parents=True, exist_ok=True)
    counts: dict[str, list[pl.DataFrame]] = {"kept": [rows_by_file([items], "kept")], "rejected": []}
    empty = {"users": {"source_file": pl.String, "line": pl.Int64, **{c: pl.String for c in taobao_columns().users.columns}},
             "interactions": {"source_file": pl.String, "line": pl.Int64,
                              **{c: pl.String for c in ("user_id", "item_id", "ts", "label")}}}
    for k in range(log.shards):
        raw = {name: (log.part(name, k).collect() if log.part(name, k) is not None else pl.DataFrame(schema=schema))
               for name, schema in empty.items()}
        users, rejected_users = clean_users(raw["users"], spec, rules)
        interactions, rejected_rows = clean_interactions(raw["interactions"], users, items, raw["users"]["user_id"], spec)
        users, interactions, rejected_thin = drop_thin_users(users, interactions, spec, rules)
        rejected = pl.concat([*rejected_users, *rejected_rows, *rejected_thin])
        users.write_parquet(out / "users" / f"{k:05d}.parquet")
        interactions.sort("user_id", "item_id").write_parquet(out / "interactions" / f"{k:05d}.parquet")
        rejected.write_parquet(out / "rejected" / f"{k:05d}.parquet")
        counts["kept"].append(rows_by_file([users, interactions], "kept"))
        counts["rejected"].append(rows_by_file([rejected], "rejected"))
        del raw, users, interactions, rejected
    rejected_rest = pl.concat([malformed_rejections(log.malformed, spec.name), *rejected_items])
    counts["rejected"].append(rows_by_file([rejected_rest], "rejected"))
    accounting = log.read
    for name, parts in counts.items():
        accounting = accounting.join(pl.concat(parts).group_by("source_file").agg(pl.col(name).sum()),
                                     on="source_file", how="full", coalesce=True)
    accounting = accounting.with_columns(pl.col("read", "kept", "rejected").fill_null(0).cast(pl.Int64)).sort("source_file")
    check_accounting(accounting, spec.name)
    truth = None
    if log.truth is not None:
        kept_ids = pl.scan_parquet(sorted((out / "users").glob("*.parquet"))).select("user_id").collect()
        truth = log.truth.join(kept_ids, on="user_id", how="semi").sort("user_id")
    return ShardedClean(out, log.shards, items.sort("item_id"), rejected_rest, accounting, truth)


# -- as bundles: what the Dagster assets store between steps ----------------------------------------
def log_bundle(log: ShardedLog, info: dict, sources: tuple[SourceFile, ...], scratch: Path) -> Bundle:
    """The raw log in shards as a Bundle: users and interactions as parts (`shard=<k>/part.parquet`
    under `users/` and `interactions/`), items, malformed lines, rows read per file (`read`) and
    the ground truth as frames. `scratch` holds the parts until the store has them."""
    frames = {"items": log.items, "malformed": log.malformed, "read": log.read}
    if log.truth is not None:
        frames["truth"] = log.truth
    parts = {name: StoredParts.under(log.directory / name) for name in ("users", "interactions")}
    return Bundle(frames=frames, parts=parts, info={**info, "shards": log.shards}, sources=sources, scratch=(scratch,))


def log_of(bundle: Bundle) -> ShardedLog:
    """The ShardedLog a `log_bundle` (stored or not) holds: its parts stay where they are."""
    roots = {bundle.parts[name].root.parent for name in ("users", "interactions")}
    if len(roots) != 1:
        raise ValueError(f"the users' and interactions' shards of a sharded log lie in one directory, got {sorted(roots)}")
    return ShardedLog(roots.pop(), int(bundle.info["shards"]), bundle.frame("items"), bundle.frame("malformed"),
                      bundle.frame("read"), bundle.frames.get("truth"))


def clean_bundle(clean: ShardedClean, dataset: str, rules: CleaningRules, scratch: Path) -> Bundle:
    """`clean_sharded`'s result as the `clean_logs` Bundle: users, interactions and rejected rows as
    parts (one file per shard; the rows rejected outside the shards, `rest/rejected.parquet`,
    join the rejected parts), items, accounting and the ground truth as frames."""
    (clean.directory / "rest").mkdir(exist_ok=True)
    clean.rejected.write_parquet(clean.directory / "rest" / "rejected.parquet")
    parts = {name: StoredParts.under(clean.directory / name) for name in ("users", "interactions")}
    parts["rejected"] = StoredParts(clean.directory, tuple(
        sorted(p.relative_to(clean.directory).as_posix() for d in ("rejected", "rest") for p in (clean.directory / d).glob("*.parquet"))))
    frames = {"items": clean.items, "accounting": clean.accounting}
    if clean.truth is not None:
        frames["truth"] = clean.truth
    return Bundle(frames=frames, parts=parts, info={"dataset": dataset, "rules": rules.__dict__, "shards": clean.shards},
                  scratch=(scratch,))
