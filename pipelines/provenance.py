"""What a run computed with, recorded in the `runs` table: threads, device, kernels, versions, commit.

The same seed gives the same numbers only on the same kind of machine with the same torch
thread count (the summation order of parallel kernels changes with it), so every run records
what it had. Model bundles carry their own training facts (`info["runtime"]`: models/runtime.py
`runtime_info`, taken in the process each run trained in, and how many processes trained side
by side) and the settings file they used (`info["settings"]`); the store copies both into the
run's row.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("torch", "numpy", "scipy", "polars", "duckdb", "dagster", "optuna", "scikit-learn", "great-expectations")
# Columns added to `runs` (DuckDB types); older databases get them on their next write.
RUN_COLUMNS = {
    "torch_threads": "INTEGER", "device": "VARCHAR", "deterministic": "BOOLEAN", "versions": "VARCHAR",
    "git_commit": "VARCHAR", "machine": "VARCHAR", "settings": "VARCHAR", "wall_seconds": "DOUBLE",
}


@functools.cache
def library_versions() -> str:
    """Python and the main libraries' versions as JSON (from package metadata: nothing is imported)."""
    versions = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return json.dumps(versions, sort_keys=True)


@functools.cache
def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The checkout's commit, with '-dirty' when tracked files have changes; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


# Vector extensions that change which kernels run, and so the last digits of trained numbers: the
# same commit and locked versions gave other demo metrics on a Xeon with AVX-512 but without BF16
# than on the machines before it (docs/protocol.md, "determinism").
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "asimd", "sve")


def cpu_description(cpuinfo: str) -> str | None:
    """The first processor's model name and which VECTOR_FLAGS it has, from /proc/cpuinfo's text:
    'Intel(R) Xeon(R) Processor @ 2.00GHz (avx2 avx512f)'; None without a model name."""
    model, flags = None, None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:  # x86 says flags, ARM features
            flags = set(value.split())
    if not model:
        return None
    present = [flag for flag in VECTOR_FLAGS if flag in (flags or ())]
    return f"{model} ({' '.join(present)})" if present else model


@functools.cache
def machine() -> str:
    """'Linux x86_64, 2 CPUs, Intel(R) Xeon(R) Processor @ 2.00GHz (avx2 avx512f)'."""
    try:
        cpu = cpu_description(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:  # not Linux
        cpu = None
    cpu = cpu or platform.processor()
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs" + (f", {cpu}" if cpu else "")


def torch_facts() -> dict[str, Any]:
    """Threads and the deterministic-kernel flag of this process (without importing torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    return {"torch_threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled()}


def run_facts(info: dict[str, Any]) -> dict[str, Any]:
    """The `runs` columns one write contributes: process facts, then a model bundle's own."""
    facts: dict[str, Any] = {"versions": library_versions(), "git_commit": git_commit(), "machine": machine(), **torch_facts()}
    runtime = info.get("runtime") or {}
    if runtime:
        facts.update(torch_threads=runtime.get("threads"), deterministic=runtime.get("deterministic"), device=runtime.get("device"))
    settings, dataset = info.get("settings"), info.get("dataset")
    if settings is not None and dataset and info.get("method"):
        facts["settings"] = {f"{dataset}/{info['method']}": settings}
    elif isinstance(settings, dict) and dataset and info.get("protocol") == "production":
        # The production step trains every method in one bundle ({method: settings}); its models may read
        # another settings file than the paper protocol's (models/settings.py `chosen_settings`).
        facts["settings"] = {f"{dataset}/{method} (production)": value for method, value in settings.items()}
    return facts
