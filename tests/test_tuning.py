"""The validation search: the space, settings files that reach the models, the Optuna loop on tiny
tasks (2 trials, CPU), resuming after a kill, and proof that test users are never read."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from assets.method_assets import ModelConfig
from models.learners import LearnerConfig, method_form
from models.search import JournalError, SearchConfig, journal_storage, load_search_tasks, parse_study_name, run_search, study_name, tasks_digest
from models.settings import (
    KNOBS, SPACE, apply_params, apply_settings, chosen_settings, knob_exists, search_space, tuned_configs, write_settings,
)
from models.training import TrainConfig
from pipelines.cli import expected_failure
from pipelines.store import LineageStore
from pipelines.tune import (GENERATED_END, GENERATED_START, best_trial_text, export_tasks, ingest, is_current, journal_path,
                            load_studies, render_tuning_doc, replace_generated, tune)
from tests.model_fixtures import tiny_task_data

pytestmark = pytest.mark.heavy  # long: handed out first when the tests run in parallel (tests/conftest.py)

ROOT = Path(__file__).resolve().parent.parent
TINY = SearchConfig(trials=2, max_steps=8, eval_every=4, patience=2)


def tensors_of(data) -> tuple[dict, dict]:
    """A meta_tasks-style tensor dict and info for TaskData."""
    tensors = {"item_fields": data.items.fields, **{f"item_multi__{f}": v for f, v in data.items.multi.items()}}
    for split, tasks in data.splits.items():
        for name in ("user_fields", "support_items", "support_labels", "support_mask", "query_items", "query_labels", "query_mask"):
            tensors[f"{split}__{name}"] = getattr(tasks, name)
    info = {"task": data.task, "user_fields": list(data.user_fields), "item_fields": list(data.item_fields),
            "item_multi_fields": list(data.item_multi_fields), "vocab_sizes": data.vocab_sizes,
            "splits": list(data.splits), "dataset": "tiny"}
    return tensors, info


def finished(journal: Path) -> dict[str, list[tuple]]:
    """Per study: (params, value) of every finished trial, in trial order."""
    import optuna

    storage = journal_storage(journal)
    out = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[summary.study_name] = [(json.dumps(t.params, sort_keys=True), t.value, t.state.name)
                                   for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    return out


# -- the space and the settings files --------------------------------------------------------


def test_every_knob_but_pending_ones_names_a_config_field_and_methods_get_their_own_knobs():
    assert all(knob_exists(k) for k in SPACE)
    names = lambda method: {k.name for k in search_space(method)}  # noqa: E731
    assert {"gamma", "lr_range", "lr_history"} <= names("reg_paml") and "gamma" not in names("paml")
    assert {"correction_range", "memory_weight", "kernel_scale", "rate_lr", "lr_range"} <= names("at_paml")
    assert "lr_history" not in names("at_paml")
    assert names("transfer") >= {"finetune_lr", "finetune_steps", "outer_lr"} and "inner_lr" not in names("transfer")
    assert "factor_lr_scale" in names("melu")  # the dot-product head is on by default
    without_head = LearnerConfig(network=LearnerConfig().network.__class__(factor_dim=0))
    assert "factor_lr_scale" not in {k.name for k in search_space("melu", without_head)}  # the knob would do nothing


def test_params_land_in_the_config_that_owns_them():
    learner, train = apply_params({"inner_lr": 0.1, "unknown_rate": 0.2, "kernel_scale": 1.5, "outer_lr": 1e-3,
                                   "rate_lr": 2e-3}, LearnerConfig(), TrainConfig())
    assert (learner.inner_lr, learner.network.unknown_rate, learner.memory.kernel_scale) == (0.1, 0.2, 1.5)
    assert (train.outer_lr, train.rate_lr, train.max_steps) == (1e-3, 2e-3, TrainConfig().max_steps)
    assert learner.gamma == LearnerConfig().gamma
    with pytest.raises(ValueError, match="unknown setting 'epochz'"):
        apply_params({"epochz": 3}, LearnerConfig(), TrainConfig())


def test_model_config_layers_code_defaults_the_settings_file_and_explicit_values(tmp_path):
    write_settings({"dataset": "movielens", "methods": {"reg_paml": {
        "trial": 7, "value": 0.9, "params": {"inner_lr": 0.01, "outer_lr": 1e-3, "gamma": 1e-4, "unknown_rate": 0.1}}}},
        "movielens", tmp_path)
    config = ModelConfig(gamma=1e-2, device="cpu", settings_dir=str(tmp_path))
    learner = config.learner_config("reg_paml", "movielens")
    assert (learner.inner_lr, learner.gamma, learner.network.unknown_rate) == (0.01, 1e-2, 0.1)  # the run config wins
    assert config.train_config("reg_paml", "movielens").outer_lr == 1e-3
    assert config.learner_config("reg_paml", "taobao").inner_lr == LearnerConfig().inner_lr  # no file: code default
    assert config.train_config("melu", "movielens").outer_lr == TrainConfig().outer_lr  # no entry: code default
    provenance = config.settings_provenance("reg_paml", "movielens")
    assert provenance["trial"] == 7 and provenance["run_config"] == {"gamma": 1e-2}
    assert len(provenance["sha256"]) == 64
    (tmp_path / "taobao.json").write_text('{"methods": {"melu": {"params": {"inner_lrr": 1}}}}')
    with pytest.raises(ValueError, match="unknown setting.*inner_lrr"):
        chosen_settings("taobao", "melu", tmp_path)


def test_the_model_assets_and_the_benchmarks_resolve_the_same_settings(tmp_path):
    from assets.bundle import Bundle
    from models.references import BiasConfig, BlendConfig, KNNConfig, MFConfig, ReferenceSettings

    write_settings({"dataset": "movielens", "methods": {"reg_paml": {"params": {"inner_lr": 0.02, "gamma": 1e-3}}}},
                   "movielens", tmp_path)
    chosen = ReferenceSettings(BiasConfig(item_shrinkage=25.0, user_shrinkage=3.0), MFConfig(rank=5, reg=7.0),
                               KNNConfig(k=40, shrinkage=300.0, damping=0.1), BlendConfig(0.45))
    references = Bundle(info={"settings": {"paper": chosen.as_dict()}})
    asset = ModelConfig(device="cpu", settings_dir=str(tmp_path)).learner_config("reg_paml", "movielens", references)
    learner, _ = apply_settings({"inner_lr": 0.02, "gamma": 1e-3}, LearnerConfig(), TrainConfig(), chosen)
    assert asset == learner  # one resolution for the model assets, the search, the GPU check and the benchmarks
    assert (learner.inner_lr, learner.gamma, learner.network.knn_k, learner.network.factor_dim) == (0.02, 1e-3, 40, 5)
    # The run config wins over the settings file and the references, the rank included.
    explicit = ModelConfig(device="cpu", settings_dir=str(tmp_path), gamma=1e-2, factor_dim=3)
    mine = explicit.learner_config("reg_paml", "movielens", references)
    assert (mine.gamma, mine.network.factor_dim, mine.network.mf_reg, mine.inner_lr) == (1e-2, 3, 7.0, 0.02)
    # Production-protocol models ignore the paper protocol's choice (none given for it here).
    production = ModelConfig(device="cpu", settings_dir=str(tmp_path), protocol="production")
    assert production.learner_config("reg_paml", "movielens", references).network.knn_k == LearnerConfig().network.knn_k


def test_the_committed_settings_files_are_valid_for_every_method_they_name():
    for path in sorted((ROOT / "models" / "settings").glob("*.json")):
        content = json.loads(path.read_text())
        dataset, _, protocol = path.stem.partition(".")  # <dataset>.json, <dataset>.<protocol>.json
        for method, entry in content["methods"].items():
            assert entry.get("form", 1) == method_form(method), f"{path.name}: {method} was searched for another form"
            tuned_configs(dataset, method, TrainConfig(protocol=protocol or "paper"))


def test_a_method_whose_step_size_changed_form_gets_its_own_study_and_ignores_old_settings(tmp_path):
    assert method_form("at_paml") == 2 and method_form("paml") == 1
    assert study_name("paml", "paper") == "paper/paml" and study_name("at_paml", "production") == "production/at_paml@2"
    assert parse_study_name("production/at_paml@2") == ("production", "at_paml", 2)
    assert parse_study_name("paper/paml") == ("paper", "paml", 1)
    assert is_current("paper/at_paml@2") and not is_current("paper/at_paml") and not is_current("paper/gone")
    entry = {"params": {"correction_range": 1.5}, "trial": 3}
    (tmp_path / "taobao.json").write_text(json.dumps({"methods": {"at_paml": entry, "paml": {**entry, "params": {"lr_range": 3.0}}}}))
    with pytest.warns(UserWarning, match="form 1"):
        assert chosen_settings("taobao", "at_paml", tmp_path).params == {}
    assert chosen_settings("taobao", "paml", tmp_path).params == {"lr_range": 3.0}  # form 1 by default: still valid
    (tmp_path / "taobao.json").write_text(json.dumps({"methods": {"at_paml": {**entry, "form": 2}}}))
    assert chosen_settings("taobao", "at_paml", tmp_path).params == {"correction_range": 1.5}


# -- the search --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One 2-trial search of two methods, through the tune command's own steps."""
    root = tmp_path_factory.mktemp("search")
    tensors, info = tensors_of(tiny_task_data())
    settings = root / "settings"
    written = tune(["tiny"], root / "home", lambda dataset: (tensors, info, "meta-tasks-hash"), methods=["melu", "reg_paml"],
                   config=TINY, workers=2, settings_dir=settings, log=lambda line: None)
    return root, written["tiny"]


