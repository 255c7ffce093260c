"""The data chain through real Dagster runs, with lineage, rejected rows and checks in DuckDB."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from pipelines.definitions import ASSETS, CHECKS, DATA_ASSETS, build_resources, defs
from pipelines.lineage import ANCESTORS_SQL, LATEST_SQL
from pipelines.store import LineageStore, PartitionNotBuiltError
from tests.fixtures import good_ml_users, ml_ratings_for, movielens_dir

N_USERS = 40


@pytest.fixture(scope="module")
def ml_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    users = good_ml_users(N_USERS) + ["99::M::25::7::n/a"]  # no zip code
    ratings = []
    for user in range(1, N_USERS + 1):
        items = (1, 2, 3) if user % 3 else (1, 2)  # varying log counts for the Pareto cut
        ratings += ml_ratings_for(range(user, user + 1), items)
    return movielens_dir(root, users, ratings + ["99::1::4::978300000", "99::2::4::978300000"])


def run_chain(home: Path, data: Path, partition: str | None = "movielens", selection=None,
              instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS + CHECKS, selection=selection or DATA_ASSETS + CHECKS, partition_key=partition, resources=build_resources(home, data),
        instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, ml_data):
    home = tmp_path_factory.mktemp("home")
    result = run_chain(home, ml_data)
    return home, result


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} >= {
        "raw_logs", "clean_logs", "cold_start_users", "user_splits", "user_groups", "meta_tasks"}


def test_chain_writes_artifacts_runs_and_mirrors(built):
    home, result = built
    assert result.success
    store = LineageStore(home)
    artifacts = store.query("SELECT asset_key, run_id, n_rows, code_version FROM artifacts WHERE kind = 'bundle'")
    assert sorted(artifacts["asset_key"]) == sorted(a.key.to_user_string() for a in DATA_ASSETS)
    assert set(artifacts["run_id"]) == {result.run_id}
    declared = {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in DATA_ASSETS}
    assert dict(artifacts.select("asset_key", "code_version").iter_rows()) == declared
    assert store.query("SELECT n_artifacts FROM runs WHERE run_id = ?", [result.run_id]).item() == len(DATA_ASSETS)
    rejected = store.query("SELECT * FROM rejected_rows")
    assert rejected.filter(pl.col("reason") == "zip code missing")["record_id"].to_list() == ["99"]
    assert set(store.query("SELECT split FROM user_splits")["split"]) == {"train", "val", "test", "warm"}
    checks = store.query("SELECT success FROM checks WHERE run_id = ?", [result.run_id])
    assert checks.height >= 8 and checks["success"].all()


def test_lineage_walks_from_tasks_back_to_raw_files(built):
    home, _ = built
    store = LineageStore(home)
    tasks_id = store.query(LATEST_SQL, ["meta_tasks", "movielens"]).item()
    ancestors = store.query(ANCESTORS_SQL, [tasks_id])
    raw = ancestors.filter(pl.col("kind") == "raw_file")
    # The data files and the built-in spec that says how they are read (assets/builtin_specs/movielens.toml).
    assert sorted(Path(p).name for p in raw["location"]) == ["movielens.toml", "movies.dat", "movies_extrainfos.dat",
                                                             "ratings.dat", "users.dat"]
    assert set(ancestors["asset_key"]) >= {"meta_tasks", "user_splits", "cold_start_users", "clean_logs", "raw_logs"}
    # shortest path: meta_tasks <- clean_logs <- raw_logs <- files
    assert raw["depth"].to_list() == [3, 3, 3, 3, 3]
    assert ancestors.filter(pl.col("asset_key") == "cold_start_users")["depth"].item() == 2


def test_rerun_gives_same_content_hashes(built, ml_data, tmp_path):
    home, _ = built
    again = run_chain(tmp_path, ml_data)
    assert again.success
    first = LineageStore(home).query("SELECT asset_key, content_hash FROM artifacts WHERE kind='bundle' ORDER BY asset_key")
    second = LineageStore(tmp_path).query("SELECT asset_key, content_hash FROM artifacts WHERE kind='bundle' ORDER BY asset_key")
    assert first.equals(second)


def test_data_version_equals_duckdb_hash(built):
    home, result = built
    events = result.get_asset_materialization_events()
    versions = {e.asset_key.to_user_string(): e.materialization.tags["dagster/data_version"] for e in events}
    stored = dict(LineageStore(home).query("SELECT asset_key, content_hash FROM artifacts WHERE kind='bundle'").iter_rows())
    assert versions == stored


def test_never_built_partition_names_it_and_how_to_build(built, ml_data):
    home, _ = built
    from assets.meta_tasks import meta_tasks

    result = run_chain(home, ml_data, partition="bookcrossing", selection=[meta_tasks])
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    text = error.to_string()
    assert "PartitionNotBuiltError" in text or "never been built" in text
    assert "'clean_logs' partition 'bookcrossing' has never been built" in text
    assert "--partition bookcrossing" in text
    with pytest.raises(PartitionNotBuiltError):
        LineageStore(home).latest("meta_tasks", "taobao")


def test_expectations_fail_on_bad_rows():
    from assets.expectations import validate_clean_logs
    from assets.specs import SPECS

    users = pl.DataFrame({"user_id": ["1", "1"], "age": [30, 200], "city": ["a", "b"], "state": ["s", "s"], "country": ["c", ""]})
    interactions = pl.DataFrame({"user_id": ["1", "1", "2"], "item_id": ["x", "x", "y"], "label": [5.0, 11.0, 3.0]})
    failed = {(o.suite, o.expectation, o.column) for o in validate_clean_logs(users, interactions, SPECS["bookcrossing"]) if not o.success}
    assert failed == {
        ("clean_users", "expect_column_values_to_be_unique", "user_id"),
        ("clean_users", "expect_column_values_to_be_between", "age"),
        ("clean_users", "expect_column_value_lengths_to_be_between", "country"),
        ("clean_interactions", "expect_column_values_to_be_between", "label"),
        ("clean_interactions", "expect_compound_columns_to_be_unique", "user_id,item_id"),
        ("items_per_user", "expect_column_min_to_be_between", "n_items"),
    }


def test_failing_check_blocks_downstream_assets(tmp_path, ml_data, monkeypatch):
    import assets.expectations as expectations

    # Tighten the real suite past what the data has: at least 1000 items per user.
    monkeypatch.setattr(expectations, "per_user_suite",
                        lambda spec: [("ExpectColumnMinToBeBetween", {"column": "n_items", "min_value": 1000})])
    result = run_chain(tmp_path, ml_data)
    assert not result.success
    made = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert made == {"raw_logs", "clean_logs"}
    failed = LineageStore(tmp_path).query("SELECT expectation FROM checks WHERE NOT success")
    assert failed["expectation"].to_list() == ["expect_column_min_to_be_between"]


def test_fan_in_reads_what_dagster_recorded_not_the_newest_file(tmp_path, ml_data):
    """A newer meta_tasks artifact that Dagster never recorded (a run killed between its DuckDB
    commit and its event, or another instance sharing PAML_HOME) does not replace the partition
    the evaluation's partition mapping resolves."""
    from assets.bundle import Bundle
    from assets.reference_eval import reference_eval

    instance = dg.DagsterInstance.ephemeral()
    assert run_chain(tmp_path, ml_data, instance=instance).success
    store = LineageStore(tmp_path)
    recorded = store.latest("meta_tasks", "movielens")
    # An instance with no record of the upstream at all (no DAGSTER_HOME): the store is the only
    # record, so the newest stored artifacts are read (the step log warns) and no Dagster event is on the edge.
    throwaway = run_chain(tmp_path, ml_data, partition=None, selection=[reference_eval])
    assert throwaway.success
    edges = store.query("SELECT input_artifact_id, input_event_id FROM lineage_edges WHERE artifact_id = ?",
                        [store.query(LATEST_SQL, ["reference_eval", ""]).item()])
    assert recorded.artifact_id in edges["input_artifact_id"].to_list() and edges["input_event_id"].null_count() == edges.height
    stray = store.record(Bundle(frames={"vocab": pl.DataFrame({"field": ["x"]})}, info={"from": "a killed run"}),
                         run_id="killed-run", job_name="data_job", asset_key="meta_tasks", partition="movielens",
                         code_version="1", inputs={}, mirrors={})
    assert store.latest("meta_tasks", "movielens").artifact_id == stray.artifact_id  # "newest in DuckDB" would read it

    result = run_chain(tmp_path, ml_data, partition=None, selection=[reference_eval], instance=instance)
    assert result.success
    evaluation = store.query(LATEST_SQL, ["reference_eval", ""]).item()
    edges = dict(store.query("SELECT input_artifact_id, input_event_id FROM lineage_edges WHERE artifact_id = ?",
                             [evaluation]).iter_rows())
    event = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("meta_tasks"), asset_partitions=["movielens"]), limit=1).records[0]
    assert stray.artifact_id not in edges
    assert edges[recorded.artifact_id] == event.storage_id  # the edge names the Dagster event it came from
    assert event.asset_materialization.metadata["artifact_id"].value == recorded.artifact_id
    metrics = store.query("SELECT DISTINCT dataset FROM metrics WHERE asset_key = 'reference_eval'")
    assert metrics["dataset"].to_list() == ["movielens"]
