"""Hyper-parameter search on validation users, with the same budget for every method.

Each method gets `trials` settings: its current defaults first, then seeded random draws
(without repetition) from the grid below, each trained for the same number of epochs with
the same seed and judged by its best validation loss (the mean query loss of the
validation users, the number `train` selects epochs by). Test users are never touched.
"""

from __future__ import annotations

import itertools
import random
import time
import zlib
from dataclasses import asdict, dataclass, fields, replace

from models.learners import METHODS, LearnerConfig
from models.tasks import TaskData
from models.training import TrainConfig, train

# One grid for every meta-learner, plus the knobs only some methods have. Transfer learning
# has no meta-training inner loop: its inner axes are the fine-tuning steps and rate.
COMMON_SPACE: dict[str, tuple] = {
    "inner_lr": (0.01, 0.03, 0.05, 0.1),
    "inner_steps": (1, 3),
    "outer_lr": (3e-4, 1e-3),
}
METHOD_SPACE: dict[str, dict[str, tuple]] = {
    "melu": {},
    "meta_sgd": {},
    "paml": {"lr_range": (2.0, 4.0)},
    "reg_paml": {"lr_range": (2.0, 4.0), "gamma": (1e-4, 1e-3, 1e-2)},
    "at_paml": {"correction_range": (0.5, 1.0)},
    "transfer": {"finetune_lr": (1e-3, 5e-3, 2e-2), "finetune_steps": (3, 10), "outer_lr": (3e-4, 1e-3)},
}
TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))


@dataclass(frozen=True)
class Trial:
    """One evaluated setting."""

    method: str
    index: int
    settings: dict
    val_loss: float
    best_epoch: int
    seconds: float


def search_space(method: str) -> dict[str, tuple]:
    """The grid `method` is searched over."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if method == "transfer":
        return dict(METHOD_SPACE["transfer"])
    return {**COMMON_SPACE, **METHOD_SPACE[method]}


def default_settings(method: str, learner: LearnerConfig, train_config: TrainConfig) -> dict:
    """The defaults of the searched axes (trial 0)."""
    values = {**asdict(learner), **asdict(train_config)}
    return {axis: values[axis] for axis in search_space(method)}


def draw_settings(method: str, trials: int, seed: int, defaults: dict) -> list[dict]:
    """`defaults`, then `trials - 1` distinct random points of the grid (seeded per method)."""
    space = search_space(method)
    grid = [dict(zip(space, point)) for point in itertools.product(*space.values())]
    grid = [point for point in grid if point != defaults]
    rng = random.Random(seed * 1_000_003 + zlib.crc32(method.encode()))
    return [dict(defaults)] + rng.sample(grid, min(trials - 1, len(grid)))


def apply_settings(settings: dict, learner: LearnerConfig, train_config: TrainConfig) -> tuple[LearnerConfig, TrainConfig]:
    """Split a setting into the learner's and the outer loop's fields."""
    train_part = {k: v for k, v in settings.items() if k in TRAIN_FIELDS}
    learner_part = {k: v for k, v in settings.items() if k not in TRAIN_FIELDS}
    return replace(learner, **learner_part), replace(train_config, **train_part)


def run_trial(method: str, index: int, settings: dict, data: TaskData, learner: LearnerConfig,
              train_config: TrainConfig) -> Trial:
    """Train one setting. A run that diverges keeps `train`'s +inf (NaN never beats it), so it
    loses the search instead of stopping it."""
    learner_config, config = apply_settings(settings, learner, train_config)
    start = time.perf_counter()
    result = train(method, data, learner_config, config)
    return Trial(method, index, settings, float(result.best_val_loss), result.best_epoch, time.perf_counter() - start)


def best_trial(trials: list[Trial]) -> Trial:
    """The lowest validation loss; ties go to the earlier trial (the defaults first)."""
    return min(trials, key=lambda t: (t.val_loss, t.index))
