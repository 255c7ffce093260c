"""Meta-learners behind one interface, and the explicit method registry.

| method    | inner step size alpha                                    | paper / origin |
|-----------|----------------------------------------------------------|----------------|
| melu      | one fixed scalar                                         | MeLU (Lee et al. 2019) = MAML |
| meta_sgd  | a learned rate per parameter, the same for every user    | Li et al. 2017 |
| transfer  | pretrain on all training ratings; fine-tune per user     | Tan et al. 2018 |
| paml      | alpha(h_i) from an LR module on the user embedding (log space, optionally per layer) | PAML, Eq. (1) |
| at_paml   | alpha'(h_i) + kernel-weighted LRs of the K nearest stored users (log space) | AT-PAML |
| reg_paml  | PAML + gamma * ||dL_support/dtheta||^2 * |alpha(h_i)|     | REG-PAML |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Callable

import torch
from torch import nn

from models.config_fields import values_before
from models.configs import METHOD_NAMES, LearnerConfig  # noqa: F401 (re-exported)
from models.inner import InnerConfig, StepSize, UserScaled, adapt_batch, predict_batch, total_sq_norm
from models.network import USER_FACTOR, Inputs, NetworkConfig, PreferenceNetwork, task_loss
from models.tasks import ItemTable, TaskData, TaskSplit
from models.user_memory import MemoryConfig, UserMemory, check_memory_fills


class ModelFormError(ValueError):
    """A stored model made for another form of its method's step size (MetaLearner.form): retrain it."""


@dataclass
class Outcome:
    """What one pass over a batch of users produced."""

    query_pred: torch.Tensor  # (B, Q) ratings or click logits
    query_loss: torch.Tensor  # (B,)
    lr_per_user: torch.Tensor  # (B,) the inner step size each user got (mean rate for Meta-SGD / per-layer PAML)
    grad_sq_norm: torch.Tensor  # (B,) ||grad L_support(theta)||^2
    user_embedding: torch.Tensor  # (B, Du)
    attention: torch.Tensor | None = None  # (B, K) AT-PAML's neighbour weights, nearest first


@dataclass
class UserBatch:
    """What a step size may depend on: the user embedding h, the support set, the task keys."""

    h: torch.Tensor  # (B, Du)
    support_features: torch.Tensor  # (B, S, Di) item embeddings of the support items
    support_labels: torch.Tensor  # (B, S)
    support_mask: torch.Tensor  # (B, S)
    keys: torch.Tensor  # (B,) task identities within their split
    training: bool = True
    support_loss: torch.Tensor | None = None  # (B,) the support loss before adaptation (detached)


