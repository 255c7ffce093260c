"""Reference predictors: hand-checked values, no test label in fitting or tuning, protocols."""

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models import references as R
from models.tasks import ItemTable, TaskData, TaskSplit
from tests.model_fixtures import random_split, tiny_task_data

def split_of(users: list[tuple[list[tuple[int, float]], list[tuple[int, float]]]], support_width: int | None = None) -> TaskSplit:
    """A TaskSplit from [(support [(item, label)], query [(item, label)])]; padding holds garbage."""
    s_width = support_width or max(len(s) for s, _ in users)
    q_width = max(len(q) for _, q in users)

    def padded(part: int, width: int):
        items = torch.full((len(users), width), 2, dtype=torch.long)  # padding points at a real item...
        labels = torch.full((len(users), width), 99.0)  # ...with a label that would show if read
        mask = torch.zeros((len(users), width), dtype=torch.bool)
        for u, user in enumerate(users):
            for j, (item, label) in enumerate(user[part]):
                items[u, j], labels[u, j], mask[u, j] = item, label, True
        return items, labels, mask

    return TaskSplit(torch.zeros((len(users), 1), dtype=torch.long), *padded(0, s_width), *padded(1, q_width))


def data_of(n_items: int, **splits: TaskSplit) -> TaskData:
    """Rating task data over items 1..n_items (row 0 = padding) with the given splits."""
    items = ItemTable(torch.zeros((n_items + 1, 1), dtype=torch.long), {})
    return TaskData("rating", ("f",), ("g",), (), {"f": 3, "g": 3}, items, splits)


# -- fitting data ----------------------------------------------------------------------------


def test_fitting_ratings_take_support_and_query_of_the_fitting_splits_only():
    train = split_of([([(1, 4.0), (2, 2.0)], [(3, 5.0)]), ([(1, 2.0)], [(2, 1.0)])])
    warm = split_of([([(3, 1.0)], [(1, 3.0)])])
    other = split_of([([(1, 1.0)], [(2, 1.0)])])
    data = data_of(3, train=train, val=other, test=other, warm=warm)
    paper = R.fitting_ratings(data, R.PROTOCOL_SPLITS["paper"])
    assert sorted(zip(paper.users.tolist(), paper.items.tolist(), paper.labels.tolist())) == [
        (0, 1, 4.0), (0, 2, 2.0), (0, 3, 5.0), (1, 1, 2.0), (1, 2, 1.0)]
    production = R.fitting_ratings(data, R.PROTOCOL_SPLITS["production"])
    assert production.n_users == 3 and sorted(production.labels[production.users == 2].tolist()) == [1.0, 3.0]
    for forbidden in (("train", "test"), ("val",)):
        with pytest.raises(ValueError, match="never fit on"):
            R.fitting_ratings(data, forbidden)
    assert R.available_protocols(data) == ["paper", "production"]
    del data.splits["warm"]
    assert R.available_protocols(data) == ["paper"]
    with pytest.raises(ValueError, match="warm"):
        R.protocol_splits(data, "production")


def test_bias_reference_hand_values():
    # mu = (4 + 2 + 5 + 2 + 1) / 5 = 2.8; item 1: (1.2 - 0.8) / (1 + 2) = 0.4/3; item 3: 2.2 / 2 = 1.1
    train = split_of([([(1, 4.0), (2, 2.0)], [(3, 5.0)]), ([(1, 2.0)], [(2, 1.0)])])
    model = R.fit_bias(R.fitting_ratings(data_of(4, train=train)), R.BiasConfig(item_shrinkage=1.0, user_shrinkage=2.0))
    assert model.mu == pytest.approx(2.8)
    np.testing.assert_allclose(model.item_bias, [0.0, 0.4 / 3, (-0.8 - 1.8) / 3, 1.1, 0.0])
    # one user, support item 3 rated 5: b_u = (5 - 2.8 - 1.1) / (2 + 1) = 1.1 / 3; query item 4 unseen
    pred = R.predict_bias(model, split_of([([(3, 5.0)], [(4, 0.0), (1, 0.0)])], support_width=3))
    np.testing.assert_allclose(pred, [[2.8 + 1.1 / 3, 2.8 + 0.4 / 3 + 1.1 / 3]])


# -- biased MF -------------------------------------------------------------------------------


