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
