"""The preference network of MeLU (Lee et al., KDD 2019), generalized to any feature spec.

One embedding table per categorical field (multi-hot fields are the mean of their
values' embeddings), the user's and the item's embeddings concatenated, then decision
layers (FC + ReLU, 64-64 by default) and a linear output: a rating, or a click logit.
Only the decision layers are adapted in the inner loop by default; the embeddings are
meta-learned (`NetworkConfig.adapted`).

With `NetworkConfig.statistics` (our feature choice, see models/features.py) the user
half also holds a projection of the user's support-set statistics and the item half a
projection of the item's training statistics: one more embedding-sized block on each side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.features import ITEM_STATS, USER_STATS, LabelScale, item_statistics, label_scale, support_statistics
from models.tasks import ItemTable, TaskData, TaskSplit

PAD_INDEX = 0
Inputs = tuple[torch.Tensor, torch.Tensor]  # (user embedding (..., Du), item embeddings (..., S, Di))


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the preference network (defaults: MeLU's)."""

    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    adapted: tuple[str, ...] = ("decision.",)  # parameter-name prefixes the inner loop adapts
    statistics: bool = True  # rating statistics as features (models/features.py); False = MeLU's inputs


class FieldEmbedder(nn.Module):
    """Embeddings of the user's and the items' categorical fields."""

    def __init__(self, data: TaskData, dim: int, scale: LabelScale | None = None):
        """`scale` (the training labels' constants) switches the rating statistics on."""
        super().__init__()
        self.user_fields, self.item_fields, self.multi_fields = data.user_fields, data.item_fields, data.item_multi_fields
        self.tables = nn.ModuleDict({
            field: nn.Embedding(data.vocab_sizes[field], dim, padding_idx=PAD_INDEX)
            for field in (*self.user_fields, *self.item_fields, *self.multi_fields)
        })
        self.statistics = scale is not None
        if scale is not None:
            # Buffers, not recomputed at load: a saved model keeps the statistics it was trained with.
            self.register_buffer("scale", torch.tensor([scale.center, scale.scale, scale.user_log_count, scale.item_log_count]))
            self.register_buffer("item_stats", item_statistics(data, scale))
            self.user_stats_proj = nn.Linear(len(USER_STATS), dim)
            self.item_stats_proj = nn.Linear(len(ITEM_STATS), dim)

    @property
    def user_dim(self) -> int:
        return (len(self.user_fields) + self.statistics) * self._dim()

    @property
    def item_dim(self) -> int:
        return (len(self.item_fields) + len(self.multi_fields) + self.statistics) * self._dim()

    def _dim(self) -> int:
        return next(iter(self.tables.values())).embedding_dim

    def label_scale(self) -> LabelScale:
        # 0-d tensors rather than floats: reading them back would sync a GPU on every batch.
        return LabelScale(*self.scale.unbind())

    def user(self, user_fields: torch.Tensor, support_labels: torch.Tensor | None = None,
             support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F_user) codes (and the support sets, with statistics) -> user embedding h (B, Du)."""
        parts = [self.tables[f](user_fields[:, i]) for i, f in enumerate(self.user_fields)]
        if self.statistics:
            if support_labels is None or support_mask is None:
                raise ValueError("this network uses support-set statistics: pass support_labels and support_mask")
            stats = support_statistics(support_labels, support_mask, self.label_scale())
            parts.append(self.user_stats_proj(stats.to(self.scale.dtype)))
        return torch.cat(parts, dim=-1)

    def user_of(self, tasks: TaskSplit) -> torch.Tensor:
        """The user embeddings h of a batch of tasks."""
        return self.user(tasks.user_fields, tasks.support_labels, tasks.support_mask)

    def items(self, table: ItemTable, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of item `rows` (default: every row): (R, item_dim); multi-hot fields mean-pooled."""
        fields = table.fields if rows is None else table.fields[rows]
        parts = [self.tables[f](fields[:, i]) for i, f in enumerate(self.item_fields)]
        for field in self.multi_fields:
            codes = table.multi[field] if rows is None else table.multi[field][rows]  # (R, M)
            present = (codes != PAD_INDEX).unsqueeze(-1).float()  # (R, M, 1)
            summed = (self.tables[field](codes) * present).sum(1)  # (R, dim)
            parts.append(summed / present.sum(1).clamp_min(1.0))
        if self.statistics:
            stats = self.item_stats if rows is None else self.item_stats[rows]
            parts.append(self.item_stats_proj(stats))
        return torch.cat(parts, dim=-1)


