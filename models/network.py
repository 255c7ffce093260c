"""The preference network of MeLU (Lee et al., KDD 2019), generalized to any feature spec.

One embedding table per categorical field (multi-hot fields are the mean of their
values' embeddings), the user's and the item's embeddings concatenated, then decision
layers (FC + ReLU, 64-64 by default) and a linear output: a rating, or a click logit.
Only the decision layers are adapted in the inner loop by default; the embeddings are
meta-learned (`NetworkConfig.adapted`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.tasks import ItemTable, TaskData

PAD_INDEX = 0
Inputs = tuple[torch.Tensor, torch.Tensor]  # (user embedding (..., Du), item embeddings (..., S, Di))


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the preference network (defaults: MeLU's)."""

    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    adapted: tuple[str, ...] = ("decision.",)  # parameter-name prefixes the inner loop adapts


class FieldEmbedder(nn.Module):
    """Embeddings of the user's and the items' categorical fields."""

    def __init__(self, data: TaskData, dim: int):
        super().__init__()
        self.user_fields, self.item_fields, self.multi_fields = data.user_fields, data.item_fields, data.item_multi_fields
        self.tables = nn.ModuleDict({
            field: nn.Embedding(data.vocab_sizes[field], dim, padding_idx=PAD_INDEX)
            for field in (*self.user_fields, *self.item_fields, *self.multi_fields)
        })

    @property
    def user_dim(self) -> int:
        return len(self.user_fields) * self._dim()

    @property
    def item_dim(self) -> int:
        return (len(self.item_fields) + len(self.multi_fields)) * self._dim()

    def _dim(self) -> int:
        return next(iter(self.tables.values())).embedding_dim

    def user(self, user_fields: torch.Tensor) -> torch.Tensor:
        """(B, F_user) codes -> (B, F_user * dim) user embedding h."""
        return torch.cat([self.tables[f](user_fields[:, i]) for i, f in enumerate(self.user_fields)], dim=-1)

    def items(self, table: ItemTable, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of item `rows` (default: every row): (R, item_dim); multi-hot fields mean-pooled."""
        fields = table.fields if rows is None else table.fields[rows]
        parts = [self.tables[f](fields[:, i]) for i, f in enumerate(self.item_fields)]
        for field in self.multi_fields:
            codes = table.multi[field] if rows is None else table.multi[field][rows]  # (R, M)
            present = (codes != PAD_INDEX).unsqueeze(-1).float()  # (R, M, 1)
            summed = (self.tables[field](codes) * present).sum(1)  # (R, dim)
            parts.append(summed / present.sum(1).clamp_min(1.0))
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
        self.embedder = FieldEmbedder(data, config.embedding_dim)
        self.decision = decision_layers(self.embedder.user_dim + self.embedder.item_dim, config.hidden)
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


def task_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, task: str) -> torch.Tensor:
    """Masked mean loss over the last dimension: MSE for ratings, log-loss on logits for clicks."""
    if task == "rating":
        per_item = (pred - target) ** 2
    else:
        per_item = nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none")
    weights = mask.to(pred.dtype)
    return (per_item * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)
