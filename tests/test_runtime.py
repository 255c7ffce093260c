"""PAML_THREADS (one setting for torch and polars) and runs side by side in processes."""

import logging
import os

import numpy as np
import pytest
import torch

from models.factors import keep_fits_in
from models.parallel import TrainJob, plan, run_jobs
from models.runtime import (ThreadsSettingError, apply_torch_threads, available_cores, configure_environment, pin_threads,
                            openmp_wait, runtime_info, thread_count)
from models.training import TrainConfig, eval_batch_size, predict_split, train
from pipelines.progress import AssetMessages, ProgressFormatter
from tests.model_fixtures import tiny_task_data
from tests.test_learners import CONFIG


def test_thread_count_reads_paml_threads():
    assert thread_count({}) == available_cores() == len(os.sched_getaffinity(0))
    assert thread_count({"PAML_THREADS": " 3 "}) == 3
    with pytest.raises(ValueError, match="PAML_THREADS='two'"):
        thread_count({"PAML_THREADS": "two"})
    with pytest.raises(ValueError, match="at least 1"):
        thread_count({"PAML_THREADS": "0"})


def test_pin_threads_sets_paml_threads_and_a_bad_count_is_one_line(monkeypatch):
    from pipelines.cli import expected_failure

    before = torch.get_num_threads()
    monkeypatch.setenv("PAML_THREADS", str(before))
    try:
        assert pin_threads(1) == 1 and os.environ["PAML_THREADS"] == "1" and torch.get_num_threads() == 1
        assert thread_count() == 1  # what child processes and `plan` read
    finally:
        apply_torch_threads(before)
    monkeypatch.setenv("PAML_THREADS", "two")
    with pytest.raises(ThreadsSettingError) as error:
        thread_count()
    assert expected_failure(error.value).startswith("PAML_THREADS='two' is not a whole number")
    with pytest.raises(ThreadsSettingError, match="at least 1"):
        pin_threads(0)