def test_the_export_leaves_test_users_out(searched):
    root, _ = searched
    tasks = root / "home" / "tuning" / "tiny" / "tasks"
    from safetensors import safe_open

    with safe_open(str(tasks / "tensors.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    assert keys and not any(k.startswith("test__") for k in keys) and "val__query_labels" in keys
    assert json.loads((tasks / "info.json").read_text())["splits"] == ["train", "val"]


def test_search_runs_the_budget_starts_at_the_defaults_and_writes_settings_and_trials(searched):
    root, settings_path = searched
    trials = LineageStore(root / "home").query("SELECT * FROM tuning_trials ORDER BY method, trial")
    assert trials.group_by("method").len().sort("method")["len"].to_list() == [2, 2]  # the same budget each
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    defaults = trials.filter(pl.col("trial") == 0)
    assert defaults["is_defaults"].all()
    reg = json.loads(defaults.filter(pl.col("method") == "reg_paml")["params"][0])
    assert (reg["inner_lr"], reg["gamma"], reg["outer_lr"]) == (LearnerConfig().inner_lr, LearnerConfig().gamma, TrainConfig().outer_lr)
    for row in trials.iter_rows(named=True):
        for name, value in json.loads(row["params"]).items():
            knob = KNOBS[name]
            assert value in knob.choices if knob.kind == "categorical" else knob.low <= value <= knob.high
        # One validation loss per evaluation: the untrained start (step 0, a candidate too), then every 4 steps.
        assert row["steps"] == [0, 4, 8] and len(row["val_losses"]) == 3
        if row["state"] == "COMPLETE":
            assert row["value"] == pytest.approx(min(row["val_losses"]))
    content = json.loads(settings_path.read_text())
    for method in ("melu", "reg_paml"):
        best = trials.filter((pl.col("method") == method) & (pl.col("state") == "COMPLETE")).sort("value").row(0, named=True)
        assert content["methods"][method]["trial"] == best["trial"]
        assert content["methods"][method]["params"] == json.loads(best["params"])
    journal = root / "home" / "tuning" / "tiny" / "journal.log"
    assert content["journal_sha256"] == trials["journal_sha256"][0] and len(content["journal_sha256"]) == 64
    assert content["search"]["trials"] == 2 and content["search"]["max_steps"] == 8
    assert journal.is_file()


def test_a_journal_from_another_machine_is_imported_only_onto_the_same_tasks(searched, tmp_path):
    root, _ = searched
    tensors, info = tensors_of(tiny_task_data())
    carried = tmp_path / "carried"
    carried.mkdir()
    (carried / "tiny.journal").write_bytes((root / "home" / "tuning" / "tiny" / "journal.log").read_bytes())
    written = tune(["tiny"], tmp_path / "home", lambda d: (tensors, info, "h"), methods=["melu"], config=TINY,
                   import_dir=carried, settings_dir=tmp_path / "settings", log=lambda line: None)
    assert json.loads(written["tiny"].read_text())["methods"].keys() == {"melu", "reg_paml"}
    other, _ = tensors_of(tiny_task_data(seed=1))
    with pytest.raises(JournalError, match="searched on other tasks") as refused:
        tune(["tiny"], tmp_path / "home2", lambda d: (other, info, "h"), methods=["melu"], config=TINY,
             import_dir=carried, settings_dir=tmp_path / "settings2", log=lambda line: None)
    # The command line prints it as one line (no traceback): an expected failure.
    assert expected_failure(refused.value) == str(refused.value) and "\n" not in str(refused.value)


def test_test_users_are_never_read(tmp_path):
    """The same search on tasks whose test labels and profiles are scrambled gives the same trials and values,
    even when the test tensors are left in the directory."""
    results = []
    for scramble in (False, True):
        tensors, info = tensors_of(tiny_task_data())
        if scramble:
            tensors["test__query_labels"] = 6.0 - tensors["test__query_labels"]
            tensors["test__support_labels"] = torch.full_like(tensors["test__support_labels"], 5.0)
            tensors["test__user_fields"] = torch.flip(tensors["test__user_fields"], [0])
        directory = tmp_path / f"tasks{int(scramble)}"
        directory.mkdir()
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "tensors.safetensors"))
        (directory / "info.json").write_text(json.dumps(info))
        data, _ = load_search_tasks(directory)
        assert set(data.splits) == {"train", "val"}
        run_search(directory, tmp_path / f"journal{int(scramble)}.log", ["melu"], TINY, log=lambda line: None)
        results.append(finished(tmp_path / f"journal{int(scramble)}.log"))
    assert results[0] == results[1] and len(results[0]["paper/melu"]) == 2
    # the workers kept the fold-ins' item sides beside the journals; the second search read them
    assert {p.name.split("-")[0] for p in (tmp_path / "fits").glob("*.safetensors")} == {"mf", "knn"}


