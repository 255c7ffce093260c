"""Every method through real Dagster runs on tiny synthetic data: models, evaluations, report."""

import logging
import math
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from models.factors import fit_counts, forget_fits
from models.learners import METHODS
from models.references import REFERENCES
from pipelines.cli import model_and_tasks, production_config, training_config
from pipelines.definitions import ASSETS, CHECKS, build_resources
from pipelines.jobs import evaluation_job, production_job, training_job
from pipelines.lineage import ANCESTORS_SQL, LATEST_SQL
from pipelines.store import LineageStore

pytestmark = pytest.mark.heavy  # long: handed out first when the tests run in parallel (tests/conftest.py)

TINY_DAY = {"ops": {"taobao_daily_logs": {"config": {"users": 400, "items": 200, "history_days": 5}}}}
PRODUCTION_METHODS = ("melu", "reg_paml")
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]


def materialize(home: Path, instance: dg.DagsterInstance, selection, partition: str | None = None, run_config: dict | None = None):
    return dg.materialize(ASSETS + CHECKS, selection=selection, partition_key=partition,
                          resources=build_resources(home, home / "no-real-data"),
                          run_config=run_config or {}, instance=instance)


@pytest.fixture(scope="module")
def instance():
    return dg.DagsterInstance.ephemeral()  # one instance: inputs resolve through its event log


@pytest.fixture(scope="module")
def chain(tmp_path_factory, instance):
    home = tmp_path_factory.mktemp("home")
    for day in DAYS:
        assert materialize(home, instance, "taobao_daily_logs", day, TINY_DAY).success
    assert materialize(home, instance, "taobao_log_window", "taobao").success
    assert materialize(home, instance, dg.AssetSelection.groups("data"), "taobao").success
    config = training_config(epochs=1, seeds=[0, 1])
    config["ops"]["reg_paml_gamma_ablation"]["config"]["gammas"] = [1e-4, 1e-2]
    # AT-PAML with the code defaults: with taobao's searched settings one epoch of these tiny
    # logs does not beat the starting point, so validation keeps step 0, whose memory is empty
    # and has no attention to check below.
    config["ops"]["at_paml_model"]["config"]["settings_dir"] = str(tmp_path_factory.mktemp("no_settings"))
    trained = materialize(home, instance, training_job.selection, "taobao", config)
    # two meta-learners also fitted with the warm users' tasks: the report's production block
    production = production_config(epochs=1, seeds=[0])  # what `reproduce` passes to production_job
    production["ops"]["production_protocol"]["config"]["methods"] = list(PRODUCTION_METHODS)
    produced = materialize(home, instance, production_job.selection, "taobao", production)
    assert produced.success
    evaluated = materialize(home, instance, evaluation_job.selection)
    return home, trained, evaluated


def test_every_method_trains_and_lands_in_metrics(chain):
    home, trained, evaluated = chain
    assert trained.success and evaluated.success
    store = LineageStore(home)
    rows = store.query("SELECT method, seed, population, metric, value FROM metrics WHERE dataset = 'taobao'")
    assert set(rows["method"]) == set(METHODS) | {f"ref_{name}" for name in REFERENCES}
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


def test_the_results_kept_steps_are_the_ones_training_kept(chain):
    # docs/results.md's kept steps come from `training_history` (pipelines/results.py `selected_steps`), which
    # re-derives train()'s rule; every model bundle records the step train() actually kept.
    from pipelines.results import selected_steps

    home, _, _ = chain
    store = LineageStore(home)
    kept = {(r["method"], r["seed"]): r["kept"] for r in selected_steps(store.query("SELECT * FROM training_history")).filter(
        (pl.col("dataset") == "taobao") & (pl.col("protocol") == "paper")).iter_rows(named=True)}
    recorded = {}
    for method in METHODS:
        model = store.load(store.latest(f"{method}_model", "taobao"))
        recorded |= {(method, int(seed)): best["step"] for seed, best in model.info["best"].items()}
    assert kept == recorded and len(recorded) >= len(METHODS)


