"""The bounds of training's counts and rates, shared by the configs that hold them (models/training.py)
and the command line that takes them (pipelines/cli.py); no torch here, so argparse can check a value
without loading it."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


class SettingError(ValueError):
    """A setting whose value cannot work: the message names the setting, its value and the limit, in one
    line. The command line prints it as it is and a model step refuses with it before it trains
    (assets/method_assets.py `refusing_settings`), instead of a traceback that ends in it."""


def check_positive(name: str, value: float, finite: bool = False) -> None:
    """Refuse a rate or bound that is not a number above 0 (NaN included). A rate's +inf passes and
    diverges in training, where the run stops with a message naming the setting (`divergence_advice`);
    `finite` refuses it too, for a strength that would silently zero a part of the model instead
    (an infinite ridge leaves MF's factors at 0, an infinite kernel every attention weight)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SettingError(f"{name} must be a {'finite ' if finite else ''}number > 0, got {value!r}")
    if finite and value == math.inf:
        raise SettingError(f"{name} must be a finite number > 0, got {value!r}")


def check_count(name: str, value: int) -> None:
    """Refuse a count that is not a whole number >= 1 (0 steps, a batch of 0 users, patience 0)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingError(f"{name} must be a whole number >= 1, got {value!r}")


def count_argument(name: str, zero: str = "") -> Callable[[str], int]:
    """An argparse type for a count the configs check (`check_count`, as TrainConfig does):
    refused by argparse (one line naming the argument and value, status 2) before any step runs, not when
    training starts. `zero`: what 0 means where it passes too (`demo --max-steps 0`: the models' own budget)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} {text!r}: not a whole number") from None
        if not (zero and value == 0):
            try:
                check_count(name, value)
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error) + (f" (or 0: {zero})" if zero else "")) from None
        return value

    parse.__name__ = name
    return parse
