"""Training at its edges: rates that diverge, settings that are not numbers of the right kind,
settings files that would not mean what they say."""

import json
import math
from dataclasses import replace

import optuna
import pytest
import torch

from models.bounds import SettingError
from models.learners import LearnerConfig
from models.network import NetworkConfig
from models.search import SearchConfig, run_trial
from models.settings import chosen_settings, write_settings
from models.training import POOR_FIT_FACTOR, TrainConfig, mean_prediction_loss, poor_fit, train
from models.user_memory import MemoryConfig
from tests.model_fixtures import tiny_task_data

CONFIG = LearnerConfig(inner_lr=0.01, network=NetworkConfig(embedding_dim=4, hidden=(8, 8), factor_dim=2, unknown_rate=0.0,
                                                            mf_foldin=False, knn_foldin=False),
                       memory=MemoryConfig(capacity=16, k=2), finetune_lr=0.01)
SHORT = TrainConfig(max_steps=20, eval_every=5, patience=3, meta_batch=8)


@pytest.mark.parametrize("method", ["melu", "at_paml", "transfer"])
def test_an_outer_rate_that_diverges_stops_training_and_names_the_method_seed_step_and_setting(method):
    result = train(method, tiny_task_data(users=24), CONFIG, replace(SHORT, outer_lr=1e6, max_grad_norm=None, seed=3))
    assert result.stopped == "diverged" and result.diverged_step == 2  # the first update made every parameter NaN
    assert all(torch.isfinite(p).all() for p in result.learner.parameters())  # the kept scoring's weights, not NaN
    assert [log.step for log in result.history] == [0] and math.isfinite(result.best_val_loss)
    assert result.warning.startswith(f"{method}, seed 3: training diverged at outer step 2")
    assert "Lower outer_lr (now 1000000.0)" in result.warning


def test_an_inner_rate_that_gives_nan_from_the_start_names_the_inner_setting():
    result = train("transfer", tiny_task_data(users=24), replace(CONFIG, finetune_lr=1e6, max_step_norm=None), SHORT)
    assert not math.isfinite(result.best_val_loss) and result.best_step == 0
    assert "no validation scoring was finite" in result.warning and "Lower finetune_lr (now 1000000.0)" in result.warning


def test_a_gradient_norm_that_overflows_on_finite_gradients_does_not_stop_training():
    # Clipping scales such a gradient to 0: the step is harmless, and training goes on as it always did.
    result = train("melu", tiny_task_data(users=24), replace(CONFIG, inner_lr=1e6, max_step_norm=None), SHORT)
    assert math.isinf(max(log.max_grad_norm for log in result.history[1:]))
    assert result.stopped == "max_steps" and result.best_step == 20
    assert "Lower inner_lr (now 1000000.0)" in result.warning  # its losses (~1e34) say so: the next test


def test_a_huge_finite_inner_rate_warns_naming_method_seed_and_setting_without_changing_training():
    # Validation MSE ~1e34 (labels of variance ~2): finite, so nothing stopped it, and no message said so.
    data = tiny_task_data(users=24)
    settings = replace(CONFIG, inner_lr=1e6, max_step_norm=None)
    result = train("melu", data, settings, replace(SHORT, seed=4))
    baseline = mean_prediction_loss(data)
    assert math.isfinite(result.best_val_loss) and result.best_val_loss > 1e30 * baseline
    assert result.warning.startswith(f"melu, seed 4: the best validation loss, {result.best_val_loss:.3g}, is ")
    assert f"that of predicting the training labels' mean ({baseline:.3g}; more than 100 times is no model)" in result.warning
    assert result.warning.endswith("Lower inner_lr (now 1000000.0) or inner_steps (now 1), or set max_step_norm (now None).")
    # A sensible rate: no warning; training is as it was (the warning is words only).
    assert train("melu", data, CONFIG, SHORT).warning == ""
    assert poor_fit("melu", POOR_FIT_FACTOR * baseline, data, settings, SHORT) == ""
    assert poor_fit("melu", POOR_FIT_FACTOR * baseline * 1.01, data, settings, SHORT) != ""


