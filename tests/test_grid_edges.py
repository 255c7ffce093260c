"""Grid edges of the reference rows' validation search: detection, bounded extension, recording."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from models import references as R
from models.grid_edges import (
    COST_CAP, HIGH, INTERIOR, LOW, NATURAL_BOUND, ROUND_LIMIT, AxisRule, beyond, edge_side, search_with_edges,
)
from models.tasks import ItemTable, TaskData, TaskSplit

EXTEND = 3  # rounds the tests extend by (the default, R.EDGE_ROUNDS, only reports edges)


def clustered_ratings(seed: int, n_items: int, users: dict[str, int], support: int, query: int, scale: float,
                      rank: int = 0) -> TaskData:
    """Ratings (3 + item bias + the user's taste for the item's cluster (2 clusters) + rank-`rank`
    factors + N(0, 1) noise) times `scale`; every user rates `support + query` distinct items."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n_items + 1) % 2
    item_factors, item_bias = rng.normal(0, 1, (n_items + 1, rank)), rng.normal(0, 0.3, n_items + 1)

    def split(n: int) -> TaskSplit:
        taste, factors = rng.normal(0, 1, (n, 2)), rng.normal(0, 0.5, (n, rank))
        items = np.stack([rng.choice(np.arange(1, n_items + 1), support + query, replace=False) for _ in range(n)])
        labels = (3 + item_bias[items] + np.take_along_axis(taste, cluster[items], 1)
                  + np.einsum("uk,uik->ui", factors, item_factors[items]) + rng.normal(0, 1, items.shape))
        items, labels = torch.tensor(items), torch.tensor(labels * scale, dtype=torch.float32)
        ones = torch.ones((n, support + query), dtype=torch.bool)
        return TaskSplit(torch.zeros((n, 1), dtype=torch.long), items[:, :support], labels[:, :support], ones[:, :support],
                         items[:, support:], labels[:, support:], ones[:, support:])

    splits = {name: split(n) for name, n in users.items()}
    return TaskData("rating", ("f",), ("g",), (), {"f": 2, "g": 2}, ItemTable(torch.zeros((n_items + 1, 1), dtype=torch.long), {}),
                    splits)


def trials_of(tuning: R.Tuning, reference: str) -> list[dict]:
    return [t for t in tuning.trials if t["reference"] == reference]


def edge_of(tuning: R.Tuning, reference: str, axis: str):
    [edge] = [e for e in tuning.edges if (e.reference, e.axis) == (reference, axis)]
    return edge


# -- the pure pieces ----------------------------------------------------------------------------


def test_an_edge_is_the_smallest_or_largest_value_of_an_axis_with_more_than_one():
    assert edge_side((2.0, 5.0, 10.0), 2.0) == LOW and edge_side((2.0, 5.0, 10.0), 10.0) == HIGH
    assert edge_side((10.0, 2.0, 5.0), 5.0) is None  # inside, whatever the order
    assert edge_side((5.0,), 5.0) is None  # one value: nothing was searched on it


def test_the_next_value_doubles_or_halves_and_stops_at_natural_bounds():
    plain, counts = AxisRule(), AxisRule(integer=True, low=1, high=250)
    assert beyond(50.0, HIGH, plain) == 100.0 and beyond(0.5, LOW, plain) == 0.25
    assert beyond(0.0, LOW, plain) is None  # damping 0 is Koren's formula: nothing below it
    assert beyond(160, HIGH, counts) == 250 and beyond(250, HIGH, counts) is None  # k: every support item
    assert beyond(3, LOW, counts) == 1 and beyond(1, LOW, counts) is None and beyond(2, LOW, counts) == 1
    assert beyond(0.5, HIGH, AxisRule(extend=False)) is None and beyond(0.0, LOW, AxisRule(extend=False)) is None


def quadratic_in_log(best: dict[str, float]):
    """Validation errors sum_axis (log2 value - log2 best)^2: a bowl with its bottom at `best`."""
    return lambda points: [sum((math.log2(v) - math.log2(b)) ** 2 for v, b in zip(p, best.values())) for p in points]


