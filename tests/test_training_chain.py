"""Every method through real Dagster runs on tiny synthetic data: models, evaluations, report."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from models.learners import METHODS
from pipelines.cli import training_config
from pipelines.definitions import ASSETS, CHECKS, build_resources
from pipelines.jobs import evaluation_job, training_job
from pipelines.lineage import ANCESTORS_SQL, LATEST_SQL
from pipelines.store import LineageStore

TINY_RAW = {"ops": {"raw_logs": {"config": {"taobao_users": 400, "taobao_items": 200, "taobao_days": 5}}}}


def materialize(home: Path, selection, partition: str | None = None, run_config: dict | None = None):
    return dg.materialize(ASSETS + CHECKS, selection=selection, partition_key=partition,
                          resources=build_resources(home, home / "no-real-data"),
                          run_config=run_config or {}, instance=dg.DagsterInstance.ephemeral())


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    assert materialize(home, dg.AssetSelection.groups("data"), "taobao", TINY_RAW).success
    config = training_config(epochs=1, seeds=[0, 1])
    config["ops"]["reg_paml_gamma_ablation"]["config"]["gammas"] = [1e-4, 1e-2]
    trained = materialize(home, training_job.selection, "taobao", config)
    evaluated = materialize(home, evaluation_job.selection)
    return home, trained, evaluated


def test_every_method_trains_and_lands_in_metrics(chain):
    home, trained, evaluated = chain
    assert trained.success and evaluated.success
    store = LineageStore(home)
    rows = store.query("SELECT method, seed, population, metric, value FROM metrics WHERE dataset = 'taobao'")
    assert set(rows["method"]) == set(METHODS) | {"ref_global_mean", "ref_item_mean", "ref_user_item_bias"}
    assert set(rows.filter(pl.col("method") == "reg_paml")["seed"]) == {0, 1}
    assert set(rows["metric"]) == {"auc", "global_auc", "nel"}
    assert rows.filter(pl.col("metric") == "auc")["value"].is_between(0, 1).all()
    model = store.load(store.latest("reg_paml_model", "taobao"))
    runtime = model.info["runtime"]  # how the runs computed travels with the model
    assert runtime["device"] == "cpu" and runtime["threads"] >= 1 and runtime["deterministic"] is True
    assert model.info["train_config"]["batching"] == "bucketed"
    users = store.query("SELECT method, \"group\", true_group, lr FROM user_metrics WHERE method = 'paml'")
    assert users["lr"].n_unique() > 1  # a learning rate per user
    assert set(users["group"].drop_nulls()) == {"major", "minor"}
    assert users["true_group"].null_count() == 0  # the synthetic ground truth rides along


def test_views_match_the_report_and_lineage_reaches_raw_files(chain):
    home, _, _ = chain
    store = LineageStore(home)
    table2 = store.query("SELECT * FROM table2 WHERE dataset = 'taobao' AND metric = 'nel'")
    direct = store.query("SELECT method, avg(value) AS v FROM metrics WHERE dataset = 'taobao' AND metric = 'nel' "
                         "AND population = 'all' GROUP BY method")
    joined = table2.join(direct, on="method")
    assert joined.height == len(METHODS) + 3
    assert (joined["mean"] - joined["v"]).abs().max() < 1e-9
    assert store.query("SELECT count(*) FROM table3").item() > 0
    # 2 gammas + PAML + AT-PAML + the 3 reference rows
    assert store.query("SELECT count(*) FROM table4").item() == 4 + 3
    report_md = home / "reports" / "report.md"
    assert "Table 2" in report_md.read_text() and (home / "reports" / "errors_taobao.png").is_file()
    report_id = store.query(LATEST_SQL, ["report", ""]).item()
    ancestors = store.query(ANCESTORS_SQL, [report_id])
    assert {"reg_paml_eval", "reg_paml_model", "meta_tasks", "raw_logs"} <= set(ancestors["asset_key"])
    assert ancestors.filter(pl.col("kind") == "raw_file").height >= 7  # profile, catalogue, 5 days


def test_eval_without_models_names_missing_datasets(chain):
    home, _, evaluated = chain
    event = [e for e in evaluated.get_asset_materialization_events() if e.asset_key.to_user_string() == "melu_eval"][0]
    metadata = event.materialization.metadata
    assert metadata["datasets_evaluated"].value == "taobao"
    assert metadata["datasets_without_model"].value == "bookcrossing, movielens"


def test_cold_start_recommendation_for_a_new_user(chain):
    from assets.cold_start import ColdStartInputError, recommend

    home, _, _ = chain
    store = LineageStore(home)
    model = store.load(store.latest("reg_paml_model", "taobao"))
    tasks = store.load(store.latest("meta_tasks", "taobao"))
    items = tasks.frame("items")["item_id"].to_list()
    profile = {"age": "28", "gender": "F", "city": "Hangzhou", "segment": "never-seen", "spend_level": "3"}
    clicks = {items[0]: 1.0, items[1]: 0.0, items[2]: 1.0}
    ranked, lr = recommend(model, tasks, profile, clicks, top=5)
    assert ranked.height == 5 and not set(ranked["item_id"]) & set(clicks)
    assert ranked["score"].is_between(0, 1).all() and ranked["score"].is_sorted(descending=True)
    assert lr > 0
    again, _ = recommend(model, tasks, profile, clicks, top=5)
    assert again.equals(ranked)
    with pytest.raises(ColdStartInputError, match="no-such-item"):
        recommend(model, tasks, profile, {"no-such-item": 1.0})
    with pytest.raises(ColdStartInputError, match="spend_level"):
        recommend(model, tasks, {k: v for k, v in profile.items() if k != "spend_level"}, clicks)


def test_recommend_refuses_bad_inputs_in_one_line(chain, monkeypatch, capsys):
    from assets.cold_start import ColdStartInputError, recommend
    from pipelines.cli import main

    home, _, _ = chain
    monkeypatch.setenv("PAML_HOME", str(home))
    store = LineageStore(home, read_only=True)
    items = store.load(store.latest("meta_tasks", "taobao")).frame("items")["item_id"].to_list()
    profile = ["age=28", "gender=F", "city=Hangzhou", "segment=never-seen", "spend_level=3"]

    def refused(*ratings: str, extra: tuple[str, ...] = ()) -> str:
        with pytest.raises(SystemExit) as stop:
            main(["recommend", "--dataset", "taobao", "--profile", *profile, "--ratings", *ratings, *extra])
        message = str(stop.value.code)
        assert message.startswith("error: ") and "\n" not in message
        return message

    good = (f"{items[0]}=1", f"{items[1]}=0")
    assert "label 'abc' of item" in refused(f"{items[0]}=abc")
    for bad in ("nan", "inf", "-inf", "5", "0.5", "-1"):
        assert "is not a taobao label; give 0 or 1" in refused(f"{items[0]}={bad}"), bad
    assert "given twice" in refused(f"{items[0]}=1", f"{items[0]}=0")
    assert "--top must be a whole number of at least 1, got 0" in refused(*good, extra=("--top", "0"))
    assert "got -1" in refused(*good, extra=("--top", "-1"))
    assert "seed 7 was not trained for this model; trained seeds: 0, 1" in refused(*good, extra=("--seed", "7"))
    assert "items not in the model's catalogue: no-such-item" in refused("no-such-item=1")
    main(["recommend", "--dataset", "taobao", "--profile", *profile, "--ratings", *good, "--top", "3", "--seed", "1"])
    out = capsys.readouterr().out
    assert "never seen in training, so they use the unknown embedding: segment=never-seen" in out
    assert "city=" not in out  # Hangzhou is a known city
    model, tasks = store.load(store.latest("reg_paml_model", "taobao")), store.load(store.latest("meta_tasks", "taobao"))
    fields = dict(p.split("=") for p in profile)
    with pytest.raises(ColdStartInputError, match="not a taobao label"):
        recommend(model, tasks, fields, {items[0]: float("nan")})
