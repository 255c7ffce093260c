"""Where the pipeline reads raw data and keeps its state, set from the environment in one place.

No Dagster here: the CLI's quick commands (`sql`, `results`, `stats`, `--help`) read these paths, and
loading Dagster would take most of their time (1.7 s of 2.6 s for a `sql` on a 2 GHz core).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_home() -> Path:
    """PAML_HOME, or `.paml/` in the repository."""
    return Path(os.environ.get("PAML_HOME", REPO_ROOT / ".paml")).resolve()


def default_data_dir() -> Path:
    """PAML_DATA_DIR, or `<PAML_HOME>/data` (where nothing real lives until a user puts it there)."""
    return Path(os.environ.get("PAML_DATA_DIR", default_home() / "data")).resolve()


def default_shards() -> int:
    """PAML_SHARDS, or 0: taobao's log read, cleaned, split and encoded whole, in memory."""
    value = os.environ.get("PAML_SHARDS", "0").strip() or "0"
    if not value.isdigit():
        raise ValueError(f"PAML_SHARDS must be a whole number of user shards (0 = whole log in memory), got {value!r}")
    return int(value)