def test_mf_fold_in_is_the_hand_solved_ridge_on_the_support_set():
    # rank 1: q = (item1: 1, item2: 2, item3: 0 = never rated); b = (0.5, -0.5, 0); mu = 3; ridge 1 on p and b_u
    model = R.MFModel(mu=3.0, item_bias=np.array([0.0, 0.5, -0.5, 0.0]), item_factors=np.array([[0.0], [1.0], [2.0], [0.0]]),
                      reg=1.0, user_bias_reg=1.0)
    # user 0: targets 4 - 3 - 0.5 = 0.5, 5 - 3 + 0.5 = 2.5; X = [[1, 1], [2, 1]]
    #   (X'X + I) = [[6, 3], [3, 3]], X'y = [5.5, 3] -> p = 5/6, b_u = 1/6
    # user 1: one item (1, rated 5), target 1.5: [[2, 1], [1, 2]] w = [1.5, 1.5] -> p = b_u = 0.5
    split = split_of([([(1, 4.0), (2, 5.0)], [(3, 0.0), (1, 0.0), (2, 0.0)]),
                      ([(1, 5.0)], [(1, 0.0), (3, 0.0)])])
    factors, user_bias = R.fold_in(model, split.support_items.numpy(), split.support_labels.numpy().astype(float),
                                   split.support_mask.numpy())
    np.testing.assert_allclose(factors[:, 0], [5 / 6, 0.5])
    np.testing.assert_allclose(user_bias, [1 / 6, 0.5])
    pred = R.predict_mf(model, split)
    np.testing.assert_allclose(pred[0], [3 + 1 / 6, 3 + 0.5 + 1 / 6 + 5 / 6, 3 - 0.5 + 1 / 6 + 10 / 6])
    np.testing.assert_allclose(pred[1, :2], [3 + 0.5 + 0.5 + 0.5, 3 + 0.5])


def test_mf_recovers_an_exact_rank_one_matrix_and_zeroes_unrated_items():
    a, c = np.array([0.5, -1.0, 1.5, 0.0, 2.0, -0.5]), np.array([1.0, -0.5, 0.8, 1.2])
    matrix = 3 + np.outer(a, c)  # users x items 1..4; item row 5 is never rated
    users, items = np.meshgrid(np.arange(6), np.arange(1, 5), indexing="ij")
    ratings = R.Ratings(users.ravel(), items.ravel(), matrix.ravel(), 6, 6)
    model = R.fit_mf(ratings, R.MFConfig(rank=1, reg=1e-6), R.BiasConfig(1e-6, 1e-6))
    factors, user_bias = R.fold_in(model, items, matrix, np.ones(matrix.shape, bool))
    pred = model.mu + model.item_bias[items] + user_bias[:, None] + np.einsum("uk,uqk->uq", factors, model.item_factors[items])
    assert np.abs(pred - matrix).max() < 1e-3
    assert model.item_factors[[0, 5]].tolist() == [[0.0], [0.0]] and model.item_bias[[0, 5]].tolist() == [0.0, 0.0]
    again = R.fit_mf(ratings, R.MFConfig(rank=1, reg=1e-6), R.BiasConfig(1e-6, 1e-6))
    assert np.array_equal(again.item_factors, model.item_factors)  # seeded: same numbers
    with pytest.raises(ValueError, match="positive ridge"):
        R.fit_mf(ratings, R.MFConfig(rank=1, reg=0.0), R.BiasConfig())


# -- item-kNN --------------------------------------------------------------------------------


def hand_knn_model() -> R.KNNModel:
    """Residuals of 3 fitting users on items 1-3 (item 4 never rated); zero biases, mu = 3.

    A: z1 = 1, z2 = 1, z3 = -1;  B: z1 = -1, z2 = -2;  C: z1 = 2, z3 = 1.
    """
    users, items, z = [0, 0, 0, 1, 1, 2, 2], [1, 2, 3, 1, 2, 1, 3], [1.0, 1.0, -1.0, -1.0, -2.0, 2.0, 1.0]
    residuals = sp.csc_matrix((z, (users, items)), shape=(3, 5))
    rated = sp.csc_matrix((np.ones(7), (users, items)), shape=(3, 5))
    return R.KNNModel(R.BiasModel(3.0, np.zeros(5), user_shrinkage=1.0), residuals, rated)


def test_pearson_baseline_over_common_users_by_hand():
    rho, common = R.pearson_baseline(hand_knn_model(), np.array([1, 1, 2, 4]), np.array([2, 3, 3, 1]))
    # (1,2): users A, B: (1*1 + -1*-2) / sqrt((1 + 1) * (1 + 4)) = 3 / sqrt(10)
    # (1,3): users A, C: (1*-1 + 2*1) / sqrt((1 + 4) * (1 + 1)) = 1 / sqrt(10)
    # (2,3): user A: -1 / sqrt(1 * 1) = -1;  (4, anything): nobody -> 0
    np.testing.assert_allclose(np.diag(rho), [3 / np.sqrt(10), 1 / np.sqrt(10), -1.0, 0.0])
    np.testing.assert_allclose(np.diag(common), [2, 2, 1, 0])