def test_a_killed_search_resumes_without_redoing_finished_trials_and_draws_what_an_uninterrupted_one_draws(tmp_path):
    tensors, info = tensors_of(tiny_task_data(users=16))
    tasks = export_tasks(tensors, info, tmp_path / "tasks", "h")
    # Long enough trials (about a second each) that the kill lands inside one.
    args = ["--tasks", str(tasks), "--methods", "melu", "--trials", "3", "--max-steps", "20", "--eval-every", "4",
            "--patience", "100"]
    command = [sys.executable, "-m", "models.search", *args]
    assert subprocess.run([*command, "--journal", str(tmp_path / "straight.log")], cwd=ROOT, capture_output=True).returncode == 0

    killed = tmp_path / "killed.log"
    process = subprocess.Popen([*command, "--journal", str(killed)], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import optuna

    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.05)
        if not killed.is_file() or not optuna.get_all_study_summaries(journal_storage(killed)):
            continue
        study = optuna.load_study(study_name="paper/melu", storage=journal_storage(killed))
        trials = study.get_trials()
        if [t.state.name for t in trials][:2] == ["COMPLETE", "RUNNING"] and trials[1].intermediate_values:
            break  # trial 1 is training
    else:
        pytest.fail("the search never reached its second trial")
    os.killpg(process.pid, signal.SIGKILL)  # the parent and its worker, mid-trial
    process.wait()
    first_value = study.get_trials()[0].value

    rerun = subprocess.run([*command, "--journal", str(killed)], cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "queued again" in rerun.stdout
    study = optuna.load_study(study_name="paper/melu", storage=journal_storage(killed))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].value == first_value  # the finished trial was not run again
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[1].params
    assert finished(killed) == finished(tmp_path / "straight.log")


