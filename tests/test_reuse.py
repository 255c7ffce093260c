"""What a step reuses instead of recomputing: the fold-ins' item sides (fitted once per process
for the same rows and settings), and the reference rows' validation choice (`reference_settings`)."""

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from assets.method_assets import load_learner, variant_bundle
from models.factors import fit_counts, fit_item_factors, fit_item_neighbours, forget_fits, keep_fits_in
from models.learners import LearnerConfig
from models.network import PreferenceNetwork
from models.parallel import TrainJob, run_jobs
from models.references import BiasConfig, KNNConfig, MFConfig
from models.training import TrainConfig, predict_split
from tests.model_fixtures import FOLDINS, tiny_task_data



def test_a_loaded_model_predicts_as_trained_without_refitting_its_item_sides():
    forget_fits()
    data = tiny_task_data("ctr", users=20)
    config = LearnerConfig(network=FOLDINS)
    train_config = TrainConfig(max_steps=3, eval_every=1, device="cpu")
    [result] = run_jobs(data, [TrainJob("paml", config, train_config, score_splits=("test",))], processes=1)
    assert fit_counts() == {"fitted": 2, "reused": 0, "loaded": 0}  # the MF factors and the kNN lists, once each
    model, _ = variant_bundle("paml", config, train_config, [0], "tiny", [result])
    learner = load_learner(model, data, 0)
    assert fit_counts() == {"fitted": 2, "reused": 2, "loaded": 0}  # loading refits nothing
    reloaded = predict_split(learner, data, "test")
    assert np.array_equal(reloaded.pred, result.predictions["test"].pred)
    forget_fits()
    refitted = predict_split(load_learner(model, data, 0), data, "test")
    assert fit_counts() == {"fitted": 2, "reused": 0, "loaded": 0}  # refitted from scratch: the same tables
    assert np.array_equal(refitted.pred, reloaded.pred)


def test_remembered_item_sides_equal_a_fresh_fit_and_are_handed_out_as_copies():
    forget_fits()
    data = tiny_task_data(users=20)
    first = PreferenceNetwork(data, FOLDINS).embedder
    first.mf_factors.add_(1.0)  # load_state_dict writes buffers in place: the remembered fit must not change
    first.knn_value.zero_()
    second = PreferenceNetwork(data, FOLDINS).embedder
    assert fit_counts() == {"fitted": 2, "reused": 2, "loaded": 0}
    train, rows = data.splits["train"], int(data.items.fields.shape[0])
    bias = BiasConfig(FOLDINS.mf_item_shrinkage, FOLDINS.mf_user_shrinkage)
    fresh_mf = fit_item_factors([train], rows, MFConfig(rank=2, reg=3.0), bias, ("support", "query"), 2)
    fresh_knn = fit_item_neighbours([train], rows, KNNConfig(3, 5.0, 0.1), bias, 50, ("support", "query"), 2)
    assert torch.equal(second.mf_factors, fresh_mf.factors) and torch.equal(second.mf_item_bias, fresh_mf.item_bias)
    assert torch.equal(second.knn_value, fresh_knn.value) and torch.equal(second.knn_index, fresh_knn.index)


def test_other_ratings_or_settings_are_fitted_anew():
    forget_fits()
    data = tiny_task_data(users=20)
    PreferenceNetwork(data, FOLDINS)
    train = data.splits["train"]
    flipped = replace(train, support_labels=6.0 - train.support_labels)
    other = PreferenceNetwork(replace(data, splits={**data.splits, "train": flipped}), FOLDINS).embedder
    assert fit_counts() == {"fitted": 4, "reused": 0, "loaded": 0}
    PreferenceNetwork(data, replace(FOLDINS, knn_shrinkage=50.0))  # new kNN lists, the same MF factors
    assert fit_counts() == {"fitted": 5, "reused": 1, "loaded": 0}
    assert not torch.equal(other.mf_item_bias, PreferenceNetwork(data, FOLDINS).embedder.mf_item_bias)


