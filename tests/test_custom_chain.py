"""Your own data end to end: three datasets described by spec files (an ML-100K-style directory, a
click CSV with a user table, and an ML-25M-style log without user features or [groups]), added with
the CLI, then the whole chain in real Dagster runs.

`dataset add` runs in this process. The jobs run in a new process, as they do for a user: the
dataset partitions are read from PAML_HOME/datasets when the pipeline is loaded
(pipelines/partitions.py), so a process that loaded it before the `add` does not see them.
"""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from models.learners import METHODS
from pipelines import cli
from pipelines.store import LineageStore
from tests.fixtures import clicks_dir, ml25m_dir, ml100k_dir

pytestmark = pytest.mark.heavy  # long: handed out first when the tests run in parallel (tests/conftest.py)

REPO = Path(__file__).resolve().parent.parent
CHAIN = """
from pipelines.cli import run_job, training_config
config = training_config(epochs=1, seeds=[0], max_steps=2, eval_every=2)
config["ops"]["reg_paml_gamma_ablation"]["config"]["gammas"] = [1e-3]
for dataset in ("ml100k", "shop_clicks", "ml25m"):
    run_job("data_job", dataset)
    run_job("training_job", dataset, config)
run_job("evaluation_job")
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    home = root / "home"
    ml = ml100k_dir(root, n_users=40, n_items=30)
    with (ml / "u.user").open("a", encoding="latin-1") as users:
        users.write("41|99|F|writer|55100\n")  # older than the spec's max age 73
    with (ml / "u.data").open("a", encoding="latin-1") as ratings:
        ratings.write("1\t2\t7\t875000000\n")  # outside the rating range 1..5
    shop = clicks_dir(root, n_users=40, n_items=24)
    no_features = ml25m_dir(root, n_users=40, n_items=24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAML_HOME", str(home))
        for directory in (ml, shop, no_features):
            assert cli.main(["dataset", "add", str(directory)]) == 0
    env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "PAML_DATA_DIR": str(root / "none"),
           "PAML_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHAIN], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return home


def test_both_specs_get_the_whole_chain(chain):
    store = LineageStore(chain, read_only=True)
    metrics = store.query("SELECT dataset, method, metric, value FROM metrics WHERE protocol = 'paper' AND population = 'all'")
    for dataset, metric in (("ml100k", "mse"), ("shop_clicks", "auc")):
        rows = metrics.filter((pl.col("dataset") == dataset) & (pl.col("metric") == metric))
        assert set(METHODS) <= set(rows["method"]), (dataset, rows)
        assert rows["value"].is_finite().all()
    groups = store.query("SELECT DISTINCT dataset, \"group\" FROM user_metrics WHERE method = 'reg_paml'")
    assert set(groups["dataset"]) == {"ml100k", "shop_clicks", "ml25m"}
    report = (chain / "reports" / "report.md").read_text()
    assert "ml100k" in report and "shop_clicks" in report and "dataset.yaml" in report  # the spec is a raw source


def test_quarantine_and_spec_expectations_in_real_runs(chain):
    store = LineageStore(chain, read_only=True)
    rejected = store.query("SELECT dataset, source_file, line, reason, value FROM rejected_rows WHERE dataset = 'ml100k'")
    assert ("ml100k", "ml100k/u.user", 41, "age outside [7, 73]", "99") in rejected.rows()
    assert ("ml100k", "ml100k/u.data", rejected.filter(pl.col("value") == "7")["line"].item(), "label outside {1..5}", "7") \
        in rejected.rows()
    checks = store.query("SELECT partition, count(*) AS n, bool_and(success) AS ok FROM checks "
                         "WHERE asset_key = 'clean_logs' GROUP BY partition ORDER BY partition")
    assert checks.rows() == [("ml100k", checks["n"][0], True), ("ml25m", checks["n"][1], True),
                             ("shop_clicks", checks["n"][2], True)]


def test_a_log_without_user_features_trains_and_is_evaluated_without_groups(chain):
    store = LineageStore(chain, read_only=True)
    metrics = store.query("SELECT method, population, value FROM metrics WHERE dataset = 'ml25m' AND protocol = 'paper' "
                          "AND metric = 'mse'")
    assert set(METHODS) <= set(metrics.filter(pl.col("population") == "all")["method"])
    assert metrics.filter(pl.col("population") == "all")["value"].is_finite().all()
    # No user can be major without group features: every test user is minor, and the report says why Table 3's
    # major column is empty instead of saying the dataset's groups are not built.
    groups = store.query("SELECT DISTINCT \"group\" FROM user_metrics WHERE dataset = 'ml25m'")
    assert groups["group"].to_list() == ["minor"]
    report = (chain / "reports" / "report.md").read_text()
    assert "No user groups for ml25m" not in report
    assert "no major test users (the major/minor rule tags every test user minor)" in report
