"""Dagster wiring of the PAML pipeline: `defs` is the one Definitions object.

`defs` is loaded on first access (PEP 562) so that asset modules can import the
shared partitions and resources from this package without an import cycle.
"""

from __future__ import annotations

from typing import Any

import models  # noqa: F401  (sets PAML_THREADS' environment before polars or torch load: models/runtime.py)


def __getattr__(name: str) -> Any:
    if name == "defs":
        from pipelines.definitions import defs

        return defs
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["defs"]
