"""Independent review: no query label of a held-out user reaches a prediction, a fitted table or training.

Each test changes held-out labels (or the company a user is scored in) and asserts that what must not
depend on them does not move.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.learners import METHODS, LearnerConfig, build_learner
from models.network import NetworkConfig
from models.training import TrainConfig, predict_split, train
from models.user_memory import MemoryConfig
from tests.model_fixtures import tiny_task_data

# The default network (fold-ins, statistics, dot-product head, cross-fitting), shrunk.
NET = NetworkConfig(embedding_dim=4, hidden=(8, 8), unknown_rate=0.2, factor_dim=2, knn_neighbours=20)
CONFIG = LearnerConfig(inner_lr=0.05, network=NET, memory=MemoryConfig(capacity=64, k=2))


def flipped(data, split: str, part: str = "query"):
    """`data` with every label of `part` of `split` replaced (ratings r -> 6 - r; clicks y -> 1 - y)."""
    tasks = data.splits[split]
    labels = getattr(tasks, f"{part}_labels")
    other = 1.0 - labels if data.task == "ctr" else 6.0 - labels
    return replace(data, splits={**data.splits, split: replace(tasks, **{f"{part}_labels": other})})


def trained(method: str, data, task: str):
    torch.manual_seed(0)
    learner = build_learner(method, data, CONFIG)
    if method == "at_paml":  # past the memory's warm-up, so the test users read it
        learner.after_outer_step(learner.run(data.splits["train"], data.items))
    return learner


@pytest.mark.parametrize("task", ["rating", "ctr"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_test_predictions_never_read_test_query_labels(method, task):
    data = tiny_task_data(task)
    learner = trained(method, data, task)
    before = predict_split(learner, data, "test").pred
    after = predict_split(learner, flipped(data, "test"), "test").pred
    assert np.array_equal(before, after)
    # ... while the support labels are what a user is adapted on: they do move the predictions
    assert not np.allclose(before, predict_split(learner, flipped(data, "test", "support"), "test").pred)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_test_users_prediction_does_not_depend_on_who_else_is_scored(method):
    data = tiny_task_data()
    learner = trained(method, data, "rating")
    together = predict_split(learner, data, "test", batch_size=12).pred
    alone = [predict_split(learner, replace(data, splits={**data.splits, "test": data.splits["test"].select(torch.tensor([u]))}),
                           "test", batch_size=1).pred[0] for u in range(12)]
    # each user alone is trimmed to its own query width; compare the real slots
    mask = data.splits["test"].query_mask.numpy()
    widths = mask.sum(1)
    for u in range(12):
        assert np.allclose(together[u, :widths[u]], alone[u][:widths[u]], atol=1e-5), u


def test_scoring_test_users_leaves_at_paml_memory_as_it_was():
    data = tiny_task_data()
    learner = trained("at_paml", data, "rating")
    memory = learner.memory
    state = {k: v.clone() for k, v in memory.state_dict().items()}
    predict_split(learner, data, "test", diagnostics=True)
    predict_split(learner, data, "val")
    for key, value in memory.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert memory.embeddings.grad is None and memory.lrs.grad is None
    # the memory holds training users only (keys are training rows)
    assert sorted(memory.keys[: len(memory)].tolist()) == list(range(12))


@pytest.mark.parametrize("method", ["melu", "at_paml", "transfer"])
def test_training_and_model_selection_never_read_test_users(method):
    """train() on data whose test users' labels (support and query) differ gives the same model."""
    data = tiny_task_data()
    config = TrainConfig(max_steps=4, eval_every=2, meta_batch=4, patience=5, seed=0)
    first = train(method, data, CONFIG, config)
    other = flipped(flipped(data, "test"), "test", "support")
    second = train(method, other, CONFIG, config)
    assert [h.val_loss for h in first.history] == [h.val_loss for h in second.history]
    a, b = first.learner.state_dict(), second.learner.state_dict()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key


def test_training_query_labels_of_validation_users_only_select_never_fit():
    """Validation query labels may choose the evaluation kept, never a fitted table or buffer."""
    data = tiny_task_data()
    torch.manual_seed(0)
    a = build_learner("melu", data, CONFIG)
    torch.manual_seed(0)
    b = build_learner("melu", flipped(data, "val"), CONFIG)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    # the kNN fold-in lists are not saved with the model: compare them too
    for name in ("knn_mu", "knn_item_bias", "knn_index", "knn_value"):
        assert torch.equal(getattr(a.net.embedder, name), getattr(b.net.embedder, name)), name


