"""A setting the configs, a settings file or the dataset's users refuse stops its step before anything
trains, with one line naming the setting, its value and the limit: the head of Dagster's step and run
failure message (a `Failure`, not a traceback ending in a ValueError) and what the CLI prints. Real
Dagster runs on tiny synthetic taobao logs, no mocks."""

from pathlib import Path

import dagster as dg
import pydantic
import pytest

from assets.method_assets import ModelConfig
from models.user_memory import default_memory_k
from pipelines import cli
from pipelines.definitions import ASSETS, CHECKS, build_resources
from pipelines.store import LineageStore
from tests.model_fixtures import tiny_task_data

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
TINY_DAY = {"ops": {"taobao_daily_logs": {"config": {"users": 200, "items": 100, "history_days": 3}}}}


def materialize(home: Path, instance: dg.DagsterInstance, selection, partition: str | None, run_config: dict,
                raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS + CHECKS, selection=selection, partition_key=partition, run_config=run_config,
                          resources=build_resources(home, home / "no-real-data"), instance=instance,
                          raise_on_error=raise_on_error)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The data steps of a few hundred synthetic users and the fold-ins' reference settings."""
    home, instance = tmp_path_factory.mktemp("home"), dg.DagsterInstance.ephemeral()
    for day in DAYS:
        materialize(home, instance, "taobao_daily_logs", day, TINY_DAY)
    materialize(home, instance, "taobao_log_window", "taobao", {"ops": {"taobao_log_window": {"config": {"days": 3}}}})
    materialize(home, instance, dg.AssetSelection.groups("data") | dg.AssetSelection.assets("reference_settings"),
                "taobao", {})
    return home, instance


def model_config(**values) -> dict:
    return {"ops": {"at_paml_model": {"config": {"max_steps": 2, "eval_every": 1, "seeds": [0], **values}}}}


def training_users(home: Path, protocol: str = "paper") -> int:
    """The users a model trains on: the training split, and under the production protocol the warm users too,
    each once however many tasks its history was cut into (`n_users` counts the warm split's tasks)."""
    store = LineageStore(home, read_only=True)
    tasks = store.load(store.latest("meta_tasks", "taobao"))
    warm_users = tasks.frame("users__warm")["user_id"].n_unique() if protocol == "production" else 0
    return tasks.info["n_users"]["train"] + warm_users


# 3000: past flann_checks too, which the exact search never reads; 10,000: past the memory's capacity (4096) too,
# which was said first ("memory_capacity must be at least memory_k"), though the users are the limit that binds
@pytest.mark.parametrize("above", [0, 3000, 10_000])
def test_a_memory_k_larger_than_the_training_users_allow_is_one_line_before_training(built, above):
    # It failed inside training with a RuntimeError wrapping the ValueError, each with its traceback.
    home, instance = built
    users = training_users(home)
    with pytest.raises(dg.Failure) as raised:
        materialize(home, instance, "at_paml_model", "taobao", model_config(memory_k=users + above))
    line = cli.expected_failure(raised.value)
    assert line == (f"at_paml_model (taobao): memory_k = {users + above} is too large for the {users} training users: "
                    f"memory_k must be at most {users - 1} (the memory attends once it holds K + 1 users, a user never "
                    "being its own neighbour); lower it, or leave it empty to fit K to the users")
    # Dagster's failure message (the UI, `dagster asset materialize`) starts with the same line, and no run trained
    result = materialize(home, instance, "at_paml_model", "taobao", model_config(memory_k=users + above),
                         raise_on_error=False)
    [failure] = result.get_step_failure_events()
    assert failure.step_failure_data.user_failure_data.description == line
    assert failure.step_failure_data.error.message.startswith(f"dagster._core.definitions.events.Failure: {line}")
    assert failure.step_failure_data.error.cause is None  # no chained ValueError and its traceback
    logged = [record.user_message for record in instance.all_logs(result.run_id)]
    assert not any("seed 0" in message for message in logged)  # no training run's progress line


