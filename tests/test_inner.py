"""The inner update: hand-derived steps for each kind of step size; loop vs vectorized."""

from functools import partial

import pytest
import torch

from models.inner import InnerConfig, UserScaled, adapt_batch, adapt_loop, predict_batch, total_sq_norm
from models.network import NetworkConfig, PreferenceNetwork, task_loss
from tests.model_fixtures import tiny_task_data


def linear(params, x):
    # Broadcasts over a leading user dimension of the parameters too (InnerConfig.vectorize="broadcast").
    return (x * params["w"].unsqueeze(-2)).sum(-1) + params["b"].unsqueeze(-1)


mse = partial(task_loss, task="rating")
VECTORIZE = pytest.mark.parametrize("vectorize", ["vmap", "broadcast"])


def toy(users: int = 1):
    # One feature; items x = 1, 2 with targets 2, 4; w = 1, b = 0 -> predictions 1, 2.
    # L = ((1-2)^2 + (2-4)^2) / 2 = 2.5;  dL/dw = (2(-1)(1) + 2(-2)(2)) / 2 = -5;  dL/db = (2(-1) + 2(-2)) / 2 = -3.
    x = torch.tensor([[[1.0], [2.0]]]).expand(users, 2, 1)
    y = torch.tensor([[2.0, 4.0]]).expand(users, 2)
    mask = torch.ones(users, 2, dtype=torch.bool)
    params = {"w": torch.tensor([1.0]), "b": torch.tensor(0.0)}
    return params, x, y, mask


@VECTORIZE
def test_scalar_step_size_by_hand(vectorize):
    params, x, y, mask = toy()
    adapted, norms = adapt_batch(params, x, y, mask, 0.1, linear, mse, InnerConfig(steps=1, vectorize=vectorize))
    assert torch.allclose(adapted["w"], torch.tensor([[1.5]]))  # 1 - 0.1 * (-5)
    assert torch.allclose(adapted["b"], torch.tensor([0.3]))  # 0 - 0.1 * (-3)
    assert torch.allclose(total_sq_norm(norms), torch.tensor([34.0]))  # (-5)^2 + (-3)^2
    assert torch.allclose(norms["w"], torch.tensor([25.0]))


@VECTORIZE
def test_per_parameter_step_size_by_hand(vectorize):
    params, x, y, mask = toy()
    rates = {"w": torch.tensor([0.1]), "b": torch.tensor(0.2)}
    adapted, _ = adapt_batch(params, x, y, mask, rates, linear, mse, InnerConfig(steps=1, vectorize=vectorize))
    assert torch.allclose(adapted["w"], torch.tensor([[1.5]]))
    assert torch.allclose(adapted["b"], torch.tensor([0.6]))  # 0 - 0.2 * (-3)


@VECTORIZE
def test_per_user_step_size_by_hand(vectorize):
    params, x, y, mask = toy(users=2)
    adapted, _ = adapt_batch(params, x, y, mask, torch.tensor([0.1, 0.2]), linear, mse, InnerConfig(steps=1, vectorize=vectorize))
    assert torch.allclose(adapted["w"], torch.tensor([[1.5], [2.0]]))
    assert torch.allclose(adapted["b"], torch.tensor([0.3, 0.6]))


@VECTORIZE
def test_padding_is_ignored_by_hand(vectorize):
    params, x, y, mask = toy()
    mask = torch.tensor([[True, False]])
    # Only item 1: L = (1-2)^2 = 1; dL/dw = 2(-1)(1) = -2; dL/db = -2.
    adapted, norms = adapt_batch(params, x, y, mask, 0.1, linear, mse, InnerConfig(steps=1, vectorize=vectorize))
    assert torch.allclose(adapted["w"], torch.tensor([[1.2]])) and torch.allclose(adapted["b"], torch.tensor([0.2]))
    assert torch.allclose(total_sq_norm(norms), torch.tensor([8.0]))