def test_views_match_the_report_and_lineage_reaches_raw_files(chain):
    home, _, evaluated = chain
    store = LineageStore(home)
    table2 = store.query("SELECT * FROM table2 WHERE dataset = 'taobao' AND metric = 'nel' AND protocol = 'paper'")
    direct = store.query("SELECT method, avg(value) AS v FROM metrics WHERE dataset = 'taobao' AND metric = 'nel' "
                         "AND population = 'all' AND protocol = 'paper' GROUP BY method")
    joined = table2.join(direct, on="method")
    assert joined.height == len(METHODS) + len(REFERENCES)
    assert (joined["mean"] - joined["v"]).abs().max() < 1e-9
    assert store.query("SELECT count(*) FROM table3").item() > 0
    # 2 gammas + PAML + AT-PAML + the reference rows
    assert store.query("SELECT count(*) FROM table4").item() == 4 + len(REFERENCES)
    report_md = home / "reports" / "report.md"
    assert "Table 2" in report_md.read_text() and (home / "reports" / "errors_taobao.png").is_file()
    text = report_md.read_text()
    # Provenance: the run that wrote the report, and the raw files' hashes as the lineage store has them.
    assert f"by Dagster run `{evaluated.run_id}`" in text and "seeds: 0, 1 (every model)" in text
    assert "training protocol: paper; training device: cpu" in text
    # The raw files behind the taobao tasks: profile, catalogue and each day's file (registered by its day partition).
    tasks_id = store.query(LATEST_SQL, ["meta_tasks", "taobao"]).item()
    hashes = store.query(ANCESTORS_SQL, [tasks_id]).filter(pl.col("kind") == "raw_file")["content_hash"].str.slice(0, 16)
    assert hashes.len() >= 7 and all(f"| {h} |" in text for h in hashes)
    # The UI's copy embeds each plot once and links to no file.
    event = [e for e in evaluated.get_asset_materialization_events() if e.asset_key.to_user_string() == "report"][0]
    in_ui = event.materialization.metadata["report"].value
    assert in_ui.count("](data:image/png;base64,") == len(list((home / "reports").glob("*.png"))) and "](errors_" not in in_ui
    report_id = store.query(LATEST_SQL, ["report", ""]).item()
    ancestors = store.query(ANCESTORS_SQL, [report_id])
    assert {"reg_paml_eval", "reg_paml_model", "meta_tasks", "raw_logs"} <= set(ancestors["asset_key"])
    assert ancestors.filter(pl.col("kind") == "raw_file").height >= 7  # profile, catalogue, 5 days


def test_reference_rows_are_tuned_and_paired_with_every_method(chain):
    home, _, evaluated = chain
    store = LineageStore(home)
    paired = store.query("SELECT comparison, protocol, method, other, test, n_users, mean_a, mean_b, ci_low, ci_high, p_value "
                         "FROM significance WHERE asset_key = 'report' AND dataset = 'taobao'")
    n_test = store.query("SELECT count(DISTINCT user_id) FROM user_metrics WHERE dataset = 'taobao' AND method = 'ref_mf'").item()
    # the tiny taobao has warm users: the references are also fitted with them, and so are PRODUCTION_METHODS
    assert set(paired["test"]) == {"paired_t"} and set(paired["protocol"]) == {"paper", "production"}
    assert (paired["n_users"] == n_test).all()
    references = {"ref_user_item_bias", "ref_mf", "ref_item_knn", "ref_mf_knn"}
    production = paired.filter(pl.col("protocol") == "production")
    assert set(production["method"]) == {f"ref_{name}" for name in REFERENCES} | set(PRODUCTION_METHODS)
    assert references <= set(production["other"]) <= references | set(PRODUCTION_METHODS)
    for method in PRODUCTION_METHODS:  # each meta-learner fitted so is paired with the references fitted so
        assert references <= set(production.filter(pl.col("method") == method)["other"])
    for method in METHODS:
        mine = paired.filter((pl.col("method") == method) & (pl.col("protocol") == "paper"))
        assert references <= set(mine["other"]) and mine.filter(pl.col("comparison") == "vs_best_baseline").height <= 1
    diff = paired["mean_a"] - paired["mean_b"]
    assert ((paired["ci_low"] <= diff) & (diff <= paired["ci_high"])).all() and paired["p_value"].is_between(0, 1).all()
    unpaired = store.query("SELECT DISTINCT test FROM significance WHERE comparison = 'minor_vs_major'")
    assert unpaired["test"].to_list() == ["student_t"]
    event = [e for e in evaluated.get_asset_materialization_events() if e.asset_key.to_user_string() == "reference_eval"][0]
    chosen = event.materialization.metadata["chosen_settings"].value["taobao"]
    assert set(chosen) == {"paper", "production"} and set(chosen["paper"]) == {"bias", "mf", "knn", "blend"}
    text = (home / "reports" / "report.md").read_text()
    # the report shows the paper's names (METHOD_ROWS): item-kNN is ref_item_knn, MF (fold-in) ref_mf
    assert "## Paired comparisons" in text and "| item-kNN " in text and "vs item-kNN" in text
    production_block = text.split("## Production protocol")[1]
    assert "| MF (fold-in) " in production_block and "| PAML " not in production_block  # PAML was not fitted so


