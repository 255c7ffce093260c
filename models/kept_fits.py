"""Where this process keeps the fold-ins' fitted item sides on disk, and how many it fitted, reused and loaded.

State that models/factors.py reads and updates (`remembered_fit`), in a module of its own so that a run's
resource (pipelines/resources.py) sets the directory and reads the counts without importing torch: a run
that never builds a network (the data steps, the logs) never loads it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

# Item sides fitted, reused from memory and loaded from disk by this process; models/factors.py updates
# them under its lock.
COUNTS = {"fitted": 0, "reused": 0, "loaded": 0}
_directory: list[Path | None] = [None]


def keep_fits_in(directory: Path | None) -> None:
    """Keep fitted item sides in `directory` as well (None: in this process only)."""
    _directory[0] = None if directory is None else Path(directory)


@contextlib.contextmanager
def fits_kept_in(directory: Path | None) -> Iterator[None]:
    """`keep_fits_in(directory)` for the block, then the directory that was set before."""
    previous = fits_directory()
    keep_fits_in(directory)
    try:
        yield
    finally:
        keep_fits_in(previous)


def fits_directory() -> Path | None:
    """Where fitted item sides are kept on disk (`keep_fits_in`), or None."""
    return _directory[0]


def fit_counts() -> dict[str, int]:
    """How many item sides this process fitted, reused from memory and loaded from disk."""
    return dict(COUNTS)
