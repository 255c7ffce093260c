"""Paired comparisons over the same test users: the tests themselves and the report's frames."""

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from assets.evaluation import minor_vs_major, with_protocol
from assets.report_tables import best_baselines, group_table, paired_comparisons, seed_averaged_errors, table2
from models.metrics import paired_bootstrap_ci, paired_ttest


def test_paired_ttest_by_hand_and_against_scipy():
    a = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    b = np.array([1.5, 2.0, 2.5, 5.0, 1.0])
    # d = (-0.5, 0, 0.5, -1) (the NaN pair is dropped): mean -0.25, sum of squares 1.25,
    # sd = sqrt(1.25 / 3), t = -0.25 / (sd / 2) = -0.774597, df = 3
    t, p = paired_ttest(a, b)
    assert t == pytest.approx(-0.25 / (math.sqrt(1.25 / 3) / 2))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df=3))
    ref = stats.ttest_rel(a[:4], b[:4])
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert p != pytest.approx(stats.ttest_ind(a[:4], b[:4]).pvalue)  # not the unpaired test
    with pytest.raises(ValueError, match="complete pairs"):
        paired_ttest([1.0, np.nan], [2.0, 3.0])
    with pytest.raises(ValueError, match="1-D"):
        paired_ttest([1.0, 2.0], [1.0, 2.0, 3.0])
    # identical samples (a network that kept its start, which is a reference row): no difference, p = 1
    assert np.isnan(stats.ttest_rel([1.0, 2.0, 4.0], [1.0, 2.0, 4.0]).pvalue)
    assert paired_ttest([1.0, 2.0, 4.0, np.nan], [1.0, 2.0, 4.0, 3.0]) == (0.0, 1.0)


