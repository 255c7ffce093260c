"""A PAML_HOME kept across an upgrade: what older code left in it is used correctly, or refused in one line.

Each fixture is the old format written here by hand (an older model's settings, a store table
without a newer column), never an old commit's code (docs/operations.md, "Upgrading with an
existing PAML_HOME", says which commits were checked for real).
"""

import logging
from dataclasses import asdict, dataclass, fields, replace
from types import MappingProxyType

import polars as pl
import pytest
import torch

from assets.bundle import Bundle
from models.config_fields import BEHAVIOUR_BEFORE, added_field, values_before
from models.learners import (
    LearnerConfig, ModelFormError, learner_config_from_dict, settings_of_older_code, stored_model_problem, stored_settings_problem,
)
from models.network import NetworkConfig
from models.training import TrainConfig
from pipelines.cli import expected_failure
from tests.model_fixtures import tiny_task_data
from tests.test_tuning import tensors_of

# A network without the fold-ins, as older homes' models were trained (ca4580e: no kNN fold-in fields at all).
NO_FOLDINS = NetworkConfig(embedding_dim=4, hidden=(8,), mf_foldin=False, knn_foldin=False)
KNN_FIELDS = ("knn_foldin", "knn_k", "knn_shrinkage", "knn_damping", "knn_neighbours")
# Fields added after ca4580e, each declaring its value before it existed (proved: docs/operations.md).
LATER_FIELDS = ("lr_per_parameter", "memory_weight", "inner_vectorize", "inner_fold")


def trained(method: str = "melu") -> tuple[Bundle, Bundle]:
    """A tiny model bundle of `method` (one seed) and the tasks it trained on."""
    from assets.method_assets import train_method

    tensors, info = tensors_of(tiny_task_data())
    tasks = Bundle(tensors=tensors, info=info)
    model, _ = train_method(method, tasks, LearnerConfig(network=NO_FOLDINS), TrainConfig(epochs=1, meta_batch=4), [0], processes=1)
    return model, tasks


def as_older_code(model: Bundle, lacking: tuple[str, ...] = ("mf_foldin",)) -> Bundle:
    """The same weights with the settings older code stored: no kNN fold-in fields, none of LATER_FIELDS,
    no `form`, and without the network fields `lacking` (03f64e3 added `mf_foldin`, which declares no value before it)."""
    settings = {k: v for k, v in model.info["learner_config"].items() if k not in LATER_FIELDS}
    network = {k: v for k, v in settings["network"].items() if k not in KNN_FIELDS + lacking}
    info = {k: v for k, v in model.info.items() if k != "form"}
    return replace(model, info={**info, "learner_config": {**settings, "network": network}})


@dataclass(frozen=True)
class Knob:
    """A test-only config: one field added later whose value before it differs from its default, one not declared."""

    steps: int = added_field(3, before=1)
    width: int = 8


def test_a_field_declared_with_its_value_before_is_filled_with_that_value_not_the_default():
    assert values_before(Knob, {"width": 8}) == {"steps": 1} != {"steps": Knob().steps}
    assert values_before(Knob, {"steps": 5}) == {}  # `width` lacks a declaration: the caller refuses the record
    assert values_before(Knob, {"steps": 5, "width": 8}) == {}
    assert [f.name for f in fields(Knob) if BEHAVIOUR_BEFORE in f.metadata] == ["steps"]


def test_settings_lacking_declared_fields_are_read_with_their_values_before():
    settings = asdict(LearnerConfig())
    older = {k: v for k, v in settings.items() if k not in LATER_FIELDS}
    older["network"] = {k: v for k, v in settings["network"].items() if k not in KNN_FIELDS}
    assert stored_settings_problem(older) is None
    assert settings_of_older_code(older) == {
        "lr_per_parameter": False, "memory_weight": 1.0, "inner_vectorize": "vmap", "inner_fold": True,
        "network.knn_foldin": False, "network.knn_k": 20, "network.knn_shrinkage": 100.0, "network.knn_damping": 0.0,
        "network.knn_neighbours": 200}
    config = learner_config_from_dict(older)
    assert (config.memory_weight, LearnerConfig().memory_weight) == (1.0, 0.5)  # the value before, not the default
    assert (config.network.knn_foldin, config.inner_vectorize) == (False, "vmap")
    assert settings_of_older_code(settings) == {}
    assert learner_config_from_dict(settings) == LearnerConfig()  # a record of this code is read as it is
    # What the record has wins over the value before: a stored kNN fold-in stays on.
    assert learner_config_from_dict({**older, "network": {**older["network"], "knn_foldin": True}}).network.knn_foldin
    undeclared = {**older, "network": {k: v for k, v in older["network"].items() if k != "mf_foldin"}}
    with pytest.raises(ValueError, match=r"lack network\.mf_foldin \(trained by older code\)"):
        learner_config_from_dict(undeclared)  # never today's default for an undeclared field