def test_a_second_run_on_a_busy_journal_is_refused(tmp_path):
    from models.locks import file_lock

    tensors, info = tensors_of(tiny_task_data())
    tasks = export_tasks(tensors, info, tmp_path / "tasks", "h")
    journal = tmp_path / "j.log"
    with file_lock(Path(f"{journal}.run.lock")):
        with pytest.raises(RuntimeError, match="another search is running"):
            run_search(tasks, journal, ["melu"], TINY)
    assert tasks_digest(tasks) == tasks_digest(tasks)


def test_a_second_tune_beside_a_running_one_is_one_line_naming_it_and_leaves_its_tasks_alone(tmp_path):
    # Before: the second `tune` rewrote the exported tasks in place under the first one's workers, then
    # stopped with RuntimeError's traceback (the CLI took it for a bug).
    from models.search import TENSORS_FILE, SearchRunningError
    from pipelines.tune import journal_path, tuning_dir

    tensors, info = tensors_of(tiny_task_data())
    home = tmp_path / "home"
    tasks = export_tasks(tensors, info, tuning_dir(home, "tiny") / "tasks", "h") / TENSORS_FILE
    written = tasks.stat()
    journal = journal_path(home, "tiny")
    hold = f"from models.locks import file_lock\nwith file_lock({str(journal) + '.run.lock'!r}):\n    print('held', flush=True)\n" \
           "    import time; time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SearchRunningError) as refused:
            tune(["tiny"], home, lambda dataset: (tensors, info, "h"), methods=["melu"], config=TINY, log=lambda line: None)
    finally:
        holder.kill()
        holder.wait()
    line = expected_failure(refused.value)
    assert line == str(refused.value) and "\n" not in line
    assert f"another search is running on {journal}: " in line and f"(PID {holder.pid}) holds journal.log.run.lock" in line
    assert line.endswith("then run this command again: it resumes from the journal")
    assert (tasks.stat().st_mtime_ns, tasks.stat().st_ino) == (written.st_mtime_ns, written.st_ino)


