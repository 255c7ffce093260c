"""Pareto selection, splits, major/minor tagging: hand-derived expectations."""

import math

import numpy as np
import polars as pl
import pytest

from assets.cold_start_users import select_cold_start
from assets.user_groups import feature_concentration, group_notes, tag_users, top_values, user_groups_for
from assets.user_splits import (
    OneClassError, TooFewUsersError, assign_support_query, few_users_note, require_both_click_classes, assign_user_splits, fills_every_split, require_every_split, split_boundaries, user_splits_for,
)


def interactions_for(counts: dict[str, int]) -> pl.DataFrame:
    rows = [(u, f"i{k}", float(1 + k % 5)) for u, n in counts.items() for k in range(n)]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "label"], orient="row")


def test_pareto_selection_takes_fewest_logs_with_id_tie_break():
    counts = {"a": 5, "b": 2, "c": 2, "d": 9, "e": 3}
    cold = select_cold_start(interactions_for(counts), share=0.8)
    # floor(0.8 * 5) = 4 users: b, c (2 logs, ties by id), e (3), a (5); d (9) is not cold-start.
    assert cold.filter("is_cold_start")["user_id"].to_list() == ["b", "c", "e", "a"]
    assert cold.filter(~pl.col("is_cold_start"))["user_id"].to_list() == ["d"]


def test_user_split_proportions_disjoint_and_deterministic():
    ids = [f"u{i:04d}" for i in range(1000)]
    split = assign_user_splits(ids, seed=7)
    sizes = dict(split.group_by("split").len().iter_rows())
    assert sizes == {"train": 700, "val": 100, "test": 200}
    assert split["user_id"].n_unique() == 1000  # each user in exactly one split
    assert split.equals(assign_user_splits(list(reversed(ids)), seed=7))  # input order is irrelevant
    assert not split.equals(assign_user_splits(ids, seed=8))
    assert split_boundaries(10) == [7, 8, 10]


def test_support_query_split_80_20_per_user():
    counts = {"a": 10, "b": 2, "c": 5, "d": 1}
    sets = assign_support_query(interactions_for(counts), seed=3)
    per_user = sets.group_by("user_id").agg(q=(pl.col("set") == "query").sum(), n=pl.len()).sort("user_id")
    # round(0.2 n), at least 1, leaving at least one support item
    assert per_user.select("user_id", "q").rows() == [("a", 2), ("b", 1), ("c", 1), ("d", 0)]
    assert sets.equals(assign_support_query(interactions_for(counts), seed=3))


def test_cold_start_users_get_the_paper_splits_and_warm_users_only_the_warm_split():
    counts = {f"u{i}": 2 + i for i in range(20)}
    interactions = interactions_for(counts)
    frames = user_splits_for(select_cold_start(interactions), interactions, seed=0)
    users = frames["users"]
    cold = users.filter(pl.col("split") != "warm")
    assert cold.height == 16 and set(cold["user_id"]) == {f"u{i}" for i in range(16)}
    # The production protocol's warm users are never validation or test users.
    assert set(users.filter(pl.col("split") == "warm")["user_id"]) == {"u16", "u17", "u18", "u19"}
    assert set(frames["items"]["user_id"].unique()) == set(users["user_id"])
    assert frames["items"].height == sum(counts.values())
    assert frames["items"].filter(pl.col("user_id").is_in(cold["user_id"].implode()))["chunk"].eq(0).all()


def test_warm_users_are_cut_into_chunks_of_the_cold_median_size():
    counts = {f"u{i}": 2 + i for i in range(20)}
    interactions = interactions_for(counts)
    items = user_splits_for(select_cold_start(interactions), interactions, seed=0)["items"]
    # Cold users hold 2..17 items: median 9.5 -> chunks of at most 9; u19 (21 items) -> 3 chunks of 7.
    sizes = items.filter(pl.col("user_id") == "u19").group_by("chunk").len().sort("chunk")["len"].to_list()
    assert sizes == [7, 7, 7]
    assert items.filter(pl.col("user_id") == "u16").group_by("chunk").len().height == 2  # 18 items
    per_chunk = items.filter(pl.col("chunk") >= 0).group_by("user_id", "chunk").agg(q=(pl.col("set") == "query").sum())
    assert per_chunk["q"].min() >= 1