def test_reference_eval_reuses_the_choice_reference_settings_made_on_the_same_tasks(chain):
    from assets.bundle import Bundle
    from assets.reference_eval import choices_for

    home, _, evaluated = chain
    store = LineageStore(home)
    event = [e for e in evaluated.get_asset_materialization_events() if e.asset_key.to_user_string() == "reference_eval"][0]
    seconds = event.materialization.metadata["seconds"].value["taobao"]
    assert set(seconds) == {"paper", "production"} and not any("tuning" in timing for timing in seconds.values())
    stored = store.load(store.latest("reference_settings", "taobao"))
    evaluation = store.load(store.latest("reference_eval", ""))
    assert evaluation.info["settings"]["taobao"] == stored.info["settings"]
    columns = ["protocol", "reference", "setting", "val_error"]
    assert evaluation.frame("tuning").select(columns).equals(stored.frame("trials").select(columns))
    # settings chosen on other tasks (here: an artifact with other content) are not reused
    tasks = store.load(store.latest("meta_tasks", "taobao"))
    assert set(choices_for(store, {"taobao": stored}, {"taobao": tasks})["taobao"]) == {"paper", "production"}
    other = Bundle(artifact_id=store.latest("user_groups", "taobao").artifact_id)
    assert choices_for(store, {"taobao": stored}, {"taobao": other}) == {}


def test_reference_settings_shows_its_grid_edges_in_metadata_and_warnings(chain, instance):
    from assets.reference_eval import edge_note, grid_edge_notes
    from models.grid_edges import GridEdge

    home, trained, _ = chain
    stored = LineageStore(home).load(LineageStore(home).latest("reference_settings", "taobao"))
    event = [e for e in trained.get_asset_materialization_events() if e.asset_key.to_user_string() == "reference_settings"][0]
    notes = event.materialization.metadata["grid_edges"].value
    edges = stored.info.get("grid_edges", {})
    assert notes == grid_edge_notes("taobao", stored) and set(notes) == {"paper", "production"}
    assert sum(map(len, notes.values())) == sum(map(len, edges.values()))
    warnings = [r.user_message for r in instance.all_logs(trained.run_id) if r.level == logging.WARNING]
    for protocol, found in edges.items():
        for edge in map(GridEdge.from_dict, found):
            line = edge_note("taobao", protocol, edge)
            assert line.startswith(f"taobao ({protocol}): {edge.reference} {edge.axis} chosen {edge.chosen:g}, on the {edge.side} edge")
            assert any(line in w for w in warnings), line


def test_eval_without_models_names_missing_datasets(chain, instance):
    home, _, evaluated = chain
    event = [e for e in evaluated.get_asset_materialization_events() if e.asset_key.to_user_string() == "melu_eval"][0]
    metadata = event.materialization.metadata
    assert metadata["datasets_evaluated"].value == "taobao"
    assert metadata["datasets_without_model"].value == "bookcrossing, movielens"
    # the console says it once: the IO manager's line on the champions never materialized, not the step's again
    said = [entry.user_message for entry in instance.all_logs(evaluated.run_id)
            if entry.step_key == "melu_eval" and "movielens" in (entry.user_message or "")]
    assert said == ["melu_champion: 2 partition(s) never materialized, left out: movielens, bookcrossing"], said