def test_the_tuning_doc_is_rendered_from_the_journals_and_keeps_the_hand_written_part(searched, tmp_path):
    root, settings_file = searched
    doc = tmp_path / "tuning.md"
    doc.write_text(f"# Tuning\n\nhand-written intro\n\n{GENERATED_START}\nold\n{GENERATED_END}\n\nhand-written end\n")
    render_tuning_doc(root / "home", ["tiny", "movielens"], doc, tmp_path / "plots")
    text = doc.read_text()
    assert "hand-written intro" in text and "hand-written end" in text and "\nold\n" not in text
    assert "### tiny" in text and "| melu | 2 / 0 / 0 |" in text
    assert "### movielens\n\nNot searched yet." in text
    assert (tmp_path / "plots" / "history_tiny.png").read_bytes()[:4] == b"\x89PNG"
    assert "`kernel_scale` | memory | 0.5 to 6 |" in text
    # Each best trial's kept step is the one training kept (recorded by the search as `best_step`).
    chosen = json.loads(settings_file.read_text())["methods"]
    assert set(chosen) == {"melu", "reg_paml"}
    for study in load_studies(journal_path(root / "home", "tiny")):
        method = parse_study_name(study.study_name)[1]
        trial = study.trials[chosen[method]["trial"]]
        step = trial.user_attrs["best_step"]
        cell = f"{trial.number} (step 0: untrained)" if step == 0 else f"{trial.number} (step {step})"
        line = next(line for line in text.splitlines() if line.startswith(f"| {method} | "))  # the studies' table comes first
        assert f" | {cell} | {trial.value:.4f} | " in line, (line, cell)
    with pytest.raises(ValueError, match="no end marker"):
        replace_generated(f"x {GENERATED_START} y", "new", doc)


