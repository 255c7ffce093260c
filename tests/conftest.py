"""Test session set-up: the thread environment before torch and polars load (models/runtime.py), and
state of the tests' own, so that `make test` after `make demo` or `dataset add` gives the same result.

The pipeline reads PAML_HOME when `pipelines` is imported (registered datasets become partitions), and
`make` exports PAML_HOME and DAGSTER_HOME for its commands: a dataset a user registered there would join
every partitioned test. The tests get an empty PAML_HOME instead, no DAGSTER_HOME (Dagster's ephemeral
instance; tests of the persistent one set their own), and no data directory or shard count from the shell.
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

import models  # noqa: E402, F401
