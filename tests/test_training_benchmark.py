"""The training benchmark times equal work: every variant runs the same number of inner steps."""

import argparse
from pathlib import Path

from benchmarks.train_speed import configs, with_steps
from benchmarks.training import same_work
from models.settings import tuned_configs


def test_every_variant_is_given_the_same_inner_steps():
    for method in ("reg_paml", "melu"):
        tuned = tuned_configs("movielens", method)[0].inner_steps
        assert same_work(method) == ("--inner-steps", str(tuned))
        assert same_work(method, tuned + 2) == ("--inner-steps", str(tuned + 2))


def test_the_child_applies_the_inner_steps_over_the_tuned_settings():
    assert with_steps({"inner_lr": 0.1, "inner_steps": 3}, 1) == {"inner_lr": 0.1, "inner_steps": 1}
    assert with_steps({"inner_lr": 0.1, "inner_steps": 3}, None) == {"inner_lr": 0.1, "inner_steps": 3}
    assert with_steps({"finetune_lr": 0.1}, 2) == {"finetune_lr": 0.1}  # no inner loop: nothing to set
    args = argparse.Namespace(code=Path("."), dataset="movielens", method="reg_paml", batching="bucketed", steps=5,
                              device="cpu", inner_steps=4, no_foldins=False, vectorize=None, no_fold=False,
                              plain_network=False)
    learner, train = configs(args)
    assert learner.inner_steps == 4 and train.max_steps == 10
    assert learner.inner_lr == tuned_configs("movielens", "reg_paml")[0].inner_lr  # the rest stays tuned
    # The child's --plain-network is the parent's `plain_network`: the speed variant trains the network --plain scores.
    from benchmarks.training import plain_network

    assert configs(argparse.Namespace(**{**vars(args), "plain_network": True}))[0] == plain_network(learner)


def test_the_plain_network_drops_the_fold_ins_and_keeps_the_tuned_settings():
    from dataclasses import replace

    from benchmarks.training import plain_network

    learner, _ = tuned_configs("movielens", "reg_paml")
    plain = plain_network(learner)
    assert (plain.network.mf_foldin, plain.network.knn_foldin, plain.network.factor_dim) == (False, False, 0)
    assert not plain.network.uses_mf_foldin
    # Everything else is the tuned learner's.
    assert replace(plain, network=learner.network) == learner
    assert replace(plain.network, mf_foldin=True, knn_foldin=True, factor_dim=learner.network.factor_dim) == learner.network