def test_tuning_one_dataset_leaves_the_repositorys_tuning_doc_alone(searched):
    from pipelines.tune import tuning_doc_written
    from pipelines.tune import TUNING_DOC

    root, _ = searched
    before = TUNING_DOC.read_bytes()
    message = tuning_doc_written(root / "home")  # a home whose only study is 'tiny'
    assert TUNING_DOC.read_bytes() == before
    assert message.startswith(f"wrote {root / 'home' / 'tuning' / 'tuning.md'} (docs/tuning.md is left as it is")
    assert "### tiny" in (root / "home" / "tuning" / "tuning.md").read_text()


def test_ingest_mirrors_every_trial_again_after_more_trials(searched, tmp_path):
    root, _ = searched
    store = LineageStore(tmp_path / "home")
    journal = root / "home" / "tuning" / "tiny" / "journal.log"
    ingest("tiny", journal, store, tmp_path / "settings")
    ingest("tiny", journal, store, tmp_path / "settings")  # idempotent: rows are replaced, not appended
    assert store.query("SELECT count(*) FROM tuning_trials").item() == 4


def test_a_search_of_some_methods_keeps_the_others_choices(searched, tmp_path):
    root, _ = searched
    settings = tmp_path / "settings"
    write_settings({"dataset": "tiny", "journal_sha256": "old" * 4, "date": "2026-11-01", "methods": {
        "melu": {"trial": 3, "value": 0.99, "params": {"inner_lr": 0.2}},
        "transfer": {"trial": 5, "value": 0.8, "params": {"finetune_lr": 0.01}},
        "paml": {"trial": 1, "params": {"inner_lr": 0.1}, "chosen_by": {"journal_sha256": "older", "date": "2026-10-01"}}}},
        "tiny", settings)
    ingest("tiny", root / "home" / "tuning" / "tiny" / "journal.log", LineageStore(tmp_path / "home"), settings)
    methods = json.loads((settings / "tiny.json").read_text())["methods"]
    assert set(methods) == {"melu", "reg_paml", "transfer", "paml"}  # this journal studied melu and reg_paml
    assert methods["melu"]["params"] != {"inner_lr": 0.2} and "chosen_by" not in methods["melu"]  # searched again: replaced
    assert methods["transfer"]["params"] == {"finetune_lr": 0.01}
    assert methods["transfer"]["chosen_by"] == {"journal_sha256": "old" * 4, "date": "2026-11-01"}
    assert methods["paml"]["chosen_by"] == {"journal_sha256": "older", "date": "2026-10-01"}  # its own origin, kept
    assert chosen_settings("tiny", "transfer", settings).params == {"finetune_lr": 0.01}