def test_the_mean_prediction_loss_is_the_label_variance_for_ratings_and_the_rate_entropy_for_clicks():
    ratings = tiny_task_data(users=6)
    train_split = ratings.splits["train"]
    labels = [*train_split.support_labels[train_split.support_mask.bool()].tolist(),
              *train_split.query_labels[train_split.query_mask.bool()].tolist()]
    mean = sum(labels) / len(labels)
    assert mean_prediction_loss(ratings) == pytest.approx(sum((y - mean) ** 2 for y in labels) / len(labels))
    clicks = tiny_task_data("ctr", users=6)
    train_split = clicks.splits["train"]
    labels = [*train_split.support_labels[train_split.support_mask.bool()].tolist(),
              *train_split.query_labels[train_split.query_mask.bool()].tolist()]
    rate = sum(labels) / len(labels)
    assert 0 < rate < 1 and mean_prediction_loss(clicks) == pytest.approx(-rate * math.log(rate) - (1 - rate) * math.log(1 - rate))


def test_the_search_prunes_a_trial_that_diverged():
    data = tiny_task_data(users=24)
    study = optuna.create_study()
    trial = study.ask({})
    with pytest.raises(optuna.TrialPruned, match="training diverged at outer step 2"):
        run_trial(trial, "melu", data, CONFIG, replace(SHORT, outer_lr=1e6, max_grad_norm=None), SearchConfig(), None)
    assert trial.user_attrs["diverged_at_step"] == 2


@pytest.mark.parametrize("field, value, message", [
    ("outer_lr", 0.0, "outer_lr must be a number > 0, got 0.0"),
    ("outer_lr", -1e-3, "outer_lr must be a number > 0"),
    ("rate_lr", float("nan"), "rate_lr must be a number > 0, got nan"),
    ("max_steps", 0, "max_steps must be a whole number >= 1, got 0"),
    ("patience", 0, "patience must be a whole number >= 1"),
    ("eval_every", 0, "eval_every must be a whole number >= 1"),
    ("meta_batch", 0, "meta_batch must be a whole number >= 1"),
    ("weight_decay", -0.1, "weight_decay must be >= 0"),
])
def test_train_settings_that_cannot_train_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field, value, message", [
    ("inner_lr", 0.0, "inner_lr must be a number > 0"),
    ("inner_lr", -0.01, "inner_lr must be a number > 0, got -0.01"),
    ("finetune_lr", float("nan"), "finetune_lr must be a number > 0"),
    ("inner_steps", 0, "inner_steps must be a whole number >= 1"),
    ("finetune_steps", 2.5, "finetune_steps must be a whole number >= 1"),
    ("max_step_norm", 0.0, "max_step_norm must be > 0"),
    ("gamma", -1.0, "gamma must be >= 0"),
])
def test_learner_settings_that_cannot_train_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        LearnerConfig(**{field: value})


def settings_file(tmp_path, change) -> None:
    content = {"dataset": "movielens", "methods": {"melu": {"trial": 1, "value": 0.9, "form": 1,
                                                            "params": {"inner_lr": 0.02, "inner_steps": 3, "outer_lr": 1e-3}}}}
    change(content)
    (tmp_path / "movielens.json").write_text(json.dumps(content))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(methds={}), r"unknown key\(s\) 'methds'"),
    (lambda c: c["methods"].update({"reg-paml": {"params": {}}}), "unknown method 'reg-paml'"),
    (lambda c: c["methods"]["melu"].update(trail=3), r"melu's entry has unknown key\(s\) 'trail'"),
    (lambda c: c["methods"]["melu"]["params"].update(inner_lr="0.02"), "melu setting inner_lr = '0.02': expected a finite number"),
    (lambda c: c["methods"]["melu"]["params"].update(inner_steps=2.5), "melu setting inner_steps = 2.5: expected a whole number"),
    (lambda c: c["methods"]["melu"]["params"].update(outer_lr=True), "melu setting outer_lr = True: expected a finite number"),
    (lambda c: c["methods"]["melu"]["params"].update(outer_lr=-0.1), "melu setting outer_lr = -0.1: outer_lr must be a number > 0"),
    (lambda c: c["methods"]["melu"]["params"].update(gamma=0.1), "melu setting gamma = 0.1: melu does not read gamma"),
    (lambda c: c["methods"]["melu"].pop("params"), "melu's entry must be an object with a \"params\" object"),
    (lambda c: c.update(methods=["melu"]), "\"methods\" must be an object"),
    (lambda c: c.update(dataset="bookcrossing"), "written for dataset 'bookcrossing', read for 'movielens'"),
])
def test_a_settings_file_that_would_not_mean_what_it_says_is_refused_naming_file_key_and_value(tmp_path, change, message):
    settings_file(tmp_path, change)
    with pytest.raises(ValueError, match=message) as error:
        chosen_settings("movielens", "melu", tmp_path)
    assert str(tmp_path / "movielens.json") in str(error.value)


