"""The Dagster executor, chosen by configuration alone (PAML_EXECUTOR).

| PAML_EXECUTOR | executor | needs |
|---|---|---|
| in_process (default) | every step in the run's process: fastest on small machines | nothing |
| multiprocess | one process per step, PAML_MAX_CONCURRENT at a time (default: CPU count) | nothing |
| celery | steps as Celery tasks on workers (`pip install -e '.[celery]'`) | a broker; dagster-postgres instance storage |
| k8s | one Kubernetes job per step (`pip install -e '.[k8s]'`) | a cluster; dagster-postgres instance storage |

Distributed executors need every worker to see the same PAML_HOME (a shared volume) and the
same DuckDB file; see docs/operations.md.
"""

from __future__ import annotations

import importlib
import os

import dagster as dg

EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")
EXTRAS = {"celery": ("dagster_celery", "celery_executor"), "k8s": ("dagster_k8s", "k8s_job_executor")}


def executor_from_env(environ: dict[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor PAML_EXECUTOR names, or an error naming the choices and the extra to install."""
    environ = os.environ if environ is None else environ
    name = environ.get("PAML_EXECUTOR", "in_process")
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        limit = int(environ.get("PAML_MAX_CONCURRENT", os.cpu_count() or 1))
        return dg.multiprocess_executor.configured({"max_concurrent": limit})
    if name in EXTRAS:
        module, attribute = EXTRAS[name]
        try:
            return getattr(importlib.import_module(module), attribute)
        except ImportError:
            raise RuntimeError(
                f"PAML_EXECUTOR={name} needs the optional extra: pip install -e '.[{name}]' "
                f"(module {module} is not installed)"
            ) from None
    raise ValueError(f"PAML_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)}")
