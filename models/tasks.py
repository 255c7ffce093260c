"""Task tensors as the models consume them (read from the `meta_tasks` asset's tensors).

Shapes: U users, S support slots, Q query slots, N items (row 0 = padding item).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from models.configs import FIRST_VALUE_INDEX, PAD_INDEX, PROTOCOLS, SPLITS, UNKNOWN_INDEX, WARM_SPLIT  # noqa: F401 (re-exported)


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
    # (U,) int64 identity of each task within its split: AT-PAML's memory keeps one slot per
    # training user and never returns a user as its own neighbour. None = row numbers.
    user_index: torch.Tensor | None = None
    # Item-kNN's fold-in predictions for every support (U, S) and query (U, Q) slot, and the
    # table (U,) each row was made from (`PreferenceNetwork.with_knn_foldins`). They depend on
    # the task and fitted tables alone, never on trained weights: made once per split instead
    # of once per meta-batch, where they cost a third of a training step on ML-1M.
    knn_support: torch.Tensor | None = None
    knn_query: torch.Tensor | None = None
    knn_tables: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.user_fields.shape[0])

    def select(self, index: torch.Tensor) -> "TaskSplit":
        """The tasks of users `index`, trimmed to the longest support and query set among them."""
        picked = {f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                  for f in fields(self) if f.name != "user_index"}
        picked["user_index"] = self.keys()[index]
        s_len = max(int(picked["support_mask"].sum(1).max()), 1) if len(index) else 1
        q_len = max(int(picked["query_mask"].sum(1).max()), 1) if len(index) else 1
        for name in ("support_items", "support_labels", "support_mask", "knn_support"):
            if picked[name] is not None:
                picked[name] = picked[name][:, :s_len]
        for name in ("query_items", "query_labels", "query_mask", "knn_query"):
            if picked[name] is not None:
                picked[name] = picked[name][:, :q_len]
        return TaskSplit(**picked)

    def keys(self) -> torch.Tensor:
        """(U,) the tasks' identities (row numbers unless set)."""
        if self.user_index is not None:
            return self.user_index
        return torch.arange(len(self), device=self.user_fields.device)

    def to(self, device: torch.device | str) -> "TaskSplit":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})


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
            "query_items", "query_labels", "query_mask")}, user_index=tensors.get(f"{split}__user_index"))
        for split in info.get("splits", SPLITS)
    }
    return TaskData(
        task=info["task"], user_fields=tuple(info["user_fields"]), item_fields=tuple(info["item_fields"]),
        item_multi_fields=tuple(info["item_multi_fields"]), vocab_sizes=dict(info["vocab_sizes"]),
        items=ItemTable(tensors["item_fields"], multi), splits=splits,
    )


def concat_splits(parts: list[TaskSplit]) -> TaskSplit:
    """Stack splits' tasks (padding to the widest support and query set). Keys: each part's own
    (its identities, or row numbers), shifted past the previous parts' largest key, so tasks that
    share an identity within a part (a warm user's chunks) still share it and no two parts do."""
    def stack(name: str, width: int) -> torch.Tensor:
        tensors = [getattr(p, name) for p in parts]
        return torch.cat([nn_pad(t, width) for t in tensors])

    s_width = max(p.support_mask.shape[1] for p in parts)
    q_width = max(p.query_mask.shape[1] for p in parts)
    merged = {"user_fields": torch.cat([p.user_fields for p in parts])}
    for name in ("support_items", "support_labels", "support_mask"):
        merged[name] = stack(name, s_width)
    for name in ("query_items", "query_labels", "query_mask"):
        merged[name] = stack(name, q_width)
    keys, offset = [], 0
    for part in parts:
        own = part.keys()
        keys.append(own + offset)
        offset += int(own.max()) + 1 if len(own) else 0
    merged["user_index"] = torch.cat(keys)
    return TaskSplit(**merged)


def nn_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad (U, W) with zeros (False for masks) to (U, width)."""
    return torch.nn.functional.pad(t, (0, width - t.shape[1])) if t.shape[1] < width else t


def training_view(data: TaskData, protocol: str = "paper") -> TaskData:
    """The tasks a learner may train on under `protocol` (docs/protocol.md).

    "paper": the cold-start training users only (the warm split is dropped). "production":
    the warm users' tasks are appended to the training split, so meta-training, the features
    fitted on training data (statistics, factors) and the code maps all see them; validation
    and test users are the same in both.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    splits = {k: v for k, v in data.splits.items() if k != WARM_SPLIT}
    if protocol == "production":
        if WARM_SPLIT not in data.splits:
            raise ValueError("the production protocol needs the warm users' tasks; rebuild meta_tasks")
        splits["train"] = concat_splits([data.splits["train"], data.splits[WARM_SPLIT]])
    return replace(data, splits=splits)


def training_user_count(data: TaskData, protocol: str = "paper") -> int:
    """How many distinct users `training_view(data, protocol)` trains on, without building it (no
    concatenation): its distinct keys, the slots AT-PAML's memory can fill. A warm user's tasks (chunks of
    its history) share its key and count once; the training split's users have one task each."""
    train = int(data.splits["train"].keys().unique().numel())
    if protocol != "production" or WARM_SPLIT not in data.splits:
        return train
    return train + int(data.splits[WARM_SPLIT].keys().unique().numel())  # concat_splits keeps the parts' keys apart
