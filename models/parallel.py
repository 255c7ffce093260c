"""Independent training runs (a method's seeds, the gamma ablation's variants) side by side.

One meta-batch of 32 small tasks leaves a GPU mostly idle: its time goes to launching small
kernels, one after another, from one Python thread. Runs that do not depend on each other go
to separate processes instead (each with its own CUDA context on the same device, or its
share of the CPU threads), so their kernels interleave and the device fills. This works for
every method as it is, AT-PAML's user memory included: each process trains exactly what
`train` trains in one process, so a run's numbers do not depend on how many ran beside it
(for the same device and thread count).

On CPU runs stay in-process unless there are spare cores: `plan` gives each process at least
CPU_THREADS_PER_RUN threads. Two runs side by side with one thread each (`processes: 2` on
two cores) train more users per second in all (REG-PAML 2,341 against 1,634 for one run
with two threads, docs/benchmarks.md), each giving one thread's numbers (a run's numbers
depend on its thread count, which it records).
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import queue as queue_module
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from models.factors import fits_directory, keep_fits_in
from models.learners import LearnerConfig
from models.runtime import apply_torch_threads, available_cores, runtime_info, thread_count
from models.tasks import TaskData
from models.training import EpochLog, Predictions, TrainConfig, eval_batch_size, predict_split, train

CPU_THREADS_PER_RUN = 2  # on CPU, a run in its own process gets at least this many threads


@dataclass(frozen=True)
class TrainJob:
    """One training run: the method, its settings, and the splits to score afterwards."""

    method: str
    learner_config: LearnerConfig
    train_config: TrainConfig
    score_splits: tuple[str, ...] = ()  # e.g. ("test",): predictions made in the run's own process
    diagnostics: bool = False  # predictions carry the personalization diagnostics (predict_split)


@dataclass
class JobResult:
    """What a run sends back: the selected state dict (on CPU), its history and predictions."""

    state: dict[str, object]
    history: list[EpochLog]
    best_epoch: float
    best_val_loss: float
    best_step: int
    stopped: str
    seconds: float  # the run's wall time in its process (training and scoring)
    predictions: dict[str, Predictions] = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)  # threads, device, determinism (models/runtime.py), processes
    warning: str = ""  # TrainResult.warning: the run diverged, or no validation scoring was finite


def plan(jobs: int, device: str, processes: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """(processes, threads per process) for `jobs` runs on `device` within `threads` (PAML_THREADS).

    `processes=None` chooses: on a GPU one process per run up to the available cores (each
    needs a core to launch its kernels); on CPU as many as leave CPU_THREADS_PER_RUN threads
    to each. 1 = every run in this process, one after the other.
    """
    threads = threads or thread_count()
    if processes is None:
        if device.startswith("cuda"):
            processes = min(jobs, available_cores())
        else:
            processes = min(jobs, max(1, threads // CPU_THREADS_PER_RUN))
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    processes = max(1, min(processes, jobs))
    return processes, max(1, threads // processes)


def run_job(data: TaskData, job: TrainJob, on_epoch: Callable[[EpochLog], None] = lambda log: None) -> JobResult:
    """Train one job here, then score its `score_splits`; tensors come back on CPU."""
    start = time.perf_counter()
    result = train(job.method, data, job.learner_config, job.train_config, on_epoch=on_epoch)
    predictions = {split: predict_split(result.learner, data, split, eval_batch_size(job.train_config), job.diagnostics)
                   for split in job.score_splits}
    state = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in result.learner.state_dict().items()}
    return JobResult(state, result.history, result.best_epoch, result.best_val_loss, result.best_step, result.stopped,
                     time.perf_counter() - start, predictions, {**runtime_info(job.train_config.device), "processes": 1},
                     result.warning)


def run_jobs(data: TaskData, jobs: list[TrainJob], processes: int | None = None, threads: int | None = None,
             on_epoch: Callable[[int, EpochLog], None] = lambda index, log: None,
             on_result: Callable[[int, JobResult], None] = lambda index, result: None) -> list[JobResult]:
    """Run `jobs` (results in the same order), in parallel processes where `plan` says so.

    `on_epoch(job index, log)` is called in this process for every evaluation of every run,
    `on_result(job index, result)` as each run finishes. A failing run raises here, naming it.
    """
    if not jobs:
        return []
    device = jobs[0].train_config.device
    processes, per_process = plan(len(jobs), device, processes, threads)
    if processes == 1:
        apply_torch_threads(threads)
        results = []
        for index, job in enumerate(jobs):
            try:
                results.append(run_job(data, job, lambda log, i=index: on_epoch(i, log)))
            except Exception as error:
                raise _failed(index, job, error) from error
            on_result(index, results[-1])
        return results
    # spawn, not fork: the parent may hold a CUDA context, OpenMP threads or Dagster's threads.
    context = multiprocessing.get_context("spawn")
    progress = context.Queue()
    results: list[JobResult | None] = [None] * len(jobs)
    with futures.ProcessPoolExecutor(processes, mp_context=context, initializer=_init_worker,
                                     initargs=(data, per_process, progress, fits_directory())) as pool:
        pending = {pool.submit(_worker_run, index, job): index for index, job in enumerate(jobs)}
        while pending:
            done, _ = futures.wait(pending, timeout=0.5, return_when=futures.FIRST_COMPLETED)
            _drain(progress, on_epoch)
            for future in done:
                index = pending.pop(future)
                try:
                    results[index] = future.result()
                except Exception as error:
                    raise _failed(index, jobs[index], error) from error
                results[index].runtime["processes"] = processes
                on_result(index, results[index])
    _drain(progress, on_epoch)  # the workers have exited: everything they sent has arrived
    return results


def _failed(index: int, job: TrainJob, error: Exception) -> RuntimeError:
    return RuntimeError(f"training run {index} ({job.method}, seed {job.train_config.seed}) failed: "
                        f"{type(error).__name__}: {error}")


def _drain(progress, on_epoch: Callable[[int, EpochLog], None]) -> None:
    while True:
        try:
            index, log = progress.get_nowait()
        except queue_module.Empty:
            return
        on_epoch(index, log)


_WORKER: dict = {}


def _init_worker(data: TaskData, threads: int, progress, fits: Path | None) -> None:
    apply_torch_threads(threads)
    keep_fits_in(fits)  # a spawned worker reads the fold-ins' tables the parent or another worker stored
    _WORKER.update(data=data, progress=progress)


def _worker_run(index: int, job: TrainJob) -> JobResult:
    progress = _WORKER["progress"]
    return run_job(_WORKER["data"], job, lambda log: progress.put((index, log)))