def test_item_knn_prediction_by_hand():
    model = hand_knn_model()
    # user 0: support 2 (rated 4), 3 (rated 2): b_u = (1 - 1) / (1 + 2) = 0, residuals 1, -1; queries 1 and 4
    # user 1: support 1 (5), 2 (1): b_u = 0, residuals 2, -2; query 3
    split = split_of([([(2, 4.0), (3, 2.0)], [(1, 0.0), (4, 0.0)]), ([(1, 5.0), (2, 1.0)], [(3, 0.0)])], support_width=3)
    # lambda = 2: s_12 = 3/sqrt(10) * 2/4, s_13 = 1/sqrt(10) * 2/4, s_32 = -1 * 1/3
    s12, s13, s32 = 3 / np.sqrt(10) / 2, 1 / np.sqrt(10) / 2, -1 / 3
    configs = [R.KNNConfig(k=2, shrinkage=2.0), R.KNNConfig(k=1, shrinkage=2.0), R.KNNConfig(k=2, shrinkage=2.0, damping=0.5)]
    both, nearest, damped = R.predict_knn_grid(model, split, configs)
    # k = 2: 3 + (s12 * 1 + s13 * -1) / (s12 + s13) = 3 + 2/4;  item 4 has no neighbour -> the baseline 3
    np.testing.assert_allclose(both[0], [3.5, 3.0])
    # user 1, item 3: (s13 * 2 + s32 * -2) / (s13 + |s32|) = 2
    assert both[1, 0] == pytest.approx(5.0)
    np.testing.assert_allclose(nearest[0], [4.0, 3.0])  # k = 1: only item 2 (s12 > s13)
    assert damped[0, 0] == pytest.approx(3 + (s12 - s13) / (s12 + s13 + 0.5))
    assert damped[1, 0] == pytest.approx(3 + (2 * s13 - 2 * s32) / (s13 - s32 + 0.5))
    # predict_knn (chunks of users) gives the same numbers as the grid
    np.testing.assert_allclose(R.predict_knn(model, split, configs[0]), both)


def test_item_neighbour_lists_by_hand():
    # lambda = 2: s_12 = 3/sqrt(10)/2, s_13 = 1/sqrt(10)/2, s_23 = -1/3; item 4 has no neighbour
    s12, s13, s23 = 3 / np.sqrt(10) / 2, 1 / np.sqrt(10) / 2, -1 / 3
    index, value = R.item_neighbours(hand_knn_model(), R.KNNConfig(shrinkage=2.0), neighbours=1)
    assert index[1:, 0].tolist() == [2, 1, 1, 0]  # each item's most similar other item
    np.testing.assert_allclose(value[1:, 0], [s12, s12, s13, 0.0], rtol=1e-6)
    index, value = R.item_neighbours(hand_knn_model(), R.KNNConfig(shrinkage=2.0), neighbours=5)
    assert all(sorted(row) == list(row) for row in index.tolist())  # sorted, for the lookup
    assert {int(j): float(v) for j, v in zip(index[2], value[2]) if j} == pytest.approx({1: s12, 3: s23})
    assert not index[4].any()  # never rated: no neighbour
    assert all(i not in index[i] for i in range(1, 5))  # no item is its own neighbour


def test_batched_knn_foldin_equals_the_reference_prediction():
    # The networks' kNN (torch, neighbour lists) is the reference row's rule: with every
    # neighbour kept it gives predict_knn_grid's numbers; keeping one drops the weaker pairs.
    model = hand_knn_model()
    split = split_of([([(2, 4.0), (3, 2.0)], [(1, 0.0), (4, 0.0)]), ([(1, 5.0), (2, 1.0)], [(3, 0.0)])], support_width=3)
    user_bias = model.bias.user_bias(split.support_items.numpy(), split.support_labels.numpy().astype(np.float64),
                                     split.support_mask.numpy())
    z = torch.from_numpy((split.support_labels.numpy() - 3.0 - user_bias[:, None]) * split.support_mask.numpy()).float()
    configs = [R.KNNConfig(k=2, shrinkage=2.0), R.KNNConfig(k=1, shrinkage=2.0), R.KNNConfig(k=2, shrinkage=2.0, damping=0.5)]
    for config, expected in zip(configs, R.predict_knn_grid(model, split, configs)):
        index, value = map(torch.from_numpy, R.item_neighbours(model, config, neighbours=5))
        items = split.query_items
        offset = R.knn_foldin(index[items], value[items], split.support_items, z, split.support_mask, config.k, config.damping)
        mask = split.query_mask.numpy()
        np.testing.assert_allclose((3.0 + user_bias[:, None] + offset.numpy())[mask], expected[mask], rtol=1e-6)
    index, value = map(torch.from_numpy, R.item_neighbours(model, configs[0], neighbours=1))
    items = split.query_items
    offset = R.knn_foldin(index[items], value[items], split.support_items, z, split.support_mask, 2, 0.0)
    assert offset[0, 0].item() == pytest.approx(1.0)  # item 1 keeps only item 2 (z = 1), not item 3 (z = -1)


