"""Meta-learners behind one interface, and the explicit method registry.

| method    | inner step size alpha                                    | paper / origin |
|-----------|----------------------------------------------------------|----------------|
| melu      | one fixed scalar                                         | MeLU (Lee et al. 2019) = MAML |
| meta_sgd  | a learned rate per parameter, the same for every user    | Li et al. 2017 |
| transfer  | pretrain on all training ratings; fine-tune per user     | Tan et al. 2018 |
| paml      | alpha(h_i) from an LR module on the user embedding       | PAML, Eq. (1) |
| at_paml   | alpha'(h_i) + kernel-weighted LRs of the K nearest stored users | AT-PAML |
| reg_paml  | PAML + gamma * ||dL_support/dtheta||^2 * |alpha(h_i)|     | REG-PAML |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import torch
from torch import nn

from models.inner import InnerConfig, StepSize, adapt_batch, predict_batch
from models.network import NetworkConfig, PreferenceNetwork, task_loss
from models.tasks import ItemTable, TaskData, TaskSplit
from models.user_memory import MemoryConfig, UserMemory


@dataclass(frozen=True)
class LearnerConfig:
    """Settings shared by the learners; method-specific fields say which method reads them."""

    inner_lr: float = 5e-2  # base inner step size (MeLU: the fixed one)
    inner_steps: int = 1
    first_order: bool = False
    network: NetworkConfig = field(default_factory=NetworkConfig)
    lr_hidden: int = 64  # PAML family: width of the LR module's hidden layer
    lr_range: float = 4.0  # PAML/REG-PAML: alpha(h) in (0, lr_range * inner_lr), starts at inner_lr
    gamma: float = 1e-3  # REG-PAML regularizer weight
    correction_range: float = 1.0  # AT-PAML: alpha'(h) in (-r, r) * inner_lr around the memory's LR
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    kernel_delta: float | None = None  # AT-PAML: delta of s_k = exp(-delta ||h_i - h_k||^2); None = 1 / dim(h)
    finetune_steps: int = 5  # transfer: fine-tuning steps on a test user's support set
    finetune_lr: float = 5e-3  # transfer: fine-tuning step size


@dataclass
class Outcome:
    """What one pass over a batch of users produced."""

    query_pred: torch.Tensor  # (B, Q) ratings or click logits
    query_loss: torch.Tensor  # (B,)
    lr_per_user: torch.Tensor  # (B,) the inner step size each user got (mean rate for Meta-SGD)
    grad_sq_norm: torch.Tensor  # (B,) ||grad L_support(theta)||^2
    user_embedding: torch.Tensor  # (B, Du)


class MetaLearner(nn.Module):
    """Common machinery: embed, adapt the decision layers on support, predict the query set."""

    method = "base"

    def __init__(self, data: TaskData, config: LearnerConfig):
        super().__init__()
        self.config = config
        self.task = data.task
        self.net = PreferenceNetwork(data, config.network)
        self.loss = partial(task_loss, task=data.task)

    def step_size(self, user_embedding: torch.Tensor) -> StepSize:
        """alpha for a batch of users (B, Du)."""
        return self.config.inner_lr

    def inner_config(self, training: bool) -> InnerConfig:
        # Evaluation needs no meta-gradient, so it never builds the second-order graph.
        return InnerConfig(steps=self.config.inner_steps, first_order=self.config.first_order or not training)

    def run(self, batch: TaskSplit, items: ItemTable, training: bool = True) -> Outcome:
        """Adapt to each user's support set and predict its query set."""
        # Embed only the items this batch touches: the catalogue can be far larger.
        rows, (support_items, query_items) = batch_item_rows(batch.support_items, batch.query_items)
        item_embeddings = self.net.embedder.items(items, rows)  # (R, Di)
        h = self.net.embedder.user_of(batch)  # (B, Du)
        support_x = self.net.inputs(h, support_items, item_embeddings)  # (B, Du), (B, S, Di)
        query_x = self.net.inputs(h, query_items, item_embeddings)  # (B, Du), (B, Q, Di)
        alpha = self.step_size(h)
        adapted, grad_sq_norm = adapt_batch(
            self.net.adapted_params(), support_x, batch.support_labels, batch.support_mask, alpha,
            self.net.predict, self.loss, self.inner_config(training),
        )
        query_pred = predict_batch(self.net.predict, adapted, query_x)
        query_loss = self.loss(query_pred, batch.query_labels, batch.query_mask)
        return Outcome(query_pred, query_loss, per_user(alpha, h.shape[0], h), grad_sq_norm, h)

    def objective(self, outcome: Outcome) -> torch.Tensor:
        """The meta-loss to minimize: mean query loss over the batch."""
        return outcome.query_loss.mean()

    def after_outer_step(self, outcome: Outcome, collective=None) -> None:
        """Hook after each optimizer step (AT-PAML updates its memory here)."""