def test_cold_start_recommendation_for_a_new_user(chain):
    from assets.cold_start import ColdStartInputError, recommend

    home, _, _ = chain
    store = LineageStore(home)
    model, tasks = model_and_tasks(store, "taobao", "reg_paml", "promoted")
    items = tasks.frame("items")["item_id"].to_list()
    profile = {"age": "28", "gender": "F", "city": "Hangzhou", "segment": "never-seen", "spend_level": "3"}
    clicks = {items[0]: 1.0, items[1]: 0.0, items[2]: 1.0}
    ranked, lr = recommend(model, tasks, profile, clicks, top=5)
    assert ranked.height == 5 and not set(ranked["item_id"]) & set(clicks)
    assert ranked["score"].is_between(0, 1).all() and ranked["score"].is_sorted(descending=True)
    assert lr > 0
    again, _ = recommend(model, tasks, profile, clicks, top=5)
    assert again.equals(ranked)
    # The same clicks in another order: the same scores to the bit, not just the same ranks.
    many = {item: float(k % 2) for k, item in enumerate(items[:12])}
    forward, lr_forward = recommend(model, tasks, profile, many, top=len(items))
    backward, lr_backward = recommend(model, tasks, profile, dict(reversed(many.items())), top=len(items))
    assert forward.equals(backward) and lr_forward == lr_backward
    # Every item rated: nothing left to rank is an input error, not an IndexError from torch.
    with pytest.raises(ColdStartInputError, match=f"all {len(items)} items of the model's catalogue are rated"):
        recommend(model, tasks, profile, dict.fromkeys(items, 1.0))
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
    assert "1 of the 1 items given are not in the model's catalogue" in refused("no-such-item=1")
    main(["recommend", "--dataset", "taobao", "--profile", *profile, "--ratings", *good, "--top", "3", "--seed", "1"])
    out = capsys.readouterr().out
    assert "never seen in training, so they use the unknown embedding: segment=never-seen" in out
    assert "city=" not in out  # Hangzhou is a known city
    model, tasks = store.load(store.latest("reg_paml_model", "taobao")), store.load(store.latest("meta_tasks", "taobao"))
    fields = dict(p.split("=") for p in profile)
    with pytest.raises(ColdStartInputError, match="not a taobao label"):
        recommend(model, tasks, fields, {items[0]: float("nan")})


def test_recommend_command_shows_item_attributes_and_the_users_items(chain, monkeypatch, capsys):
    from pipelines.cli import main

    home, _, _ = chain
    monkeypatch.setenv("PAML_HOME", str(home))
    store = LineageStore(home, read_only=True)
    catalogue = store.load(store.latest("meta_tasks", "taobao")).frame("items")["item_id"].to_list()
    items = store.load(store.latest("clean_logs", "taobao")).frame("items")
    clicked = catalogue[:2]
    assert main(["recommend", "--dataset", "taobao", "--profile", "age=28", "gender=F", "city=Hangzhou", "segment=x",
                 "spend_level=3", "--ratings", f"{clicked[0]}=1", f"{clicked[1]}=-0", "--top", "3"]) == 0
    out = capsys.readouterr().out
    given, ranked = out.split("top 3 of the other items:")
    assert "-0.0" not in given and " 0.0 " in given  # '-0' is the label 0
    assert "shape:" not in out and "---" not in out  # tables without polars' dtype rows
    assert all(f"{item} " in given for item in clicked) and "category" in given and "brand" in ranked
    first = items.filter(pl.col("item_id") == clicked[0]).row(0, named=True)
    assert f"{first['category']} " in given and f"{first['brand']} " in given


