"""Test session set-up: the thread environment before torch and polars load (models/runtime.py), and
state of the tests' own, so that `make test` after `make demo` or `dataset add` gives the same result.

The pipeline reads PAML_HOME when `pipelines` is imported (registered datasets become partitions), and
`make` exports PAML_HOME and DAGSTER_HOME for its commands: a dataset a user registered there would join
every partitioned test. The tests get an empty PAML_HOME instead, no DAGSTER_HOME (Dagster's ephemeral
instance; tests of the persistent one set their own), and no data directory or shard count from the shell.

`make test` runs the tests in parallel (pytest-xdist, one worker per core, whole modules to a worker). Each
worker then computes with its share of the cores (PAML_THREADS, unless the shell set it): two workers of two
torch threads each on two cores would fight over them. Modules marked `heavy` (whole chains, subprocesses)
are handed out first, so that the workers end together instead of one finishing a long module alone.
"""

import atexit
import os
import shutil
import tempfile

_HOME = tempfile.mkdtemp(prefix="paml-tests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["PAML_HOME"] = _HOME
for _name in ("DAGSTER_HOME", "PAML_DATA_DIR", "PAML_SHARDS"):
    os.environ.pop(_name, None)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # as models.runtime
    os.environ.setdefault("PAML_THREADS", str(max(1, _cores // _WORKERS)))

import models  # noqa: E402, F401


def pytest_collection_modifyitems(config, items):
    """Tests of `heavy` modules first, each group in its collection order (with `--dist loadfile
    --no-loadscope-reorder`, xdist hands out modules in this order)."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