class MetaLearner(nn.Module):
    """Common machinery: embed, adapt the decision layers on support, predict the query set."""

    method = "base"
    form = 1  # the step size's form; a search or settings entry made for another form is not used
    per_user_step = False  # True when step_size returns one rate (or one dict entry) per user
    reads_support_loss = False  # True when step_size needs UserBatch.support_loss

    def __init__(self, data: TaskData, config: LearnerConfig):
        super().__init__()
        self.config = config
        self.task = data.task
        self.net = PreferenceNetwork(data, config.network)
        self.loss = partial(task_loss, task=data.task)

    def step_size(self, users: UserBatch) -> StepSize:
        """alpha for a batch of users."""
        return self.config.inner_lr

    def scaled_step(self, alpha: StepSize) -> StepSize:
        """alpha with the user factor's rate multiplied by `factor_lr_scale` (no-op without the head)."""
        names = list(self.net.adapted_params())
        if USER_FACTOR not in names or self.config.factor_lr_scale == 1.0:
            return alpha
        scale = {n: (self.config.factor_lr_scale if n == USER_FACTOR else 1.0) for n in names}
        if isinstance(alpha, dict):
            return {n: a * scale[n] for n, a in alpha.items()}
        return {n: alpha * scale[n] for n in names}

    def inner_config(self, training: bool) -> InnerConfig:
        # Evaluation needs no meta-gradient, so it never builds the second-order graph.
        return InnerConfig(steps=self.config.inner_steps, first_order=self.config.first_order or not training,
                           max_step_norm=self.config.max_step_norm, vectorize=self.config.inner_vectorize)

    def prepare(self, batch: TaskSplit, items: ItemTable, training: bool = True,
                with_support_loss: bool = True) -> tuple[Inputs, Inputs, UserBatch]:
        """Support and query inputs of a batch, and what its step sizes may depend on
        (`with_support_loss=False`: without the support loss, which the caller fills in)."""
        if training and self.training:
            # One draw of the global RNG per step, the same in every data-parallel process.
            self.net.embedder.salt = int(torch.randint(0, 2**31 - 1, (1,)))
        # Embed only the items this batch touches: the catalogue can be far larger.
        rows, (support_items, query_items) = batch_item_rows(batch.support_items, batch.query_items)
        item_rep = self.net.embedder.items(items, rows)  # (R, Di) [+ (R, r) factors]
        h = self.net.embedder.user_of(batch)  # (B, Du)
        tables = self.net.factor_tables(batch.keys(), training)
        foldin_support, foldin_query = self.net.foldin_predictions(batch, item_rep, support_items, query_items, tables)
        support_x = self.net.inputs(h, support_items, item_rep, tables, foldin_support)  # (B, Du), (B, S, Di), ...
        query_x = self.net.inputs(h, query_items, item_rep, tables, foldin_query)  # (B, Du), (B, Q, Di), ...
        user_losses = None
        if self.reads_support_loss and with_support_loss:
            with torch.no_grad():
                user_losses = self.loss(self.net.predict(self.net.adapted_params(), support_x), batch.support_labels,
                                         batch.support_mask)
        users = UserBatch(h, support_x[1], batch.support_labels, batch.support_mask, batch.keys(),
                          training, user_losses)
        return support_x, query_x, users

    def run(self, batch: TaskSplit, items: ItemTable, training: bool = True, adapt: bool = True) -> Outcome:
        """Adapt to each user's support set and predict its query set (`adapt=False`: the unadapted prior)."""
        inner = self.inner_config(training)
        if not adapt:
            inner = InnerConfig(steps=0, first_order=True, vectorize=inner.vectorize)
        # Rates that read the support loss before adaptation take it from the inner loop's first
        # forward pass instead of a pass of their own (the same loss: every user starts at theta).
        deferred = self.reads_support_loss and inner.vectorize == "broadcast" and inner.steps > 0
        support_x, query_x, users = self.prepare(batch, items, training, with_support_loss=not deferred)
        chosen: dict[str, StepSize] = {}

        def step_of(user_losses: torch.Tensor) -> StepSize:
            chosen["alpha"] = self.step_size(replace(users, support_loss=user_losses))
            return self.scaled_step(chosen["alpha"])

        if not deferred:
            chosen["alpha"] = self.step_size(users)
        adapted, grad_sq_norms = adapt_batch(
            self.net.adapted_params(), support_x, batch.support_labels, batch.support_mask,
            step_of if deferred else self.scaled_step(chosen["alpha"]), self.net.predict, self.loss, inner,
            per_user=self.per_user_step,
            fold=self.net.fold(support_x) if inner.vectorize == "broadcast" and self.config.inner_fold else None,
        )
        alpha = chosen["alpha"]
        query_pred = predict_batch(self.net.predict, adapted, query_x, inner.vectorize)
        query_loss = self.loss(query_pred, batch.query_labels, batch.query_mask)
        self._grad_sq_norms, self._alpha = grad_sq_norms, alpha
        return Outcome(query_pred, query_loss, per_user(alpha, len(batch), users.h, self.per_user_step), total_sq_norm(grad_sq_norms),
                       users.h, self._attention())

    def _attention(self) -> torch.Tensor | None:
        return None

    def objective(self, outcome: Outcome) -> torch.Tensor:
        """The meta-loss to minimize: mean query loss over the batch."""
        return outcome.query_loss.mean()

    @property
    def objective_terms(self) -> dict[str, float]:
        """The last objective's parts worth logging (REG-PAML: query loss and regularizer)."""
        return getattr(self, "_terms", {})

    def after_outer_step(self, outcome: Outcome, collective=None) -> None:
        """Hook after each optimizer step (AT-PAML updates its memory here)."""


