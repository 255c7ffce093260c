"""The inner update, functional and vectorized over a padded batch of users.

    theta_i = theta - alpha_i * grad_theta L_support_i(theta)        (paper, Eq. 1)

`alpha_i` may be a scalar (MAML/MeLU), a dict of per-parameter tensors (Meta-SGD), or a
per-user vector (PAML: alpha(h_i)). Two vectorizations of the same update, chosen by
`InnerConfig.vectorize`: `torch.func.vmap` over users of a function that takes
`torch.func.grad` steps (any per-user `predict`), or `adapt_broadcast`, plain batched products
on per-user parameter copies (a `predict` that broadcasts over them; the learners' default,
faster). Second order by default (the meta-gradient flows through the inner gradients), first
order as an explicit option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import torch
from torch.func import grad, vmap
from torch.utils._pytree import tree_map

Params = dict[str, torch.Tensor]
StepSize = Union[float, torch.Tensor, dict[str, Union[torch.Tensor, "UserScaled"]]]
Inputs = Any  # a tensor or a tuple of tensors with a leading user dimension (B, ...)
Predict = Callable[[Params, Inputs], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepSizeOf = Callable[[torch.Tensor], StepSize]  # the step size from the support losses before adaptation (B,)


@dataclass(frozen=True)
class InnerConfig:
    """How the inner loop adapts."""

    steps: int = 1
    first_order: bool = False
    # Largest norm of one inner update alpha * g (over every adapted parameter); a longer update
    # is scaled down to it. Gradient descent diverges where alpha exceeds 2 / curvature of a
    # user's support loss: with per-user rates of up to 4x the base, a few users' updates blew
    # the query loss up to 2e4 and the meta-gradient norm to 2e9 (REG-PAML on ML-1M). Updates of
    # ordinary users are far shorter and untouched. None = no bound (the paper's Eq. 1).
    max_step_norm: float | None = 2.0
    # How the users are vectorized: "vmap" (any per-user `predict`) or "broadcast" (a `predict` that
    # also takes parameters with a leading user dimension: plain batched products, `adapt_broadcast`).
    vectorize: str = "vmap"

    def __post_init__(self) -> None:
        if self.vectorize not in ("vmap", "broadcast"):
            raise ValueError(f"vectorize must be 'vmap' or 'broadcast', got {self.vectorize!r}")


@dataclass(frozen=True)
class Fold:
    """The leading k columns of the weight `name` (out, in) multiply one vector per user,
    `vector` (B, k), and nothing else (the user's embedding in the first decision layer).

    Their gradient is then rank one, g_z v^T with g_z the gradient at z = W[:, :k] v, so the
    inner loop can carry each user's z (B, out) instead of a copy of those columns (B, out, k):
    W' v = z - (rate ⊙ g_z v^T) v = z - g_z ⊙ (rate (v ⊙ v)), the same function and the same
    meta-gradient (tested). `adapt_broadcast` returns z under `folded_key(name)` and the other
    columns under `name`; a `predict` that takes a Fold reads both.
    """

    name: str
    vector: torch.Tensor


def folded_key(name: str) -> str:
    """The adapted-parameter key under which a Fold's z = W[:, :k] v travels."""
    return f"{name}@folded"


@dataclass(frozen=True)
class UserScaled:
    """A rate of one number per user times rates shared by every user, elementwise:
    scale (B,) * rate (*shape) (PAML with `lr_per_parameter`). `adapt_broadcast` keeps the two
    apart and never forms the (B, *shape) product; the other paths take `dense()`.
    """

    scale: torch.Tensor
    rate: torch.Tensor

    def dense(self) -> torch.Tensor:
        return self.scale.reshape(-1, *[1] * self.rate.dim()) * self.rate


def dense_rates(step_size: StepSize) -> StepSize:
    """`step_size` with every UserScaled rate as its (B, *shape) product."""
    if isinstance(step_size, dict):
        return {k: v.dense() if isinstance(v, UserScaled) else v for k, v in step_size.items()}
    return step_size


def is_per_user(step_size: StepSize) -> bool:
    """A per-user step size is a 1-D tensor with one entry per user."""
    return isinstance(step_size, torch.Tensor) and step_size.dim() == 1


def sgd_step(params: Params, grads: Params, step_size: StepSize, max_norm: float | None = None) -> Params:
    """theta - alpha * g, with alpha a scalar, a 0-d tensor or a per-parameter dict.

    With `max_norm`, the whole update alpha * g is scaled down to that norm when longer.
    """
    if isinstance(step_size, dict):
        updates = {k: step_size[k] * grads[k] for k in params}
    else:
        updates = {k: step_size * grads[k] for k in params}
    if max_norm is not None:
        norm = torch.sqrt(sum((u ** 2).sum() for u in updates.values()) + 1e-12)
        factor = torch.clamp(max_norm / norm, max=1.0)
        updates = {k: u * factor for k, u in updates.items()}
    return {k: params[k] - updates[k] for k in params}


def adapt_one(
    params: Params, x: Inputs, y: torch.Tensor, mask: torch.Tensor, step_size: StepSize,
    predict: Predict, loss: Loss, config: InnerConfig,
) -> tuple[Params, torch.Tensor]:
    """Adapt `params` to one user's support set.

    Returns the adapted parameters and, per parameter, ||grad L_support(theta)||^2 at the
    starting point (REG-PAML's regularizer uses them; `total_sq_norm` sums them).
    """
    support_loss = lambda p: loss(predict(p, x), y, mask)  # noqa: E731
    grad_sq_norms = {k: y.new_zeros(()) for k in params}
    for step in range(config.steps):
        grads = grad(support_loss)(params)
        if config.first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        if step == 0:
            grad_sq_norms = {k: (g ** 2).sum() for k, g in grads.items()}
        params = sgd_step(params, grads, step_size, config.max_step_norm)
    return params, grad_sq_norms


def total_sq_norm(grad_sq_norms: dict[str, torch.Tensor]) -> torch.Tensor:
    """||grad L_support||^2 over every adapted parameter: the per-parameter norms summed."""
    return sum(grad_sq_norms.values())


def adapt_batch(
    params: Params, x: Inputs, y: torch.Tensor, mask: torch.Tensor, step_size: StepSize | StepSizeOf,
    predict: Predict, loss: Loss, config: InnerConfig, per_user: bool | None = None, fold: Fold | None = None,
) -> tuple[Params, dict[str, torch.Tensor]]:
    """Vectorized adapt_one over users: x leaves (B, ...), y and mask (B, S).

    `per_user` says whether `step_size` has a leading user dimension: a (B,) tensor, or a
    dict of (B,) tensors by parameter (PAML with one rate per adapted layer). None infers it
    for tensors; a dict is then taken as Meta-SGD's per-parameter rates, shared by all users.
    Returns adapted parameters with a leading user dimension and squared grad norms (B,) by parameter.
    `fold` (broadcast only): carry those columns as z per user (`Fold`). `step_size` may also be
    a function of the users' support losses before adaptation (B,) (broadcast only): it is called
    once, with the losses the first inner step computes anyway.
    """
    if callable(step_size) and (per_user is None or config.vectorize != "broadcast"):
        raise ValueError("a step size computed from the support loss needs vectorize='broadcast' and per_user given")
    per_user = is_per_user(step_size) if per_user is None else per_user
    if config.vectorize == "broadcast":
        return adapt_broadcast(params, x, y, mask, step_size, predict, loss, config, per_user, fold)
    if fold is not None:
        raise ValueError("a Fold needs vectorize='broadcast'")
    step_size = dense_rates(step_size)
    step_dims = 0 if per_user else None
    run = lambda p, xi, yi, mi, si: adapt_one(p, xi, yi, mi, si, predict, loss, config)  # noqa: E731
    return vmap(run, in_dims=(None, 0, 0, 0, step_dims))(params, x, y, mask, step_size)


def predict_batch(predict: Predict, user_params: Params, x: Inputs, vectorize: str = "vmap") -> torch.Tensor:
    """Per-user predictions with per-user parameters: x leaves (B, ...) -> (B, Q).

    `vectorize="broadcast"`: `predict` itself takes parameters with a leading user dimension.
    """
    if vectorize == "broadcast":
        return predict(user_params, x)
    return vmap(predict, in_dims=(0, 0))(user_params, x)


def _per_user_shape(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor viewed as (B, 1, ..., 1) to broadcast against a (B, ...) tensor."""
    return value.reshape(value.shape + (1,) * (like.dim() - value.dim()))


Rate = tuple[torch.Tensor | None, torch.Tensor | None]  # (coefficient, elementwise); see _rate_of


def _rate_of(step_size: StepSize, name: str, per_user: bool, n: int, like: torch.Tensor) -> Rate:
    """Parameter `name`'s rate as (coefficient, elementwise), its update coefficient * (elementwise ⊙ g):
    the coefficient one number per user (B,) or for all (1,), the elementwise part per user
    (B, ...) or shared (1, ...); None stands for 1."""
    rate = step_size[name] if isinstance(step_size, dict) else step_size
    if isinstance(rate, UserScaled):
        return rate.scale.reshape(n), rate.rate.unsqueeze(0)
    if not isinstance(rate, torch.Tensor):
        return like.new_full((1,), float(rate)), None
    if per_user:
        return (None, rate) if rate.dim() > 1 else (rate.reshape(n), None)
    if rate.numel() == 1:
        return rate.reshape(1), None
    return None, rate.unsqueeze(0)  # shared elementwise rates (Meta-SGD), broadcast over users


def _fold_columns(params: Params, fold: Fold) -> torch.Tensor:
    """Replace the fold's weight in `params` by its other columns (in place); return z = W[:, :k] v (B, out)."""
    weight, v = params[fold.name], fold.vector
    k = v.shape[-1]
    columns, params[fold.name] = weight.split([k, weight.shape[-1] - k], dim=-1)
    return v @ columns.T


def _fold_rate(rates: dict[str, Rate], fold: Fold, fixed: torch.Tensor) -> tuple[Rate, torch.Tensor]:
    """Replace the fold's rate in `rates` by its other columns' (in place); return z's rate
    (coefficient, elementwise rate (v ⊙ v): (B, out), or (B, 1) without elementwise rates) and
    its metric m, with ||update of W[:, :k]||^2 = coefficient^2 sum_o m_o g_o^2.

    `fixed` is v as it enters the gradient g_z v^T: detached in a first-order loop, where the
    meta-gradient does not flow through the inner gradients.
    """
    (coefficient, elementwise), v = rates[fold.name], fold.vector
    k = v.shape[-1]
    applied, squared = fixed * v, fixed * fixed  # (B, k)
    if elementwise is None:
        z_rate, metric = applied.sum(-1, keepdim=True), squared.sum(-1, keepdim=True)
    else:
        columns_rate, rest_rate = elementwise.split([k, elementwise.shape[-1] - k], dim=-1)
        rates[fold.name] = (coefficient, rest_rate)
        if columns_rate.shape[0] == 1:  # shared by every user: one matrix product for all
            z_rate, metric = applied @ columns_rate[0].T, squared @ (columns_rate[0] ** 2).T
        else:
            z_rate = (columns_rate @ applied.unsqueeze(-1)).squeeze(-1)
            metric = ((columns_rate * columns_rate) @ squared.unsqueeze(-1)).squeeze(-1)
    return (coefficient, z_rate), metric


def adapt_broadcast(
    params: Params, x: Inputs, y: torch.Tensor, mask: torch.Tensor, step_size: StepSize | StepSizeOf,
    predict: Predict, loss: Loss, config: InnerConfig, per_user: bool, fold: Fold | None = None,
) -> tuple[Params, dict[str, torch.Tensor]]:
    """adapt_batch without vmap, for a `predict` that broadcasts over a leading user dimension
    of the parameters (B, ...) as well as of the inputs.

    Each user's support loss depends on its own copy of the parameters only, so the gradient
    of the users' summed loss with respect to the stacked copies is every user's own gradient:
    one autograd pass in plain batched matrix products, without vmap's batching rules. Every
    rate is (coefficient per user) x (elementwise part), the update c * (e ⊙ g): the norm
    bound scales c, and theta - c (e ⊙ g) is one `addcmul`, so each elementwise pass over the
    per-user copies (B x 64 x in floats, too large for the cache) is made once; a `fold`
    keeps the columns that multiply the user's embedding as one vector per user instead.
    The same function and the same meta-gradient as adapt_batch (tested), not the same bits.
    """
    n = y.shape[0]
    outer_grad = torch.is_grad_enabled()
    create_graph = outer_grad and not config.first_order
    with torch.enable_grad():
        start = dict(params)
        z_key = None
        if fold is not None:
            z_key = folded_key(fold.name)
            fixed = fold.vector if create_graph else fold.vector.detach()
            start[z_key] = _fold_columns(start, fold)
            v_length = (fixed * fixed).sum(-1)  # ||dL/dW[:, :k]||^2 = ||g_z||^2 ||v||^2
        current = {}
        for k, p in start.items():
            stacked = p if k == z_key else p.unsqueeze(0).expand(n, *p.shape)
            if not stacked.requires_grad:  # evaluation: parameters without a graph
                stacked = stacked.detach().requires_grad_()
            current[k] = stacked
        grad_sq_norms = {k: y.new_zeros(n) for k in params}
        rates: dict[str, Rate] = {}
        for step in range(config.steps):
            user_losses = loss(predict(current, x), y, mask)  # (B,)
            if step == 0:
                if callable(step_size):  # rates that read the support loss before adaptation
                    step_size = step_size(user_losses.detach())
                rates = {k: _rate_of(step_size, k, per_user, n, y) for k in params}
                if fold is not None:
                    rates[z_key], z_metric = _fold_rate(rates, fold, fixed)
            total = user_losses.sum()
            grads = dict(zip(current, torch.autograd.grad(total, list(current.values()), create_graph=create_graph)))
            directions = {k: g if rates[k][1] is None else rates[k][1] * g for k, g in grads.items()}
            # squared gradient norms: REG-PAML's regularizer reads step 0's (every parameter), the
            # bound the others' where the direction is the gradient itself
            sq = {k: (g * g).reshape(n, -1).sum(1) for k, g in grads.items()
                  if k != z_key and (step == 0 or (config.max_step_norm is not None and rates[k][1] is None))}
            if step == 0:
                grad_sq_norms = {k: sq[k] for k in params if k in sq}
                if z_key is not None:
                    grad_sq_norms[fold.name] = sq[fold.name] + (grads[z_key] * grads[z_key]).sum(-1) * v_length
            if config.max_step_norm is None:
                factor = None
            else:
                norm_sq = 0
                for k, d in directions.items():
                    coefficient, elementwise = rates[k]
                    length = ((grads[k] * grads[k] * z_metric).sum(-1) if k == z_key else sq[k] if elementwise is None
                              else (d * d).reshape(n, -1).sum(1))
                    norm_sq = norm_sq + (length if coefficient is None else coefficient ** 2 * length)
                factor = torch.clamp(config.max_step_norm / torch.sqrt(norm_sq + 1e-12), max=1.0)  # (B,)
            moved = {}
            for k, d in directions.items():
                # theta - c * d in one pass over the (B, ...) copies: c = coefficient * factor per user.
                coefficient = rates[k][0]
                c = coefficient if factor is None else factor if coefficient is None else coefficient * factor
                moved[k] = current[k] - d if c is None else \
                    torch.addcmul(current[k], _per_user_shape(c.expand(n), d), d, value=-1.0)
            current = moved
    if not outer_grad:
        current = {k: v.detach() for k, v in current.items()}
        grad_sq_norms = {k: v.detach() for k, v in grad_sq_norms.items()}
    return current, grad_sq_norms


def adapt_loop(
    params: Params, x: Inputs, y: torch.Tensor, mask: torch.Tensor, step_size: StepSize,
    predict: Predict, loss: Loss, config: InnerConfig, per_user: bool | None = None,
) -> tuple[list[Params], dict[str, torch.Tensor]]:
    """Reference implementation: a plain Python loop over users with torch.autograd.grad.

    Kept for tests (the vectorized path must give the same meta-gradient) and readability.
    """
    adapted, norms = [], []
    step_size = dense_rates(step_size)
    per_user = is_per_user(step_size) if per_user is None else per_user
    for user in range(y.shape[0]):
        user_x = tree_map(lambda t: t[user], x)
        user_step = tree_map(lambda t: t[user], step_size) if per_user else step_size
        current = dict(params)
        for step in range(config.steps):
            support = loss(predict(current, user_x), y[user], mask[user])
            grads = torch.autograd.grad(support, list(current.values()), create_graph=not config.first_order)
            grads = dict(zip(current, grads))
            if step == 0:
                norms.append({k: (g ** 2).sum() for k, g in grads.items()})
            current = sgd_step(current, grads, user_step, config.max_step_norm)
        adapted.append(current)
    return adapted, {k: torch.stack([n[k] for n in norms]) for k in params}