@VECTORIZE
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_through_one_step_by_hand(vectorize, first_order):
    # Eq. (1) and its meta-gradient on the toy: theta' = (1.5, 0.3) (test above). One query item
    # x = 3, y = 5: prediction 4.8, L_q = 0.04, g' = dL_q/dtheta' = (2(-0.2)3, 2(-0.2)) = (-1.2, -0.4).
    # Support Hessian H = 2 mean [[x^2, x], [x, 1]] = [[5, 3], [3, 2]]; second order:
    # dL_q/dtheta = (I - alpha H) g' = (0.5 (-1.2) - 0.3 (-0.4), -0.3 (-1.2) + 0.8 (-0.4)) = (-0.48, 0.04);
    # first order: g'. dL_q/dalpha = g' . (-grad L_s) = -(-1.2 (-5) + (-0.4)(-3)) = -7.2 either way.
    params, x, y, mask = toy()
    params = {k: v.clone().requires_grad_() for k, v in params.items()}
    alpha = torch.tensor([0.1], requires_grad=True)
    config = InnerConfig(steps=1, first_order=first_order, max_step_norm=None, vectorize=vectorize)
    adapted, _ = adapt_batch(params, x, y, mask, alpha, linear, mse, config, per_user=True)
    query = predict_batch(linear, adapted, torch.tensor([[[3.0]]]), vectorize)
    loss = mse(query, torch.tensor([[5.0]]), torch.ones(1, 1, dtype=torch.bool)).sum()
    assert loss.item() == pytest.approx(0.04, abs=1e-6)
    loss.backward()
    expected = (-1.2, -0.4) if first_order else (-0.48, 0.04)
    assert params["w"].grad.item() == pytest.approx(expected[0], abs=1e-5)
    assert params["b"].grad.item() == pytest.approx(expected[1], abs=1e-5)
    assert alpha.grad.item() == pytest.approx(-7.2, abs=1e-5)


@VECTORIZE
def test_two_steps_by_hand(vectorize):
    params, x, y, mask = toy()
    # Step 2 from w = 1.5, b = 0.3: predictions 1.8, 3.3; residuals -0.2, -0.7.
    # dL/dw = (2(-0.2)(1) + 2(-0.7)(2)) / 2 = -1.6;  dL/db = (2(-0.2) + 2(-0.7)) / 2 = -0.9.
    adapted, _ = adapt_batch(params, x, y, mask, 0.1, linear, mse, InnerConfig(steps=2, vectorize=vectorize))
    assert torch.allclose(adapted["w"], torch.tensor([[1.66]]))
    assert torch.allclose(adapted["b"], torch.tensor([0.39]))