def test_settings_of_older_or_newer_code_are_named():
    settings = asdict(LearnerConfig())
    assert stored_settings_problem(settings) is None
    older = {**settings, "network": {k: v for k, v in settings["network"].items() if k not in KNN_FIELDS + ("factor_dim", "mf_foldin")}}
    assert stored_settings_problem(older) == "its settings lack network.factor_dim, network.mf_foldin (trained by older code)"
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
    assert "melu model of tiny (artifact abc123)" in message and "lack network.mf_foldin (trained by older code)" in message
    assert message.endswith("dg launch --job training_job --partition tiny")


def test_a_model_lacking_only_declared_fields_loads_with_their_values_before(caplog):
    from assets.method_assets import load_learner
    from models.tasks import task_data_from_tensors
    from models.training import predict_split

    model, tasks = trained()
    data = task_data_from_tensors(tasks.tensors, tasks.info)
    older = as_older_code(model, lacking=())  # as ca4580e stored it: no kNN fields, none of LATER_FIELDS
    with caplog.at_level(logging.INFO):
        learner = load_learner(replace(older, artifact_id="abc123"), data, 0)
    said = [r.getMessage() for r in caplog.records if "older code" in r.getMessage()]
    assert len(said) == 1 and "melu model" in said[0] and "abc123" in said[0] and "network.knn_foldin = False" in said[0], said
    assert (learner.config.network.knn_foldin, learner.config.inner_vectorize, learner.config.memory_weight) == (False, "vmap", 1.0)
    today = predict_split(load_learner(model, data, 0), data, "test").pred
    # vmap against broadcast: the same function, not the same bits (models/inner.py)
    assert torch.allclose(torch.as_tensor(predict_split(learner, data, "test").pred), torch.as_tensor(today), atol=1e-5)


def test_a_declared_value_whose_network_does_not_fit_the_weights_is_refused_in_one_line(monkeypatch):
    # A wrong declaration (the head's rank 0 before it existed, while this model has the head): the
    # network built with it lacks the stored head, and loading names the value filled in, not a traceback.
    from assets.method_assets import load_learner
    from models.tasks import task_data_from_tensors

    factor_dim = next(f for f in fields(NetworkConfig) if f.name == "factor_dim")
    monkeypatch.setattr(factor_dim, "metadata", MappingProxyType({BEHAVIOUR_BEFORE: 0}))
    model, tasks = trained()
    data = task_data_from_tensors(tasks.tensors, tasks.info)
    older = as_older_code(model, lacking=("factor_dim",))
    assert stored_model_problem(older.info) is None
    with pytest.raises(ModelFormError) as refused:
        load_learner(replace(older, artifact_id="abc123"), data, 0)
    message = str(refused.value)
    assert "\n" not in message and "melu model of tiny (artifact abc123) cannot be loaded by this code" in message
    assert "network built with the values before they existed of the fields its settings lack (" in message
    assert "network.factor_dim = 0" in message
    assert "Unexpected key(s)" in message and message.endswith("dg launch --job training_job --partition tiny")


def test_a_model_in_service_of_older_code_is_replaced_without_a_comparison():
    from assets.promotion import Champion, compare

    challenger, tasks = trained()
    decision, losses = compare(challenger, tasks, Champion(as_older_code(challenger), tasks), pl.DataFrame())
    assert decision.promoted and "cannot be loaded by this code" in decision.reason
    assert "network.mf_foldin" in decision.reason and losses.height == 1
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
