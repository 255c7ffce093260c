"""How many threads this process computes with: one setting, PAML_THREADS, for torch and polars.

Default: the cores the process may run on (its CPU affinity, not the machine's core count:
a container or `taskset` may allow fewer). torch gets it for intra- and inter-op work,
polars for its thread pool. Both read part of their setup from the environment when their
libraries load, so `configure_environment` runs before either is imported (from
models/__init__.py, which every entry point imports first: the CLI, Dagster's definitions,
the benchmarks, torchrun's `models.distributed`); torch's thread count is applied where its
work starts (`apply_torch_threads`, called by training and evaluation; `pin_threads` also
sets PAML_THREADS for a `--threads` given on a command line). `runtime_info` is what a run
records.

Why it matters: on a machine shared with other work, torch's OpenMP threads spin while they
wait for each other and steal the cores the working thread needs. Measured on the 2-core
machine with other jobs running: 2-thread REG-PAML training ran at 3 users/s with OpenMP's
default wait (libgomp spins 300,000 times before it sleeps) and at 110-190 users/s with the
passive one (1 thread: 40-50). Never spinning costs much on an idle machine: a thread then
sleeps, and is woken through the kernel, between any two parallel regions (MeLU, 2 threads:
640 users/s). A short spin (GOMP_SPINCOUNT=1000, a few microseconds) keeps both: 1015 users/s
idle, and the passive policy's speed within 16% with 3 or 8 busy processes on the 2 cores
(`benchmarks/threads.py`, docs/benchmarks.md). That is the default here (with KMP_BLOCKTIME=0
for LLVM's OpenMP, which has no spin count: passive there); a user who shares the cores can
also lower PAML_THREADS in one place.
"""

from __future__ import annotations

import argparse
import os
from typing import Mapping, MutableMapping

THREADS_ENV = "PAML_THREADS"
# The largest seed every entry point accepts: numpy's SeedSequence takes no negative seed and
# torch.manual_seed none past 2**64; 2**32 - 1 is the classic bound, far above any we use.
SEED_MAX = 2**32 - 1
SPIN_COUNT = "1000"  # libgomp's busy-wait iterations before a waiting thread sleeps
SHORT_SPIN = {"GOMP_SPINCOUNT": SPIN_COUNT, "KMP_BLOCKTIME": "0"}  # the OpenMP wait set here by default
OPENMP_WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # what decides how OpenMP waits


class ThreadsSettingError(ValueError):
    """PAML_THREADS (or a --threads) is not a positive whole number (the CLI prints it in one line)."""


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity outside Linux
        return max(1, os.cpu_count() or 1)


def thread_count(environ: Mapping[str, str] | None = None) -> int:
    """PAML_THREADS as a positive integer, or the available cores when unset or empty."""
    environ = os.environ if environ is None else environ
    value = environ.get(THREADS_ENV, "").strip()
    if not value:
        return available_cores()
    try:
        threads = int(value)
    except ValueError:
        raise ThreadsSettingError(f"{THREADS_ENV}={value!r} is not a whole number of threads (e.g. {THREADS_ENV}=2)") from None
    if threads < 1:
        raise ThreadsSettingError(f"{THREADS_ENV}={value!r} must be at least 1")
    return threads


def configure_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Environment read by libraries when they load: polars' pool size, OpenMP's wait policy.

    Takes effect for a library not imported yet; values already set win (whoever set
    POLARS_MAX_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME meant it). A malformed
    PAML_THREADS is left for `thread_count` to report where the threads are applied.
    """
    environ = os.environ if environ is None else environ
    try:
        threads = thread_count(environ)
    except ValueError:
        return
    environ.setdefault("POLARS_MAX_THREADS", str(threads))
    if "OMP_WAIT_POLICY" not in environ:
        # libgomp (torch's OpenMP on Linux) spins briefly, then sleeps (see the module's docstring).
        for key, value in SHORT_SPIN.items():
            environ.setdefault(key, value)


_applied: int | None = None  # the count this process applied last (None: not yet)


def apply_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op (and, while still possible, inter-op) threads; return the intra-op count.

    `threads=None` applies PAML_THREADS the first time and keeps whatever was applied since
    (a training run that chose its own count keeps it through its evaluations). torch allows
    setting the inter-op pool only before its first inter-op work; later calls keep that pool.
    """
    import torch

    global _applied
    if threads is None and _applied is not None:
        return _applied
    threads = threads or thread_count()
    _applied = threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass  # already started: torch keeps the pool it has
    return threads


def pin_threads(threads: int | None = None) -> int:
    """Compute with `threads` in this process and in the processes it starts; return the count.

    `threads` becomes PAML_THREADS (which child processes, `plan` in models/parallel.py and
    training read) and torch's count here; None keeps PAML_THREADS as set (else the available
    cores). Polars' pool in this process was sized when it loaded: only new processes get it.
    Used by the CLI's `--threads` and by each tuning worker (models/search.py).
    """
    if threads is not None:
        if threads < 1:
            raise ThreadsSettingError(f"threads must be at least 1, got {threads}")
        os.environ[THREADS_ENV] = str(threads)
    return apply_torch_threads(threads)


def openmp_wait(environ: Mapping[str, str] | None = None) -> str:
    """The OpenMP wait settings of this process's environment (they decide speed, never the numbers)."""
    environ = os.environ if environ is None else environ
    return ", ".join(f"{k}={environ[k]}" for k in OPENMP_WAIT_KEYS if k in environ) or "the libraries' defaults"


def runtime_info(device: str) -> dict:
    """Threads, device and determinism of this process (and its OpenMP wait), to record with a run."""
    import torch

    info = {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "device": device, "deterministic": torch.are_deterministic_algorithms_enabled(),
            "torch": torch.__version__, "openmp_wait": openmp_wait()}
    return info


def seed_argument(text: str) -> int:
    """A seed given on a command line (`type=` of argparse), refused in one line (status 2) outside 0..SEED_MAX."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: not an integer") from None
    if not 0 <= seed <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed {seed} out of range 0..{SEED_MAX}")
    return seed


TRAINING_DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"  # what TrainConfig.device takes ('auto' is resolved before it)


def device_argument(text: str) -> str:
    """A training device given on a command line (`tune --device`), refused in one line (status 2) unless
    'cpu', 'cuda' or 'cuda:N' with such a GPU visible: `--device gpu` or a GPU the machine lacks failed in
    every search worker, after the tasks were exported, with the workers' tracebacks."""
    import re

    if not re.fullmatch(TRAINING_DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(f"invalid device {text!r}: give cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        import torch

        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"device {text}: this machine has {torch.cuda.device_count()} visible CUDA "
                                             "GPU(s); use cpu")
    return text