def test_constant_errors_give_scipys_result_without_its_cancellation_warning():
    # Constant per-user differences (0.1 as floats hold it) and constant groups: scipy warned "Precision loss
    # occurred in moment calculation due to catastrophic cancellation" into the run logs, once per comparison.
    import warnings

    from models.metrics import ttest_groups

    a, b = [0.5, 0.6, 0.7], [0.4, 0.5, 0.6]
    errors = pl.DataFrame({"dataset": ["movielens"] * 4, "protocol": ["paper"] * 4, "method": ["melu"] * 4,
                           "seed": [0] * 4, "user_id": [1, 2, 3, 4], "group": ["major", "major", "minor", "minor"],
                           "error": [0.5, 0.5, 0.7, 0.7]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = (stats.ttest_rel(a, b), stats.ttest_ind([0.5] * 3, [0.4] * 3), stats.ttest_ind([0.7, 0.7], [0.5, 0.5]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        assert paired_ttest(a, b) == (float(expected[0].statistic), float(expected[0].pvalue))
        t, p = ttest_groups([0.5] * 3 + [0.4] * 3, ["minor"] * 3 + ["major"] * 3)
        assert (t, p) == (float(expected[1].statistic), float(expected[1].pvalue))
        assert group_table(errors)["p_value"].to_list() == [float(expected[2].pvalue)]
    # Silenced only around the tests themselves: scipy called directly still says it.
    with pytest.warns(RuntimeWarning, match="catastrophic cancellation"):
        stats.ttest_rel(a, b)


def test_paired_bootstrap_matches_scipy_and_is_seeded():
    rng = np.random.default_rng(3)
    a = rng.normal(1.0, 0.3, 40)
    b = a + rng.normal(0.05, 0.1, 40)
    low, high = paired_bootstrap_ci(a, b, seed=7)
    ref = stats.bootstrap((a - b,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(7))
    assert (low, high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-12)
    assert low < float(np.mean(a - b)) < high
    assert paired_bootstrap_ci(a, b, seed=7) == (low, high)
    assert paired_bootstrap_ci(a, b, seed=8) != (low, high)
    # a constant difference has a zero-width interval
    assert paired_bootstrap_ci(a, a + 0.25) == pytest.approx((-0.25, -0.25))


def user_frame(errors: dict[str, list[float]], seeds: int = 1, protocol: str | None = None) -> pl.DataFrame:
    """Per-user errors of methods on the same 6 users (3 major, 3 minor); seeds add +-0.01."""
    rows = []
    for method, values in errors.items():
        for seed in range(seeds):
            shift = 0.01 * (seed - (seeds - 1) / 2)
            for user, value in enumerate(values):
                rows.append({"dataset": "d", "method": method, "seed": seed, "user_id": f"u{user}", "error": value + shift,
                             "group": "major" if user < 3 else "minor", "lr": None})
    frame = pl.DataFrame(rows, schema_overrides={"lr": pl.Float64})
    return frame if protocol is None else frame.with_columns(pl.lit(protocol).alias("protocol"))


def metrics_of(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """The `metrics` rows (population 'all', metric mse) matching per-user errors."""
    return with_protocol(user_metrics).group_by("dataset", "protocol", "method", "seed").agg(pl.col("error").mean().alias("value")).with_columns(
        population=pl.lit("all"), metric=pl.lit("mse"))


# Users differ a lot; PAML is 0.02 below MeLU for every user: a paired test sees it, an unpaired one cannot.
SPREAD = [0.2, 1.5, 0.7, 2.4, 0.9, 1.8]
ERRORS = {
    "melu": SPREAD,
    "meta_sgd": [e + 0.05 + 0.01 * (i % 2) for i, e in enumerate(SPREAD)],
    "paml": [e - 0.02 + 0.001 * i for i, e in enumerate(SPREAD)],
    "ref_mf": [e - 0.1 + 0.02 * (i % 3) for i, e in enumerate(SPREAD)],
    "ref_user_item_bias": [e + 0.3 - 0.01 * i for i, e in enumerate(SPREAD)],
}


def test_paired_comparisons_against_the_best_baseline_and_every_reference():
    user_metrics = user_frame(ERRORS, seeds=3)
    errors = seed_averaged_errors(user_metrics)
    best = best_baselines(metrics_of(user_metrics))
    assert best == {("d", "paper"): "melu"}
    frame = paired_comparisons(errors, best)
    paml = frame.filter(pl.col("method") == "paml")
    assert paml.sort("other")["other"].to_list() == ["melu", "ref_mf", "ref_user_item_bias"]  # no ref_item_knn in the data
    vs_melu = paml.filter(pl.col("comparison") == "vs_best_baseline").row(0, named=True)
    # seed averaging cancels the +-0.01 shifts: the paired users' errors are ERRORS exactly
    expected = stats.ttest_rel(ERRORS["paml"], ERRORS["melu"])
    assert vs_melu["statistic"] == pytest.approx(expected.statistic) and vs_melu["p_value"] == pytest.approx(expected.pvalue)
    assert vs_melu["p_value"] < 0.05 < stats.ttest_ind(ERRORS["paml"], ERRORS["melu"]).pvalue
    assert vs_melu["n_users"] == 6 and vs_melu["test"] == "paired_t" and vs_melu["protocol"] == "paper"
    diff = np.mean(ERRORS["paml"]) - np.mean(ERRORS["melu"])
    assert vs_melu["mean_a"] - vs_melu["mean_b"] == pytest.approx(diff)
    assert vs_melu["ci_low"] <= diff <= vs_melu["ci_high"]
    # no method is compared with itself; the references are compared with the baseline and each other
    assert frame.filter(pl.col("method") == pl.col("other")).height == 0
    assert frame.filter(pl.col("method") == "ref_mf")["other"].sort().to_list() == ["melu", "ref_user_item_bias"]


def test_paired_comparisons_do_not_depend_on_the_order_of_the_rows():
    errors = seed_averaged_errors(user_frame(ERRORS, seeds=3))
    best = {("d", "paper"): "melu"}
    shuffled = errors.sample(fraction=1.0, shuffle=True, seed=5)
    assert not shuffled["user_id"].equals(errors["user_id"])
    assert paired_comparisons(shuffled, best).equals(paired_comparisons(errors, best))  # bootstrap intervals included


def test_table2_star_uses_the_paired_test():
    user_metrics = user_frame(ERRORS, seeds=3, protocol="paper")
    metrics = metrics_of(user_metrics)
    significance = paired_comparisons(seed_averaged_errors(user_metrics), best_baselines(metrics))
    table = table2(metrics, significance)
    starred = table.filter(pl.col("significant"))["method"].to_list()
    assert starred == ["paml"]  # references are never starred; an unpaired test would star nothing here


def test_protocols_are_compared_within_themselves():
    paper = user_frame(ERRORS, protocol="paper")
    production = user_frame({"melu": SPREAD, "ref_mf": [e - 0.3 + 0.01 * i for i, e in enumerate(SPREAD)]}, protocol="production")
    user_metrics = pl.concat([paper, production])
    errors = seed_averaged_errors(user_metrics)
    frame = paired_comparisons(errors, best_baselines(metrics_of(user_metrics)))
    prod = frame.filter(pl.col("protocol") == "production")
    assert sorted(zip(prod["method"], prod["other"])) == [("melu", "ref_mf"), ("ref_mf", "melu")]
    assert prod.filter(pl.col("method") == "ref_mf")["mean_a"].item() == pytest.approx(np.mean(SPREAD) - 0.3 + 0.025)
    t3 = group_table(user_metrics)
    assert set(zip(t3["protocol"], t3["method"])) >= {("paper", "paml"), ("production", "ref_mf")}
    # rows written before the protocol column existed count as the paper's protocol
    old = user_frame(ERRORS)
    assert set(minor_vs_major(old)["protocol"]) == {"paper"}
    assert set(minor_vs_major(user_metrics)["protocol"]) == {"paper", "production"}
    assert set(minor_vs_major(old)["test"]) == {"student_t"}


def test_table2_star_sits_on_the_error_column_only():
    """The paired test compares per-user errors: an nDCG cell (here far worse than the baseline's) gets no `*`."""
    user_metrics = user_frame(ERRORS, seeds=3, protocol="paper")
    errors = metrics_of(user_metrics)
    ndcg = errors.with_columns(metric=pl.lit("ndcg@5"), value=pl.when(pl.col("method") == "paml").then(0.5).otherwise(0.9))
    metrics = pl.concat([errors, ndcg])
    table = table2(metrics, paired_comparisons(seed_averaged_errors(user_metrics), best_baselines(metrics)))
    starred = table.filter(pl.col("significant")).select("method", "metric").rows()
    assert starred == [("paml", "mse")]


def test_paired_cells_keep_the_precision_of_the_errors_they_compare():
    from assets.report_tables import paired_cell

    row = {"n_users": 6, "mean_a": 7.0e-7, "mean_b": 7.5e-7, "ci_low": -8.0e-8, "ci_high": -2.0e-8, "p_value": 0.01}
    # A 0-0.005 rating scale: every cell read "+0.000 [+0.000, +0.000]" (three fixed decimals).
    assert paired_cell(row) == "**-5e-08 [-8e-08, -2e-08] p = 0.010**"
    assert paired_cell(row | {"mean_a": 0.0512, "mean_b": 0.0516, "ci_low": -0.0009, "ci_high": 0.0001, "p_value": 0.2}) \
        == "-0.0004 [-0.0009, +0.0001] p = 0.200"
    # Errors of 0.1 and above (every built-in dataset) keep three decimals.
    assert paired_cell(row | {"mean_a": 0.8131, "mean_b": 0.8135, "ci_low": -0.0021, "ci_high": 0.0013, "p_value": 0.49}) \
        == "-0.000 [-0.002, +0.001] p = 0.490"