def batch_item_rows(*item_rows: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The distinct item rows of a batch, and each input re-indexed into them."""
    flat = torch.cat([r.reshape(-1) for r in item_rows])
    rows, inverse = torch.unique(flat, return_inverse=True)
    parts = inverse.split([r.numel() for r in item_rows])
    return rows, tuple(p.view_as(r) for p, r in zip(parts, item_rows))


def per_user(alpha: StepSize, n_users: int, like: torch.Tensor) -> torch.Tensor:
    """The step size as one number per user, for logging and the per-user metrics table."""
    if isinstance(alpha, dict):
        value = torch.cat([a.detach().reshape(-1) for a in alpha.values()]).mean()
        return value.expand(n_users)
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

    def step_size(self, user_embedding: torch.Tensor) -> StepSize:
        return {name.replace("__", "."): rate for name, rate in self.rates.items()}


class LRModule(nn.Module):
    """Two FC layers with a ReLU between them: user embedding -> one real number (PAML)."""

    def __init__(self, in_dim: int, hidden: int, zero_init: bool = False):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        if zero_init:
            nn.init.zeros_(self.layers[2].weight)
            nn.init.zeros_(self.layers[2].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h).squeeze(-1)  # (B,)


class PAML(MetaLearner):
    """alpha(h_i) = lr_range * inner_lr * sigmoid(LR(h_i)), initialized at inner_lr (paper Eq. 1)."""

    method = "paml"

    def __init__(self, data: TaskData, config: LearnerConfig):
        super().__init__(data, config)
        self.lr_module = LRModule(self.net.embedder.user_dim, config.lr_hidden, zero_init=True)
        # sigmoid(bias) = 1 / lr_range, so every user starts at alpha = inner_lr.
        nn.init.constant_(self.lr_module.layers[2].bias, -math.log(config.lr_range - 1.0))

    def step_size(self, user_embedding: torch.Tensor) -> StepSize:
        scale = self.config.lr_range * self.config.inner_lr
        return scale * torch.sigmoid(self.lr_module(user_embedding))  # (B,)


class RegPAML(PAML):
    """PAML plus the memory-agnostic regularizer gamma * ||dL_support/dtheta||^2 * |alpha(h_i)|."""

    method = "reg_paml"

    def objective(self, outcome: Outcome) -> torch.Tensor:
        alpha = self._alpha_with_grad
        regularizer = outcome.grad_sq_norm * alpha.abs()
        return (outcome.query_loss + self.config.gamma * regularizer).mean()

    def step_size(self, user_embedding: torch.Tensor) -> StepSize:
        # Kept with its graph: the regularizer must reach the LR module through |alpha|.
        self._alpha_with_grad = super().step_size(user_embedding)
        return self._alpha_with_grad


class ATPAML(MetaLearner):
    """alpha(h_i) = alpha'(h_i) + sum_k s_k / (sum_j s_j + sigma) * alpha(h_k) over stored users.

    During warm-up (fewer than K stored users) every user gets the fixed inner_lr. Users'
    (embedding, alpha) pairs are stored after each outer step; the stored values receive
    gradients through the kernel weights and are moved by the memory's own SGD step.
    """

    method = "at_paml"

    def __init__(self, data: TaskData, config: LearnerConfig):
        super().__init__(data, config)
        self.lr_module = LRModule(self.net.embedder.user_dim, config.lr_hidden, zero_init=True)
        dim = self.net.embedder.user_dim
        # With delta = 1 the kernel of two random 128-d embeddings is exp(-256) ~ 0 < sigma, and
        # every user would get no reference LR at all; 1 / dim keeps s_k in a useful range.
        delta = config.kernel_delta if config.kernel_delta is not None else 1.0 / dim
        self.memory = UserMemory(dim, replace(config.memory, delta=delta))
        self._alpha: torch.Tensor | None = None

    def step_size(self, user_embedding: torch.Tensor) -> StepSize:
        correction = self.config.correction_range * self.config.inner_lr * torch.tanh(self.lr_module(user_embedding))
        if self.memory.in_warmup:
            alpha = torch.full_like(correction, self.config.inner_lr)
        else:
            # Only training searches stamp the LRU clock: scoring validation or test users
            # must not decide which training users the memory keeps.
            alpha = (correction + self.memory.reference_lr(user_embedding, stamp=self.training)).clamp_min(0.0)
        self._alpha = alpha
        return alpha

    def after_outer_step(self, outcome: Outcome, collective=None) -> None:
        h, alpha = outcome.user_embedding.detach(), self._alpha.detach()
        if collective is not None:
            # Every process keeps the same memory: the batch's gradients and users, all shards.
            collective.all_reduce_memory(self.memory)
            h, alpha = collective.all_gather(h), collective.all_gather(alpha)
        self.memory.apply_gradients()
        self.memory.insert(h, alpha)

    def _apply(self, fn, recurse: bool = True):
        # The memory is not an nn.Module: follow the parameters when the learner moves device.
        moved = super()._apply(fn, recurse)
        self.memory.to(self.lr_module.layers[0].weight.device)
        return moved

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return self.memory.state_dict()

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.memory.load_state_dict(state)


class Transfer(MetaLearner):
    """Train the network on all training users' ratings; fine-tune on each user's support set."""

    method = "transfer"

    def step_size(self, user_embedding: torch.Tensor) -> StepSize:
        return self.config.finetune_lr

    def inner_config(self, training: bool) -> InnerConfig:
        return InnerConfig(steps=self.config.finetune_steps, first_order=True)

    def run(self, batch: TaskSplit, items: ItemTable, training: bool = True) -> Outcome:
        if not training:
            return super().run(batch, items, training=False)
        rows, (support_items, query_items) = batch_item_rows(batch.support_items, batch.query_items)
        item_embeddings = self.net.embedder.items(items, rows)
        h = self.net.embedder.user_of(batch)
        params = self.net.adapted_params()
        local = {"support": support_items, "query": query_items}
        # Plain supervised training: every known rating of the user, no adaptation.
        losses = []
        for part in ("support", "query"):
            x = self.net.inputs(h, local[part], item_embeddings)
            pred = self.net.predict(params, x)
            losses.append((pred, getattr(batch, f"{part}_labels"), getattr(batch, f"{part}_mask")))
        pred = torch.cat([p for p, _, _ in losses], 1)
        labels = torch.cat([y for _, y, _ in losses], 1)
        mask = torch.cat([m for _, _, m in losses], 1)
        loss = self.loss(pred, labels, mask)
        zeros = h.new_zeros(h.shape[0])
        return Outcome(pred, loss, zeros + self.config.finetune_lr, zeros, h)


METHODS: dict[str, Callable[[TaskData, LearnerConfig], MetaLearner]] = {
    "melu": MeLU,
    "meta_sgd": MetaSGD,
    "transfer": Transfer,
    "paml": PAML,
    "at_paml": ATPAML,
    "reg_paml": RegPAML,
}


def build_learner(method: str, data: TaskData, config: LearnerConfig) -> MetaLearner:
    """Instantiate `method` from the registry, or raise naming the known methods."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return METHODS[method](data, config)


def learner_config_from_dict(values: dict) -> LearnerConfig:
    """Rebuild a LearnerConfig from `dataclasses.asdict` output (e.g. read back from JSON)."""
    values = dict(values)
    network = dict(values.pop("network"))
    network["hidden"] = tuple(network["hidden"])
    network["adapted"] = tuple(network["adapted"])
    return LearnerConfig(network=NetworkConfig(**network), memory=MemoryConfig(**values.pop("memory")), **values)
