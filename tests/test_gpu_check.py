"""The GPU check's per-run row: metrics and personalization diagnostics from a run's test predictions."""

import math

import numpy as np
import pytest

from benchmarks.gpu_check import describe, diagnostic
from models.parallel import JobResult
from models.training import EpochLog, Predictions


def test_a_runs_row_holds_its_diagnostics_and_selected_validation_loss():
    # Two test users, rates 1 and 3 (mean 2, sd 1 -> cv 0.5); losses 2 -> 1 and 1 -> 1 (gain 0.5 on average).
    pred = np.array([[3.0, 4.0], [5.0, 0.0]])
    target = np.array([[4.0, 4.0], [5.0, 0.0]])
    mask = np.array([[True, True], [True, False]])
    test = Predictions(pred=pred, target=target, mask=mask, lr_per_user=np.array([1.0, 3.0]), query_loss=np.array([1.0, 1.0]),
                       query_loss_unadapted=np.array([2.0, 1.0]), nearest_weight=np.array([0.5, np.nan]),
                       attention_entropy=np.array([1.0, np.nan]), unknown_fields=np.array([0.0, 1.0]))
    history = [EpochLog(0.0, math.nan, 0.9, 0.0, 0.0, step=0), EpochLog(1.0, 0.8, 0.85, 1.0, 100.0, step=10)]
    result = JobResult(state={}, history=history, best_epoch=1.0, best_val_loss=0.85, best_step=10, stopped="max_steps",
                       seconds=2.0, predictions={"test": test})
    row = describe({"method": "paml", "seed": 0}, result)
    assert row["lr_cv"] == pytest.approx(0.5) and row["adaptation_gain"] == pytest.approx(0.5)
    assert row["nearest_weight"] == pytest.approx(0.5) and row["best_val_loss"] == pytest.approx(0.85)
    assert row["first_val_loss"] == pytest.approx(0.85)  # the first scoring after training, not the untrained start
    # Per-user MSE: user 0 (1 + 0) / 2 = 0.5, user 1 0 -> mean 0.25.
    assert row["mse"] == pytest.approx(0.25)
    assert diagnostic([row, {"lr_cv": None}], "lr_cv") == "0.500" and diagnostic([{"lr_cv": None}], "lr_cv") == "-"


def test_the_fold_in_tables_are_fitted_once_per_network_setting_into_the_fits_directory(tmp_path):
    from benchmarks.gpu_check import prefit
    from models.factors import fit_counts, fits_kept_in, forget_fits
    from models.learners import LearnerConfig
    from models.training import TrainConfig
    from tests.model_fixtures import FOLDINS, tiny_task_data

    data, train = tiny_task_data(users=20), TrainConfig(device="cpu")
    runs = [({"method": m}, LearnerConfig(network=FOLDINS), train) for m in ("melu", "reg_paml", "paml")]
    forget_fits()
    with fits_kept_in(tmp_path):
        prefit(data, runs)
        assert fit_counts()["fitted"] == 2  # the MF factors and the kNN lists: one setting for the three runs
        assert len(list(tmp_path.glob("*.safetensors"))) == 2  # where the runs' processes read them
        forget_fits()  # as a fresh worker process
        prefit(data, runs)
        assert fit_counts() == {"fitted": 0, "reused": 0, "loaded": 2}
    forget_fits()


def test_the_per_user_predictions_come_back_as_one_file(tmp_path):
    import tarfile

    from benchmarks.gpu_check import pack_users

    (tmp_path / "users").mkdir()
    for run in ("melu_seed0", "paml_seed1"):
        np.savez_compressed(tmp_path / "users" / f"{run}.npz", pred=np.arange(3.0))
    pack_users(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.tar"]
    with tarfile.open(tmp_path / "users.tar") as archive:
        assert archive.getnames() == ["users/melu_seed0.npz", "users/paml_seed1.npz"]
        assert np.load(archive.extractfile("users/paml_seed1.npz"))["pred"].tolist() == [0.0, 1.0, 2.0]
