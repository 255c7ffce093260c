"""The value every pipeline asset returns: named frames, tensors and small JSON facts.

A `Bundle` is what the lineage IO manager stores (frames as Parquet, tensors as one
safetensors file, `info` as JSON) and what its content hash is computed over. The hash
depends on the logical content only, so a rerun on the same input gives the same hash.

A log larger than memory travels as `parts` instead of frames: Parquet files a step wrote on
disk (one per user shard or range), which the store links into the artifact and hands to the
next step as files, never reading them whole (`StoredParts`); likewise a safetensors file
written in pieces (`tensor_file`). Their content hash is over the files' bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:  # torch and pyarrow are imported lazily: Dagster loads this module at start-up
    import pyarrow as pa
    import torch

HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """A raw input file the pipeline read, identified by its content."""

    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class StoredParts:
    """A frame kept as Parquet files under `root`, `names` relative to it (e.g. "shard=3/part.parquet"
    or "00003.parquet"), in order. The store links the files into the artifact with the same
    relative names, so a reader that knows the layout (assets/sharded.py) finds them there."""

    root: Path
    names: tuple[str, ...]

    @classmethod
    def under(cls, root: Path) -> "StoredParts":
        """Every Parquet file below `root`."""
        return cls(Path(root), tuple(sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*.parquet"))))

    @property
    def files(self) -> list[Path]:
        return [self.root / name for name in self.names]

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.files)

    def height(self) -> int:
        """Rows over every file (from the files' metadata)."""
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def schema(self) -> pl.Schema:
        return self.scan().collect_schema()


@dataclass
class Bundle:
    """Named frames, tensors and JSON facts produced by one asset for one partition."""

    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    tensors: dict[str, "torch.Tensor"] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    sources: tuple[SourceFile, ...] = ()
    # Frames kept as files on disk (a log larger than memory), by name; see StoredParts.
    parts: dict[str, StoredParts] = field(default_factory=dict)
    # A safetensors file written in pieces, stored as it is (instead of `tensors`).
    tensor_file: Path | None = None
    # Directories of files written for this bundle alone: the store deletes them once it has stored it.
    scratch: tuple[Path, ...] = field(default=(), compare=False)
    # Stored artifacts this bundle was computed from that did not arrive as step inputs (a
    # model in service loaded by its id); lineage records them. Not part of the content.
    inputs: tuple[str, ...] = field(default=(), compare=False)
    # Set by the store on a loaded bundle: the artifact it was read from. Not part of the content.
    artifact_id: str | None = field(default=None, compare=False, repr=False)
    # Bundles are not mutated after construction, so the hash is computed once.
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if both := sorted(set(self.frames) & set(self.parts)):
            raise ValueError(f"{', '.join(both)}: a bundle's frame is either a frame or parts, not both")

    def frame(self, name: str) -> pl.DataFrame:
        """Return frame `name` (parts read whole), or raise naming the frames this bundle has."""
        if name in self.parts:
            return self.parts[name].scan().collect()
        if name not in self.frames:
            raise KeyError(f"bundle has no frame {name!r}; it has {sorted([*self.frames, *self.parts])}")
        return self.frames[name]

    def scan(self, name: str) -> pl.LazyFrame:
        """Frame `name` as a LazyFrame: parts are scanned from their files, never read whole."""
        return self.parts[name].scan() if name in self.parts else self.frame(name).lazy()

    def has(self, name: str) -> bool:
        return name in self.frames or name in self.parts

    def content_hash(self) -> str:
        """SHA-256 over the logical content (frames, tensors, info, source hashes)."""
        if self._hash is None:
            self._hash = self._compute_hash()
        return self._hash

    def _compute_hash(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.frames):
            digest.update(f"frame:{name}\n".encode())
            digest.update(frame_bytes(self.frames[name]))
        for name in sorted(self.parts):
            digest.update(f"parts:{name}\n".encode())
            for relative, path in zip(self.parts[name].names, self.parts[name].files):
                digest.update(f"part:{relative}\n".encode())
                file_digest(path, digest)
        if self.tensors:
            digest.update(b"tensors\n")
            digest.update(tensor_bytes(self.tensors))
        if self.tensor_file is not None:
            digest.update(b"tensors\n")
            file_digest(self.tensor_file, digest)
        info = {k: v for k, v in self.info.items() if k not in PLACE_KEYS}
        digest.update(json.dumps(info, sort_keys=True, default=str).encode())
        # by name and bytes, not path: sorted by path, a spec in a checkout and data elsewhere came in another order
        for name, sha256 in sorted((Path(source.path).name, source.sha256) for source in self.sources):
            digest.update(f"source:{name}:{sha256}\n".encode())
        return digest.hexdigest()

    def row_count(self) -> int:
        """Total rows over all frames (tensors count by their first dimension)."""
        count = sum(f.height for f in self.frames.values()) + sum(p.height() for p in self.parts.values())
        if self.tensor_file is not None:
            count += sum(shape[0] if shape else 1 for shape in tensor_file_shapes(self.tensor_file).values())
        return count + sum(int(t.shape[0]) if t.dim() else 1 for t in self.tensors.values())


# Info keys that say where a file lies, not what it holds: left out of the content hash, as a source is hashed by
# its name and bytes, not its path (the spec's own bytes are among the sources). With them, the same raw files read
# through two checkouts (or one moved) hashed apart, and so did every raw_logs and taobao_log_window artifact.
PLACE_KEYS = frozenset({"spec_file"})


def frame_bytes(frame: pl.DataFrame) -> bytes:
    """Uncompressed Arrow IPC bytes of `frame`: a stable serialization for hashing.

    One chunk, with Arrow's oldest types: IPC writes one record batch per chunk, and polars'
    string views carry whatever their shared buffers hold, so the same rows built two ways (the
    chunks of a multi-threaded read, a group-by's strings) gave different bytes; offsets and
    values (large_utf8) depend on the rows alone. Columns with nulls (at any depth of a list or
    struct) and boolean columns are written in a canonical form (`canonical_column`)."""
    frame = frame.rechunk()
    if any(needs_canonical(column) for column in frame.iter_columns()):
        frame = pl.DataFrame([canonical_column(column) for column in frame.iter_columns()])
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed", compat_level=pl.CompatLevel.oldest())
    return buffer.getvalue()


def needs_canonical(column: pl.Series) -> bool:
    """Whether `column` holds a null or a boolean anywhere (a nested column's elements and fields too): only
    then can its bytes differ from its values' canonical form."""
    dtype = column.dtype
    if not dtype.is_nested():
        return bool(column.null_count()) or dtype == pl.Boolean
    return _nested_needs_canonical(column.to_arrow(compat_level=pl.CompatLevel.oldest()))


def _nested_needs_canonical(values: "pa.Array") -> bool:
    import pyarrow as pa

    if values.null_count or pa.types.is_boolean(values.type):
        return True
    if pa.types.is_struct(values.type):
        return any(_nested_needs_canonical(child) for child in values.flatten())
    if _is_list(values.type):
        return _nested_needs_canonical(values.flatten())  # a list's elements; none under a null entry
    return False


def canonical_column(column: pl.Series) -> pl.Series:
    """`column` with a zero (an empty string, false) under every null, and no stray bits after the
    last row in its validity bitmap or, for booleans, its values' bitmap; a list or struct column
    likewise at every depth (`canonical_array`); categorical columns as they are.

    IPC writes these bytes as they are, and they were whatever the step left there
    (`when(...).then(x)` keeps x under the nulls, `lit(True)` sets every bit of its byte), while
    the same frame read back from its Parquet file has zeros: the hash of an artifact's files
    differed from its row's (every evaluation, champion and report), and the same rows made two
    ways could hash apart. Values and validity alone decide these bytes; a column already in this
    form (as read from Parquet) keeps its bytes, and so its hash."""
    dtype = column.dtype
    if dtype.is_temporal():  # dates and times are integers underneath
        return canonical_column(column.to_physical()).cast(dtype) if column.null_count() else column
    if not needs_canonical(column) or not (dtype.is_numeric() or dtype.is_nested() or
                                           dtype in (pl.String, pl.Boolean, pl.Binary)):
        return column
    canonical = canonical_array(column.to_arrow(compat_level=pl.CompatLevel.oldest()))
    return pl.Series(column.name, canonical, dtype=dtype)


def canonical_array(values: "pa.Array") -> "pa.Array":
    """`values` rebuilt from its values and validity alone: a zero under every null and no stray bitmap bits
    (`canonical_column`); a null list as an empty one (its elements under the null dropped), a null
    struct's or fixed-size list's fields null under it, then each element or field made canonical the same
    way. Types without a canonical form here (dictionaries) are returned as they are."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.type
    validity = _bitmap(values.is_valid()) if values.null_count else None
    if pa.types.is_struct(kind):  # flatten(): each field with the struct's nulls merged in
        children = [canonical_array(child) for child in values.flatten()]
        return pa.Array.from_buffers(kind, len(values), [validity], null_count=values.null_count, children=children)
    if pa.types.is_fixed_size_list(kind):
        size = kind.list_size
        elements = values.values.slice(values.offset * size, len(values) * size)
        if values.null_count:  # an element under a null entry is null too, as Parquet reads it back
            under = pa.array(np.repeat(values.is_valid().to_numpy(zero_copy_only=False), size))
            elements = pc.if_else(under, elements, pa.nulls(len(elements), type=elements.type))
        return pa.Array.from_buffers(kind, len(values), [validity], null_count=values.null_count,
                                     children=[canonical_array(elements)])
    if _is_list(kind):  # flatten(): the entries' elements in order, none under a null entry, past the array's offset
        lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64 if pa.types.is_large_list(kind) else np.int32)
        return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(offsets.tobytes())],
                                     null_count=values.null_count, children=[canonical_array(values.flatten())])
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind)
            or pa.types.is_decimal(kind) or pa.types.is_boolean(kind) or kind in (pa.large_string(), pa.string(), pa.large_binary(), pa.binary())):
        return values
    if values.null_count == 0 and not pa.types.is_boolean(kind):
        return values
    zero = "" if pa.types.is_string(kind) or pa.types.is_large_string(kind) else \
        b"" if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) else False if pa.types.is_boolean(kind) else 0
    filled = pc.fill_null(values, pa.scalar(zero, type=kind)) if values.null_count else values
    if pa.types.is_boolean(kind):
        buffers = [_bitmap(filled)]
    else:
        if filled.offset:  # from_buffers below reads the buffers from their start
            filled = pa.concat_arrays([pa.array([], type=kind), filled])
        buffers = filled.buffers()[1:]
    return pa.Array.from_buffers(kind, len(values), [validity, *buffers], null_count=values.null_count)


def _bitmap(flags: "pa.Array") -> "pa.Buffer":
    """A bitmap of `flags` (booleans without nulls), with zeros after the last one."""
    import numpy as np
    import pyarrow as pa

    return pa.py_buffer(np.packbits(flags.to_numpy(zero_copy_only=False), bitorder="little").tobytes())


def _is_list(kind: "pa.DataType") -> bool:
    import pyarrow as pa

    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def tensor_bytes(tensors: dict[str, "torch.Tensor"]) -> bytes:
    """safetensors serialization of `tensors` (deterministic for equal content)."""
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def file_digest(path: Path, digest: "hashlib._Hash") -> int:
    """Feed the file's bytes to `digest` in chunks; return its size."""
    size = 0
    with Path(path).open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size


def tensor_file_shapes(path: Path) -> dict[str, list[int]]:
    """Each tensor's shape from a safetensors header (nothing else is read)."""
    with Path(path).open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}