def test_remembered_item_sides_are_bounded_by_size_oldest_dropped_first(monkeypatch):
    import models.factors as factors

    forget_fits()
    data = tiny_task_data(users=20)
    only_mf = replace(FOLDINS, knn_foldin=False)
    first = PreferenceNetwork(data, only_mf).embedder
    size = factors.table_bytes(factors.FactorTables(first.mf_mu, first.mf_item_bias, first.mf_factors))
    monkeypatch.setattr(factors, "REMEMBERED_BYTES", size)  # room for one fit
    PreferenceNetwork(data, replace(only_mf, mf_reg=30.0))  # the newest is kept, the first one dropped
    PreferenceNetwork(data, replace(only_mf, mf_reg=30.0))
    assert fit_counts() == {"fitted": 2, "reused": 1, "loaded": 0}
    PreferenceNetwork(data, only_mf)
    assert fit_counts() == {"fitted": 3, "reused": 1, "loaded": 0}


@pytest.fixture
def fits_on_disk(tmp_path):
    forget_fits()
    keep_fits_in(tmp_path / "fits")
    yield tmp_path / "fits"
    keep_fits_in(None)
    forget_fits()


def test_stored_item_sides_are_read_by_the_next_process_and_equal_a_fresh_fit(fits_on_disk):
    data = tiny_task_data(users=20)
    first = PreferenceNetwork(data, FOLDINS).embedder
    assert fit_counts() == {"fitted": 2, "reused": 0, "loaded": 0}
    assert sorted(p.name.split("-")[0] for p in fits_on_disk.glob("*.safetensors")) == ["knn", "mf"]
    forget_fits()  # a new process: nothing in memory
    second = PreferenceNetwork(data, FOLDINS).embedder
    assert fit_counts() == {"fitted": 0, "reused": 0, "loaded": 2}
    for name in ("mf_factors", "mf_item_bias", "mf_mu", "knn_mu", "knn_item_bias", "knn_index", "knn_value"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    PreferenceNetwork(data, FOLDINS)
    assert fit_counts() == {"fitted": 0, "reused": 2, "loaded": 2}  # then from memory


def test_other_settings_or_code_are_not_read_from_disk(fits_on_disk, monkeypatch):
    import models.factors as factors

    data = tiny_task_data(users=20)
    PreferenceNetwork(data, FOLDINS)
    forget_fits()
    PreferenceNetwork(data, replace(FOLDINS, knn_shrinkage=50.0))  # the stored MF factors, new kNN lists
    assert fit_counts() == {"fitted": 1, "reused": 0, "loaded": 1}
    forget_fits()
    monkeypatch.setattr(factors, "fit_code_version", lambda: "changed reference code")
    PreferenceNetwork(data, FOLDINS)
    assert fit_counts() == {"fitted": 2, "reused": 0, "loaded": 0}
    assert len(list(fits_on_disk.glob("*.safetensors"))) == 5


def test_an_unreadable_stored_fit_is_fitted_again_and_replaced(fits_on_disk):
    data = tiny_task_data(users=20)
    only_mf = replace(FOLDINS, knn_foldin=False)
    fitted = PreferenceNetwork(data, only_mf).embedder.mf_factors
    [stored] = fits_on_disk.glob("*.safetensors")
    stored.write_bytes(stored.read_bytes()[:40])  # cut short, as a disk full of someone else's files might
    forget_fits()
    again = PreferenceNetwork(data, only_mf).embedder.mf_factors
    assert fit_counts() == {"fitted": 1, "reused": 0, "loaded": 0}
    assert torch.equal(again, fitted)
    forget_fits()
    PreferenceNetwork(data, only_mf)
    assert fit_counts() == {"fitted": 0, "reused": 0, "loaded": 1}  # the rewritten file reads


def test_stored_fits_are_bounded_by_size_least_recently_used_removed_first(tmp_path):
    import models.factors as factors

    tables = [factors.FactorTables(torch.zeros(1), torch.full((1, 50), float(i)), torch.zeros(1, 50, 2)) for i in range(3)]
    paths = [tmp_path / f"mf-{i}.safetensors" for i in range(3)]
    factors.write_stored_fit(paths[0], tables[0])
    factors.write_stored_fit(paths[1], tables[1])
    one = paths[0].stat().st_size
    os.utime(paths[1], (1, 1))  # long unused
    assert factors.read_stored_fit(paths[0], factors.FactorTables) is not None  # used now
    factors.write_stored_fit(paths[2], tables[2], limit=2 * one)  # room for two: the least recently used goes
    assert [p.exists() for p in paths] == [True, False, True]
    assert torch.equal(factors.read_stored_fit(paths[2], factors.FactorTables).item_bias, tables[2].item_bias)
    factors.write_stored_fit(paths[1], tables[1], limit=0)  # the newest stays, whatever the limit
    assert [p.exists() for p in paths] == [False, True, False]


def test_a_killed_writers_partial_file_is_removed_after_an_hour(tmp_path):
    import models.factors as factors

    old, fresh = tmp_path / ".mf-a.safetensors.1.1.partial", tmp_path / ".mf-b.safetensors.2.2.partial"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    factors.write_stored_fit(tmp_path / "mf-c.safetensors", factors.FactorTables(torch.zeros(1), torch.zeros(1, 3), torch.zeros(1, 3, 2)))
    assert not old.exists() and fresh.exists()  # another writer may still be writing the fresh one


def _write_fit_killed_mid_write(directory: str) -> None:
    """In a child process: write a fit and die (SIGXFSZ, as kill -9) once the file passes 4 kB."""
    import resource
    import signal

    import models.factors as factors

    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; by default it kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    tables = factors.FactorTables(torch.zeros(1), torch.zeros(1, 10_000), torch.zeros(1, 10_000, 2))
    factors.write_stored_fit(Path(directory) / "mf-killed.safetensors", tables)


def test_a_writer_killed_mid_write_leaves_only_a_partial_file_that_the_sweep_removes(tmp_path):
    import multiprocessing
    import signal

    import models.factors as factors

    child = multiprocessing.get_context("spawn").Process(target=_write_fit_killed_mid_write, args=(str(tmp_path),))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGXFSZ  # killed while writing
    left = [p.name for p in tmp_path.iterdir()]
    # No fit under its final name, and nothing but a staging file the next writer removes once old
    # (safetensors' save_file stages its own '.tmpXXXXXX', which no sweep knew: 53 MB per kill on ML-1M).
    assert len(left) == 1 and left[0].startswith(".mf-killed.safetensors.") and left[0].endswith(".partial"), left
    os.utime(tmp_path / left[0], (time.time() - 7200, time.time() - 7200))
    factors.write_stored_fit(tmp_path / "mf-c.safetensors", factors.FactorTables(torch.zeros(1), torch.zeros(1, 3), torch.zeros(1, 3, 2)))
    assert [p.name for p in tmp_path.iterdir()] == ["mf-c.safetensors"]


def test_a_fits_directory_that_cannot_be_written_still_gives_the_fit(fits_on_disk, caplog):
    """A full disk (or a read-only directory) fails the write: the step keeps its freshly fitted
    tables, with a warning, and leaves nothing behind. Here the write fails as on a full disk:
    past the process's file size limit (EFBIG), which root is held to as well."""
    import resource

    data = tiny_task_data(users=20)
    only_mf = replace(FOLDINS, knn_foldin=False)
    expected = PreferenceNetwork(data, only_mf).embedder.mf_factors
    forget_fits()
    for stored in fits_on_disk.iterdir():
        stored.unlink()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
    try:
        fitted = PreferenceNetwork(data, only_mf).embedder.mf_factors
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert [r.levelname for r in caplog.records if "could not keep the fitted item side" in r.getMessage()] == ["WARNING"]
    assert torch.equal(fitted, expected)
    assert fit_counts() == {"fitted": 1, "reused": 0, "loaded": 0}
    assert [p.name for p in fits_on_disk.iterdir() if not p.name.endswith(".lock")] == []  # no fit, no partial file


def test_two_builds_needing_the_same_fit_at_once_fit_it_once(fits_on_disk):
    # flock is per open file, so two threads contend as two processes would (parallel training
    # workers, Dagster's multiprocess executor): the second waits for the first's fit and reads it.
    import threading

    from models.factors import FactorTables, remembered_fit

    calls = []

    def slow_fit() -> FactorTables:
        calls.append(1)
        time.sleep(1.0)
        return FactorTables(torch.zeros(1), torch.ones(1, 3), torch.zeros(1, 3, 2))

    key = ("mf", "a rows digest", 3, "settings")
    builds = [threading.Thread(target=remembered_fit, args=(key, slow_fit, FactorTables)) for _ in range(2)]
    builds[0].start()
    time.sleep(0.2)  # the first holds the lock and fits
    builds[1].start()
    for build in builds:
        build.join()
    assert len(calls) == 1
    assert fit_counts() == {"fitted": 1, "reused": 0, "loaded": 1}