def test_environment_defaults_do_not_override_the_user():
    environ = {"PAML_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    configure_environment(environ)
    assert environ == {"PAML_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE", "POLARS_MAX_THREADS": "3"}
    defaults = {"PAML_THREADS": "2"}
    configure_environment(defaults)  # a short spin, then sleep (models/runtime.py)
    assert defaults == {"PAML_THREADS": "2", "POLARS_MAX_THREADS": "2", "GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "0"}
    spin = {"GOMP_SPINCOUNT": "50"}
    configure_environment(spin)
    assert spin["GOMP_SPINCOUNT"] == "50" and spin["KMP_BLOCKTIME"] == "0"
    broken = {"PAML_THREADS": "x"}
    configure_environment(broken)  # left for thread_count to report where threads are applied
    assert broken == {"PAML_THREADS": "x"}


def test_the_openmp_wait_is_named_as_set():
    assert openmp_wait({"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "0", "OTHER": "1"}) == "GOMP_SPINCOUNT=1000, KMP_BLOCKTIME=0"
    assert openmp_wait({"OMP_WAIT_POLICY": "PASSIVE"}) == "OMP_WAIT_POLICY=PASSIVE"
    assert openmp_wait({}) == "the libraries' defaults"
    assert runtime_info("cpu")["openmp_wait"] == openmp_wait()  # recorded with every run


def test_this_process_was_configured_before_torch_loaded():
    # tests/conftest.py imports models first, as every entry point does.
    assert (os.environ.get("OMP_WAIT_POLICY") or os.environ["GOMP_SPINCOUNT"]) and os.environ["POLARS_MAX_THREADS"]


def test_apply_threads_keeps_a_chosen_count():
    before = torch.get_num_threads()
    try:
        assert apply_torch_threads(1) == 1 and torch.get_num_threads() == 1
        assert apply_torch_threads() == 1  # an unset count keeps what a run chose
        info = runtime_info("cpu")
        assert info["threads"] == 1 and info["device"] == "cpu" and info["deterministic"] in (True, False)
    finally:
        apply_torch_threads(before)


def test_evaluation_batches_by_device():
    assert eval_batch_size(TrainConfig()) == 256
    assert eval_batch_size(TrainConfig(device="cuda")) == 4096
    assert eval_batch_size(TrainConfig(device="cuda", eval_batch=64)) == 64


@pytest.mark.parametrize(("jobs", "device", "processes", "threads", "expected"), [
    (3, "cpu", None, 2, (1, 2)),  # two cores: one process, both threads (as fast, no start-up)
    (3, "cpu", None, 16, (3, 5)),
    (30, "cuda", None, 8, (min(30, available_cores()), max(1, 8 // min(30, available_cores())))),
    (3, "cpu", 5, 4, (3, 1)),  # never more processes than runs
])
def test_plan(jobs, device, processes, threads, expected):
    assert plan(jobs, device, processes, threads) == expected


def test_runs_in_processes_match_runs_in_this_process(tmp_path):
    data = tiny_task_data(users=12)
    config = TrainConfig(epochs=2, meta_batch=4, threads=1)
    jobs = [TrainJob(method, CONFIG, TrainConfig(**{**config.__dict__, "seed": seed}), ("test",))
            for method, seed in (("at_paml", 0), ("reg_paml", 1))]
    logs = []
    keep_fits_in(tmp_path / "fits")
    try:
        results = run_jobs(data, jobs, processes=2, threads=2, on_epoch=lambda index, log: logs.append((index, log.step)))
    finally:
        keep_fits_in(None)
    assert {index for index, _ in logs} == {0, 1}  # progress reached this process from both runs
    # the spawned workers kept the fold-ins' item sides where this process keeps them
    assert [p.name.split("-")[0] for p in (tmp_path / "fits").glob("*.safetensors")] == ["mf"]  # CONFIG: no kNN fold-in
    for job, result in zip(jobs, results):
        here = train(job.method, data, job.learner_config, job.train_config)
        expected = predict_split(here.learner, data, "test").pred
        np.testing.assert_allclose(result.predictions["test"].pred, expected, atol=1e-6)
        assert result.best_step == here.best_step and result.runtime["processes"] == 2
        assert result.runtime["threads"] == 1


def test_a_failing_run_is_named():
    data = tiny_task_data(users=12)
    bad = TrainJob("no_such_method", CONFIG, TrainConfig(epochs=1, meta_batch=4))
    with pytest.raises(RuntimeError, match="run 1 \\(no_such_method, seed 0\\)"):
        run_jobs(data, [TrainJob("melu", CONFIG, TrainConfig(epochs=1, meta_batch=4)), bad], processes=1)


def test_progress_lines_show_asset_messages_and_failures_only():
    def record(level, event=None, message="seed 0 step 100"):
        rec = logging.LogRecord("paml", level, __file__, 1, "long dagster line", None, None)
        rec.dagster_meta = {"orig_message": message, "step_key": "melu_model", "dagster_event": event}
        return rec

    keep = AssetMessages()
    assert keep.filter(record(logging.INFO)) and not keep.filter(record(logging.DEBUG, event=object()))
    assert keep.filter(record(logging.ERROR, event=object()))
    assert ProgressFormatter().format(record(logging.INFO)).endswith(" melu_model: seed 0 step 100")


def test_the_untrained_start_has_its_own_progress_line():
    from assets.method_assets import progress_line
    from models.training import EpochLog

    start = progress_line("seed 0", EpochLog(epoch=0.0, train_loss=float("nan"), val_loss=0.91234, seconds=0.0,
                                             users_per_second=0.0, step=0))
    assert start == "seed 0 start (untrained): validation loss 0.9123" and "nan" not in start
    later = progress_line("seed 0", EpochLog(epoch=0.5, train_loss=0.8, val_loss=0.85, seconds=1.0, users_per_second=120.0, step=50))
    assert later == "seed 0 step 50 (epoch 0.5): train loss 0.8000, validation loss 0.8500, 120 users/s"


def test_the_gamma_ablation_says_when_each_gamma_is_scored():
    import polars as pl

    from assets.bundle import Bundle
    from assets.gamma_ablation import AblationConfig, gamma_ablation
    from tests.test_tuning import tensors_of

    tensors, info = tensors_of(tiny_task_data(users=12))
    users = pl.DataFrame({"user_id": [f"t{i}" for i in range(12)], "user_row": list(range(12))})
    groups = pl.DataFrame({"user_id": users["user_id"], "group": ["major", "minor"] * 6, "true_group": [None] * 12},
                          schema_overrides={"true_group": pl.String})
    config = AblationConfig(max_steps=2, eval_every=1, seeds=[0, 1], embedding_dim=4, hidden=[8], device="cpu", processes=1)
    lines = []
    bundle = gamma_ablation(Bundle(frames={"users__test": users}, tensors=tensors, info=info), Bundle(frames={"groups": groups}),
                            config, [1e-4, 1e-2], "tiny", on_scored=lambda gamma, line: lines.append((gamma, line)))
    assert [gamma for gamma, _ in lines] == [1e-4, 1e-2]  # one line per gamma, as soon as it is scored
    for gamma, line in lines:
        assert line.startswith("scored 24 test users (all seeds) in ") and "tiny mse " in line  # 12 users x 2 seeds
        mse = bundle.frame("metrics").filter((pl.col("gamma") == gamma) & (pl.col("metric") == "mse") & (pl.col("population") == "all"))
        assert f"tiny mse {mse['value'].mean():.4f}" in line