def file_source(path: Path) -> SourceFile:
    """Hash a raw file in chunks and describe it."""
    digest = hashlib.sha256()
    size = file_digest(path, digest)
    return SourceFile(path=str(path), sha256=digest.hexdigest(), bytes=size)


def remove_staged(parent: Path, name: str) -> None:
    """Remove the directories `.<name>.*` under `parent`: the staged (or set-aside) copies of `name` that a
    killed writer left. Call it only under the writers' lock of `name`, where no live writer stages one;
    files (the lock `.<name>.lock` itself) stay."""
    for leftover in parent.glob(f".{name}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def publish_directory(staging: Path, target: Path, *, complete: str) -> None:
    """Rename the filled `staging` directory to `target`, whose file `complete` marks it whole.

    Content-addressed targets are the same bytes whoever writes them, and two runs side by side
    (two CLI commands, the automation beside a CLI run) write the same one at the same time:
    when another writer's complete copy is already there (or lands first), ours is dropped and
    theirs is never touched. Removing it to put ours in its place (what this did) pulled the
    directory from under the other run, which then failed (FileNotFoundError), or made our
    rename fail (directory not empty). Only a target without `complete` (written by no whole
    run) is moved aside and removed.
    """
    if target.exists() and not (target / complete).is_file():
        broken = target.with_name(f".{target.name}.broken.{uuid.uuid4().hex}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(target, broken)
        shutil.rmtree(broken, ignore_errors=True)
    if (target / complete).is_file():
        shutil.rmtree(staging, ignore_errors=True)
        return
    try:
        os.replace(staging, target)
    except OSError:
        if not (target / complete).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another writer's complete copy landed first
