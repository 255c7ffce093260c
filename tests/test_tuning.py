"""The validation search: equal budgets, reproducible draws, settings that reach the models."""

import json
from pathlib import Path

import pytest

from assets.method_assets import ModelConfig
from models import tuned
from models.learners import METHODS, LearnerConfig
from models.training import TrainConfig
from models.tuning import apply_settings, default_settings, draw_settings, search_space
from pipelines.tune import RESULTS_DIR, results_markdown, tune_dataset
from tests.model_fixtures import tiny_task_data


@pytest.mark.parametrize("method", sorted(METHODS))
def test_draws_start_at_the_defaults_and_are_distinct_grid_points(method):
    defaults = default_settings(method, LearnerConfig(), TrainConfig())
    draws = draw_settings(method, 5, seed=0, defaults=defaults)
    assert len(draws) == 5 and draws[0] == defaults
    assert len({json.dumps(d, sort_keys=True) for d in draws}) == 5
    space = search_space(method)
    for draw in draws[1:]:
        assert set(draw) == set(space) and all(draw[axis] in space[axis] for axis in space)
    assert draws == draw_settings(method, 5, seed=0, defaults=defaults)
    assert draws != draw_settings(method, 5, seed=1, defaults=defaults)


def test_settings_split_into_learner_and_outer_loop_fields():
    learner, train = apply_settings({"inner_lr": 0.1, "outer_lr": 1e-3, "gamma": 1e-2}, LearnerConfig(), TrainConfig())
    assert (learner.inner_lr, learner.gamma, train.outer_lr) == (0.1, 1e-2, 1e-3)
    assert train.epochs == TrainConfig().epochs and learner.inner_steps == LearnerConfig().inner_steps


def test_model_config_layers_code_defaults_tuned_values_and_explicit_values(monkeypatch):
    monkeypatch.setitem(tuned.TUNED, "movielens", {"reg_paml": {"inner_lr": 0.01, "outer_lr": 1e-3, "gamma": 1e-4}})
    monkeypatch.delitem(tuned.TUNED, "taobao")
    config = ModelConfig(gamma=1e-2, device="cpu")
    learner = config.learner_config("reg_paml", "movielens")
    assert (learner.inner_lr, learner.gamma) == (0.01, 1e-2)  # tuned, then the explicit value wins
    assert config.train_config("reg_paml", "movielens").outer_lr == 1e-3
    other = config.learner_config("reg_paml", "taobao")
    assert other.inner_lr == LearnerConfig().inner_lr  # not tuned there: code default
    assert config.train_config("melu", "movielens").outer_lr == TrainConfig().outer_lr


def test_search_picks_the_lowest_validation_loss_and_writes_tables():
    data = tiny_task_data()
    results = tune_dataset(data, "tiny", trials=3, epochs=1, methods=("melu", "reg_paml"), log=lambda line: None)
    for method, entry in results["methods"].items():
        losses = [t["val_loss"] for t in entry["trials"]]
        assert len(losses) == 3
        assert entry["chosen"] == entry["trials"][losses.index(min(losses))]["settings"]
    text = results_markdown(results)
    assert "## melu" in text and "## reg_paml" in text and text.count("**") >= 4


def test_tuned_defaults_match_the_committed_search_results():
    files = sorted(Path(RESULTS_DIR).glob("*.json"))
    assert {f.stem for f in files} == set(tuned.TUNED)
    for path in files:
        results = json.loads(path.read_text())
        assert results["epochs"] == tuned.TUNED_EPOCHS
        chosen = {m: entry["chosen"] for m, entry in results["methods"].items()}
        assert tuned.TUNED[path.stem] == chosen, path