def test_reg_paml_objective_is_the_query_loss_plus_gamma_alpha_times_the_support_gradient_norm():
    """REG-PAML (paper, 'Regularizer-based PAML'): L = mean_i [L_query_i + gamma sum_l |alpha_l(h_i)| ||dL_support_i/dtheta_l||^2],
    the gradient taken at theta, per user, by plain autograd on one user at a time (no Fold, no batching)."""
    data = tiny_task_data()
    config = replace(CONFIG, gamma=0.3, network=replace(NET, unknown_rate=0.0), max_step_norm=None)
    torch.manual_seed(0)
    learner = build_learner("reg_paml", data, config)
    batch = data.splits["train"]
    outcome = learner.run(batch, data.items)
    objective = learner.objective(outcome)
    alpha = learner._alpha  # per adapted parameter, (B,) each: the unscaled alpha_l(h_i)
    support_x, _, _ = learner.prepare(batch, data.items, training=True)
    params = learner.net.adapted_params()
    regularizer = torch.zeros(len(batch))
    for user in range(len(batch)):
        x = tuple(t[user: user + 1] for t in support_x)
        loss = learner.loss(learner.net.predict(params, x), batch.support_labels[user: user + 1], batch.support_mask[user: user + 1])
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        regularizer[user] = sum(alpha[name][user].abs() * (g ** 2).sum() for name, g in zip(params, grads))
    expected = (outcome.query_loss + 0.3 * regularizer).mean()
    assert float(objective.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(regularizer.detach().mean()) > 0


def test_melu_adapts_the_decision_layers_and_user_factor_by_one_hand_maml_step():
    """MeLU = MAML on MeLU's network: theta_i = theta - alpha grad L_support_i(theta) (paper, Problem Formulation)
    over the decision layers (and our user factor, with its x10 rate), never the embeddings; one user at a time."""
    data = tiny_task_data()
    config = replace(CONFIG, network=replace(NET, unknown_rate=0.0), max_step_norm=None, inner_lr=0.07)
    torch.manual_seed(0)
    learner = build_learner("melu", data, config)
    names = set(learner.net.adapted_params())
    assert names and all(n.startswith("decision.") or n == "factor.user" for n in names)
    assert not any(n.startswith("net.embedder") or "embedder" in n for n in names)
    batch = data.splits["val"]
    learner.eval()
    pred = learner.run(batch, data.items, training=False).query_pred
    support_x, query_x, _ = learner.prepare(batch, data.items, training=False)
    params = learner.net.adapted_params()
    for user in range(len(batch)):
        x, q = (tuple(t[user: user + 1] for t in xs) for xs in (support_x, query_x))
        loss = learner.loss(learner.net.predict(params, x), batch.support_labels[user: user + 1], batch.support_mask[user: user + 1])
        grads = dict(zip(params, torch.autograd.grad(loss.sum(), list(params.values()))))
        rate = {n: 0.07 * (10.0 if n == "factor.user" else 1.0) for n in params}
        moved = {n: p - rate[n] * grads[n] for n, p in params.items()}
        expected = learner.net.predict(moved, q)[0]
        width = int(batch.query_mask[user].sum())
        assert torch.allclose(pred[user, :width], expected[:width], atol=1e-5), user


def test_production_cross_fit_table_of_a_warm_task_never_saw_that_users_query_ratings():
    """Production protocol: the table a warm chunk trains against (`factor_tables`, 1 + key % folds) is the one
    fitted without the query ratings of every chunk of that user (keys shifted past the training users')."""
    from models.tasks import training_view

    data = tiny_task_data()
    warm = replace(data.splits["val"], user_index=torch.arange(len(data.splits["val"])) // 3)  # 4 users, 3 chunks each
    data = replace(data, splits={**data.splits, "warm": warm})
    net_config = replace(NET, factor_fit="crossfit", factor_folds=5, knn_foldin=False)

    def tables(d):
        torch.manual_seed(0)
        return build_learner("melu", training_view(d, "production"), replace(CONFIG, network=net_config)).net

    net = tables(data)
    train = training_view(data, "production").splits["train"]
    chunk = len(data.splits["train"]) + 4  # a chunk of the second warm user (its 3 chunks: rows 15..17 -> key 13)
    key = int(train.keys()[chunk])
    own = int(net.factor_tables(train.keys(), training=True)[chunk])
    labels = warm.query_labels.clone()
    labels[3:6] = 6.0 - labels[3:6]  # every chunk of that warm user
    changed = tables(replace(data, splits={**data.splits, "warm": replace(warm, query_labels=labels)}))
    assert own == 1 + key % 5
    assert torch.equal(changed.embedder.mf_factors[own], net.embedder.mf_factors[own])
    assert not torch.equal(changed.embedder.mf_factors[0], net.embedder.mf_factors[0])