def test_extension_walks_past_the_edge_until_the_bowl_is_bracketed():
    axes, rules = {"a": (1.0, 2.0, 4.0), "b": (1.0, 2.0, 4.0)}, {"a": AxisRule(), "b": AxisRule()}
    # a's bottom lies 2 doublings past the grid (16), b's inside it (2).
    found = search_with_edges("r", axes, rules, quadratic_in_log({"a": 16.0, "b": 2.0}), rounds=EXTEND)
    assert found.points[found.chosen] == (16.0, 2.0)
    [edge] = found.edges
    # 8 and 16 move the choice, 32 brackets it: three rounds, each one value on a only.
    assert (edge.axis, edge.side, edge.chosen, edge.grid, edge.added, edge.final, edge.status) == (
        "a", HIGH, 4.0, (1.0, 4.0), (8.0, 16.0, 32.0), 16.0, INTERIOR)
    assert edge.grid_error == 4.0 and edge.final_error == 0.0  # (log2 4 - log2 16)^2, then the bottom
    assert len(found.points) == 9 + 3 * 3 and len(set(found.points)) == len(found.points)  # b's 3 values per new a
    # Bounded: with one round the choice moves once and the edge is reported as still under-tuned.
    once = search_with_edges("r", axes, rules, quadratic_in_log({"a": 16.0, "b": 2.0}), rounds=1)
    assert once.points[once.chosen] == (8.0, 2.0) and once.edges[0].status == ROUND_LIMIT
    # Rounds 0: the edge is found and nothing is tried beyond it.
    only = search_with_edges("r", axes, rules, quadratic_in_log({"a": 16.0, "b": 2.0}), rounds=0)
    assert len(only.points) == 9 and only.edges[0].added == () and only.edges[0].status == ROUND_LIMIT


def test_a_cost_cap_stops_an_axis_and_says_so_and_a_natural_bound_is_no_edge():
    rules = {"rank": AxisRule(integer=True, low=1, cap=40), "w": AxisRule(extend=False)}
    found = search_with_edges("r", {"rank": (5, 10, 20), "w": (0.5, 1.0)}, rules, quadratic_in_log({"rank": 160, "w": 1.0}),
                              rounds=EXTEND)
    [edge] = found.edges  # w = 1 lies on its natural bound: not an edge to extend
    assert edge.added == (40,) and edge.final == 40 and edge.status == COST_CAP
    natural = search_with_edges("r", {"k": (2, 4)}, {"k": AxisRule(integer=True, low=1)}, quadratic_in_log({"k": 0.25}),
                                rounds=EXTEND)
    assert natural.edges[0].added == (1,) and natural.edges[0].status == NATURAL_BOUND


# -- tune_settings on data whose best setting lies beyond the default grid -----------------------


def test_an_mf_ridge_beyond_the_default_grid_is_found_and_extension_lowers_the_validation_error():
    # Labels times 20 need a ridge about 20 times larger (the ridge is in rating units, the grid
    # was chosen for 1-5 stars): the default grid chooses its largest reg.
    data = clustered_ratings(0, 40, {"train": 150, "val": 40, "test": 4}, 8, 4, scale=20.0, rank=2)
    grid = R.SearchGrid()
    reported = R.tune_settings(data, grid=grid)
    assert grid.edge_rounds == R.EDGE_ROUNDS == 0
    assert reported.settings.mf.reg == max(grid.mf_reg)
    edge = edge_of(reported, "mf", "reg")
    assert (edge.side, edge.chosen, edge.grid, edge.added, edge.status) == (HIGH, max(grid.mf_reg), (min(grid.mf_reg), max(grid.mf_reg)), (), ROUND_LIMIT)
    assert len(trials_of(reported, "mf")) == len(grid.mf_rank) * len(grid.mf_reg)  # nothing tried beyond it

    extended = R.tune_settings(data, grid=replace(grid, edge_rounds=EXTEND))
    edge = edge_of(extended, "mf", "reg")
    assert edge.added[0] == 2 * max(grid.mf_reg) and all(b == 2 * a for a, b in zip(edge.added, edge.added[1:]))
    assert extended.settings.mf.reg == edge.final > max(grid.mf_reg) and edge.status == INTERIOR
    mf_errors = [t["val_error"] for t in trials_of(extended, "mf")]
    grid_errors = [t["val_error"] for t in trials_of(reported, "mf")]
    assert edge.grid_error == min(grid_errors) and edge.final_error == min(mf_errors) < min(grid_errors)
    assert mf_errors[:len(grid_errors)] == grid_errors  # the grid's own trials come first, unchanged
    # every added reg was crossed with every rank
    tried = {(t["setting"]["rank"], t["setting"]["reg"]) for t in trials_of(extended, "mf")}
    assert {(r, g) for r in grid.mf_rank for g in edge.added} <= tried


