"""A PAML_HOME kept across an upgrade: what older code left in it is used correctly, or refused in one line.

Each fixture is the old format written here by hand (an older model's settings, a store table
without a newer column), never an old commit's code (docs/operations.md, "Upgrading with an
existing PAML_HOME", says which commits were checked for real).
"""

from dataclasses import asdict, replace

import polars as pl
import pytest

from assets.bundle import Bundle
from models.learners import LearnerConfig, ModelFormError, stored_model_problem, stored_settings_problem
from models.network import NetworkConfig
from models.training import TrainConfig
from pipelines.cli import expected_failure
from tests.model_fixtures import tiny_task_data
from tests.test_tuning import tensors_of

# A network without the fold-ins, as older homes' models were trained (ca4580e: no kNN fold-in fields at all).
NO_FOLDINS = NetworkConfig(embedding_dim=4, hidden=(8,), mf_foldin=False, knn_foldin=False)
KNN_FIELDS = ("knn_foldin", "knn_k", "knn_shrinkage", "knn_damping", "knn_neighbours")


def trained(method: str = "melu") -> tuple[Bundle, Bundle]:
    """A tiny model bundle of `method` (one seed) and the tasks it trained on."""
    from assets.method_assets import train_method

    tensors, info = tensors_of(tiny_task_data())
    tasks = Bundle(tensors=tensors, info=info)
    model, _ = train_method(method, tasks, LearnerConfig(network=NO_FOLDINS), TrainConfig(epochs=1, meta_batch=4), [0], processes=1)
    return model, tasks


def as_older_code(model: Bundle) -> Bundle:
    """The same weights with the settings older code stored: no kNN fold-in fields, no `form`."""
    settings = model.info["learner_config"]
    network = {k: v for k, v in settings["network"].items() if k not in KNN_FIELDS}
    info = {k: v for k, v in model.info.items() if k != "form"}
    return replace(model, info={**info, "learner_config": {**settings, "network": network}})


def test_settings_of_older_or_newer_code_are_named():
    settings = asdict(LearnerConfig())
    assert stored_settings_problem(settings) is None
    older = {**settings, "network": {k: v for k, v in settings["network"].items() if k not in KNN_FIELDS}}
    assert "lack network.knn_damping, network.knn_foldin" in stored_settings_problem(older)
    newer = {**settings, "memory": {**settings["memory"], "buckets": 4}}
    assert "memory.buckets, unknown to this code" in stored_settings_problem(newer)
    assert "no network section" in stored_settings_problem({k: v for k, v in settings.items() if k != "network"})
    assert stored_model_problem({"method": "melu", "learner_config": settings}) is None
    assert "form 1" in stored_model_problem({"method": "at_paml", "form": 1, "learner_config": settings})


def test_a_model_of_older_code_is_refused_in_one_line_naming_the_command():
    # Before: today's defaults (kNN fold-in on) built another network around the weights, and
    # load_state_dict ended `recommend` and every evaluation with a traceback (missing foldin_weight).
    from assets.method_assets import load_learner
    from models.tasks import task_data_from_tensors

    model, tasks = trained()
    data = task_data_from_tensors(tasks.tensors, tasks.info)
    load_learner(model, data, 0)  # today's own model loads
    with pytest.raises(ModelFormError) as refused:
        load_learner(replace(as_older_code(model), artifact_id="abc123"), data, 0)
    message = expected_failure(refused.value)
    assert message == str(refused.value) and "\n" not in message
    assert "melu model of tiny (artifact abc123)" in message and "network.knn_foldin" in message
    assert message.endswith("dg launch --job training_job --partition tiny")


def test_a_model_in_service_of_older_code_is_replaced_without_a_comparison():
    from assets.promotion import Champion, compare

    challenger, tasks = trained()
    decision, losses = compare(challenger, tasks, Champion(as_older_code(challenger), tasks), pl.DataFrame())
    assert decision.promoted and "cannot be loaded by this code" in decision.reason
    assert "network.knn_foldin" in decision.reason and losses.height == 1
    assert losses["champion_val_loss"].null_count() == 1  # nothing was compared


def older_store(home) -> None:
    """A store as f6f80ec wrote it: runs without the run facts, lineage edges without their event, result
    tables and the views over them without `protocol`."""
    import duckdb

    home.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(home / "paml.duckdb"))
    con.execute("CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, job_name VARCHAR, first_write_at TIMESTAMP, "
                "last_write_at TIMESTAMP, n_artifacts BIGINT)")
    con.execute("INSERT INTO runs VALUES ('r-old', 'training_job', now(), now(), 1)")
    con.execute("CREATE TABLE lineage_edges (artifact_id VARCHAR, input_artifact_id VARCHAR, PRIMARY KEY (artifact_id, input_artifact_id))")
    con.execute("CREATE TABLE metrics AS SELECT 'taobao' AS dataset, 'melu' AS method, 0::BIGINT AS seed, 'all' AS population, "
                "'nel' AS metric, 0.93::DOUBLE AS value, 'melu_eval' AS asset_key, '' AS partition, 'a1' AS artifact_id")
    con.execute("CREATE TABLE report_table2 AS SELECT 'taobao' AS dataset, 'melu' AS method, 'nel' AS metric, 0.93::DOUBLE AS mean, "
                "0.01 AS sd, 3 AS n_seeds, true AS best, false AS significant, NULL::DOUBLE AS paper_mean, NULL::DOUBLE AS paper_sd")
    con.execute("CREATE VIEW table2 AS SELECT dataset, method, metric, mean FROM report_table2")
    con.close()


def test_a_store_of_older_code_is_named_by_sql_and_brought_up_to_date_by_init(tmp_path, monkeypatch):
    # Before: the documented query on metrics failed with DuckDB's bare binder error until some run wrote,
    # and the rows of older code were left without a protocol.
    from pipelines.store import LineageStore
    from tests.test_duckdb_access import run_cli

    home = tmp_path / "home"
    older_store(home)
    query = "SELECT dataset, protocol, method, value FROM metrics"
    message = run_cli(monkeypatch, home, "sql", query)
    assert "metrics (lacks protocol)" in message and message.endswith("bring it up to date with `python -m pipelines.cli init`")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    assert run_cli(monkeypatch, home, "init") == ""
    store = LineageStore(home, read_only=True)
    assert store.outdated() == []
    assert store.query(query).rows() == [("taobao", "paper", "melu", 0.93)]
    assert store.query("SELECT protocol, mean FROM table2").rows() == [("paper", 0.93)]  # the view selects it now
    assert store.query("SELECT run_id, git_commit FROM runs").rows() == [("r-old", None)]  # old runs stay
    assert LineageStore(home).bring_up_to_date() == []  # once is enough
    assert run_cli(monkeypatch, home, "sql", "SELECT nothing FROM metrics").endswith("(tables and views: docs/duckdb.md)")
