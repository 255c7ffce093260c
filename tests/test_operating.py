"""How users operate the pipeline, beyond the happy path: commands on a home with nothing built,
killed processes, runs side by side. Real DuckDB, real Dagster runs."""

import dagster as dg
import polars as pl

from assets.bundle import Bundle
from pipelines.definitions import ASSETS, CHECKS, build_resources
from pipelines.store import LineageStore


def test_an_evaluation_with_no_model_in_service_succeeds_and_names_none(tmp_path):
    # docs/operations.md: "any evaluation materializes on its own ... names the datasets without
    # one". On a home where nothing was trained it used to fail in DuckDB with a traceback
    # ("Provided table/dataframe must have at least one column").
    home = tmp_path / "home"
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS + CHECKS, selection=["reg_paml_eval"], instance=instance,
                                resources=build_resources(home, tmp_path / "no-data"))
    assert result.success
    store = LineageStore(home)
    assert store.query("SELECT asset_key FROM artifacts")["asset_key"].to_list() == ["reg_paml_eval"]


def test_a_mirror_with_no_rows_leaves_none_of_the_assets_older_rows(tmp_path):
    store = LineageStore(tmp_path)
    rows = pl.DataFrame({"dataset": ["taobao"], "metric": ["nel"], "value": [0.9]})
    for run, frame in (("r1", rows), ("r2", pl.DataFrame())):
        store.record(Bundle(frames={"metrics": frame}), run_id=run, job_name="j", asset_key="melu_eval", partition="",
                     code_version="1", inputs=[], mirrors={"metrics": frame}, appends={"metrics_history": frame})
    assert store.query("SELECT count(*) FROM metrics").item() == 0
    assert store.query("SELECT count(*) FROM metrics_history").item() == 1  # a history keeps what was recorded