def test_personalization_diagnostics_in_user_metrics_views_and_report(chain):
    home, _, _ = chain
    store = LineageStore(home)
    users = store.query("SELECT method, seed, lr, logloss, loss_unadapted, loss_adapted, adaptation_gain, nearest_weight, "
                        "attention_entropy, memory_k, unknown_fields FROM user_metrics WHERE dataset = 'taobao'")
    learners = users.filter(pl.col("method").is_in(list(METHODS)))
    diagnosed = learners.select("loss_unadapted", "loss_adapted", "adaptation_gain", "unknown_fields")
    assert diagnosed.null_count().sum_horizontal().item() == 0
    assert (learners["loss_unadapted"] - learners["loss_adapted"] - learners["adaptation_gain"]).abs().max() < 1e-12
    # the query loss the model minimizes is the clicks' log-loss (computed from logits, not from clipped probabilities)
    assert (learners["loss_adapted"] - learners["logloss"]).abs().max() < 1e-4
    assert learners["unknown_fields"].is_between(0, 5).all()  # taobao has 5 categorical user fields
    references = users.filter(pl.col("method").str.starts_with("ref_"))
    nulls = references.select("loss_adapted", "nearest_weight", "unknown_fields").null_count()
    assert references.height and nulls.row(0) == (references.height,) * 3
    # AT-PAML's attention over K = 8 stored users (the model's memory config): the nearest weighs at least 1/K
    k = store.load(store.latest("at_paml_model", "taobao")).info["learner_config"]["memory"]["k"]
    attention = learners.filter(pl.col("method") == "at_paml")
    assert (attention["memory_k"] == k).all() and attention["nearest_weight"].is_between(1 / k - 1e-6, 1.0).all()
    assert attention["attention_entropy"].is_between(0.0, math.log(k) + 1e-6).all()
    others = learners.filter(pl.col("method") != "at_paml")
    assert others["memory_k"].null_count() == others["nearest_weight"].null_count() == others.height
    # a view per diagnostic, every method and group; the numbers are the per-seed statistics averaged over seeds
    for view in ("diagnostic_step_size", "diagnostic_adaptation", "diagnostic_inputs"):
        rows = store.query(f'SELECT method, "group", n_seeds FROM {view} WHERE dataset = \'taobao\' AND protocol = \'paper\'')
        assert set(rows["method"]) == set(METHODS) and set(rows["group"]) == {"all", "major", "minor"}, view
        assert (rows["n_seeds"] == 2).all(), view
    step = store.query("SELECT method, lr_mean, lr_cv FROM diagnostic_step_size WHERE dataset = 'taobao' AND \"group\" = 'all'")
    cv = dict(zip(step["method"], step["lr_cv"]))
    assert cv["melu"] == cv["transfer"] == cv["meta_sgd"] == 0.0 and cv["paml"] > 0  # one rate for all vs one per user
    lr = pl.col("lr")
    paml = users.filter(pl.col("method") == "paml").group_by("seed").agg(lr.mean(), cv=lr.std() / lr.mean())
    assert step.filter(pl.col("method") == "paml").row(0)[1:] == pytest.approx((paml["lr"].mean(), paml["cv"].mean()))
    memory = store.query("SELECT method, memory_k, nearest_ratio, entropy_ratio FROM diagnostic_memory WHERE dataset = 'taobao'")
    assert set(memory["method"]) == {"at_paml"} and (memory["memory_k"] == k).all() and (memory["nearest_ratio"] >= 1 - 1e-6).all()
    text = (home / "reports" / "report.md").read_text()
    assert text.index("## Table 3") < text.index("## Personalization diagnostics") < text.index("## Paired comparisons")
    section = text.split("## Personalization diagnostics")[1].split("## Paired comparisons")[0]
    assert "| AT-PAML " in section and f"K = {k})" in section and "Targets (all test users)" in section
    assert "![adaptation_taobao.png](adaptation_taobao.png)" in section and (home / "reports" / "adaptation_taobao.png").is_file()