def test_a_knn_k_beyond_the_default_grid_grows_to_every_support_item_and_lowers_the_error():
    # Every item of a user's cluster is a useful neighbour and each user holds hundreds: more
    # neighbours than the grid's 160 help, up to every support item (the natural bound).
    data = clustered_ratings(0, 1200, {"train": 100, "val": 20, "test": 4}, 1000, 20, scale=1.0)
    grid = R.SearchGrid(item_shrinkage=(10.0,), user_shrinkage=(5.0,), mf_rank=(1,), mf_reg=(10.0,),
                        knn_shrinkage=(300.0,), knn_damping=(0.0,))
    reported = R.tune_settings(data, grid=grid)
    assert reported.settings.knn.k == max(grid.knn_k) and edge_of(reported, "item_knn", "k").side == HIGH
    assert [e.reference for e in reported.edges] == ["item_knn"]  # one-value axes have no edges

    extended = R.tune_settings(data, grid=replace(grid, edge_rounds=EXTEND))
    edge = edge_of(extended, "item_knn", "k")
    support = int(data.splits["val"].support_mask.sum(1).max())
    assert edge.added[-1] == support and all(v > max(grid.knn_k) for v in edge.added)
    assert extended.settings.knn.k == edge.final > max(grid.knn_k)
    if edge.final == support:
        assert edge.status == NATURAL_BOUND  # a larger k would change no prediction
    assert edge.final_error == min(t["val_error"] for t in trials_of(extended, "item_knn")) < edge.grid_error


def test_an_interior_choice_extends_nothing():
    data = clustered_ratings(1, 40, {"train": 150, "val": 40, "test": 4}, 8, 4, scale=1.0, rank=2)
    wide = R.tune_settings(data).settings

    def around(values: tuple, chosen, natural_low=None):
        """Three grid values around `chosen`: its neighbours on both sides, or, at the axis's natural
        lower bound, it and the next two (an edge there is not extended)."""
        ordered = sorted(values)
        at = ordered.index(chosen)
        if chosen == natural_low:
            return tuple(ordered[:3])
        assert 0 < at < len(values) - 1, f"{chosen} lies on an edge of {values}: pick other data"
        return tuple(ordered[at - 1:at + 2])

    default = R.SearchGrid()
    grid = replace(default, edge_rounds=EXTEND, item_shrinkage=around(default.item_shrinkage, wide.bias.item_shrinkage),
                   user_shrinkage=around(default.user_shrinkage, wide.bias.user_shrinkage),
                   mf_rank=around(default.mf_rank, wide.mf.rank, natural_low=1), mf_reg=around(default.mf_reg, wide.mf.reg),
                   knn_k=around(default.knn_k, wide.knn.k), knn_shrinkage=around(default.knn_shrinkage, wide.knn.shrinkage),
                   knn_damping=around(default.knn_damping, wide.knn.damping, natural_low=0.0))
    narrow = R.tune_settings(data, grid=grid)
    # The wide grid's choice lies inside the narrow one, so it is chosen again and nothing is added.
    assert narrow.edges == () and narrow.settings == wide
    sizes = {"user_item_bias": 9, "mf": 9, "item_knn": 27, "mf_knn": len(grid.blend_knn_weight)}
    assert {name: len(trials_of(narrow, name)) for name in sizes} == sizes


@pytest.mark.parametrize("task", ["rating", "ctr"])
def test_extending_never_reads_a_test_label(task):
    from tests.model_fixtures import tiny_task_data
    from tests.test_references import SMALL_GRID, with_labels

    data = tiny_task_data(task, seed=3, users=24)
    grid = replace(SMALL_GRID, edge_rounds=EXTEND)
    tuned = R.tune_settings(data, grid=grid)
    assert tuned.edges  # two-value axes: some choice lies on an edge and was extended
    for part in ("query", "support"):
        assert R.tune_settings(with_labels(data, "test", part, seed=11), grid=grid) == tuned


# -- recorded where users look ------------------------------------------------------------------


def test_reference_settings_records_the_edges_and_reads_them_back():
    from assets.reference_eval import ProtocolChoice, choices_bundle, grid_edge_notes, stored_choices

    data = clustered_ratings(0, 40, {"train": 150, "val": 40, "test": 4}, 8, 4, scale=20.0, rank=2)
    for rounds in (0, EXTEND):
        choice = ProtocolChoice(*R.tune_settings(data, grid=R.SearchGrid(edge_rounds=rounds)))
        bundle = choices_bundle({"paper": choice})
        assert bundle.info["grid_edges"] == {"paper": [e.as_dict() for e in choice.edges]}
        assert stored_choices(bundle) == {"paper": choice}
        [line] = [n for n in grid_edge_notes("scaled", bundle)["paper"] if " mf reg " in n]
        assert line.startswith("scaled (paper): mf reg chosen 50, on the high edge of its grid 2..50")
        edge = edge_of(R.Tuning(*choice.__dict__.values()), "mf", "reg")
        if rounds:
            assert f"final {edge.final:g} (interior)" in line and "under-tuned" not in line
        else:
            assert "not extended" in line
    inside = replace(choice, edges=())
    assert "grid_edges" not in choices_bundle({"paper": inside}).info  # no edge: the bundle is what it was