def test_knn_foldin_ties_go_to_the_lower_support_slot_whatever_the_padding():
    # Item 1's neighbours 2 and 3 are equally similar (0.5) and k = 1: the rule of
    # predict_knn_grid keeps the support item in the lower slot, however wide the batch is.
    rows, values = torch.tensor([[[2, 3]]]), torch.tensor([[[0.5, 0.5]]])
    for support, z, expected in (([2, 3], [1.0, -1.0], 1.0), ([3, 2], [-1.0, 1.0], -1.0)):
        for pad in (0, 1, 7):
            items = torch.tensor([support + [0] * pad])
            mask = items != 0
            residual = torch.tensor([z + [0.0] * pad])
            offset = R.knn_foldin(rows, values, items, residual, mask, 1, 0.0)
            assert offset.item() == pytest.approx(expected), (support, pad)


def test_a_support_item_never_predicts_itself():
    model = hand_knn_model()
    index, value = map(torch.from_numpy, R.item_neighbours(model, R.KNNConfig(shrinkage=2.0), neighbours=5))
    support = torch.tensor([[1, 2]])
    z = torch.tensor([[10.0, -1.0]])
    offset = R.knn_foldin(index[support], value[support], support, z, torch.tensor([[True, True]]), 2, 0.0)
    # item 1 is predicted from item 2 alone (z = -1), item 2 from item 1 alone (z = 10)
    assert offset[0].tolist() == pytest.approx([-1.0, 10.0])


def test_item_knn_residuals_come_from_the_bias_baseline():
    train = split_of([([(1, 4.0), (2, 2.0)], [(3, 5.0)]), ([(1, 2.0)], [(2, 1.0)])])
    ratings = R.fitting_ratings(data_of(3, train=train))
    config = R.BiasConfig(item_shrinkage=1.0, user_shrinkage=2.0)
    model = R.fit_item_knn(ratings, config)
    bias = R.fit_bias(ratings, config)
    # user 0 rated 1, 2, 3: b_u = sum(r - mu - b_i) / (2 + 3); z = r - mu - b_i - b_u
    item_residual = np.array([4.0, 2.0, 5.0]) - 2.8 - bias.item_bias[[1, 2, 3]]
    expected = item_residual - item_residual.sum() / 5
    np.testing.assert_allclose(model.residuals[0, 1:4].toarray()[0], expected)


# -- no test label reaches fitting or tuning ----------------------------------------------------


def with_labels(data: TaskData, split: str, part: str, seed: int) -> TaskData:
    """`data` with `split`'s `part` ("support" or "query") labels redrawn."""
    old = data.splits[split]
    labels = getattr(old, f"{part}_labels")
    new = torch.randint(1, 6, labels.shape, generator=torch.Generator().manual_seed(seed)).float()
    if data.task == "ctr":
        new = (new > 3).float()
    return replace(data, splits={**data.splits, split: replace(old, **{f"{part}_labels": new})})


SMALL_GRID = R.SearchGrid(item_shrinkage=(1.0, 10.0), user_shrinkage=(1.0, 5.0), mf_rank=(1, 3), mf_reg=(1.0, 10.0),
                          knn_k=(2, 5), knn_shrinkage=(1.0, 100.0), knn_damping=(0.0, 1.0))


@pytest.mark.parametrize("task", ["rating", "ctr"])
def test_test_labels_change_no_setting_and_no_fitted_parameter(task):
    data = tiny_task_data(task, seed=3, users=24)
    settings, trials, *_ = R.tune_settings(data, grid=SMALL_GRID)
    test = data.splits["test"]
    preds = {name: R.predict_reference(name, data, test, settings) for name in R.REFERENCES}
    for part in ("query", "support"):
        changed = with_labels(data, "test", part, seed=11)
        assert not torch.equal(getattr(changed.splits["test"], f"{part}_labels"), getattr(test, f"{part}_labels"))
        settings2, trials2, *_ = R.tune_settings(changed, grid=SMALL_GRID)
        assert settings2 == settings and trials2 == trials  # tuning never reads a test user
        if part == "query":  # predictions use the support set only
            for name in R.REFERENCES:
                assert np.array_equal(R.predict_reference(name, changed, changed.splits["test"], settings), preds[name]), name


@pytest.mark.parametrize("task", ["rating", "ctr"])
def test_the_grid_fitted_in_threads_gives_the_sequential_choice_and_errors_exactly(task, monkeypatch):
    data = tiny_task_data(task, seed=6, users=24)
    results = {}
    for threads in ("1", "3"):
        monkeypatch.setenv("PAML_THREADS", threads)
        results[threads] = R.tune_settings(data, grid=SMALL_GRID)
    assert results["1"] == results["3"]  # settings and every trial's validation error, bit for bit
    assert len([t for t in results["3"][1] if t["reference"] == "mf"]) == 4