def decision_layers(in_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """FC + ReLU layers, then one linear output unit."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


class PreferenceNetwork(nn.Module):
    """Embeddings + decision layers; predictions are functional in the adapted parameters."""

    def __init__(self, data: TaskData, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = config
        self.task = data.task
        scale = label_scale(data)
        self.embedder = FieldEmbedder(data, config.embedding_dim, scale if config.statistics else None)
        self.decision = decision_layers(self.embedder.user_dim + self.embedder.item_dim, config.hidden)
        # Start at the training labels' centre (a click rate's logit for CTR), not at 0: from 0,
        # the first support gradients on 1-5 star ratings are large enough to throw a fixed-rate
        # inner loop off course.
        with torch.no_grad():
            self.decision[-1].bias.fill_(output_bias(scale.center, data.task))
        if not self.adapted_params() or any(not n.startswith("decision.") for n in self.adapted_params()):
            # The inner loop runs on precomputed embeddings, so only decision layers can adapt.
            raise ValueError(f"adapted={config.adapted!r} must select decision-layer parameters, e.g. ('decision.',)")

    def adapted_params(self) -> dict[str, torch.Tensor]:
        """The parameters the inner loop adapts, by name (e.g. 'decision.0.weight')."""
        return {n: p for n, p in self.named_parameters() if n.startswith(self.config.adapted)}

    def inputs(self, user_embedding: torch.Tensor, items: torch.Tensor, item_embeddings: torch.Tensor) -> Inputs:
        """Decision inputs of a batch: (user embedding (B, Du), item embeddings (B, S, Di)).

        The user half is kept apart rather than concatenated to every item: the first layer
        applies its user columns once per user instead of once per item.
        """
        return user_embedding, item_embeddings[items]

    def predict(self, params: dict[str, torch.Tensor], x: Inputs) -> torch.Tensor:
        """Decision layers on the [user ; item] concatenation -> one score per item (..., S).

        `params` replaces the adapted parameters; the others are the module's own. Plain
        F.linear calls instead of functional_call(self.decision, ...): the same function,
        without module-swapping machinery that dominates the vmapped inner loop's time.
        """
        user, items = x  # (..., Du), (..., S, Di)
        layers = [m for m in self.decision if isinstance(m, nn.Linear)]
        hidden = items
        for index, layer in enumerate(layers):
            slot = 2 * index  # position of the Linear in the Sequential (Linear, ReLU, ...)
            weight = params.get(f"decision.{slot}.weight", layer.weight)
            bias = params.get(f"decision.{slot}.bias", layer.bias)
            if index == 0:
                user_dim = user.shape[-1]
                hidden = nn.functional.linear(items, weight[:, user_dim:], bias) + (user @ weight[:, :user_dim].T).unsqueeze(-2)
            else:
                hidden = nn.functional.linear(hidden, weight, bias)
            if index < len(layers) - 1:
                hidden = torch.relu(hidden)
        return hidden.squeeze(-1)


def output_bias(center: float, task: str) -> float:
    """The output unit's initial bias: the mean rating, or the logit of the mean click rate."""
    if task == "rating":
        return center
    rate = min(max(center, 1e-3), 1 - 1e-3)
    return math.log(rate / (1 - rate))


def task_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, task: str) -> torch.Tensor:
    """Masked mean loss over the last dimension: MSE for ratings, log-loss on logits for clicks."""
    if task == "rating":
        per_item = (pred - target) ** 2
    else:
        per_item = nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none")
    weights = mask.to(pred.dtype)
    return (per_item * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)
