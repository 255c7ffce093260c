"""Evaluation metrics: hand-derived expectations (arithmetic written out in comments)."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from models.metrics import (
    NDCG_KS,
    binary_entropy,
    ctr_metrics,
    global_auc,
    mean_ignoring_nan,
    mean_ndcg,
    ndcg_at_k,
    per_user_auc,
    per_user_logloss,
    per_user_mse,
    per_user_nel,
    rating_metrics,
    ttest_groups,
    weighted_nel,
)

LOG2_3 = math.log2(3)


# --------------------------------------------------------------------------- MSE


def test_per_user_mse_padded_two_users():
    pred = np.array([[1.0, 2.0, 99.0], [4.0, 0.0, 0.0]])
    target = np.array([[2.0, 4.0, -5.0], [1.0, 0.0, 0.0]])
    mask = np.array([[True, True, False], [True, False, False]])
    # user 0: ((1-2)^2 + (2-4)^2) / 2 = (1 + 4) / 2 = 2.5   (padding 99 vs -5 ignored)
    # user 1: (4-1)^2 / 1 = 9
    np.testing.assert_allclose(per_user_mse(pred, target, mask), [2.5, 9.0])


def test_per_user_mse_empty_user_is_nan_and_padding_nan_is_ignored():
    pred = np.array([[np.nan, np.nan], [3.0, np.nan]])
    target = np.array([[np.nan, np.nan], [1.0, np.inf]])
    mask = np.array([[False, False], [True, False]])
    out = per_user_mse(pred, target, mask)
    assert out.dtype == np.float64 and out.shape == (2,)
    assert math.isnan(out[0])
    assert out[1] == 4.0  # (3-1)^2


def test_rating_metrics_mse_is_per_user_average_not_pooled():
    pred = np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    target = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = np.array([[True, True, True], [True, False, False], [False, False, False]])
    # per-user: user0 = 0, user1 = (2-0)^2 = 4, user2 has no items -> excluded.
    # per-user mean = (0 + 4) / 2 = 2.0; the pooled MSE would be 4 / 4 = 1.0.
    m = rating_metrics(pred, target, mask)
    assert set(m) == {"mse", "ndcg@3", "ndcg@5"} == {"mse", *(f"ndcg@{k}" for k in NDCG_KS)}
    assert m["mse"] == pytest.approx(2.0)


# --------------------------------------------------------------------------- nDCG


def test_ndcg_at_3_worked_example():
    pred = np.array([[0.9, 0.8, 0.1]])
    target = np.array([[5.0, 3.0, 4.0]])
    mask = np.ones((1, 3), dtype=bool)
    # Ranked by pred: items 0, 1, 2 with gains 2^5-1=31, 2^3-1=7, 2^4-1=15.
    # DCG  = 31/log2(2) + 7/log2(3) + 15/log2(4) = 31 + 7/log2(3) + 15/2
    # IDCG = gains sorted 31, 15, 7 -> 31 + 15/log2(3) + 7/2
    dcg = 31 + 7 / LOG2_3 + 15 / 2
    idcg = 31 + 15 / LOG2_3 + 7 / 2
    assert ndcg_at_k(pred, target, mask, 3)[0] == pytest.approx(dcg / idcg)
    # numerically: (31 + 4.41650 + 7.5) / (31 + 9.46393 + 3.5) = 42.91650 / 43.96393
    assert dcg / idcg == pytest.approx(0.976175, abs=1e-6)


def test_ndcg_truncation_at_k_less_than_items():
    pred = np.array([[0.9, 0.8, 0.1]])
    target = np.array([[5.0, 3.0, 4.0]])
    mask = np.ones((1, 3), dtype=bool)
    # k=1: DCG = 31, IDCG = 31 -> 1.0
    assert ndcg_at_k(pred, target, mask, 1)[0] == pytest.approx(1.0)
    # k=2: DCG = 31 + 7/log2(3); IDCG = 31 + 15/log2(3)
    assert ndcg_at_k(pred, target, mask, 2)[0] == pytest.approx((31 + 7 / LOG2_3) / (31 + 15 / LOG2_3))


def test_ndcg_perfect_ranking_is_one():
    target = np.array([[1.0, 4.0, 2.0, 5.0, 3.0]])
    pred = target * 0.1 + 7.0  # same order as target
    mask = np.ones_like(target, dtype=bool)
    for k in (1, 3, 5, 10):
        assert ndcg_at_k(pred, target, mask, k)[0] == pytest.approx(1.0)


def test_ndcg_tie_break_lower_column_first():
    mask = np.ones((1, 2), dtype=bool)
    pred = np.array([[0.5, 0.5]])  # exact tie -> column 0 ranked first
    # target [1, 3]: ranked gains 1, 7 -> DCG = 1 + 7/log2(3); IDCG = 7 + 1/log2(3)
    worse = ndcg_at_k(pred, np.array([[1.0, 3.0]]), mask, 2)[0]
    assert worse == pytest.approx((1 + 7 / LOG2_3) / (7 + 1 / LOG2_3))
    assert worse < 1.0
    # Swapping the ratings puts the better item in column 0 -> perfect ranking.
    assert ndcg_at_k(pred, np.array([[3.0, 1.0]]), mask, 2)[0] == pytest.approx(1.0)


def test_ndcg_tie_among_three_with_padding_in_front():
    # Padding in column 0 must not take a rank, even though its pred is the largest.
    pred = np.array([[9.0, 0.2, 0.2, 0.2]])
    target = np.array([[5.0, 0.0, 2.0, 1.0]])
    mask = np.array([[False, True, True, True]])
    # valid columns 1,2,3 tie -> order 1,2,3: gains 0, 3, 1
    # DCG  = 0 + 3/log2(3) + 1/2 ; IDCG = 3 + 1/log2(3) + 0
    expected = (3 / LOG2_3 + 0.5) / (3 + 1 / LOG2_3)
    assert ndcg_at_k(pred, target, mask, 3)[0] == pytest.approx(expected)


def _reference_ndcg(pred, target, k, tie_key):
    """Plain-Python nDCG@k for one user; tie_key orders items with equal pred."""
    order = sorted(range(len(pred)), key=lambda j: (-pred[j], tie_key(j)))
    gain = [2.0 ** target[j] - 1 for j in order[:k]]
    ideal = sorted((2.0 ** r - 1 for r in target), reverse=True)[:k]
    disc = [1 / math.log2(rank + 1) for rank in range(1, k + 1)]
    return sum(g * d for g, d in zip(gain, disc)) / sum(g * d for g, d in zip(ideal, disc))


def test_ndcg_tie_rule_holds_for_long_rows():
    # numpy's default (non-stable) sort keeps small tied runs in order by luck; 100 items with
    # 5 tied score levels in shuffled positions expose any non-stable ordering.
    n, k = 100, 10
    pred = np.array([(7 * j) % 5 for j in range(n)], dtype=float)[::-1].copy()
    pred = np.array([pred[(37 * j) % n] for j in range(n)])  # 37 is coprime to 100: a permutation
    target = np.array([float((3 * j) % 6) for j in range(n)])
    lower_first = _reference_ndcg(pred, target, k, tie_key=lambda j: j)
    higher_first = _reference_ndcg(pred, target, k, tie_key=lambda j: -j)
    assert lower_first != pytest.approx(higher_first)  # the rule matters in this example
    got = ndcg_at_k(pred[None, :], target[None, :], np.ones((1, n), bool), k)[0]
    assert got == pytest.approx(lower_first)


def test_ndcg_valid_minus_inf_prediction_still_ranked_before_padding():
    pred = np.array([[0.0, -np.inf, 0.0]])
    target = np.array([[9.0, 1.0, 9.0]])
    mask = np.array([[False, True, False]])
    # one valid item: DCG = IDCG = 2^1 - 1 = 1 -> 1.0 (padding with rating 9 must not be ranked)
    assert ndcg_at_k(pred, target, mask, 3)[0] == pytest.approx(1.0)


def test_ndcg_at_5_with_only_two_items():
    pred = np.array([[0.1, 0.7, 0.0, 0.0, 0.0, 0.0]])
    target = np.array([[4.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    mask = np.array([[True, True, False, False, False, False]])
    # ranked: item1 (gain 3), item0 (gain 15) -> DCG = 3 + 15/log2(3)
    # ideal: 15, 3 -> IDCG = 15 + 3/log2(3); truncation at min(5, 2) = 2 items
    expected = (3 + 15 / LOG2_3) / (15 + 3 / LOG2_3)
    assert ndcg_at_k(pred, target, mask, 5)[0] == pytest.approx(expected)
    # k larger than the padded width is fine too.
    assert ndcg_at_k(pred, target, mask, 50)[0] == pytest.approx(expected)


def test_ndcg_nan_for_empty_user_and_zero_ideal_gain():
    pred = np.array([[0.3, 0.2], [0.3, 0.2], [0.1, 0.2]])
    target = np.array([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0]])
    mask = np.array([[False, False], [True, True], [True, True]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN must come from the rule, not a 0/0 RuntimeWarning
        out = ndcg_at_k(pred, target, mask, 3)
        per_user_mse(pred, target, mask)
    assert math.isnan(out[0])  # no query items
    assert math.isnan(out[1])  # all ratings 0 -> all gains 0 -> IDCG = 0
    assert out[2] == pytest.approx(1.0)  # pred 0.2 > 0.1 ranks rating 2 first
    # mean_ndcg averages only the defined user.
    assert mean_ndcg(pred, target, mask, 3) == pytest.approx(1.0)


def test_mean_ndcg_averages_users_with_items():
    pred = np.array([[0.9, 0.8, 0.1], [0.1, 0.9, 0.0], [0.0, 0.0, 0.0]])
    target = np.array([[5.0, 3.0, 4.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    mask = np.array([[True, True, True], [True, True, False], [False, False, False]])
    # user0 = (31 + 7/log2 3 + 15/2) / (31 + 15/log2 3 + 7/2); user1 perfect = 1; user2 excluded
    u0 = (31 + 7 / LOG2_3 + 7.5) / (31 + 15 / LOG2_3 + 3.5)
    assert mean_ndcg(pred, target, mask, 3) == pytest.approx((u0 + 1.0) / 2)
    assert rating_metrics(pred, target, mask)["ndcg@3"] == pytest.approx((u0 + 1.0) / 2)


def test_ndcg_grades_a_scale_below_zero_from_its_bottom():
    # Jester's -10..10: gains 2^r - 1 of negative ratings are negative, so nDCG came out negative
    # (user 0) or undefined (user 1, every rating <= 0). Graded from -10: 0, 5, 20 and 0, 5.
    pred = np.array([[0.9, 0.5, 0.1], [0.1, 0.9, 0.0]])
    target = np.array([[-10.0, -5.0, 10.0], [-10.0, -5.0, 0.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    out = ndcg_at_k(pred, target, mask, 3, lowest_rating=-10)
    # user 0 ranks grades 0, 5, 20: (0 + 31/log2 3 + (2^20 - 1)/2) / (2^20 - 1 + 31/log2 3); user 1 perfect
    expected = (31 / LOG2_3 + (2 ** 20 - 1) / 2) / (2 ** 20 - 1 + 31 / LOG2_3)
    np.testing.assert_allclose(out, [expected, 1.0], rtol=1e-12)
    np.testing.assert_array_equal(out, ndcg_at_k(pred, target + 10, mask, 3))
    # A scale from 0 up is graded as it is: lowest_rating 1 (ML-1M) changes nothing.
    np.testing.assert_array_equal(ndcg_at_k(pred, target + 11, mask, 3, lowest_rating=1), ndcg_at_k(pred, target + 11, mask, 3))
    assert rating_metrics(pred, target, mask, lowest_rating=-10)["ndcg@3"] == pytest.approx((expected + 1) / 2)


def test_ndcg_on_a_scale_up_to_10000_is_a_number():
    # 2^10000 overflowed to inf, inf - inf = NaN: every user's nDCG was NaN on a 0-10000 scale.
    pred = np.array([[0.9, 0.5, 0.1], [0.1, 0.5, 0.9]])
    target = np.array([[5000.0, 10000.0, 0.0], [5000.0, 10000.0, 0.0]])
    out = ndcg_at_k(pred, target, np.ones((2, 3), bool), 3)
    # 2^5000 / 2^10000 is 0 in float64: only the top item's place counts.
    np.testing.assert_allclose(out, [1 / LOG2_3, 1 / LOG2_3], rtol=1e-12)
    target[1] = [9999.0, 10000.0, 9998.0]  # (2^-1 + 1/log2 3 + 2^-2 / 2) / (1 + 2^-1/log2 3 + 2^-2 / 2)
    assert ndcg_at_k(pred, target, np.ones((2, 3), bool), 3)[1] == pytest.approx(
        (0.25 + 1 / LOG2_3 + 0.5 / 2) / (1 + 0.5 / LOG2_3 + 0.25 / 2), rel=1e-12)


def plain_ndcg(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """nDCG@k with the gains 2^r - 1 as written, no rescaling (the form before gains were divided by 2^max)."""
    depth = min(k, mask.shape[1])
    gains = np.where(mask, np.exp2(np.where(mask, target, 0.0)) - 1.0, 0.0)
    order = np.lexsort((np.where(mask, -pred, 0.0), ~mask), axis=1)[:, :depth]
    ideal = -np.sort(-np.where(mask, gains, -np.inf), axis=1)[:, :depth]
    discount = 1.0 / np.log2(np.arange(2, depth + 2, dtype=np.float64))
    dcg, idcg = np.take_along_axis(gains, order, axis=1) @ discount, np.where(np.isfinite(ideal), ideal, 0.0) @ discount
    return np.divide(dcg, idcg, out=np.full(len(pred), np.nan), where=idcg > 0)


@pytest.mark.parametrize("top", [5, 10])
def test_ndcg_of_whole_number_ratings_is_unchanged_bit_for_bit(top):
    # ML-1M (1-5) and Book-Crossing (1-10): dividing the gains by 2^(a user's top rating) is exact.
    rng = np.random.default_rng(top)
    target = rng.integers(1, top + 1, (500, 12)).astype(float)
    pred = np.round(rng.normal(3.0, 1.0, (500, 12)), 1)  # ties too
    mask = np.arange(12)[None, :] < rng.integers(1, 13, 500)[:, None]
    for k in NDCG_KS:
        np.testing.assert_array_equal(ndcg_at_k(pred, target, mask, k, lowest_rating=1), plain_ndcg(pred, target, mask, k))


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_ndcg_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2), bool), k)


# --------------------------------------------------------------------------- AUC


def test_per_user_auc_with_tie_counts_half():
    pred = np.array([[0.8, 0.5, 0.5, 0.2]])
    label = np.array([[1, 1, 0, 0]])
    mask = np.ones((1, 4), dtype=bool)
    # pos {0.8, 0.5}, neg {0.5, 0.2}; pairs: (0.8>0.5)=1, (0.8>0.2)=1, (0.5==0.5)=1/2, (0.5>0.2)=1
    # AUC = (1 + 1 + 0.5 + 1) / 4 = 0.875
    assert per_user_auc(pred, label, mask)[0] == pytest.approx(0.875)


def test_per_user_auc_all_tied_is_half_and_one_class_is_nan():
    pred = np.array([[0.3, 0.3, 0.3], [0.9, 0.1, 0.5], [0.2, 0.9, 0.0]])
    label = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    mask = np.array([[True, True, True], [True, True, True], [True, False, True]])
    out = per_user_auc(pred, label, mask)
    assert out[0] == pytest.approx(0.5)  # 2 pairs, both ties: (0.5 + 0.5) / 2
    assert out[1] == pytest.approx(0.5)  # pairs (0.9>0.5)=1, (0.1<0.5)=0 -> 1/2
    assert math.isnan(out[2])  # only label-0 items remain after masking column 1


def test_global_auc_pools_pairs_across_users():
    pred = np.array([[0.9, 0.1], [0.4, 0.6]])
    label = np.array([[1, 0], [1, 0]])
    mask = np.ones((2, 2), dtype=bool)
    # per-user: user0 = 1 (0.9>0.1), user1 = 0 (0.4<0.6) -> mean 0.5
    # pooled: pos {0.9, 0.4}, neg {0.1, 0.6}: 0.9>0.1, 0.9>0.6, 0.4>0.1, 0.4<0.6 -> 3/4
    np.testing.assert_allclose(per_user_auc(pred, label, mask), [1.0, 0.0])
    assert global_auc(pred, label, mask) == pytest.approx(0.75)
    assert math.isnan(global_auc(pred, np.zeros((2, 2)), mask))


def test_auc_rejects_non_binary_labels():
    with pytest.raises(ValueError, match="0 or 1"):
        per_user_auc(np.zeros((1, 2)), np.array([[1.0, 2.0]]), np.ones((1, 2), bool))


# --------------------------------------------------------------------------- entropy / NEL


def test_binary_entropy_values_and_domain():
    assert binary_entropy(0.5) == pytest.approx(math.log(2))  # -(0.5 ln .5 * 2) = ln 2
    # p = 0.25: -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.346574 + 0.215762 = 0.562335
    assert binary_entropy(0.25) == pytest.approx(0.5623351446)
    for bad in (0.0, 1.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError):
            binary_entropy(bad)


def test_nel_constant_prediction_at_base_rate_is_one():
    ctr = 0.25
    label = np.array([[1, 0, 0, 0, 0.0, 0.0], [0, 1, 0, 0, 0, 0]])  # user1 pads 2 slots
    mask = np.array([[True, True, True, True, False, False], [True, True, True, True, False, False]])
    prob = np.where(mask, ctr, 0.99)
    # each user: mean log-loss = -(1/4 ln 1/4 + 3/4 ln 3/4) = H(1/4) -> NEL = H/H = 1
    np.testing.assert_allclose(per_user_nel(prob, label, mask, ctr), [1.0, 1.0])
    assert weighted_nel(prob, label, mask, ctr) == pytest.approx(1.0)


def test_nel_hand_values_and_clipping():
    ctr = 0.5  # H = ln 2
    prob = np.array([[0.8, 0.4], [1.0, 0.0]])
    label = np.array([[1, 0], [0, 0]])
    mask = np.array([[True, True], [True, False]])
    # user0: (-ln 0.8 - ln 0.6) / 2 / ln 2
    u0 = (-math.log(0.8) - math.log(0.6)) / 2 / math.log(2)
    # user1: prob 1 clipped to 1 - 1e-7, label 0 -> -ln(1e-7) / ln 2 (finite, not inf)
    u1 = -math.log(1e-7) / math.log(2)
    np.testing.assert_allclose(per_user_nel(prob, label, mask, ctr), [u0, u1], rtol=1e-6)


def test_weighted_nel_weights_by_impressions():
    ctr = 0.5
    # user0: 3 impressions all predicted 0.5 -> loss ln2 each -> NEL 1
    # user1: 1 impression, label 1, prob 0.9 -> NEL = -ln 0.9 / ln 2
    prob = np.array([[0.5, 0.5, 0.5], [0.9, 0.0, 0.0], [0.3, 0.3, 0.3]])
    label = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0]])
    mask = np.array([[True, True, True], [True, False, False], [False, False, False]])
    nel1 = -math.log(0.9) / math.log(2)
    nel = per_user_nel(prob, label, mask, ctr)
    np.testing.assert_allclose(nel[:2], [1.0, nel1])
    assert math.isnan(nel[2])
    # weighted = (3 * 1 + 1 * nel1) / 4 -- differs from the unweighted (1 + nel1) / 2
    assert weighted_nel(prob, label, mask, ctr) == pytest.approx((3 + nel1) / 4)
    assert weighted_nel(prob, label, mask, ctr) != pytest.approx((1 + nel1) / 2)


def test_nel_rejects_degenerate_train_ctr():
    with pytest.raises(ValueError):
        per_user_nel(np.full((1, 1), 0.5), np.ones((1, 1)), np.ones((1, 1), bool), 0.0)


def test_ctr_metrics_keys_and_values():
    prob = np.array([[0.8, 0.5, 0.5, 0.2], [0.9, 0.1, 0.0, 0.0]])
    label = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])
    mask = np.array([[True, True, True, True], [True, True, False, False]])
    m = ctr_metrics(prob, label, mask, 0.5)
    assert set(m) == {"auc", "global_auc", "nel"}
    # user1 has only positives -> NaN, so mean per-user AUC = user0 = 0.875 (see tie test)
    assert m["auc"] == pytest.approx(0.875)
    # pooled: pos {0.8, 0.5, 0.9, 0.1}, neg {0.5, 0.2}
    # 0.8: 1+1, 0.5: 0.5+1, 0.9: 1+1, 0.1: 0+0 -> (2 + 1.5 + 2 + 0) / 8 = 5.5 / 8
    assert m["global_auc"] == pytest.approx(5.5 / 8)
    assert m["nel"] == pytest.approx(weighted_nel(prob, label, mask, 0.5))


# --------------------------------------------------------------------------- against scikit-learn


def random_padded(seed: int, users: int = 30, slots: int = 12, task: str = "rating"):
    """Random (pred, target, mask): every user has 2..slots items, the rest is garbage padding."""
    rng = np.random.default_rng(seed)
    n_items = rng.integers(2, slots + 1, size=users)
    mask = np.arange(slots)[None, :] < n_items[:, None]
    if task == "rating":
        pred = rng.normal(3.0, 1.0, (users, slots))  # continuous: no tied predictions
        target = rng.integers(1, 6, (users, slots)).astype(float)
    else:
        pred = rng.uniform(0.0, 1.0, (users, slots))
        target = (rng.uniform(size=(users, slots)) < 0.4).astype(float)
    pred[~mask], target[~mask] = 1e9, -7.0  # padding must never be read
    return pred, target, mask


@pytest.mark.parametrize("seed", range(3))
def test_mse_and_ndcg_match_sklearn_on_random_users(seed):
    from sklearn.metrics import mean_squared_error, ndcg_score

    pred, target, mask = random_padded(seed)
    mse = per_user_mse(pred, target, mask)
    for k in (1, 3, 5):
        ours = ndcg_at_k(pred, target, mask, k)
        for u in range(len(pred)):
            p, t = pred[u, mask[u]], target[u, mask[u]]
            # sklearn's gain is y_true itself: pass our exponential gain 2^r - 1.
            assert ours[u] == pytest.approx(ndcg_score([2.0 ** t - 1], [p], k=k), rel=1e-12)
    for u in range(len(pred)):
        assert mse[u] == pytest.approx(mean_squared_error(target[u, mask[u]], pred[u, mask[u]]), rel=1e-12)


def test_ndcg_ties_differ_from_sklearn_by_design():
    from sklearn.metrics import ndcg_score

    pred, target = np.array([[0.5, 0.5]]), np.array([[1.0, 3.0]])
    ours = ndcg_at_k(pred, target, np.ones((1, 2), bool), 2)[0]
    # ours: the tie keeps column order (gains 1, 7); sklearn averages the tied gains to 4, 4:
    # (4 + 4/log2 3) / (7 + 1/log2 3).
    assert ours == pytest.approx((1 + 7 / LOG2_3) / (7 + 1 / LOG2_3))
    assert ndcg_score(2.0 ** target - 1, pred, k=2) == pytest.approx((4 + 4 / LOG2_3) / (7 + 1 / LOG2_3))


def _pairwise_auc(scores, labels):
    """P(score_pos > score_neg) + 1/2 P(tie), by counting every pair."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(3))