def test_top_values_take_ceil_30_percent_with_value_tie_break():
    users = pl.DataFrame({"f": ["x", "x", "y", "y", "z", "w", "v"]})
    # 5 distinct values -> ceil(1.5) = 2 top values; x and y tie at 2 users, then z, w, v at 1.
    assert top_values(users, "f")["value"].to_list() == ["x", "y"]
    assert math.isclose(feature_concentration(users, ("f",))["share_top"].item(), 4 / 7)


def test_major_needs_more_than_two_top_features():
    # Feature a: values p (3 users) q r -> top = {p}; likewise b: {s}; c: {t}; d: {u}.
    users = pl.DataFrame({
        "user_id": ["1", "2", "3", "4", "5"],
        "a": ["p", "p", "p", "q", "r"],
        "b": ["s", "s", "s", "k", "m"],
        "c": ["t", "t", "o", "t", "n"],
        "d": ["u", "h", "j", "u", "u"],
    })
    tagged = tag_users(users, users, ("a", "b", "c", "d"))
    assert tagged["n_top_features"].to_list() == [4, 3, 2, 2, 1]
    assert tagged["group"].to_list() == ["major", "major", "minor", "minor", "minor"]
    assert np.isclose((tagged["group"] == "major").mean(), 0.4)


def groups_of(users: pl.DataFrame, features: tuple[str, ...]) -> dict[str, pl.DataFrame]:
    """user_groups_for with every user cold-start."""
    cold = users.select("user_id").with_columns(is_cold_start=pl.lit(True))
    return user_groups_for(users, cold, features)


def test_a_groups_feature_with_one_value_and_a_population_in_one_group_are_named():
    # Four users; 'country' is 'fr' for all: a top value for everyone, which the shares alone show as 1.000.
    users = pl.DataFrame({"user_id": ["1", "2", "3", "4"], "a": ["p", "p", "q", "r"], "b": ["s", "s", "k", "m"],
                          "c": ["t", "o", "t", "n"], "country": ["fr"] * 4})
    found = groups_of(users, ("a", "b", "c", "country"))
    assert found["groups"]["group"].to_list() == ["major", "major", "minor", "minor"]  # user 2: p, s and fr
    assert group_notes(found["table1"], found["shares"], ("a", "b", "c", "country")) == [
        "groups feature 'country' has one value for every user: it is a top value for all of them, so counts towards "
        "major for everyone and tells no user apart"]
    # Every groups feature single-valued: every user major, which read as a major share of 1.000 without a word.
    same = users.with_columns(a=pl.lit("p"), b=pl.lit("s"), c=pl.lit("t"))
    found = groups_of(same, ("a", "b", "c", "country"))
    assert set(found["groups"]["group"]) == {"major"}
    notes = group_notes(found["table1"], found["shares"], ("a", "b", "c", "country"))
    assert notes == [
        "groups features 'a', 'b', 'c', 'country' have one value for every user: each is a top value for all of them, "
        "so counts towards major for everyone and tells no user apart",
        "every cold-start user is major (each holds a top value in at least 3 features; 4 of the 4 groups features have "
        "a single value): there is no minor group, so the minor-vs-major comparisons are empty; groups features with "
        "more distinct values separate users"]
    # Three varied features where no user holds three top values: every user minor, said so.
    spread = pl.DataFrame({"user_id": ["1", "2", "3", "4"], "a": ["p", "p", "q", "r"], "b": ["s", "k", "s", "m"],
                           "c": ["o", "t", "n", "t"]})
    found = groups_of(spread, ("a", "b", "c"))
    assert group_notes(found["table1"], found["shares"], ("a", "b", "c")) == [
        "every cold-start user is minor (each holds a top value in fewer than 3 features; the groups features are a, b, "
        "c): there is no major group, so the minor-vs-major comparisons are empty; groups features with more distinct "
        "values separate users"]
    # A spec without [groups] is said to tag every user minor; ordinary tagging gives no note.
    assert group_notes(found["table1"].clear(), found["shares"], ())[0].startswith("no groups features")
    mixed = groups_of(users.drop("country"), ("a", "b", "c"))
    assert set(mixed["groups"]["group"]) == {"major", "minor"}
    assert group_notes(mixed["table1"], mixed["shares"], ("a", "b", "c")) == []


