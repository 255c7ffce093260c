"""The persistent Dagster instance inside PAML_HOME, so CLI runs show up in `dagster dev`."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.locations import default_home
from pipelines.storage_errors import ensure_directory

if TYPE_CHECKING:
    import dagster as dg

DAGSTER_YAML = """\
# Written by the PAML pipeline: a persistent local instance, telemetry off.
telemetry:
  enabled: false
"""


def ensure_dagster_home(home: Path | None = None) -> Path:
    """Create `<home>/dagster/dagster.yaml` if missing and point DAGSTER_HOME at it."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or (home or default_home()) / "dagster")
    ensure_directory(dagster_home)  # a PAML_HOME that is a file, or not writable: one line naming it
    config = dagster_home / "dagster.yaml"
    if not config.is_file():  # staged, then renamed: a process starting beside us never reads half of it
        # A random name, not the pid: two containers sharing the home may both run as pid 1.
        staging = config.with_name(f".dagster.yaml.{uuid.uuid4().hex}")
        staging.write_text(DAGSTER_YAML)
        os.replace(staging, config)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


@contextlib.contextmanager
def dagster_instance(home: Path | None = None) -> Iterator["dg.DagsterInstance"]:
    """The persistent instance of DAGSTER_HOME (made by ensure_dagster_home), opened while holding
    a lock file beside it: opening a new home's instance creates its SQLite tables, and two
    commands started together on a fresh home both created them and both failed with a
    traceback (sqlite3.OperationalError: table runs already exists)."""
    import dagster as dg

    from models.locks import file_lock

    dagster_home = ensure_dagster_home(home)
    with file_lock(dagster_home / ".instance.lock"):  # not on Unix: no lock (start the first command alone)
        instance = dg.DagsterInstance.get()
    with instance:
        yield instance


def tag_run_process(context: "dg.InitResourceContext") -> None:
    """Tag a run that has no process tag with this process (`pipelines.cli.PROCESS_TAG`), so that the next
    CLI command marks it failed if the process dies (kill -9, a closed terminal) and the automation plans
    its assets again. The CLI tags its own runs when it creates them; `dagster asset materialize` and
    `dg launch` do not, and such a killed run stayed STARTED for ever. Only where this process is the
    run's own: a step in a process of its own (the multiprocess executor's child) ends before its run does."""
    import multiprocessing

    from pipelines.cli import PROCESS_TAG, process_tag

    run, instance = context.dagster_run, context.instance
    own_process = multiprocessing.parent_process() is None and os.environ.get("PAML_EXECUTOR", "in_process") == "in_process"
    if run is None or instance is None or PROCESS_TAG in run.tags or not own_process:
        return
    instance.add_run_tags(run.run_id, {PROCESS_TAG: process_tag()})