@pytest.mark.parametrize("step_kind", ["scalar", "per_parameter", "per_user", "per_user_by_parameter", "per_user_elementwise",
                                       "per_user_times_shared"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("max_step_norm", [None, 0.05])  # 0.05: the bound shortens every user's update
@pytest.mark.parametrize("vectorize", ["vmap", "broadcast", "broadcast+fold"])  # +fold: the user columns as z (inner.Fold)
def test_loop_and_vectorized_meta_gradients_agree(step_kind, first_order, max_step_norm, vectorize):
    torch.manual_seed(0)
    data = tiny_task_data()
    net = PreferenceNetwork(data, NetworkConfig(embedding_dim=4, hidden=(8, 8), mf_foldin=False, knn_foldin=False))
    batch = data.splits["train"]
    items = net.embedder.items(data.items)
    xs = net.inputs(net.embedder.user_of(batch), batch.support_items, items)
    xq = net.inputs(net.embedder.user_of(batch), batch.query_items, items)
    params = net.adapted_params()
    if step_kind == "scalar":
        step = torch.tensor(0.05, requires_grad=True)
    elif step_kind == "per_parameter":
        step = {k: torch.full_like(p, 0.05, requires_grad=True) for k, p in params.items()}
    elif step_kind == "per_user":
        step = torch.linspace(0.01, 0.1, len(batch), requires_grad=True)
    elif step_kind == "per_user_by_parameter":  # PAML with one rate per layer
        step = {k: torch.linspace(0.01, 0.1 * (i + 1), len(batch), requires_grad=True) for i, k in enumerate(params)}
    elif step_kind == "per_user_elementwise":  # (B, *shape) per parameter
        step = {k: torch.linspace(0.01, 0.1, len(batch)).reshape(-1, *[1] * p.dim()).expand(-1, *p.shape).clone().requires_grad_()
                for k, p in params.items()}
    else:  # PAML with lr_per_parameter: alpha(h_i) times Meta-SGD's rates, kept apart (UserScaled)
        step = {k: UserScaled(torch.linspace(0.2, 2.0, len(batch), requires_grad=True),
                              (0.02 + 0.03 * torch.rand(p.shape)).requires_grad_()) for k, p in params.items()}
    per_user = step_kind.startswith("per_user")
    fold = net.fold(xs) if vectorize.endswith("+fold") else None
    vectorize = vectorize.removesuffix("+fold")
    config = InnerConfig(steps=2, first_order=first_order, max_step_norm=max_step_norm, vectorize=vectorize)
    meta_params = list(net.parameters()) + (
        [t for v in step.values() for t in ((v.scale, v.rate) if isinstance(v, UserScaled) else (v,))]
        if isinstance(step, dict) else [step])

    adapted, norms = adapt_batch(params, xs, batch.support_labels, batch.support_mask, step, net.predict, mse, config,
                                 per_user=per_user, fold=fold)
    assert set(norms) == set(params)
    if fold is not None:  # the user columns travel as z = W_user h, one vector per user
        assert adapted[fold.name].shape[-1] == params[fold.name].shape[-1] - xs[0].shape[-1]
    loss_vec = mse(predict_batch(net.predict, adapted, xq, vectorize), batch.query_labels, batch.query_mask).sum() + total_sq_norm(norms).sum()
    grads_vec = torch.autograd.grad(loss_vec, meta_params, allow_unused=True, retain_graph=True)

    adapted_list, norms_loop = adapt_loop(params, xs, batch.support_labels, batch.support_mask, step, net.predict, mse, config,
                                          per_user=per_user)
    loss_loop = sum(mse(net.predict(p, tuple(t[u] for t in xq)), batch.query_labels[u], batch.query_mask[u]) for u, p in enumerate(adapted_list))
    grads_loop = torch.autograd.grad(loss_loop + total_sq_norm(norms_loop).sum(), meta_params, allow_unused=True)
    for a, b in zip(grads_vec, grads_loop):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_vec)


@VECTORIZE
def test_a_long_inner_update_is_scaled_down_to_the_bound_by_hand(vectorize):
    params, x, y, mask = toy()
    # alpha = 1: the update is (-5, -3) * -1, norm sqrt(34); bounded at 2 it becomes (5, 3) * 2 / sqrt(34).
    adapted, _ = adapt_batch(params, x, y, mask, 1.0, linear, mse, InnerConfig(steps=1, max_step_norm=2.0, vectorize=vectorize))
    factor = 2.0 / 34 ** 0.5
    assert torch.allclose(adapted["w"], torch.tensor([[1.0 + 5 * factor]]))
    assert torch.allclose(adapted["b"], torch.tensor([3 * factor]))
    unbounded, _ = adapt_batch(params, x, y, mask, 1.0, linear, mse, InnerConfig(steps=1, max_step_norm=None, vectorize=vectorize))
    assert torch.allclose(unbounded["w"], torch.tensor([[6.0]]))


def test_linear_takes_one_weight_or_one_per_user():
    from models.network import linear

    torch.manual_seed(0)
    x, w, b = torch.randn(3, 4, 5), torch.randn(2, 5), torch.randn(2)
    users_w, users_b = w.expand(3, 2, 5).clone(), b.expand(3, 2).clone()
    expected = x @ w.T + b
    for weight, bias in ((w, b), (users_w, b), (w, users_b), (users_w, users_b)):
        assert torch.allclose(linear(x, weight, bias), expected, atol=1e-6)
    assert torch.allclose(linear(x, users_w), x @ w.T, atol=1e-6)