def batch_item_rows(*item_rows: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The distinct item rows of a batch, and each input re-indexed into them."""
    flat = torch.cat([r.reshape(-1) for r in item_rows])
    rows, inverse = torch.unique(flat, return_inverse=True)
    parts = inverse.split([r.numel() for r in item_rows])
    return rows, tuple(p.view_as(r) for p, r in zip(parts, item_rows))


def per_user(alpha: StepSize, n_users: int, like: torch.Tensor, per_user_step: bool = False) -> torch.Tensor:
    """The step size as one number per user, for logging and the per-user metrics table.

    Meta-SGD's per-parameter rates: their mean (the same for every user). PAML with one rate
    per layer: each user's geometric mean over the adapted parameter tensors, so a decision
    layer's rate counts twice (weight and bias) and the user factor's once.
    """
    if isinstance(alpha, dict) and per_user_step:
        return torch.stack([a.detach() for a in alpha.values()]).log().mean(0).exp()
    if isinstance(alpha, dict):
        return torch.cat([a.detach().reshape(-1) for a in alpha.values()]).mean().expand(n_users)
    if isinstance(alpha, torch.Tensor) and alpha.dim() == 1:
        return alpha.detach()
    return like.new_full((n_users,), float(alpha))


class MeLU(MetaLearner):
    """MAML with MeLU's network: one fixed inner step size."""

    method = "melu"


class MetaSGD(MetaLearner):
    """A learned inner rate for every adapted parameter (Li et al. 2017), shared by all users."""

    method = "meta_sgd"

    def __init__(self, data: TaskData, config: LearnerConfig):
        super().__init__(data, config)
        # ParameterDict keys may not contain '.', so names are stored with '__'.
        self.rates = nn.ParameterDict({
            name.replace(".", "__"): nn.Parameter(torch.full_like(p, config.inner_lr))
            for name, p in self.net.adapted_params().items()
        })

    def step_size(self, users: UserBatch) -> StepSize:
        return {name.replace("__", "."): rate for name, rate in self.rates.items()}

    def scaled_step(self, alpha: StepSize) -> StepSize:
        # The same starting point as the other methods, then each rate is learned freely.
        return {n: a * (self.config.factor_lr_scale if n == USER_FACTOR else 1.0) for n, a in alpha.items()}


class HistoryEncoder(nn.Module):
    """Support set -> (B, d): the mean support item embedding and its label-weighted mean, projected.

    The paper's footnote 3 allows "user browsing history embeddings" as h; the label-weighted
    mean says which kind of items this user likes more than the population does.
    """

    def __init__(self, item_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * item_dim, dim)

    def forward(self, users: UserBatch, center: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        weights = users.support_mask.to(users.support_features.dtype)  # (B, S)
        count = weights.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
        centred = (users.support_labels - center) / spread * weights  # (B, S)
        # Both means as one batched product (B, 2, S) @ (B, S, Di): no (B, S, Di) products to
        # form and reduce (0.29 against 0.91 ms forward and backward on a long ML-1M batch).
        pooling = torch.stack([weights, centred], 1) / count.unsqueeze(-1)
        pooled = torch.bmm(pooling, users.support_features).flatten(1)  # (B, 2 Di): [mean ; label-weighted mean]
        return torch.relu(self.proj(pooled))


class LRModule(nn.Module):
    """Two FC layers with a ReLU between them: user embedding -> G real numbers (PAML).

    The last layer starts small and random, not at zero: at zero its input layer gets no
    gradient at the start and every user begins with the same rate.
    """

    def __init__(self, in_dim: int, hidden: int, outputs: int = 1, init_std: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, outputs))
        nn.init.normal_(self.layers[2].weight, std=init_std) if init_std > 0 else nn.init.zeros_(self.layers[2].weight)
        nn.init.zeros_(self.layers[2].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h)  # (B, G)


def layer_groups(names: list[str]) -> dict[str, int]:
    """Adapted parameter name -> index of its layer ('decision.0.weight' and '.bias' share one)."""
    layers = sorted({n.rsplit(".", 1)[0] for n in names}, key=lambda layer: [n.rsplit(".", 1)[0] for n in names].index(layer))
    return {n: layers.index(n.rsplit(".", 1)[0]) for n in names}


class PAML(MetaLearner):
    """alpha(h_i) = inner_lr * lr_range ** tanh(LR(h_i)): per user, in log space (paper Eq. 1).

    Log space makes equal steps of the LR module equal *ratios* of alpha, and the gradient
    d alpha / d LR = alpha ln(lr_range) tanh' does not vanish at the start, where alpha =
    inner_lr for an LR output of 0.
    """

    method = "paml"
    per_user_step = True

    def __init__(self, data: TaskData, config: LearnerConfig):
        super().__init__(data, config)
        self.groups = layer_groups(list(self.net.adapted_params())) if config.lr_per_layer else {}
        outputs = max(self.groups.values()) + 1 if self.groups else 1
        in_dim = self.net.embedder.user_dim
        if config.lr_history:
            self.history = HistoryEncoder(self.net.embedder.item_dim, self.net.config.embedding_dim)
            in_dim += self.net.config.embedding_dim + 1
            self.reads_support_loss = True
        self.lr_module = LRModule(in_dim, config.lr_hidden, outputs, config.lr_init_std)
        if config.lr_per_parameter:
            # Named like Meta-SGD's so the outer optimizer gives them the same rate group.
            self.rates = nn.ParameterDict({
                name.replace(".", "__"): nn.Parameter(torch.full_like(p, config.inner_lr))
                for name, p in self.net.adapted_params().items()
            })

    def lr_input(self, users: UserBatch) -> torch.Tensor:
        """The LR module's input: h, and with `lr_history` the support set's encoding and how badly
        the unadapted model fits it (log(1 + support loss)): a user the population's prior
        already fits needs a short step, one it fits badly a long one."""
        if not self.config.lr_history:
            return users.h
        scale = self.net.embedder.label_scale()
        surprise = torch.log1p(users.support_loss).unsqueeze(-1)  # (B, 1)
        return torch.cat([users.h, self.history(users, scale.center, scale.scale), surprise], dim=-1)

    def log_ratio(self, users: UserBatch) -> torch.Tensor:
        """(B, G) log(alpha / inner_lr) in [-log r, log r]."""
        return math.log(self.config.lr_range) * torch.tanh(self.lr_module(self.lr_input(users)))

    def step_size(self, users: UserBatch) -> StepSize:
        alpha = self.config.inner_lr * torch.exp(self.log_ratio(users))  # (B, G)
        if not self.groups:
            return alpha[:, 0]
        return {name: alpha[:, group] for name, group in self.groups.items()}

    def scaled_step(self, alpha: StepSize) -> StepSize:
        """With `lr_per_parameter`: theta_i = theta - (alpha_l(h_i) / inner_lr) * rate ⊙ grad, a
        (B, *shape) rate per parameter; without, alpha as the other methods scale it."""
        alpha = super().scaled_step(alpha)
        if not self.config.lr_per_parameter:
            return alpha
        names = list(self.net.adapted_params())
        if not isinstance(alpha, dict):
            alpha = {name: alpha for name in names}
        rates = {name: self.rates[name.replace(".", "__")] for name in names}
        return {name: UserScaled(alpha[name] / self.config.inner_lr, rate) for name, rate in rates.items()}


class RegPAML(PAML):
    """PAML plus the memory-agnostic regularizer gamma * ||dL_support/dtheta||^2 * |alpha(h_i)|.

    With one rate per layer the regularizer is sum over layers of |alpha_l| ||dL/dtheta_l||^2,
    which is the paper's term when every layer has the same rate.
    """

    method = "reg_paml"

    def objective(self, outcome: Outcome) -> torch.Tensor:
        alpha, norms = self._alpha, self._grad_sq_norms
        if isinstance(alpha, dict):
            regularizer = sum(alpha[name].abs() * norms[name] for name in norms)
        else:
            regularizer = total_sq_norm(norms) * alpha.abs()
        self._terms = {"query_loss": float(outcome.query_loss.detach().mean()),
                       "regularizer": float(self.config.gamma * regularizer.detach().mean()),
                       "max_regularizer": float(self.config.gamma * regularizer.detach().max())}
        return (outcome.query_loss + self.config.gamma * regularizer).mean()


class ATPAML(MetaLearner):
    """alpha(h_i) = inner_lr * exp(l_i), l_i = B tanh((alpha'(h_i) + rho * sum_k w_k l_k) / B), B = log(lr_range).

    The paper's AT-PAML, alpha(h_i) = alpha'(h_i) + sum_k s_k / (sum_j s_j + sigma) alpha(h_k), in
    log space with two deviations (docs/protocol.md): the memory stores each user's log-ratio
    l = log(alpha / inner_lr), and the neighbours' mean enters with a weight rho (memory_weight;
    rho = 1 is the paper's form). Stored as the paper has it, every insertion adds the correction
    alpha' to what the neighbours stored: the memory integrates alpha' without bound, and a
    correction that is negative in a region drove that region's stored rates to the clamp at 0,
    where they stayed (measured with the searched ML-1M settings: 42% of stored rates at 0 after
    25 outer steps, all of them after 300). With rho < 1 a region's stored values settle at
    about alpha' / (1 - rho), and the tanh keeps every rate in [inner_lr / r, inner_lr * r].

    During warm-up (fewer than K + 1 stored users) every user gets the fixed inner_lr (l = 0).
    Users' (embedding, l) pairs are stored after each outer step, one slot per training user (a
    returning user overwrites its own slot); while training, a user is never its own
    neighbour. The stored values receive gradients through the kernel weights and are moved
    by the memory's own SGD step.
    """

    method = "at_paml"
    per_user_step = True
    # 2: log-ratios in the memory (1: the paper's rates, before 2026-11-29). Studies and settings
    # searched for another form are not used (models/search.py, models/settings.py).
    form = 2

    def __init__(self, data: TaskData, config: LearnerConfig):
        super().__init__(data, config)
        self.lr_module = LRModule(self.net.embedder.user_dim, config.lr_hidden, 1, config.lr_init_std)
        dim = self.net.embedder.user_dim
        self.memory = UserMemory(dim, replace(config.memory, delta=config.kernel_delta))
        self._attention_weights: torch.Tensor | None = None
        self._log_ratio: torch.Tensor | None = None

    def log_ratio(self, users: UserBatch) -> torch.Tensor:
        """(B,) l_i = log(alpha_i / inner_lr) in (-log r, log r)."""
        correction = self.config.correction_range * torch.tanh(self.lr_module(users.h)[:, 0])
        self._attention_weights = None
        bound = math.log(self.config.lr_range)
        if len(self.memory) <= self.memory.config.k or bound == 0:  # warm-up, or lr_range 1: every user gets inner_lr
            return torch.zeros_like(correction)
        # Only training searches stamp the LRU clock and skip the user's own slot: scoring
        # validation or test users must not decide which training users the memory keeps.
        exclude = users.keys if users.training else None
        reference, weights = self.memory.reference_lr(users.h, stamp=users.training, exclude=exclude, with_weights=True)
        self._attention_weights = weights.detach()
        return bound * torch.tanh((correction + self.config.memory_weight * reference) / bound)

    def check_memory_fills(self, training_users: int) -> None:
        """Refuse a memory that can never leave warm-up (models/user_memory.py `check_memory_fills`)."""
        check_memory_fills(self.memory.config, training_users)

    def step_size(self, users: UserBatch) -> StepSize:
        self._log_ratio = self.log_ratio(users)
        return self.config.inner_lr * torch.exp(self._log_ratio)

    def _attention(self) -> torch.Tensor | None:
        return self._attention_weights

    def after_outer_step(self, outcome: Outcome, collective=None) -> None:
        h, ratio, keys = outcome.user_embedding.detach(), self._log_ratio.detach(), self._keys
        if collective is not None:
            # Every process keeps the same memory: the batch's gradients and users, all shards.
            collective.all_reduce_memory(self.memory)
            h, ratio, keys = collective.all_gather(h), collective.all_gather(ratio), collective.all_gather(keys)
        self.memory.apply_gradients()
        self.memory.insert(h, ratio, keys)

    def prepare(self, batch: TaskSplit, items: ItemTable, training: bool = True, with_support_loss: bool = True):
        prepared = super().prepare(batch, items, training, with_support_loss)
        self._keys = prepared[2].keys
        return prepared

    def _apply(self, fn, recurse: bool = True):
        # The memory is not an nn.Module: follow the parameters when the learner moves device.
        moved = super()._apply(fn, recurse)
        self.memory.to(self.lr_module.layers[0].weight.device)
        return moved

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {**self.memory.state_dict(), "form": torch.tensor(self.form)}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        form = int(state.get("form", 1))
        if form != self.form:
            raise ModelFormError(f"this AT-PAML model's memory has form {form} (stored rates), this code reads form "
                                 f"{self.form} (stored log-ratios): train it again (the at_paml_model asset)")
        self.memory.load_state_dict({k: v for k, v in state.items() if k != "form"})


class Transfer(MetaLearner):
    """Train the network on all training users' ratings; fine-tune on each user's support set."""

    method = "transfer"

    def step_size(self, users: UserBatch) -> StepSize:
        return self.config.finetune_lr

    def inner_config(self, training: bool) -> InnerConfig:
        return InnerConfig(steps=self.config.finetune_steps, first_order=True, max_step_norm=self.config.max_step_norm)

    def run(self, batch: TaskSplit, items: ItemTable, training: bool = True, adapt: bool = True) -> Outcome:
        if not training:
            return super().run(batch, items, training=False, adapt=adapt)
        support_x, query_x, users = self.prepare(batch, items, training)
        params = self.net.adapted_params()
        # Plain supervised training: every known rating of the user, no adaptation.
        pred = torch.cat([self.net.predict(params, support_x), self.net.predict(params, query_x)], 1)
        labels = torch.cat([batch.support_labels, batch.query_labels], 1)
        mask = torch.cat([batch.support_mask, batch.query_mask], 1)
        loss = self.loss(pred, labels, mask)
        zeros = users.h.new_zeros(users.h.shape[0])
        return Outcome(pred, loss, zeros + self.config.finetune_lr, zeros, users.h)


METHODS: dict[str, Callable[[TaskData, LearnerConfig], MetaLearner]] = {
    "melu": MeLU,
    "meta_sgd": MetaSGD,
    "transfer": Transfer,
    "paml": PAML,
    "at_paml": ATPAML,
    "reg_paml": RegPAML,
}


def method_form(method: str) -> int:
    """The form of `method`'s step size (MetaLearner.form): a search or a model is valid only for the form it was made for."""
    return METHODS[method].form


def build_learner(method: str, data: TaskData, config: LearnerConfig) -> MetaLearner:
    """Instantiate `method` from the registry, or raise naming the known methods."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return METHODS[method](data, config)


SECTIONS = {"": LearnerConfig, "network": NetworkConfig, "memory": MemoryConfig}  # a stored record's parts


def stored_sections(values: dict) -> dict[str, dict]:
    """The record's part of each section of SECTIONS (the whole record for LearnerConfig's own fields)."""
    return {name: values if name == "" else values.get(name) for name in SECTIONS}


def stored_settings_problem(values: dict) -> str | None:
    """Why a learner config read back from a stored model does not describe this code's learner, or None.

    Every field of LearnerConfig, NetworkConfig and MemoryConfig must be there, and nothing else: a
    field missing means older code trained the model without that part of the network (the MF head
    and its fold-in came on 2026-11-28, after f6f80ec), and this code's default for it would build
    another network around the stored weights; a field this code does not know is newer code's.
    A missing field that declares its value before it existed (models/config_fields.py `added_field`,
    proved against the older commit's models) is no problem: the model is read with that value
    (`settings_of_older_code`).
    """
    missing, unknown = [], []
    for name, stored in stored_sections(values).items():
        if not isinstance(stored, dict):
            return f"its settings have no {name} section"
        prefix, kind = f"{name}." if name else "", SECTIONS[name]
        names = {f.name for f in fields(kind)}
        missing += [prefix + n for n in sorted(names - set(stored) - set(values_before(kind, stored)))]
        unknown += [prefix + n for n in sorted(set(stored) - names - set(SECTIONS))]
    if missing:
        return f"its settings lack {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} (trained by older code)"
    if unknown:
        return f"its settings have {', '.join(unknown[:6])}{' ...' if len(unknown) > 6 else ''}, unknown to this code (trained by newer code)"
    return None


def settings_of_older_code(values: dict) -> dict[str, object]:
    """The fields a stored record lacks that declare their value before they existed, named as
    'network.knn_foldin', with that value: what `learner_config_from_dict` fills in."""
    filled: dict[str, object] = {}
    for name, stored in stored_sections(values).items():
        if isinstance(stored, dict):
            filled |= {f"{name}.{k}" if name else k: v for k, v in values_before(SECTIONS[name], stored).items()}
    return filled


def stored_model_problem(info: dict) -> str | None:
    """Why this code cannot load a stored model whose bundle info is `info` (method, form,
    learner_config), or None when it can: another form of the method's step size, or settings
    that are not this code's LearnerConfig (`stored_settings_problem`)."""
    method = info.get("method")
    if method not in METHODS:
        return f"its method {method!r} is not one of {', '.join(METHODS)}"
    form = info.get("form", 1)
    if form != method_form(method):
        return f"it has form {form} of the method's step size, this code form {method_form(method)}"
    return stored_settings_problem(info.get("learner_config") or {})


def learner_config_from_dict(values: dict) -> LearnerConfig:
    """Rebuild a LearnerConfig from `dataclasses.asdict` output (e.g. read back from JSON). A field the
    record lacks gets its declared value before it existed (`settings_of_older_code`), never today's
    default: a record that lacks an undeclared one is refused (`stored_settings_problem`)."""
    problem = stored_settings_problem(values)
    if problem is not None:
        raise ValueError(f"these settings are not this code's LearnerConfig: {problem}")
    values = {**values_before(LearnerConfig, values), **values}
    network = {**values_before(NetworkConfig, values["network"]), **values.pop("network")}
    memory = {**values_before(MemoryConfig, values["memory"]), **values.pop("memory")}
    network["hidden"] = tuple(network["hidden"])
    network["adapted"] = tuple(network["adapted"])
    return LearnerConfig(network=NetworkConfig(**network), memory=MemoryConfig(**memory), **values)