def test_a_valid_settings_file_still_reads_and_a_method_without_an_entry_gets_the_code_defaults(tmp_path):
    settings_file(tmp_path, lambda c: None)
    assert chosen_settings("movielens", "melu", tmp_path).params == {"inner_lr": 0.02, "inner_steps": 3, "outer_lr": 1e-3}
    assert chosen_settings("movielens", "paml", tmp_path).params == {}
    write_settings({"methods": {"melu": {"params": {"inner_lr": 0.03}}}}, "movielens", tmp_path)  # no "dataset": allowed
    assert chosen_settings("movielens", "melu", tmp_path).params == {"inner_lr": 0.03}


@pytest.mark.parametrize("users, capacity, message", [
    (2, 16, "memory_k = 2 is too large for the 2 training users: memory_k must be at most 1"),
    (24, 2, "memory_capacity = 2 is too small for memory_k = 2: memory_capacity must be at least 3"),
])
def test_an_at_paml_memory_that_can_never_leave_warm_up_is_refused(users, capacity, message):
    config = replace(CONFIG, memory=MemoryConfig(capacity=capacity, k=2))
    with pytest.raises(SettingError, match=message):
        train("at_paml", tiny_task_data(users=users), config, SHORT)


def test_training_without_validation_users_is_refused_instead_of_keeping_the_untrained_network():
    data = tiny_task_data(users=12)
    data = replace(data, splits={**data.splits, "val": data.splits["val"].select(torch.arange(0))})
    with pytest.raises(ValueError, match="melu: the validation split has no users"):
        train("melu", data, CONFIG, SHORT)


def test_a_dataset_with_fewer_training_users_than_the_default_k_needs_trains_at_paml_with_k_lowered():
    # 6 training users (a tiny log: 12 users, 9 cold-start, split 6 / 1 / 2): the default K = 8 could never leave
    # warm-up, and its refusal stopped the whole training job, the other five methods with it.
    from assets.method_assets import ModelConfig

    config = ModelConfig(embedding_dim=4, hidden=[8, 8])
    learner = config.learner_config("at_paml", None, None, training_users=6)
    assert learner.memory.k == 5
    assert config.memory_note("at_paml", learner, 6).startswith(
        "at_paml: 6 training users, too few for the memory's default K = 8 neighbours")
    result = train("at_paml", tiny_task_data(users=6), learner, SHORT)
    assert result.stopped != "diverged" and math.isfinite(result.best_val_loss)
    # Enough training users keep the default (the built-in datasets' models are unchanged); a K set in the run
    # config is kept as set, and still refused when the memory cannot fill.
    assert config.learner_config("at_paml", None, None, training_users=9).memory.k == 8
    assert config.memory_note("at_paml", config.learner_config("at_paml", None, None, 9), 9) == ""
    chosen = ModelConfig(memory_k=8).learner_config("at_paml", None, None, training_users=6)
    assert chosen.memory.k == 8
    with pytest.raises(SettingError, match="memory_k = 8 is too large for the 6 training users: memory_k must be at most 5"):
        train("at_paml", tiny_task_data(users=6), replace(chosen, network=learner.network), SHORT)