def test_each_protocol_reads_its_own_settings_file_and_falls_back_to_the_papers(tmp_path):
    write_settings({"dataset": "movielens", "methods": {"melu": {"trial": 2, "params": {"inner_lr": 0.02}, "protocol": "paper"},
                                                         "paml": {"trial": 4, "params": {"inner_lr": 0.03}}}},
                   "movielens", tmp_path)
    write_settings({"dataset": "movielens", "methods": {"melu": {"trial": 9, "params": {"inner_lr": 0.05}, "protocol": "production"}}},
                   "movielens", tmp_path, "production")
    assert (tmp_path / "movielens.production.json").is_file()
    assert chosen_settings("movielens", "melu", tmp_path).params == {"inner_lr": 0.02}
    assert chosen_settings("movielens", "melu", tmp_path, "production").params == {"inner_lr": 0.05}
    assert chosen_settings("movielens", "paml", tmp_path, "production").params == {"inner_lr": 0.03}  # not searched there
    paper, production = (ModelConfig(device="cpu", settings_dir=str(tmp_path), protocol=p) for p in ("paper", "production"))
    assert (paper.learner_config("melu", "movielens").inner_lr, production.learner_config("melu", "movielens").inner_lr) == (0.02, 0.05)
    assert production.settings_provenance("melu", "movielens")["file"].endswith("movielens.production.json")
    assert production.settings_provenance("paml", "movielens")["file"].endswith("movielens.json")
    # An entry searched under the production protocol in the paper protocol's file (older code wrote it there) is refused.
    write_settings({"dataset": "movielens", "methods": {"melu": {"params": {"inner_lr": 0.05}, "protocol": "production"}}},
                   "movielens", tmp_path)
    with pytest.raises(ValueError, match=r"movielens\.json: melu's entry was searched under the 'production' protocol.*"
                                         r"movielens\.production\.json"):
        chosen_settings("movielens", "melu", tmp_path)


def test_a_production_search_writes_its_own_file_and_leaves_the_papers(searched, tmp_path):
    from dataclasses import replace

    root, paper_file = searched
    home, settings = tmp_path / "home", tmp_path / "settings"
    settings.mkdir()
    (home / "tuning" / "tiny").mkdir(parents=True)
    (home / "tuning" / "tiny" / "journal.log").write_bytes((root / "home" / "tuning" / "tiny" / "journal.log").read_bytes())
    (settings / "tiny.json").write_bytes(paper_file.read_bytes())
    data = tiny_task_data()
    tensors, info = tensors_of(replace(data, splits={**data.splits, "warm": tiny_task_data(seed=2).splits["train"]}))
    written = tune(["tiny"], home, lambda dataset: (tensors, info, "h"), methods=["melu"],
                   config=replace(TINY, protocol="production"), settings_dir=settings, log=lambda line: None)
    assert written["tiny"] == settings / "tiny.production.json"
    assert (settings / "tiny.json").read_bytes() == paper_file.read_bytes()  # the paper protocol's choice is untouched
    content = json.loads(written["tiny"].read_text())
    assert set(content["methods"]) == {"melu"} and content["methods"]["melu"]["protocol"] == "production"
    assert content["search"]["protocol"] == "production"
    trials = LineageStore(home).query("SELECT protocol, method, count(*) AS n FROM tuning_trials GROUP BY ALL ORDER BY ALL")
    assert trials.rows() == [("paper", "melu", 2), ("paper", "reg_paml", 2), ("production", "melu", 2)]
    doc = render_tuning_doc(home, ["tiny"], tmp_path / "tuning.md", tmp_path / "plots")
    text = doc.read_text()
    assert "### tiny\n" in text and "### tiny, production protocol" in text and "tiny.production.json" in text
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["history_tiny.png", "history_tiny_production.png"]