def test_production_protocol_puts_meta_learners_beside_the_paper_rows(chain):
    home, _, _ = chain
    store = LineageStore(home)
    rows = store.query("SELECT asset_key, protocol, method, seed, metric, value FROM metrics "
                       "WHERE dataset = 'taobao' AND population = 'all' AND NOT starts_with(method, 'ref_')")
    production = rows.filter(pl.col("protocol") == "production")
    assert set(production["method"]) == set(PRODUCTION_METHODS) and set(production["seed"]) == {0}
    assert set(production["asset_key"]) == {"production_protocol"}
    # the paper's rows are still every method's, from the evaluations
    paper = rows.filter(pl.col("protocol") == "paper")
    assert set(paper["method"]) == set(METHODS) and set(paper["asset_key"]) == {f"{m}_eval" for m in METHODS}
    # more training tasks (the warm users'), so other numbers for the same method, seed and test users
    both = production.join(paper, on=["method", "seed", "metric"], suffix="_paper")
    assert both.height == 3 * len(PRODUCTION_METHODS) and (both["value"] - both["value_paper"]).abs().max() > 0
    users = store.query("SELECT count(*) AS n FROM user_metrics WHERE protocol = 'production' AND method = 'melu'").item()
    assert users == store.query("SELECT count(*) FROM user_metrics WHERE protocol = 'paper' AND method = 'melu' AND seed = 0").item()
    # each production model's validation history, beside the paper models' (which step was kept)
    history = store.query("SELECT method, seed, step, val_loss FROM training_history WHERE asset_key = 'production_protocol' "
                          "AND dataset = 'taobao'")
    assert set(history["method"]) == set(PRODUCTION_METHODS) and set(history["seed"]) == {0} and (history["step"] == 0).any()
    text = (home / "reports" / "report.md").read_text()
    block = text.split("## Production protocol")[1]
    table2 = block.split("### As Table 2 (production protocol)")[1].split("\n### ")[0]
    assert "| MeLU " in table2 and "| REG-PAML " in table2 and "| PAML " not in table2
    # the report's lineage names the production scores it read
    inputs = store.query("SELECT input_artifact_id FROM lineage_edges WHERE artifact_id = ?",
                         [store.latest("report", "").artifact_id])["input_artifact_id"]
    assert store.latest("production_protocol", "taobao").artifact_id in inputs.to_list()


def doc_statements(*docs: str) -> list[str]:
    """Every SQL statement of the ```sql blocks in `docs` (comment lines dropped)."""
    import re

    root = Path(__file__).resolve().parent.parent
    statements = []
    for doc in docs:
        for block in re.findall(r"```sql\n(.*?)```", (root / doc).read_text(), re.S):
            statements += [s.strip() for s in re.sub(r"--[^\n]*", "", block).split(";") if s.strip()]
    return statements


def test_every_query_in_the_docs_runs_on_the_store(chain):
    home = chain[0]
    store = LineageStore(home, read_only=True)
    statements = doc_statements("docs/duckdb.md", "docs/data.md", "docs/operations.md")
    assert len(statements) >= 15
    for statement in statements:
        store.query(statement)  # the `sql` command's connection: read-only, on the snapshot
    # data.md's "check outcomes of the newest run" named the newest run of all, which after an
    # evaluation has no checks, so it listed nothing
    [checks] = [s for s in statements if "FROM checks" in s]
    assert store.query(checks).height > 0


def test_a_step_run_on_its_own_reads_the_fold_in_tables_the_training_stored(chain, instance):
    home = chain[0]
    stored = sorted(p.name for p in (home / "fits").glob("*.safetensors"))
    assert any(n.startswith("mf-") for n in stored) and any(n.startswith("knn-") for n in stored)
    query = "SELECT seed, metric, value FROM metrics WHERE method = 'reg_paml' AND dataset = 'taobao' ORDER BY ALL"
    before = LineageStore(home).query(query)
    forget_fits()  # as a fresh process: nothing fitted in memory
    result = materialize(home, instance, "reg_paml_eval")
    assert result.success
    counts = fit_counts()
    assert counts["fitted"] == 0 and counts["loaded"] == 2  # both item sides read from PAML_HOME/fits, once
    messages = [e.message for e in instance.all_logs(result.run_id) if "fold-in item sides this run" in (e.message or "")]
    assert len(messages) == 1 and messages[0].startswith("fold-in item sides this run: 0 fitted, 2 read from")
    assert sorted(p.name for p in (home / "fits").glob("*.safetensors")) == stored
    assert LineageStore(home).query(query).equals(before)  # the same metrics as with the tables fitted


def test_a_model_step_run_on_its_own_stores_its_fold_in_tables(chain, instance):
    # Its own run, as the multiprocess executor or `asset materialize` gives it: only its own
    # resources are set up. Without the `paml` resource it kept no table and the champion refitted.
    home = chain[0]
    for stored in (home / "fits").glob("*.safetensors"):
        stored.unlink()
    forget_fits()
    config = training_config(epochs=1, seeds=[0], max_steps=1)
    result = materialize(home, instance, "reg_paml_model", "taobao", {"ops": {"reg_paml_model": config["ops"]["reg_paml_model"]}})
    assert result.success and fit_counts()["fitted"] == 2
    stored = sorted(p.name for p in (home / "fits").glob("*.safetensors"))
    assert any(n.startswith("mf-") for n in stored) and any(n.startswith("knn-") for n in stored)