def test_a_huge_memory_k_with_flann_is_told_the_users_not_flanns_checks(built):
    # FLANN refuses a K above its flann_checks (1536) in MemoryConfig itself, which was built before the users'
    # check: the message named FLANN's leaves, not the training users that no K this size can work with.
    home, instance = built
    users = training_users(home)
    with pytest.raises(dg.Failure) as raised:
        materialize(home, instance, "at_paml_model", "taobao", model_config(memory_k=users + 2000, memory_backend="flann"))
    assert cli.expected_failure(raised.value).startswith(
        f"at_paml_model (taobao): memory_k = {users + 2000} is too large for the {users} training users: ")


def test_the_production_protocol_refuses_a_setting_of_its_last_method_before_the_first_trains(built):
    # memory_k = the users: the warm users' tasks, counted as users, let it pass the check before training
    # (MeLU trained first), and AT-PAML's own training refused it.
    home, instance = built
    users = training_users(home, "production")
    store = LineageStore(home, read_only=True)
    assert store.load(store.latest("meta_tasks", "taobao")).info["n_users"]["warm"] > users - training_users(home)
    config = {"ops": {"production_protocol": {"config": {"methods": ["melu", "at_paml"], "memory_k": users,
                                                         "max_steps": 2, "eval_every": 1, "seeds": [0]}}}}
    result = materialize(home, instance, "production_protocol", "taobao", config, raise_on_error=False)
    [failure] = result.get_step_failure_events()
    assert failure.step_failure_data.user_failure_data.description.startswith(
        f"production_protocol (taobao): memory_k = {users} is too large for the {users} training users: ")
    logged = [record.user_message for record in instance.all_logs(result.run_id)]
    assert not any("melu (production) seed" in message for message in logged)  # MeLU did not train first


@pytest.mark.parametrize("values, line", [
    ({"inner_lr": -0.5}, "at_paml_model (taobao): inner_lr must be a number > 0, got -0.5"),
    ({"memory_beta": -1.0}, "at_paml_model (taobao): memory_beta must be a number >= 0, got -1.0"),  # named neither
    ({"mf_reg": 0.0}, "at_paml_model (taobao): mf_reg must be a finite number > 0, got 0.0"),  # was dropped unread
    ({"kernel_scale": float("nan")}, "at_paml_model (taobao): kernel_scale must be a finite number > 0, got nan"),  # trained with NaN
    ({"mf_reg": float("inf")}, "at_paml_model (taobao): mf_reg must be a finite number > 0, got inf"),  # MF's factors at 0
    ({"kernel_scale": float("inf")}, "at_paml_model (taobao): kernel_scale must be a finite number > 0, got inf"),
    ({"memory_capacity": 4, "memory_k": 8}, "at_paml_model (taobao): memory_capacity must be at least memory_k (8), got 4"),
])
def test_a_value_the_configs_refuse_is_one_line_naming_it(built, values, line):
    home, instance = built
    with pytest.raises(dg.Failure) as raised:
        materialize(home, instance, "at_paml_model", "taobao", model_config(**values))
    assert cli.expected_failure(raised.value) == line


def test_a_settings_file_that_is_not_json_is_one_line_naming_file_and_line(built, tmp_path):
    home, instance = built
    (tmp_path / "taobao.json").write_text('{"methods": {\n  "at_paml": }\n')
    with pytest.raises(dg.Failure) as raised:
        materialize(home, instance, "at_paml_model", "taobao", model_config(settings_dir=str(tmp_path)))
    assert cli.expected_failure(raised.value).startswith(
        f"at_paml_model (taobao): {tmp_path / 'taobao.json'}: not valid JSON (line 2, column 14)")


@pytest.mark.parametrize("where", ["missing", "a file"])
def test_a_settings_dir_that_is_not_a_directory_is_refused_naming_it(built, tmp_path, where):
    # A directory that does not exist gave every model the code defaults, without a word.
    home, instance = built
    path = tmp_path / "settings"
    if where == "a file":
        path.write_text("{}")
    with pytest.raises(pydantic.ValidationError) as raised:
        materialize(home, instance, "at_paml_model", "taobao", model_config(settings_dir=str(path)))
    what = "does not exist" if where == "missing" else "is a file, not a directory"
    assert f"settings_dir: '{path}' {what}" in cli.expected_failure(raised.value)