def test_a_model_run_records_its_settings_file_trial_overrides_threads_and_device(tmp_path):
    """A real Dagster run of one model asset on tiny tasks stored as the taobao partition."""
    import dagster as dg

    from assets.bundle import Bundle
    from models.settings import file_sha256, settings_path
    from pipelines.definitions import ASSETS, build_resources

    home = tmp_path / "home"
    tensors, info = tensors_of(tiny_task_data(task="ctr"))
    LineageStore(home).record(Bundle(tensors=tensors, info={**info, "dataset": "taobao"}), run_id="data", job_name="data_job",
                              asset_key="meta_tasks", partition="taobao", code_version="1", inputs=[], mirrors={})
    config = {"ops": {"melu_model": {"config": {"seeds": [0], "max_steps": 2, "eval_every": 1, "inner_lr": 0.07, "device": "cpu"}}}}
    result = dg.materialize(ASSETS, selection=["reference_settings", "melu_model"], partition_key="taobao", run_config=config,
                            resources=build_resources(home, tmp_path / "no-data"), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    store = LineageStore(home)
    model = store.load(store.latest("melu_model", "taobao"))
    chosen = json.loads(settings_path("taobao").read_text())["methods"]["melu"]
    recorded = model.info["settings"]
    assert recorded["file"] == "models/settings/taobao.json" and recorded["sha256"] == file_sha256(settings_path("taobao"))
    assert recorded["trial"] == chosen["trial"] and recorded["params"] == chosen["params"]
    assert recorded["run_config"] == {"inner_lr": 0.07} and model.info["learner_config"]["inner_lr"] == 0.07
    assert model.info["learner_config"]["inner_steps"] == chosen["params"].get("inner_steps", LearnerConfig().inner_steps)
    run = store.query("SELECT * FROM runs WHERE run_id = ?", [result.run_id]).row(0, named=True)
    assert (run["torch_threads"], run["device"], run["deterministic"]) == (torch.get_num_threads(), "cpu", True)
    assert json.loads(run["settings"])["taobao/melu"]["trial"] == chosen["trial"]


def test_a_new_study_tries_the_code_defaults_first_and_the_settings_in_use_second(tmp_path):
    from models.search import base_configs, create_study

    storage = journal_storage(tmp_path / "j.log")
    # gamma is not a PAML knob and 50 is outside inner_lr's range: neither is carried over.
    study = create_study(storage, "paml", TINY, "h", *base_configs(TINY),
                         incumbent={"lr_range": 2.0, "inner_steps": 3, "gamma": 0.01, "inner_lr": 50.0})
    defaults, incumbent = (t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False))
    assert defaults["lr_range"] == LearnerConfig().lr_range and defaults["inner_steps"] == LearnerConfig().inner_steps
    assert incumbent == {**defaults, "lr_range": 2.0, "inner_steps": 3}
    # The same settings as the defaults: nothing more to try.
    again = create_study(journal_storage(tmp_path / "k.log"), "melu", TINY, "h", *base_configs(TINY),
                         incumbent={"inner_lr": LearnerConfig().inner_lr})
    assert len(again.get_trials(deepcopy=False)) == 1


def test_the_fold_ins_settings_are_left_to_the_reference_grid():
    # Drawn by the search they overrode the reference rows' validation choice in every trial.
    assert not {"mf_foldin", "mf_reg", "knn_foldin", "knn_shrinkage"} & set(KNOBS)


def test_a_resumed_study_may_get_more_trials_but_keeps_its_budget_and_seed(tmp_path):
    from dataclasses import replace

    from models.search import prepare

    tensors, info = tensors_of(tiny_task_data())
    tasks = export_tasks(tensors, info, tmp_path / "tasks", "h")
    journal = tmp_path / "j.log"
    prepare(tasks, journal, ["melu"], TINY)
    prepare(tasks, journal, ["melu"], replace(TINY, trials=5, device="cuda", threads=4))
    with pytest.raises(ValueError, match=r"seed 0 -> 1; max_steps 8 -> 9"):
        prepare(tasks, journal, ["melu"], replace(TINY, max_steps=9, seed=1))


def test_the_best_trial_cell_names_the_step_training_kept_and_step_0_as_untrained():
    import optuna

    def trial(number: int, **attrs):
        made = optuna.trial.create_trial(value=0.8, user_attrs=attrs)
        made.number = number
        return made

    assert best_trial_text(trial(14, best_step=0)) == "14 (step 0: untrained)"
    assert best_trial_text(trial(13, best_step=700)) == "13 (step 700)"
    assert best_trial_text(trial(2)) == "2"  # a trial that recorded no step
    assert best_trial_text(None) == "-"
