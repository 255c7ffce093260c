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
