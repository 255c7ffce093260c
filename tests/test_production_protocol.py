"""The production-protocol asset's refusals, before any training (the training itself: test_training_chain)."""

import pytest

from assets.bundle import Bundle
from assets.method_assets import ModelConfig
from assets.production_protocol import NoWarmUsersError, production_protocol_runs


def tasks_with(n_users: dict[str, int]) -> Bundle:
    return Bundle(info={"dataset": "toy", "n_users": n_users, "splits": list(n_users)})


@pytest.mark.parametrize("n_users", [{"train": 5, "validation": 2, "test": 2}, {"train": 5, "test": 2, "warm": 0}])
def test_tasks_without_warm_users_are_refused_by_name(n_users):
    with pytest.raises(NoWarmUsersError, match="'toy' tasks hold no 'warm' split"):
        production_protocol_runs(tasks_with(n_users), Bundle(), ModelConfig(), ["melu"], "toy")


def test_unknown_methods_are_named():
    with pytest.raises(ValueError, match=r"unknown methods \['nope'\]"):
        production_protocol_runs(tasks_with({"train": 5, "warm": 3}), Bundle(), ModelConfig(), ["melu", "nope"], "toy")


def warm_tasks(train: int, warm_users: int, tasks_each: int) -> Bundle:
    """meta_tasks as the production protocol reads it: `train` cold training users, and `warm_users` warm users
    whose histories were cut into `tasks_each` tasks each (`n_users` counts the warm split's tasks)."""
    import polars as pl

    warm = pl.DataFrame({"user_id": [f"w{u}" for u in range(warm_users) for _ in range(tasks_each)],
                         "chunk": [c for _ in range(warm_users) for c in range(tasks_each)]})
    warm = warm.with_row_index("user_row")
    n_users = {"train": train, "val": 2, "test": 2, "warm": warm.height}
    return Bundle(frames={"users__warm": warm}, info={"dataset": "toy", "n_users": n_users, "splits": list(n_users)})


def test_training_users_count_a_warm_users_tasks_once():
    # AT-PAML's memory holds one slot per user: the warm users' tasks counted 3 + 2 x 10 = 23 users where it can
    # hold 5, so a K of 5 to 22 passed the check before training.
    from assets.method_assets import training_users

    tasks = warm_tasks(train=3, warm_users=2, tasks_each=10)
    assert training_users(tasks, "production") == 5
    assert training_users(tasks, "paper") == 3  # the paper's protocol: the training split, as before


def test_a_memory_k_few_warm_users_cannot_fill_is_refused_before_anything_trains():
    from models.bounds import SettingError

    tasks = warm_tasks(train=3, warm_users=2, tasks_each=10)
    with pytest.raises(SettingError) as raised:
        production_protocol_runs(tasks, Bundle(info={"settings": {}}), ModelConfig(memory_k=5), ["melu", "at_paml"], "toy")
    assert str(raised.value) == ("memory_k = 5 is too large for the 5 training users: memory_k must be at most 4 (the "
                                 "memory attends once it holds K + 1 users, a user never being its own neighbour); "
                                 "lower it, or leave it empty to fit K to the users")