def test_auc_and_logloss_on_random_users(seed):
    from sklearn.metrics import log_loss

    prob, label, mask = random_padded(seed, task="ctr")
    prob[mask] = np.round(prob[mask], 1)  # coarse scores: many ties
    prob[0, :2] = [0.0, 1.0]  # exercise the clipping at the ends
    auc, loss = per_user_auc(prob, label, mask), per_user_logloss(prob, label, mask)
    for u in range(len(prob)):
        p, y = prob[u, mask[u]], label[u, mask[u]]
        if 0 < y.sum() < len(y):
            assert auc[u] == pytest.approx(_pairwise_auc(p, y), rel=1e-12)
        else:
            assert math.isnan(auc[u])
        clipped = np.clip(p, 1e-7, 1 - 1e-7)
        assert loss[u] == pytest.approx(log_loss(y, clipped, labels=[0, 1]), rel=1e-9)
    assert global_auc(prob, label, mask) == pytest.approx(_pairwise_auc(prob[mask], label[mask]), rel=1e-12)
    # Impression-weighted NEL * H(ctr) is the pooled log-loss.
    pooled = log_loss(label[mask], np.clip(prob[mask], 1e-7, 1 - 1e-7), labels=[0, 1])
    assert weighted_nel(prob, label, mask, 0.3) * binary_entropy(0.3) == pytest.approx(pooled, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_per_user_auc_matches_sklearn_in_blocks_with_nan_padding(seed, monkeypatch):
    from sklearn.metrics import roc_auc_score

    import models.metrics as metrics

    prob, label, mask = random_padded(seed, users=40, task="ctr")
    prob[mask] = np.round(prob[mask], 1)  # ties
    prob[~mask] = np.nan  # padding may hold NaN: never compared
    monkeypatch.setattr(metrics, "AUC_PAIRS_PER_BLOCK", 7 * 12 * 12)  # blocks of 7 users, the last one short
    auc = per_user_auc(prob, label, mask)
    for u in range(len(prob)):
        p, y = prob[u, mask[u]], label[u, mask[u]]
        expected = roc_auc_score(y, p) if 0 < y.sum() < len(y) else math.nan
        assert auc[u] == pytest.approx(expected, rel=1e-12, nan_ok=True)


def test_per_user_auc_refuses_a_nan_prediction_of_a_scored_user():
    pred = np.array([[0.2, 0.7, 0.1], [np.nan, 0.5, 0.5]])
    label = np.array([[1, 0, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match="user row 1 has \\[nan, 0.5, 0.5\\]"):
        per_user_auc(pred, label, np.ones((2, 3), bool))
    # a user with one class only is NaN whatever its predictions
    assert math.isnan(per_user_auc(pred, np.array([[1, 0, 0], [1, 1, 1]]), np.ones((2, 3), bool))[1])


# --------------------------------------------------------------------------- aggregates / t-test


def test_mean_ignoring_nan():
    assert mean_ignoring_nan([1.0, np.nan, 3.0]) == 2.0
    assert math.isnan(mean_ignoring_nan([np.nan, np.nan]))
    assert math.isnan(mean_ignoring_nan([]))


def test_ttest_matches_scipy_and_drops_nan():
    values = np.array([1.0, 2.0, 4.0, np.nan, 2.0, 3.0, 5.0, 6.0, np.nan])
    groups = np.array(["minor", "minor", "minor", "minor", "major", "major", "major", "major", "other"])
    t, p = ttest_groups(values, groups)
    # minor {1,2,4}: mean 7/3, SS = (4/3)^2+(1/3)^2+(5/3)^2 = 42/9 = 14/3
    # major {2,3,5,6}: mean 4, SS = 4+1+1+4 = 10
    # pooled var = (14/3 + 10) / (3 + 4 - 2) = 44/15; se = sqrt(44/15 * (1/3 + 1/4)) = sqrt(77/45)
    # t = (7/3 - 4) / sqrt(77/45) = -(5/3) / 1.30809 = -1.27410, df = 5
    assert t == pytest.approx(-(5 / 3) / math.sqrt(77 / 45))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df=5))
    ref = stats.ttest_ind([1.0, 2.0, 4.0], [2.0, 3.0, 5.0, 6.0], equal_var=True)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    # Welch would differ here: guards against equal_var=False.
    welch = stats.ttest_ind([1.0, 2.0, 4.0], [2.0, 3.0, 5.0, 6.0], equal_var=False)
    assert p != pytest.approx(welch.pvalue)


def test_ttest_identical_groups_p_is_one():
    values = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    groups = np.array(["minor"] * 3 + ["major"] * 3)
    t, p = ttest_groups(values, groups)
    assert t == pytest.approx(0.0)
    assert p == pytest.approx(1.0)


def test_ttest_small_group_raises_naming_group():
    values = np.array([1.0, np.nan, 2.0, 3.0])
    groups = np.array(["minor", "minor", "major", "major"])
    with pytest.raises(ValueError, match="'minor'"):
        ttest_groups(values, groups)
    with pytest.raises(ValueError, match="'cold'"):
        ttest_groups(values, groups, a="major", b="cold")


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "fn",
    [per_user_mse, per_user_auc, global_auc, lambda p, t, m: ndcg_at_k(p, t, m, 3), rating_metrics],
)
def test_shape_mismatch_raises_with_shapes(fn):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        fn(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"mask \(2, 2\)"):
        fn(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 2), bool))


def test_one_dimensional_input_raises():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        per_user_mse(np.zeros(3), np.zeros(3), np.ones(3, bool))
    with pytest.raises(ValueError, match="2-D"):
        per_user_nel(np.zeros((1, 2, 1)), np.zeros((1, 2, 1)), np.ones((1, 2, 1), bool), 0.5)
    with pytest.raises(ValueError, match="1-D"):
        ttest_groups(np.zeros((2, 2)), np.array([["minor"] * 2] * 2))


def test_mask_must_be_boolean_like():
    with pytest.raises(ValueError, match="mask must be boolean"):
        per_user_mse(np.zeros((1, 2)), np.zeros((1, 2)), np.array([[0.5, 1.0]]))
    # 0/1 integer masks are accepted.
    assert per_user_mse(np.ones((1, 2)), np.zeros((1, 2)), np.array([[1, 0]]))[0] == 1.0
