"""Small random task data for model tests (no pipeline needed)."""

import torch

from models.network import NetworkConfig
from models.tasks import ItemTable, TaskData, TaskSplit

# A small network with both fold-ins (MF factors and kNN lists) on: tests of their fits and reuse.
FOLDINS = NetworkConfig(embedding_dim=4, hidden=(8,), unknown_rate=0.0, factor_dim=2, factor_folds=2, mf_reg=3.0,
                        knn_k=3, knn_shrinkage=5.0, knn_damping=0.1, knn_neighbours=50)


def random_split(generator: torch.Generator, users: int, support: int, query: int, n_items: int,
                 vocab: dict[str, int], user_fields: tuple[str, ...], task: str) -> TaskSplit:
    def items(width):
        return torch.randint(1, n_items + 1, (users, width), generator=generator)

    def labels(width):
        if task == "ctr":
            return torch.randint(0, 2, (users, width), generator=generator).float()
        return torch.randint(1, 6, (users, width), generator=generator).float()

    support_mask = torch.ones(users, support, dtype=torch.bool)
    support_mask[::3, -2:] = False  # some users have fewer items: padding must be ignored
    query_mask = torch.ones(users, query, dtype=torch.bool)
    query_mask[1::4, -1] = False
    user_codes = torch.stack([torch.randint(2, vocab[f], (users,), generator=generator) for f in user_fields], 1)
    return TaskSplit(user_codes, items(support), labels(support), support_mask, items(query), labels(query), query_mask)


def tiny_task_data(task: str = "rating", seed: int = 0, users: int = 12) -> TaskData:
    generator = torch.Generator().manual_seed(seed)
    vocab = {"gender": 4, "age": 9, "brand": 7, "genre": 6}
    n_items = 10
    item_fields = torch.cat([torch.zeros(1, 1, dtype=torch.long), torch.randint(2, 7, (n_items, 1), generator=generator)])
    genre = torch.randint(0, 6, (n_items + 1, 3), generator=generator)
    genre[0] = 0
    splits = {s: random_split(generator, users, 6, 3, n_items, vocab, ("gender", "age"), task) for s in ("train", "val", "test")}
    return TaskData(task=task, user_fields=("gender", "age"), item_fields=("brand",), item_multi_fields=("genre",),
                    vocab_sizes=vocab, items=ItemTable(item_fields, {"genre": genre}), splits=splits)
