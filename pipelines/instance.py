"""The persistent Dagster instance inside PAML_HOME, so CLI runs show up in `dagster dev`."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.resources import default_home

DAGSTER_YAML = """\
# Written by the PAML pipeline: a persistent local instance, telemetry off.
telemetry:
  enabled: false
"""


def ensure_dagster_home(home: Path | None = None) -> Path:
    """Create `<home>/dagster/dagster.yaml` if missing and point DAGSTER_HOME at it."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or (home or default_home()) / "dagster")
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.is_file():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home
