"""The value every pipeline asset returns: named frames, tensors and small JSON facts.

A `Bundle` is what the lineage IO manager stores (frames as Parquet, tensors as one
safetensors file, `info` as JSON) and what its content hash is computed over. The hash
depends on the logical content only, so a rerun on the same input gives the same hash.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:  # torch is imported lazily: Dagster loads this module at start-up
    import torch

HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """A raw input file the pipeline read, identified by its content."""

    path: str
    sha256: str
    bytes: int


@dataclass
class Bundle:
    """Named frames, tensors and JSON facts produced by one asset for one partition."""

    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    tensors: dict[str, "torch.Tensor"] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    sources: tuple[SourceFile, ...] = ()
    # Stored artifacts this bundle was computed from that did not arrive as step inputs (a
    # model in service loaded by its id); lineage records them. Not part of the content.
    inputs: tuple[str, ...] = field(default=(), compare=False)
    # Set by the store on a loaded bundle: the artifact it was read from. Not part of the content.
    artifact_id: str | None = field(default=None, compare=False, repr=False)
    # Bundles are not mutated after construction, so the hash is computed once.
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    def frame(self, name: str) -> pl.DataFrame:
        """Return frame `name`, or raise naming the frames this bundle has."""
        if name not in self.frames:
            raise KeyError(f"bundle has no frame {name!r}; it has {sorted(self.frames)}")
        return self.frames[name]

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
        if self.tensors:
            digest.update(b"tensors\n")
            digest.update(tensor_bytes(self.tensors))
        digest.update(json.dumps(self.info, sort_keys=True, default=str).encode())
        for source in sorted(self.sources, key=lambda s: s.path):
            digest.update(f"source:{Path(source.path).name}:{source.sha256}\n".encode())
        return digest.hexdigest()

    def row_count(self) -> int:
        """Total rows over all frames (tensors count by their first dimension)."""
        return sum(f.height for f in self.frames.values()) + sum(
            int(t.shape[0]) if t.dim() else 1 for t in self.tensors.values()
        )


def frame_bytes(frame: pl.DataFrame) -> bytes:
    """Uncompressed Arrow IPC bytes of `frame`: a stable serialization for hashing."""
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return buffer.getvalue()


def tensor_bytes(tensors: dict[str, "torch.Tensor"]) -> bytes:
    """safetensors serialization of `tensors` (deterministic for equal content)."""
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def file_source(path: Path) -> SourceFile:
    """Hash a raw file in chunks and describe it."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return SourceFile(path=str(path), sha256=digest.hexdigest(), bytes=size)
