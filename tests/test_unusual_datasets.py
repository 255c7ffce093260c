"""Valid but unusual datasets through the evaluation: a rating scale below 0 (Jester's -10..10)."""

import numpy as np
import polars as pl
import pytest

from assets.evaluation import aggregate, user_metrics_frame
from assets.method_assets import lowest_rating
from pipelines import cli
from tests.fixtures import ml25m_dir


def test_ndcg_grades_a_registered_scale_below_zero_from_its_bottom(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('name = "ml25m"', 'name = "jester"').replace("min = 0.5", "min = -10")
                    .replace("max = 5", "max = 10"))
    assert cli.main(["dataset", "add", str(directory)]) == 0
    assert (lowest_rating("jester"), lowest_rating("movielens"), lowest_rating("made_up")) == (-10.0, 1.0, 0.0)

    # Two test users who rated everything below 0: nDCG was undefined for both (ideal DCG < 0).
    pred, target = np.array([[0.9, 0.1], [0.1, 0.9]]), np.array([[-2.0, -9.5], [-2.0, -9.5]])
    mask = np.ones((2, 2), bool)
    users = pl.DataFrame({"user_id": ["a", "b"], "user_row": [0, 1]})
    groups = pl.DataFrame({"user_id": ["a", "b"], "group": ["minor", "major"], "true_group": ["minor", "major"]})
    frame = user_metrics_frame(users, groups, pred, target, mask, np.zeros(2), "rating", lowest_rating=lowest_rating("jester"))
    worst = (2 ** 0.5 - 1 + (2 ** 8 - 1) / np.log2(3)) / (2 ** 8 - 1 + (2 ** 0.5 - 1) / np.log2(3))  # grades 8, 0.5
    np.testing.assert_allclose(frame["ndcg@3"].to_numpy(), [1.0, worst], rtol=1e-12)
    rows = aggregate(pred, target, mask, np.array(["minor", "major"]), "rating", lowest_rating=-10.0)
    assert {r["population"]: r["value"] for r in rows if r["metric"] == "ndcg@3"} == pytest.approx(
        {"all": (1.0 + worst) / 2, "major": worst, "minor": 1.0}, rel=1e-12)


def test_table_cells_of_a_tiny_rating_scale_keep_three_significant_digits():
    from assets.report_tables import format_cell

    # A 0-0.005 scale's MSEs (about 7e-7) read 0.000 ± 0.000 in every row, the best one in bold.
    assert format_cell(7.02e-7, 1.5e-8, best=True) == "**7.02e-07 ± 1.5e-08**"
    assert format_cell(0.0516, 0.0021) == "0.0516 ± 0.0021"  # a 0-1 scale's MSE
    assert format_cell(0.000702, 0.00001) == "0.000702 ± 0.000010"
    # The built-in datasets' metrics (all at least 0.1) keep three decimals, the sd too.
    assert [format_cell(0.8131, 0.0004), format_cell(2.681, None), format_cell(0.0, 0.0)] == [
        "0.813 ± 0.000", "2.681", "0.000 ± 0.000"]