def test_a_settings_dir_without_the_datasets_file_trains_with_the_defaults_and_says_so(built, tmp_path):
    home, instance = built
    result = materialize(home, instance, "at_paml_model", "taobao", model_config(settings_dir=str(tmp_path)))
    logged = [record.user_message for record in instance.all_logs(result.run_id)]
    assert f"settings_dir {tmp_path} holds no taobao.json: at_paml trains with the code defaults and the run config's values" in logged


def test_the_search_fits_at_paml_k_to_few_training_users_as_the_model_assets_do(tmp_path):
    # 6 training users: the search started AT-PAML at the code default K = 8, which training refuses, and
    # its worker stopped the search ("search workers ... exited with [1]").
    from models.search import SearchConfig
    from pipelines.tune import tune
    from tests.test_tuning import tensors_of

    tensors, info = tensors_of(tiny_task_data(users=6))
    config = SearchConfig(trials=1, max_steps=2, eval_every=1, patience=1)
    written = tune(["tiny"], tmp_path / "home", lambda dataset: (tensors, info, "meta-tasks-hash"), methods=["at_paml"],
                   config=config, settings_dir=tmp_path / "settings", log=lambda line: None)
    trials = LineageStore(tmp_path / "home").query("SELECT state FROM tuning_trials WHERE method = 'at_paml'")
    assert trials["state"].to_list() == ["COMPLETE"] and written["tiny"] is not None
    assert default_memory_k(6) == 5  # the K it trained with, as `at_paml_model` takes it (ModelConfig.learner_config)
    assert ModelConfig().learner_config("at_paml", None, None, training_users=6).memory.k == 5


def test_the_fold_in_settings_of_a_run_config_reach_the_model(built):
    # mf_foldin, mf_reg, knn_foldin and knn_shrinkage were dropped without a word once the search stopped drawing them.
    home, instance = built
    values = {"mf_foldin": False, "knn_foldin": True, "knn_shrinkage": 7.0, "mf_reg": 3.0}
    config = {"ops": {"melu_model": {"config": {"max_steps": 2, "eval_every": 1, "seeds": [0], **values}}}}
    materialize(home, instance, "melu_model", "taobao", config)
    store = LineageStore(home, read_only=True)
    model = store.load(store.latest("melu_model", "taobao"))
    network = model.info["learner_config"]["network"]
    assert {name: network[name] for name in values} == values
    assert model.info["settings"]["run_config"] == values


def test_tune_export_to_a_file_is_one_line(built, tmp_path, monkeypatch, capsys):
    home, _ = built
    monkeypatch.setenv("PAML_HOME", str(home))
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit) as exited:
        cli.main(["tune", "--datasets", "taobao", "--export", str(tmp_path / "taken")])
    assert str(exited.value) == f"error: --export {tmp_path / 'taken'}: cannot write {tmp_path / 'taken' / 'taobao'}: Not a directory"


def test_a_failed_search_worker_is_one_line_after_its_own_error(tmp_path, capfd):
    # The worker prints its traceback; the command added a second one, of the parent's RuntimeError.
    from models.search import INFO_FILE, TENSORS_FILE, SearchConfig, SearchWorkerError, run_search

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / TENSORS_FILE).write_bytes(b"not a safetensors file")
    (tasks / INFO_FILE).write_text('{"dataset": "tiny", "splits": ["train", "val"]}')
    with pytest.raises(SearchWorkerError) as raised:
        run_search(tasks, tmp_path / "journal.log", ["melu"], SearchConfig(trials=1), log=lambda line: None)
    assert "Traceback" in capfd.readouterr().err  # the worker's own
    assert cli.expected_failure(raised.value).startswith(f"search workers on {tmp_path / 'journal.log'} exited with [1]; ")
