"""Task tensors as the models consume them (read from the `meta_tasks` asset's tensors).

Shapes: U users, S support slots, Q query slots, N items (row 0 = padding item).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ItemTable:
    """Encoded item features: single-valued (N+1, F) and multi-hot lists (N+1, M_f), 0 = padding."""

    fields: torch.Tensor
    multi: dict[str, torch.Tensor]

    def to(self, device: torch.device | str) -> "ItemTable":
        return ItemTable(self.fields.to(device), {k: v.to(device) for k, v in self.multi.items()})


@dataclass(frozen=True)
class TaskSplit:
    """One split's users as padded tasks (see assets/meta_tasks.py for the encoding)."""

    user_fields: torch.Tensor  # (U, F_user) int64
    support_items: torch.Tensor  # (U, S) int64 item rows
    support_labels: torch.Tensor  # (U, S) float32
    support_mask: torch.Tensor  # (U, S) bool
    query_items: torch.Tensor  # (U, Q)
    query_labels: torch.Tensor  # (U, Q)
    query_mask: torch.Tensor  # (U, Q)

    def __len__(self) -> int:
        return int(self.user_fields.shape[0])

    def select(self, index: torch.Tensor) -> "TaskSplit":
        """The tasks of users `index`, trimmed to the longest support and query set among them."""
        picked = {f.name: getattr(self, f.name)[index] for f in fields(self)}
        s_len = max(int(picked["support_mask"].sum(1).max()), 1) if len(index) else 1
        q_len = max(int(picked["query_mask"].sum(1).max()), 1) if len(index) else 1
        for name in ("support_items", "support_labels", "support_mask"):
            picked[name] = picked[name][:, :s_len]
        for name in ("query_items", "query_labels", "query_mask"):
            picked[name] = picked[name][:, :q_len]
        return TaskSplit(**picked)

    def to(self, device: torch.device | str) -> "TaskSplit":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class TaskData:
    """Everything a learner needs for one dataset."""

    task: str  # "rating" or "ctr"
    user_fields: tuple[str, ...]
    item_fields: tuple[str, ...]
    item_multi_fields: tuple[str, ...]
    vocab_sizes: dict[str, int]
    items: ItemTable
    splits: dict[str, TaskSplit]

    def to(self, device: torch.device | str) -> "TaskData":
        return replace(self, items=self.items.to(device), splits={k: v.to(device) for k, v in self.splits.items()})


def task_data_from_tensors(tensors: dict[str, torch.Tensor], info: dict) -> TaskData:
    """Assemble TaskData from the `meta_tasks` bundle's tensors and info."""
    multi = {f: tensors[f"item_multi__{f}"] for f in info["item_multi_fields"]}
    splits = {
        split: TaskSplit(**{name: tensors[f"{split}__{name}"] for name in (
            "user_fields", "support_items", "support_labels", "support_mask",
            "query_items", "query_labels", "query_mask")})
        for split in SPLITS
    }
    return TaskData(
        task=info["task"], user_fields=tuple(info["user_fields"]), item_fields=tuple(info["item_fields"]),
        item_multi_fields=tuple(info["item_multi_fields"]), vocab_sizes=dict(info["vocab_sizes"]),
        items=ItemTable(tensors["item_fields"], multi), splits=splits,
    )
