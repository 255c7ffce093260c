"""Grid edges of the reference rows' validation search, and their bounded extension.

A grid chosen for one kind of data (the built-in datasets) can be too narrow for another (another
density or rating scale, users with hundreds of ratings): the validation choice then lies on
the edge of a grid axis, and the reference, with every network that folds it in, is under-tuned.
`search_with_edges` tries a grid, finds each axis whose chosen value is its smallest or largest
(for an axis with more than one value), and, where the edge is not a natural bound
(`AxisRule`), adds the next value beyond it, one geometric step per round, crossed with every
value of the other axes, and chooses again over all trials: at most `rounds` rounds, until no
chosen value lies on an extendable edge. The result says, per axis that was on such an edge,
what was added and where the choice ended (`GridEdge`). docs/protocol.md, "Reference rows".
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Point = tuple  # one value per axis, in the order of the search's axes

LOW, HIGH = "low", "high"
# Where an extended axis's choice ended (`GridEdge.status`):
INTERIOR = "interior"  # inside the values tried: the search brackets it
NATURAL_BOUND = "natural bound"  # on the edge, but nothing lies beyond it (e.g. k = every support item)
ROUND_LIMIT = "round limit"  # still on an extendable edge after the last round: under-tuned, say so
COST_CAP = "cost cap"  # still on an extendable edge, at the largest value the search may afford (`AxisRule.cap`)
UNDER_TUNED = (ROUND_LIMIT, COST_CAP)


@dataclass(frozen=True)
class AxisRule:
    """How one axis extends beyond its grid: values times `step` above the largest, divided by
    `step` below the smallest, never past the natural bounds `low` / `high` (an edge at a bound
    is not extended: nothing lies beyond it) nor above `cap` (a value beyond it would cost too
    much: an edge there is reported, not extended); `integer` axes round (k, rank); `extend`
    False makes every edge of the axis natural (the blend weight's [0, 1])."""

    step: float = 2.0
    integer: bool = False
    low: float = 0.0
    high: float = math.inf
    cap: float = math.inf
    extend: bool = True


@dataclass(frozen=True)
class GridEdge:
    """One axis of one reference whose chosen value lay on an extendable edge of its values.

    `side` and `chosen` are the edge as found, `grid` the axis's (smallest, largest) value on the
    grid as given, `added` the values tried beyond it, `final` the axis's value in the final
    choice, `status` where that lies (INTERIOR, NATURAL_BOUND, ROUND_LIMIT); `grid_error` and
    `final_error` the reference's best validation error on the grid as given and after extending.
    """

    reference: str
    axis: str
    side: str
    chosen: float
    grid: tuple[float, float]
    added: tuple[float, ...]
    final: float
    status: str
    grid_error: float
    final_error: float

    def as_dict(self) -> dict:
        return {"reference": self.reference, "axis": self.axis, "side": self.side, "chosen": self.chosen,
                "grid": list(self.grid), "added": list(self.added), "final": self.final, "status": self.status,
                "grid_error": self.grid_error, "final_error": self.final_error}

    @classmethod
    def from_dict(cls, values: dict) -> "GridEdge":
        """The edge `as_dict` wrote (e.g. read back from a bundle's JSON)."""
        return cls(**{**values, "grid": tuple(values["grid"]), "added": tuple(values["added"])})


def edge_side(values: Sequence[float], chosen: float) -> str | None:
    """LOW or HIGH when `chosen` is the smallest or largest of `values`; None when it lies inside
    them or the axis has one value (nothing was searched on it)."""
    if len(set(values)) < 2:
        return None
    if chosen == min(values):
        return LOW
    return HIGH if chosen == max(values) else None


def beyond(value: float, side: str, rule: AxisRule) -> float | None:
    """The next value past the edge `value` on `side`, or None where the edge is a natural bound
    (the rule's `low` / `high`, or an integer axis with no integer left between)."""
    if not rule.extend:
        return None
    if side == HIGH:
        if value >= rule.high:
            return None
        nxt = min(value * rule.step, rule.high)
        nxt = int(math.ceil(nxt)) if rule.integer else nxt
        return nxt if nxt > value else None
    if value <= rule.low:
        return None
    nxt = value / rule.step
    nxt = int(math.floor(nxt)) if rule.integer else nxt
    return nxt if rule.low <= nxt < value else None


@dataclass(frozen=True)
class Search:
    """Every point tried (the grid's product first, then each round's new points) with its
    validation error, the index of the chosen one, and the extendable edges met."""

    points: list[Point]
    errors: list[float]
    chosen: int
    edges: tuple[GridEdge, ...]


def first_best(errors: Sequence[float]) -> int:
    """Index of the smallest error (np.argmin's, as the grids always chose): ties go to the earlier
    point, so the grid's points before its extensions."""
    return int(np.argmin(errors))


def search_with_edges(reference: str, axes: dict[str, tuple], rules: dict[str, AxisRule],
                      errors_of: Callable[[list[Point]], list[float]], rounds: int) -> Search:
    """Choose on the product of `axes` (name -> values, in the grid's order), then extend.

    `errors_of` gives the validation errors of a list of points (one value per axis, in the
    order of `axes`); it is called once for the grid's product and once per round for the
    new points only. Each round adds, to every axis whose chosen value lies on an extendable
    edge, the next value beyond it (`beyond`), and tries the product of the grown axes minus
    the points already tried. Deterministic: the same errors give the same rounds.
    """
    names = list(axes)
    values = {name: list(axes[name]) for name in names}
    points = list(itertools.product(*(values[n] for n in names)))
    errors = list(errors_of(points))
    grid_best = first_best(errors)
    found: dict[str, tuple[str, float]] = {}  # axis -> (side, value) where an extendable edge was first met
    added: dict[str, list] = {}
    for round_index in range(rounds + 1):  # the last pass only finds edges met in the last round
        best = points[first_best(errors)]
        grew = False
        for i, name in enumerate(names):
            side = edge_side(values[name], best[i])
            nxt = None if side is None else beyond(best[i], side, rules[name])
            if nxt is None:
                continue
            found.setdefault(name, (side, best[i]))
            nxt = min(nxt, rules[name].cap) if side == HIGH else nxt
            if round_index < rounds and nxt != best[i]:
                added.setdefault(name, []).append(nxt)
                values[name].append(nxt)
                grew = True
        if not grew:
            break
        tried = set(points)
        new = [p for p in itertools.product(*(sorted(values[n]) for n in names)) if p not in tried]
        points += new
        errors += list(errors_of(new))
    chosen = first_best(errors)
    edges = tuple(
        GridEdge(reference, name, side, value, (min(axes[name]), max(axes[name])), tuple(added.get(name, ())),
                 points[chosen][names.index(name)], _status(values[name], points[chosen][names.index(name)], rules[name]),
                 errors[grid_best], errors[chosen])
        for name, (side, value) in found.items())
    return Search(points, errors, chosen, edges)


def _status(values: list, final: float, rule: AxisRule) -> str:
    side = edge_side(values, final)
    if side is None:
        return INTERIOR
    if beyond(final, side, rule) is None:
        return NATURAL_BOUND
    return COST_CAP if side == HIGH and final >= rule.cap else ROUND_LIMIT