def test_a_grid_sample_holds_whole_seeded_users_and_only_above_the_threshold():
    ratings = R.fitting_ratings(tiny_task_data("rating", seed=6, users=24))
    total = len(ratings.users)
    same, drawn = R.grid_sample(ratings, total, total // 3, seed=0)
    assert same is ratings and drawn is None  # at the threshold: every fitting user
    sample, drawn = R.grid_sample(ratings, total - 1, total // 3, seed=0)
    assert drawn == R.GridSample(sample.n_users, len(sample.users), ratings.n_users, total, 0)
    assert 0 < len(sample.users) <= total // 3 and sample.n_users < ratings.n_users
    assert set(np.unique(sample.users).tolist()) == set(range(sample.n_users)) and sample.n_items == ratings.n_items
    # Whole users: each sampled user is one fitting user with all of its ratings, in order.
    originals = {tuple(zip(ratings.items[ratings.users == u], ratings.labels[ratings.users == u])) for u in range(ratings.n_users)}
    for user in range(sample.n_users):
        assert tuple(zip(sample.items[sample.users == user], sample.labels[sample.users == user])) in originals
    again, _ = R.grid_sample(ratings, total - 1, total // 3, seed=0)
    other, _ = R.grid_sample(ratings, total - 1, total // 3, seed=1)
    assert np.array_equal(again.items, sample.items) and not np.array_equal(other.items, sample.items)


@pytest.mark.parametrize("task", ["rating", "ctr"])
def test_above_the_threshold_the_mf_grid_runs_on_a_user_sample_and_the_choice_on_everyone(task):
    data = tiny_task_data(task, seed=6, users=24)
    ratings, val = R.fitting_ratings(data), data.splits["val"]
    whole = R.tune_settings(data, grid=SMALL_GRID)
    assert whole.mf_sample is None
    lowered = replace(SMALL_GRID, mf_max_ratings=len(ratings.users) - 1, mf_sample_ratings=len(ratings.users) // 2)
    sampled = R.tune_settings(data, grid=lowered)
    drawn = sampled.mf_sample
    assert drawn is not None and drawn.of_users == ratings.n_users and drawn.of_ratings == len(ratings.users)
    assert 0 < drawn.ratings <= len(ratings.users) // 2 and drawn.users < ratings.n_users
    assert (sampled.settings.mf.rank, sampled.settings.mf.reg) in {(r, g) for r in SMALL_GRID.mf_rank for g in SMALL_GRID.mf_reg}
    # Each MF trial's error is the sample fit's; the bias and kNN grids still fit every user.
    sample, _ = R.grid_sample(ratings, lowered.mf_max_ratings, lowered.mf_sample_ratings, lowered.mf_sample_seed)
    train_ctr = float(ratings.labels.mean()) if task == "ctr" else None
    for trial in (t for t in sampled.trials if t["reference"] == "mf"):
        config = R.MFConfig(**trial["setting"])
        assert trial["val_error"] == R.validation_error(R.predict_mf(R.fit_mf(sample, config, sampled.settings.bias), val), val,
                                                        task, train_ctr)
    assert [t for t in sampled.trials if t["reference"] != "mf" and t["reference"] != "mf_knn"] == \
        [t for t in whole.trials if t["reference"] != "mf" and t["reference"] != "mf_knn"]
    # The blend is chosen on the chosen MF point fitted on every fitting user.
    mf_all = R.predict_mf(R.fit_mf(ratings, sampled.settings.mf, sampled.settings.bias), val)
    knn = R.predict_knn(R.fit_item_knn(ratings, sampled.settings.bias), val, sampled.settings.knn)
    blends = [t for t in sampled.trials if t["reference"] == "mf_knn"]
    assert [t["val_error"] for t in blends] == [
        R.validation_error(R.blend_predictions(mf_all, knn, R.BlendConfig(**t["setting"])), val, task, train_ctr) for t in blends]


def test_in_threads_keeps_the_order_of_its_items():
    order = []

    def work(item: int) -> int:
        order.append(item)
        return item * item

    assert R.in_threads(work, [3, 1, 2, 5], threads=2) == [9, 1, 4, 25]
    assert sorted(order) == [1, 2, 3, 5]
    assert R.in_threads(work, [], threads=2) == []


def test_validation_labels_choose_settings_but_never_fit_parameters():
    data = tiny_task_data("rating", seed=4, users=24)
    changed = with_labels(with_labels(data, "val", "query", 5), "val", "support", 6)
    settings = R.ReferenceSettings(R.BiasConfig(3.0, 2.0), R.MFConfig(rank=2, reg=3.0), R.KNNConfig(3, 10.0))
    ratings, ratings2 = R.fitting_ratings(data), R.fitting_ratings(changed)
    mf, mf2 = R.fit_mf(ratings, settings.mf, settings.bias), R.fit_mf(ratings2, settings.mf, settings.bias)
    assert np.array_equal(mf.item_factors, mf2.item_factors) and np.array_equal(mf.item_bias, mf2.item_bias)
    knn, knn2 = R.fit_item_knn(ratings, settings.bias), R.fit_item_knn(ratings2, settings.bias)
    assert (knn.residuals != knn2.residuals).nnz == 0
    for name in R.REFERENCES:
        test = data.splits["test"]
        assert np.array_equal(R.predict_reference(name, data, test, settings), R.predict_reference(name, changed, test, settings))
    # ...while the validation errors the tuning compares do move with validation labels.
    _, trials, *_ = R.tune_settings(data, grid=SMALL_GRID)
    _, trials2, *_ = R.tune_settings(changed, grid=SMALL_GRID)
    assert [t["val_error"] for t in trials] != [t["val_error"] for t in trials2]


def test_tuning_picks_the_lowest_validation_error_of_each_grid():
    data = tiny_task_data("rating", seed=5, users=24)
    settings, trials, *_ = R.tune_settings(data, grid=SMALL_GRID)
    chosen = {"user_item_bias": settings.bias, "mf": settings.mf, "item_knn": settings.knn, "mf_knn": settings.blend}
    for name, config in chosen.items():
        rows = [t for t in trials if t["reference"] == name]
        best = min(rows, key=lambda t: t["val_error"])
        assert best["setting"] == config.__dict__
    assert len([t for t in trials if t["reference"] == "item_knn"]) == 2 * 2 * 2
    # the blend is of the two chosen rows: its end points are exactly those rows
    test = data.splits["test"]
    mf, knn = R.predict_reference("mf", data, test, settings), R.predict_reference("item_knn", data, test, settings)
    for weight, expected in ((0.0, mf), (1.0, knn), (0.25, 0.75 * mf + 0.25 * knn)):
        blended = R.predict_reference("mf_knn", data, test, replace(settings, blend=R.BlendConfig(weight)))
        np.testing.assert_allclose(blended, expected)


# -- production protocol ---------------------------------------------------------------------


def with_warm(data: TaskData, seed: int = 9) -> TaskData:
    generator = torch.Generator().manual_seed(seed)
    warm = random_split(generator, 10, 6, 3, int(data.items.fields.shape[0]) - 1, data.vocab_sizes, data.user_fields, data.task)
    return replace(data, splits={**data.splits, "warm": warm})


def test_production_protocol_fits_on_warm_users_but_never_on_test_users():
    data = with_warm(tiny_task_data("rating", seed=6, users=24))
    paper, production = R.PROTOCOL_SPLITS["paper"], R.PROTOCOL_SPLITS["production"]
    ratings = R.fitting_ratings(data, production)
    n_train, n_warm = len(data.splits["train"]), len(data.splits["warm"])
    assert ratings.n_users == n_train + n_warm
    assert len(ratings.labels) == sum(int(data.splits[s].support_mask.sum() + data.splits[s].query_mask.sum()) for s in production)
    settings, *_ = R.tune_settings(data, production, SMALL_GRID)
    test = data.splits["test"]
    mf_paper = R.predict_reference("mf", data, test, settings, paper)
    mf_production = R.predict_reference("mf", data, test, settings, production)
    assert not np.allclose(mf_paper, mf_production)  # the warm ratings are used
    changed = with_labels(with_labels(data, "test", "query", 21), "test", "support", 22)
    settings2, *_ = R.tune_settings(changed, production, SMALL_GRID)
    assert settings2 == settings
    assert np.array_equal(R.predict_reference("mf", changed, test, settings, production), mf_production)
    with pytest.raises(ValueError, match="never fit on test"):
        R.fitting_ratings(data, ("train", "warm", "test"))


def test_reference_eval_scores_both_protocols_on_the_same_test_users():
    import polars as pl

    from assets.bundle import Bundle
    from assets.method_assets import metrics_bundle
    from assets.reference_eval import evaluate_dataset

    data = with_warm(tiny_task_data("rating", seed=7, users=24))
    users = pl.DataFrame({"user_id": [f"t{i}" for i in range(24)], "user_row": list(range(24))})
    groups = pl.DataFrame({"user_id": users["user_id"], "group": ["major", "minor"] * 12, "true_group": [None] * 24},
                          schema_overrides={"true_group": pl.String})
    result = evaluate_dataset("tiny", data, Bundle(frames={"users__test": users}), Bundle(frames={"groups": groups}), SMALL_GRID)
    assert set(result.settings) == {"paper", "production"} and set(result.seconds["paper"]) == {"tuning", *R.REFERENCES}
    frame = pl.concat(result.user_frames)
    assert frame.group_by("protocol").agg(pl.col("user_id").n_unique())["user_id"].to_list() == [24, 24]
    assert set(frame["method"]) == {f"ref_{name}" for name in R.REFERENCES}
    mse = frame.pivot(on="protocol", index=["method", "user_id"], values="mse")
    assert (mse["paper"] - mse["production"]).abs().max() > 0  # the warm ratings change the fit
    assert {row["protocol"] for row in result.rows} == {"paper", "production"}
    chosen = [r for r in result.tuning if r["chosen"]]
    assert sorted((r["protocol"], r["reference"]) for r in chosen) == sorted(
        (p, n) for p in ("paper", "production") for n in R.TUNED_REFERENCES)
    significance = metrics_bundle("references", result.user_frames, result.rows, ["tiny"]).frame("significance")
    assert set(significance["protocol"]) == {"paper", "production"}


def test_chunks_of_one_warm_user_are_fitted_as_one_user():
    import polars as pl

    from assets.bundle import Bundle
    from assets.reference_eval import with_warm_identities
    from models.tasks import PROTOCOLS

    assert tuple(R.PROTOCOL_SPLITS) == PROTOCOLS
    train = split_of([([(1, 4.0)], [(2, 2.0)])])
    # warm user "w1" in two chunks (items 1-2 and 3), "w2" in one
    warm = split_of([([(1, 5.0)], [(2, 4.0)]), ([(3, 1.0)], [(4, 2.0)]), ([(1, 1.0)], [(3, 2.0)])])
    data = data_of(4, train=train, warm=warm)
    users = pl.DataFrame({"user_id": ["w1", "w1", "w2"], "chunk": [0, 1, 0], "user_row": [0, 1, 2]})
    identified = with_warm_identities(data, Bundle(frames={"users__warm": users}))
    ratings = R.fitting_ratings(identified, R.PROTOCOL_SPLITS["production"])
    assert ratings.n_users == 3  # the training user, w1, w2
    w1 = ratings.users[(ratings.labels == 5.0)][0]
    assert sorted(ratings.items[ratings.users == w1].tolist()) == [1, 2, 3, 4]
    # co-ratings across w1's chunks count: items 1 and 4 were rated by w1 only
    knn = R.fit_item_knn(ratings, R.BiasConfig(1.0, 1.0))
    _, common = R.pearson_baseline(knn, np.array([1]), np.array([4]))
    assert common[0, 0] == 1
    assert R.fitting_ratings(data, R.PROTOCOL_SPLITS["production"]).n_users == 4  # without identities: one per chunk
    with pytest.raises(ValueError, match="2 rows for 3 warm tasks"):
        with_warm_identities(data, Bundle(frames={"users__warm": users.head(2)}))


def test_knn_pairs_are_computed_once_per_split_not_once_per_chunk_of_users(monkeypatch):
    # Each pearson_baseline product runs over every fitting user: per chunk of users that was
    # (users / chunk) x (fitting ratings), quadratic in the log. The chunks now share one table
    # (in row blocks of bounded size) and get the very numbers their own blocks gave.
    model = hand_knn_model()
    split = split_of([([(2, 4.0), (3, 2.0)], [(1, 0.0), (4, 0.0)]), ([(1, 5.0), (2, 1.0)], [(3, 0.0)]),
                      ([(1, 1.0), (3, 4.0)], [(2, 0.0)])], support_width=3)
    config = R.KNNConfig(k=2, shrinkage=2.0, damping=0.1)
    calls = []
    original = R.pearson_baseline
    monkeypatch.setattr(R, "pearson_baseline", lambda m, rows, cols: calls.append(len(rows)) or original(m, rows, cols))
    monkeypatch.setattr(R, "KNN_USER_CHUNK", 1)  # three chunks of one user
    shared = R.predict_knn(model, split, config)
    assert len(calls) == 1  # one block: the table of the whole split
    calls.clear()
    monkeypatch.setattr(R, "KNN_BLOCK_ENTRIES", 4)  # the table in row blocks of at most 4 pairs
    assert np.array_equal(R.predict_knn(model, split, config), shared)
    assert calls == [1] * len(R.pair_table(model, split).q_items) * 2  # one query item per block (4 // 3 support items), twice
    calls.clear()
    monkeypatch.setattr(R, "KNN_TABLE_ENTRIES", 0)  # too large a table...
    assert R.pair_table(model, split) is None  # ...and the chunks' own products cheaper in all: each its own
    # ratings per item, by hand: item 1 three, items 2 and 3 two each, item 4 none
    assert R.product_cost(model, np.array([1, 2]), np.array([3, 4])) == (3 + 2) * (2 + 0)
    # Only the pairs some user holds, each computed once (what many chunks of a large catalogue get):
    held = R.needed_pairs(model, split, np.unique(split.query_items.numpy()), np.unique(split.support_items.numpy()))
    # by hand: user 1 holds query {1, 4} x support {2, 3}, user 2 {3} x {1, 2}, user 3 {2} x {1, 3}
    pairs = {(int(held.q_items[k // len(held.s_items)]), int(held.s_items[k % len(held.s_items)])) for k in held.keys}
    assert pairs == {(1, 2), (1, 3), (4, 2), (4, 3), (3, 1), (3, 2), (2, 1), (2, 3)}
    calls.clear()
    alone = R.predict_knn_grid(model, split, [config], held)[0]
    valid = split.query_mask.numpy()  # this split pads with a real item; a pair no user holds reads as 0
    assert np.array_equal(alone[valid], shared[valid])
    assert calls == []  # the held pairs were computed once, above
    np.testing.assert_array_equal(R.predict_knn(model, split, config), shared)  # per chunk: the same numbers


@pytest.mark.parametrize("task", ["rating", "ctr"])
def test_only_the_held_pairs_give_the_whole_tables_predictions_bit_for_bit(task, monkeypatch):
    data = tiny_task_data(task, seed=8, users=40)
    model = R.fit_item_knn(R.fitting_ratings(data), R.BiasConfig(2.0, 3.0))
    configs = [R.KNNConfig(k, shrinkage, damping) for k, shrinkage, damping in ((2, 10.0, 0.0), (5, 100.0, 0.3))]
    for split in (data.splits["val"], data.splits["test"]):
        table = R.pair_table(model, split)
        assert isinstance(table, R.PairTable)
        whole = [R.predict_knn_grid(model, split, configs, table), R.predict_knn(model, split, configs[0])]
        monkeypatch.setattr(R, "KNN_TABLE_ENTRIES", 0)
        monkeypatch.setattr(R, "KNN_USER_CHUNK", 1)  # many chunks: their own tables would hold more entries in all
        monkeypatch.setattr(R, "KNN_BLOCK_ENTRIES", 3 * len(table.s_items))  # several row blocks
        held = R.pair_table(model, split)
        assert isinstance(held, R.NeededPairs) and 0 < len(held.keys) <= len(table.q_items) * len(table.s_items)
        assert R.predict_knn(model, split, configs[0]).tobytes() == whole[1].tobytes()
        for ours, theirs in zip(R.predict_knn_grid(model, split, configs, held), whole[0]):
            assert ours.tobytes() == theirs.tobytes()
        monkeypatch.undo()


@pytest.mark.parametrize("task", ["rating", "ctr"])
def test_each_reference_model_is_fitted_once_and_the_blend_reuses_them(task, monkeypatch):
    # The blend row fitted MF and kNN again (reference_eval), and the tuning refitted the chosen MF
    # for the blend: the costliest fits, twice. The numbers stay the ones predict_reference gives.
    data = with_warm(tiny_task_data(task, seed=7, users=24))
    settings, *_ = R.tune_settings(data, grid=SMALL_GRID)
    test = data.splits["test"]
    fits = {"mf": 0, "knn": 0}
    fit_mf, fit_knn = R.fit_mf, R.fit_item_knn
    monkeypatch.setattr(R, "fit_mf", lambda *a, **k: fits.__setitem__("mf", fits["mf"] + 1) or fit_mf(*a, **k))
    monkeypatch.setattr(R, "fit_item_knn", lambda *a, **k: fits.__setitem__("knn", fits["knn"] + 1) or fit_knn(*a, **k))
    for splits in (R.PROTOCOL_SPLITS["paper"], R.PROTOCOL_SPLITS["production"]):
        fits.update(mf=0, knn=0)
        seconds = {}
        together = R.predict_references(data, test, settings, splits, seconds)
        assert fits == {"mf": 1, "knn": 1} and set(seconds) == set(R.REFERENCES)
        for name in R.REFERENCES:
            assert np.array_equal(together[name], R.predict_reference(name, data, test, settings, splits)), name
    fits.update(mf=0, knn=0)
    again = R.tune_settings(data, grid=SMALL_GRID).settings
    assert again == settings and fits == {"mf": len(SMALL_GRID.mf_rank) * len(SMALL_GRID.mf_reg), "knn": 1}


def test_reference_settings_records_the_mf_grid_sample_and_reads_it_back():
    from assets.reference_eval import ProtocolChoice, choices_bundle, grid_sample_note, stored_choices

    data = with_warm(tiny_task_data("rating", seed=6, users=24))
    production = R.fitting_ratings(data, R.PROTOCOL_SPLITS["production"])
    lowered = replace(SMALL_GRID, mf_max_ratings=len(production.users) - 1, mf_sample_ratings=len(production.users) // 2)
    choices = {p: ProtocolChoice(*R.tune_settings(data, R.PROTOCOL_SPLITS[p], lowered)) for p in ("paper", "production")}
    assert choices["paper"].mf_sample is None and choices["production"].mf_sample is not None
    bundle = choices_bundle(choices)
    drawn = choices["production"].mf_sample
    assert bundle.info["mf_grid_sample"] == {"production": {"users": drawn.users, "ratings": drawn.ratings,
                                                            "of_users": drawn.of_users, "of_ratings": drawn.of_ratings, "seed": 0}}
    assert stored_choices(bundle) == choices
    notes = grid_sample_note(bundle)
    assert notes["paper"] == "MF grid on every fitting user"
    assert notes["production"].startswith(f"MF grid on a seeded sample of {drawn.users:,} of {drawn.of_users:,} fitting users")
    whole = choices_bundle({"paper": choices["paper"]})
    assert "mf_grid_sample" not in whole.info  # a whole grid's bundle is the one stored before samples existed
