"""Per-dataset, per-method settings chosen by the validation search (docs/tuning.md).

Filled from `python -m pipelines.cli tune`'s results in docs/tuning/<dataset>.json (a test
checks the two agree). A (dataset, method) pair missing here uses the code defaults of
LearnerConfig and TrainConfig.
"""

from __future__ import annotations

# Every trial of the search and every final model trains this many epochs, then keeps the
# epoch with the lowest validation loss: the same training budget for every method.
TUNED_EPOCHS = 8

TUNED: dict[str, dict[str, dict]] = {}


def tuned_settings(dataset: str | None, method: str) -> dict:
    """The searched settings chosen for `method` on `dataset` ({} when not tuned)."""
    return dict(TUNED.get(dataset or "", {}).get(method, {}))
