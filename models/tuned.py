"""Per-dataset, per-method settings chosen by the validation search (docs/tuning.md).

Filled from `python -m pipelines.cli tune`'s results in docs/tuning/<dataset>.json (a test
checks the two agree). A (dataset, method) pair missing here uses the code defaults of
LearnerConfig and TrainConfig.
"""

from __future__ import annotations

# Every trial of the search and every final model trains this many epochs, then keeps the
# epoch with the lowest validation loss: the same training budget for every method.
TUNED_EPOCHS = 8

TUNED: dict[str, dict[str, dict]] = {
    "bookcrossing": {
        "melu": {"inner_lr": 0.03, "inner_steps": 3, "outer_lr": 0.001},
        "meta_sgd": {"inner_lr": 0.01, "inner_steps": 3, "outer_lr": 0.001},
        "transfer": {"finetune_lr": 0.001, "finetune_steps": 10, "outer_lr": 0.001},
        "paml": {"inner_lr": 0.05, "inner_steps": 1, "outer_lr": 0.0005, "lr_range": 4.0},
        "at_paml": {"inner_lr": 0.01, "inner_steps": 1, "outer_lr": 0.001, "correction_range": 0.5},
        "reg_paml": {"inner_lr": 0.03, "inner_steps": 1, "outer_lr": 0.0003, "lr_range": 2.0, "gamma": 0.01},
    },
    "movielens": {
        "melu": {"inner_lr": 0.03, "inner_steps": 3, "outer_lr": 0.001},
        "meta_sgd": {"inner_lr": 0.05, "inner_steps": 3, "outer_lr": 0.0003},
        "transfer": {"finetune_lr": 0.02, "finetune_steps": 3, "outer_lr": 0.001},
        "paml": {"inner_lr": 0.05, "inner_steps": 3, "outer_lr": 0.0003, "lr_range": 2.0},
        "at_paml": {"inner_lr": 0.05, "inner_steps": 3, "outer_lr": 0.0003, "correction_range": 0.5},
        "reg_paml": {"inner_lr": 0.1, "inner_steps": 3, "outer_lr": 0.001, "lr_range": 4.0, "gamma": 0.01},
    },
    "taobao": {
        "melu": {"inner_lr": 0.03, "inner_steps": 3, "outer_lr": 0.001},
        "meta_sgd": {"inner_lr": 0.01, "inner_steps": 3, "outer_lr": 0.001},
        "transfer": {"finetune_lr": 0.001, "finetune_steps": 10, "outer_lr": 0.001},
        "paml": {"inner_lr": 0.05, "inner_steps": 1, "outer_lr": 0.0005, "lr_range": 4.0},
        "at_paml": {"inner_lr": 0.05, "inner_steps": 1, "outer_lr": 0.001, "correction_range": 0.5},
        "reg_paml": {"inner_lr": 0.1, "inner_steps": 3, "outer_lr": 0.001, "lr_range": 4.0, "gamma": 0.01},
    },
}


def tuned_settings(dataset: str | None, method: str) -> dict:
    """The searched settings chosen for `method` on `dataset` ({} when not tuned)."""
    return dict(TUNED.get(dataset or "", {}).get(method, {}))