def test_recommend_takes_an_item_id_written_as_a_whole_float_as_the_readers_do():
    from assets.cold_start import ColdStartInputError, catalogue_ratings

    catalogue = {"7", "12", "3.0", "A7"}
    # '7.0' was "not in the model's catalogue"; the readers take it as item 7 (custom_reader.whole_float_ids).
    assert catalogue_ratings({"7.0": 4.0, " 12 ": 1.0, "3.0": 2.0}, catalogue) == {"7": 4.0, "12": 1.0, "3.0": 2.0}
    assert catalogue_ratings({"7.00": 4.0, "A7.0": 1.0}, catalogue) == {"7.00": 4.0, "A7.0": 1.0}  # left to the unknown-items error
    with pytest.raises(ColdStartInputError, match=r"item '7' is given twice \(as '7' and '7.0'\)"):
        catalogue_ratings({"7": 4.0, "7.0": 5.0}, catalogue)


def test_reference_settings_run_config_extends_its_grid_edges(chain, instance):
    # Last in this file: it stores another reference_settings, then the default one again.
    from models.grid_edges import GridEdge

    home = chain[0]
    store = LineageStore(home)
    before = store.load(store.latest("reference_settings", "taobao"))
    found = [GridEdge.from_dict(e) for edges in before.info.get("grid_edges", {}).values() for e in edges]
    assert found and not any(e.added for e in found)  # the tiny logs meet edges; by default none is extended
    rounds = 2
    result = materialize(home, instance, "reference_settings", "taobao",
                         {"ops": {"reference_settings": {"config": {"edge_rounds": rounds}}}})
    assert result.success
    after = store.load(store.latest("reference_settings", "taobao"))
    extended = [GridEdge.from_dict(e) for edges in after.info["grid_edges"].values() for e in edges]
    assert any(e.added for e in extended) and all(len(e.added) <= rounds for e in extended)
    assert after.frame("trials").height > before.frame("trials").height  # the added values were tried
    for edge in extended:  # extending can only lower (or keep) the best validation error
        assert edge.final_error <= edge.grid_error
    warnings = [r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.WARNING]
    assert any("extended to" in w for w in warnings)
    assert materialize(home, instance, "reference_settings", "taobao").success
    again = store.load(store.latest("reference_settings", "taobao"))
    assert again.info["settings"] == before.info["settings"]


def test_recommend_hints_what_the_model_knows_of_an_unseen_profile_value():
    from assets.bundle import Bundle
    from assets.cold_start import known_values_hint

    # in build_vocab's order: each field's most frequent value first
    rows = [("gender", "F", 2, 60), ("gender", "M", 3, 40), ("city", "Wuhan", 4, 30), ("city", "Hangzhou", 5, 9),
            ("city", "Zhengzhou", 6, 5), ("level", "10", 7, 50), ("level", "3", 8, 10), ("level", "2", 9, 1)]
    rows += [("town", f"t{i}", 10 + i, 20 - i) for i in range(20)]
    tasks = Bundle(frames={"vocab": pl.DataFrame(rows, schema=["field", "value", "index", "count"], orient="row")})
    assert known_values_hint("gender", "f", tasks) == "did you mean F?"  # another case: said, not changed
    assert known_values_hint("city", " hangzou", tasks) == "did you mean Hangzhou or Zhengzhou?"  # closest first
    assert known_values_hint("gender", "x", tasks) == "known: F, M"  # most frequent first
    assert known_values_hint("city", "Atlantis", tasks) == "known: Wuhan, Hangzhou, Zhengzhou"
    # numbers are listed in order and never offered by spelling (20 is not "close to" 2)
    assert known_values_hint("level", "20", tasks) == "known: 2, 3, 10"
    assert known_values_hint("level", "20", tasks, listed=2) == "known: 2 to 10"
    assert known_values_hint("town", "Atlantis", tasks) == ""  # 20 values: too many to list
    assert known_values_hint("town", "t07", tasks) == "did you mean t0 or t7?"  # ties: the more frequent first
