"""Every learner: adaptation lowers the support loss, meta-gradients reach every meta-parameter."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.inner import adapt_batch
from models.learners import METHODS, HistoryEncoder, LearnerConfig, RegPAML, UserBatch, build_learner, per_user
from models.network import NetworkConfig
from models.training import TrainConfig, predict_split, train
from models.user_memory import MemoryConfig
from tests.model_fixtures import tiny_task_data

# Without the fold-ins: they start the decision layers' output at zero, where no gradient reaches the layers below yet.
CONFIG = LearnerConfig(inner_lr=0.01, network=NetworkConfig(embedding_dim=4, hidden=(8, 8), factor_dim=2, unknown_rate=0.0,
                                                            mf_foldin=False, knn_foldin=False),
                       memory=MemoryConfig(capacity=16, k=2), finetune_lr=0.01)
PAPER_PAML = replace(CONFIG, lr_per_layer=False, lr_history=False)  # one alpha(h_i) per user, the paper's form


@pytest.mark.parametrize("task", ["rating", "ctr"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_adaptation_lowers_support_loss(method, task):
    torch.manual_seed(0)
    data = tiny_task_data(task)
    learner = build_learner(method, data, CONFIG)
    batch = data.splits["train"]
    net = learner.net
    xs, _, users = learner.prepare(batch, data.items, training=False)
    step = learner.step_size(users)
    params = net.adapted_params()
    adapted, _ = adapt_batch(params, xs, batch.support_labels, batch.support_mask, step, net.predict,
                             learner.loss, learner.inner_config(training=False), per_user=learner.per_user_step)
    before = learner.loss(net.predict(params, xs), batch.support_labels, batch.support_mask)
    after = learner.loss(torch.vmap(net.predict)(adapted, xs), batch.support_labels, batch.support_mask)
    assert (after < before).all(), (before, after)


def meta_gradients(learner, data):
    learner.zero_grad()
    outcome = learner.run(data.splits["train"], data.items)
    learner.objective(outcome).backward()
    return {n: p.grad for n, p in learner.named_parameters()}, outcome


@pytest.mark.parametrize("method", sorted(METHODS))
def test_meta_gradients_reach_every_meta_parameter(method):
    torch.manual_seed(0)
    data = tiny_task_data()
    learner = build_learner(method, data, CONFIG)
    if method == "at_paml":  # during warm-up alpha is fixed and the LR module gets no gradient
        learner.after_outer_step(learner.run(data.splits["val"], data.items))
    grads, _ = meta_gradients(learner, data)
    for name, g in grads.items():
        assert g is not None, f"{method}: no gradient reaches {name}"
    # Zero-initialized last layers: the LR module's output layer gets the gradient first.
    expected = {
        "meta_sgd": ["rates.decision__0__weight", "rates.decision__4__bias"],
        "paml": ["lr_module.layers.2.weight", "lr_module.layers.2.bias"],
        "reg_paml": ["lr_module.layers.2.weight", "lr_module.layers.2.bias"],
    }.get(method, []) + ["net.decision.0.weight", "net.embedder.tables.age.weight"]
    for name in expected:
        assert grads[name].abs().sum() > 0, f"{method}: zero gradient on {name}"


def test_at_paml_memory_gets_gradients_after_warm_up():
    torch.manual_seed(0)
    data = tiny_task_data()
    learner = build_learner("at_paml", data, CONFIG)
    assert learner.memory.in_warmup
    _, outcome = meta_gradients(learner, data)
    learner.after_outer_step(outcome)  # stores 12 users > k = 2: warm-up is over
    assert not learner.memory.in_warmup and len(learner.memory) == 12
    # Warm-up users got inner_lr, log-ratio 0. Equal stored values give the neighbours' embeddings
    # no gradient (a weighted mean of equal numbers does not depend on the weights): spread them.
    assert learner.memory.lrs.detach()[:12].eq(0).all()
    with torch.no_grad():
        learner.memory.lrs[:12] = torch.linspace(-0.5, 0.5, 12)
    grads, outcome = meta_gradients(learner, data)
    assert learner.memory.embeddings.grad.abs().sum() > 0
    assert learner.memory.lrs.grad.abs().sum() > 0
    assert grads["lr_module.layers.2.weight"].abs().sum() > 0
    expected = (learner.memory.lrs - CONFIG.memory.beta * learner.memory.lrs.grad).detach()[:12]
    learner.memory.apply_gradients()  # node_j <- node_j - beta * grad
    assert torch.allclose(learner.memory.lrs.detach()[:12], expected)
    learner.memory.insert(outcome.user_embedding.detach(), outcome.lr_per_user)  # 12 more: capacity 16
    assert len(learner.memory) == 16


def test_reg_paml_regularizer_matches_hand_computation():
    torch.manual_seed(0)
    data = tiny_task_data()
    learner = build_learner("reg_paml", data, PAPER_PAML)
    assert isinstance(learner, RegPAML)
    batch = data.splits["train"]
    outcome = learner.run(batch, data.items)
    objective = learner.objective(outcome)
    # By hand for every user: ||dL_support/dtheta||^2 with torch.autograd, times |alpha(h_i)|.
    net = learner.net
    xs, _, users = learner.prepare(batch, data.items)
    params = net.adapted_params()
    alpha = learner.step_size(users)
    regs = []
    for u in range(len(batch)):
        support = learner.loss(net.predict(params, tuple(t[u] for t in xs)), batch.support_labels[u], batch.support_mask[u])
        grads = torch.autograd.grad(support, list(params.values()), retain_graph=True)
        regs.append(sum((g ** 2).sum() for g in grads) * alpha[u].abs())
    expected = (outcome.query_loss + PAPER_PAML.gamma * torch.stack(regs)).mean()
    assert torch.allclose(objective, expected, rtol=1e-5)
    assert not torch.allclose(objective, outcome.query_loss.mean())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("method", ["paml", "reg_paml"])
def test_rates_read_the_support_loss_of_the_first_inner_step(method, training):
    """run() takes the support loss the rates read from the inner loop's first forward pass: the
    same rates and predictions as a separate pass over the support set before adapting."""
    torch.manual_seed(0)
    data = tiny_task_data()
    learner = build_learner(method, data, CONFIG)
    assert learner.reads_support_loss and CONFIG.lr_history
    batch = data.splits["train"]
    outcome = learner.run(batch, data.items, training=training)
    xs, xq, users = learner.prepare(batch, data.items, training=training)
    assert users.support_loss is not None and (users.support_loss > 0).all()
    alpha = learner.step_size(users)
    adapted, _ = adapt_batch(learner.net.adapted_params(), xs, batch.support_labels, batch.support_mask,
                             learner.scaled_step(alpha), learner.net.predict, learner.loss, learner.inner_config(training),
                             per_user=learner.per_user_step, fold=learner.net.fold(xs))
    expected = learner.net.predict(adapted, xq)
    rates = torch.stack(list(alpha.values())) if isinstance(alpha, dict) else alpha
    assert rates.std() > 0  # the rates differ between users, so reading the wrong loss would show
    assert torch.allclose(outcome.lr_per_user, per_user(alpha, len(batch), users.h, learner.per_user_step), rtol=1e-5)
    assert torch.allclose(outcome.query_pred, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_same_seed_same_predictions(method):
    data = tiny_task_data()
    runs = []
    for _ in range(2):
        result = train(method, data, CONFIG, TrainConfig(epochs=1, meta_batch=4, seed=3))
        runs.append(predict_split(result.learner, data, "test"))
    assert np.array_equal(runs[0].pred, runs[1].pred)
    assert np.array_equal(runs[0].lr_per_user, runs[1].lr_per_user)
    other = predict_split(train(method, data, CONFIG, TrainConfig(epochs=1, meta_batch=4, seed=4)).learner, data, "test")
    assert not np.array_equal(runs[0].pred, other.pred)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="melu"):
        build_learner("maml++", tiny_task_data(), CONFIG)


def test_at_paml_k_fitted_to_a_few_warm_users_with_many_tasks_leaves_warm_up():
    # The production protocol cuts a warm user's history into tasks that share its key, and the memory holds one
    # slot per key. K was fitted to the tasks (3 + 2 x 10 = 23: K = 8), a memory of 5 users can never hold 9,
    # and training refused what the search and torchrun had chosen for it.
    from models.bounds import SettingError
    from models.tasks import WARM_SPLIT, training_user_count
    from models.user_memory import check_memory_fills, default_memory_k
    from tests.model_fixtures import random_split

    data = tiny_task_data(users=3)
    warm = random_split(torch.Generator().manual_seed(1), 20, 6, 3, 10, {"gender": 4, "age": 9}, ("gender", "age"), "rating")
    data = replace(data, splits={**data.splits, WARM_SPLIT: replace(warm, user_index=torch.arange(2).repeat_interleave(10))})
    assert training_user_count(data, "paper") == 3  # the paper's protocol: unchanged
    users = training_user_count(data, "production")
    assert users == 5
    with pytest.raises(SettingError, match="memory_k = 8 is too large for the 5 training users: memory_k must be at most 4"):
        check_memory_fills(MemoryConfig(capacity=16, k=8), users)
    config = replace(CONFIG, memory=MemoryConfig(capacity=16, k=default_memory_k(users)))
    result = train("at_paml", data, config, TrainConfig(epochs=2, meta_batch=8, protocol="production"))
    assert len(result.learner.memory) == 5 > config.memory.k  # every user stored once: out of warm-up


def test_state_dict_round_trip_with_weights_only(tmp_path):
    data = tiny_task_data()
    result = train("at_paml", data, CONFIG, TrainConfig(epochs=1, meta_batch=4))
    path = tmp_path / "model.pt"
    torch.save(result.learner.state_dict(), path)
    fresh = build_learner("at_paml", data, CONFIG)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert len(fresh.memory) == len(result.learner.memory)
    a = predict_split(result.learner, data, "test").pred
    b = predict_split(fresh, data, "test").pred
    assert np.array_equal(a, b)


@pytest.mark.parametrize("per_layer", [True, False])
def test_paml_per_parameter_rates_start_as_paml_and_learn(per_layer):
    """lr_per_parameter: at the start (every rate = inner_lr) the update is plain PAML's (up to
    rounding); the rates then get meta-gradients of their own, one per adapted weight."""
    data = tiny_task_data()
    config = replace(CONFIG, lr_per_layer=per_layer)
    torch.manual_seed(0)
    plain = build_learner("paml", data, config)
    torch.manual_seed(0)
    hybrid = build_learner("paml", data, replace(config, lr_per_parameter=True))
    missing = hybrid.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("rates.") for key in missing)
    torch.manual_seed(1)
    expected = plain.run(data.splits["train"], data.items).query_pred
    torch.manual_seed(1)
    outcome = hybrid.run(data.splits["train"], data.items)
    torch.testing.assert_close(outcome.query_pred, expected, rtol=1e-6, atol=1e-7)
    hybrid.objective(outcome).backward()
    for name, rate in hybrid.rates.items():
        assert rate.grad is not None and rate.grad.shape == rate.shape, name
        assert rate.grad.abs().sum() > 0, name
    # A rate moved for one weight changes that weight's step only: the update is elementwise.
    with torch.no_grad():
        next(iter(hybrid.rates.values())).mul_(3.0)
    torch.manual_seed(1)
    assert not torch.equal(hybrid.run(data.splits["train"], data.items).query_pred, expected)


def test_history_encoder_pools_the_support_set_by_hand():
    """The mean support item and the label-weighted mean, padding left out (derived by hand)."""
    encoder = HistoryEncoder(item_dim=2, dim=4)
    with torch.no_grad():
        encoder.proj.weight.copy_(torch.eye(4))
        encoder.proj.bias.zero_()
    users = UserBatch(h=torch.zeros(1, 1), support_features=torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]),
                      support_labels=torch.tensor([[5.0, 1.0, 4.0]]), support_mask=torch.tensor([[True, True, False]]),
                      keys=torch.tensor([0]))
    # weights 1, 1, 0 (count 2); centred labels (5 - 3) / 2 = 1 and (1 - 3) / 2 = -1
    # mean ([1, 2] + [3, 4]) / 2 = [2, 3]; label-weighted (1 [1, 2] - 1 [3, 4]) / 2 = [-1, -1], cut by the ReLU
    pooled = encoder(users, torch.tensor(3.0), torch.tensor(2.0))
    assert torch.equal(pooled, torch.tensor([[2.0, 3.0, 0.0, 0.0]]))


def test_multi_hot_fields_pool_their_present_codes_and_leave_the_padding_row_at_zero():
    data = tiny_task_data()
    assert (data.items.multi["genre"][1:] == 0).any()  # some items have padding slots
    result = train("melu", data, CONFIG, TrainConfig(epochs=2, meta_batch=4, seed=0))
    embedder = result.learner.net.embedder.eval()
    table = embedder.tables["genre"].weight.detach()
    assert torch.equal(table[0], torch.zeros_like(table[0]))  # no gradient, and so no decay, ever reaches it
    initial = build_learner("melu", data, CONFIG).net.embedder.tables["genre"].weight.detach()
    assert not torch.equal(table[1:], initial[1:])  # the other rows were trained
    features = embedder.items(data.items).features.detach()
    dim = CONFIG.network.embedding_dim
    codes = embedder.remap__genre[data.items.multi["genre"]]
    for row in range(1, codes.shape[0]):
        present = [int(c) for c in codes[row] if c != 0]
        expected = torch.stack([table[c] for c in present]).mean(0) if present else torch.zeros(dim)
        assert torch.allclose(features[row, dim: 2 * dim], expected, atol=1e-6), row  # after the brand field