def test_a_dataset_that_fills_every_split_with_a_few_users_is_warned_about():
    # 12 users, 2 or 3 items each: 9 cold-start users split 6 / 1 / 2, and the whole chain ran to a report whose
    # numbers were the means of 2 test users, with nothing saying so.
    interactions = interactions_for({f"u{k:02d}": 2 + k % 2 for k in range(12)})
    splits = user_splits_for(select_cold_start(interactions), interactions, seed=0)
    counts = dict(splits["users"].group_by("split").len().iter_rows())
    assert (counts["train"], counts["val"], counts["test"]) == (6, 1, 2)
    assert few_users_note(counts, "tiny") == (
        "tiny: 1 validation user and 2 test users: the choice of each model's step and of the reference rows' settings "
        "and every metric of the report rest on so few users; a log with more users gives numbers to compare")
    assert few_users_note({"train": 70, "val": 10, "test": 9}, "d") == (
        "d: 9 test users: every metric of the report rests on so few users; a log with more users gives numbers to compare")
    assert few_users_note({"train": 3382, "val": 484, "test": 966, "warm": 1208}, "movielens") == ""


def test_too_few_users_for_every_split_is_a_named_error():
    # 6 users: 4 cold-start users split 3 / 0 / 1, so no validation user (training then failed deep in the
    # reference tuning with numpy's "need at least one array to concatenate").
    interactions = interactions_for({f"u{k}": 2 + k for k in range(6)})
    users = user_splits_for(select_cold_start(interactions), interactions, seed=0)["users"]
    with pytest.raises(TooFewUsersError, match=r"^tiny: 4 cold-start users split 7:1:2 leave val without a user "
                                               r"\(train 3, val 0, test 1\); .* 9 or more of them fill every split"):
        require_every_split(users, "tiny")
    interactions = interactions_for({f"u{k}": 2 + k for k in range(12)})
    require_every_split(user_splits_for(select_cold_start(interactions), interactions, seed=0)["users"], "tiny")
    # By hand: 8 users cut 7:1:2 at 5.6 -> 6 and 6.4 -> 6 leave val empty; 9 cut at 6.3 -> 6, 7.2 -> 7.
    assert split_boundaries(8) == [6, 6, 8] and split_boundaries(9) == [6, 7, 9]
    assert fills_every_split() == 9 and fills_every_split((1, 1)) == 2


def test_click_log_with_only_clicks_among_training_users_is_a_named_error():
    # A purchase log given as clicks: training failed later in binary_entropy(1.0) of the click rate.
    clicks = interactions_for({f"u{k}": 3 + k for k in range(12)}).with_columns(label=pl.lit(1.0))
    splits = user_splits_for(select_cold_start(clicks), clicks, seed=0)
    with pytest.raises(OneClassError, match=r"^shop: all \d+ impressions of the training users are clicked \(label 1, none 0\)"):
        require_both_click_classes(splits["users"], splits["items"].lazy(), "shop")
    test_user = splits["users"].filter(pl.col("split") == "test")["user_id"][0]
    unclicked_test = splits["items"].with_columns(label=pl.when(pl.col("user_id") == test_user).then(0.0).otherwise("label"))
    with pytest.raises(OneClassError):  # only the training users' rows are fitted on
        require_both_click_classes(splits["users"], unclicked_test.lazy(), "shop")
    train_user = splits["users"].filter(pl.col("split") == "train")["user_id"][0]
    one_unclicked = splits["items"].with_columns(label=pl.when(pl.col("user_id") == train_user).then(0.0).otherwise("label"))
    require_both_click_classes(splits["users"], one_unclicked.lazy(), "shop")
