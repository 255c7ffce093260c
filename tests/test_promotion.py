"""Champion / challenger: the paired decision, and the same validation users for two encodings."""

import math

import numpy as np
import polars as pl
import pytest
import torch

from assets.bundle import Bundle
from assets.meta_tasks import UNKNOWN_INDEX, encode_tasks
from assets.promotion import (
    PROMOTION_ALPHA, comparison_splits, decide, decode_split, encode_split, lookup_codes, shared_tasks, user_codes,
)
from assets.specs import SPECS

SPEC = SPECS["taobao"]


def test_a_worse_challenger_is_rejected_with_the_hand_computed_p_value():
    champion = np.array([0.5, 0.6, 0.7, 0.8])
    diff = np.array([0.1, 0.2, 0.1, 0.2])
    # mean 0.15, sd 0.1 / sqrt(3), so t = 0.15 / (0.05 / sqrt(3)) = 3 sqrt(3) with 3 degrees of freedom;
    # the t(3) upper tail is 1/2 - (theta + sin(theta) cos(theta)) / pi with tan(theta) = t / sqrt(3) = 3.
    tail = 0.5 - (math.atan(3) + 3 / 10) / math.pi
    worse = decide(champion + diff, champion)
    assert not worse.promoted and worse.p_value == pytest.approx(tail, rel=1e-9)
    assert worse.reason.startswith("rejected: worse") and "over 4 users" in worse.reason
    better = decide(champion - diff, champion)
    assert better.promoted and better.p_value == pytest.approx(1 - tail, rel=1e-9)
    # Not significant at a stricter level, and the mean is 23% higher: rejected on the mean alone ...
    on_mean = decide(champion + diff, champion, alpha=tail / 2)
    assert not on_mean.promoted and on_mean.reason.startswith("rejected: mean loss more than 10% higher")
    # ... unless that much is tolerated.
    assert decide(champion + diff, champion, alpha=tail / 2, max_increase=0.25).promoted


def test_edge_cases_of_the_decision():
    losses = np.array([0.3, 0.4, 0.5])
    assert decide(losses, None).reason == "promoted: no model in service"
    assert decide(losses[:1], losses[:1] + 1).promoted  # one user: nothing to test
    same = decide(losses, losses.copy())
    assert same.promoted and same.p_value is None and "same validation losses" in same.reason
    shifted = decide(losses + 0.1, losses)  # a constant shift: sd 0, the sign decides
    assert not shifted.promoted and shifted.p_value == 0.0
    assert decide(losses - 0.1, losses).promoted
    broken = decide(np.array([0.3, np.nan, 0.5]), losses)
    assert not broken.promoted and "not finite" in broken.reason
    assert PROMOTION_ALPHA == 0.05


def raw_users(users: dict[str, tuple]) -> pl.DataFrame:
    return pl.DataFrame([{"user_id": u, **dict(zip(SPEC.user_fields, f))} for u, f in users.items()])


def window(users: dict[str, tuple], splits: dict[str, str], rows: list[tuple]) -> Bundle:
    """meta_tasks of a tiny taobao window: users {id: 5 features}, their split, rows (user, item, label, set)."""
    item_ids = sorted({r[1] for r in rows})
    items = pl.DataFrame({"item_id": item_ids, "category": [f"c{i[-1]}" for i in item_ids],
                          "brand": ["b1"] * len(item_ids), "price_level": ["2"] * len(item_ids)})
    split = {"users": pl.DataFrame({"user_id": list(splits), "split": list(splits.values())}),
             "items": pl.DataFrame(rows, schema=["user_id", "item_id", "label", "set"], orient="row")}
    frames, tensors, info = encode_tasks(raw_users(users), items, split, SPEC)
    return Bundle(frames=frames, tensors=tensors, info=info)


F = {"a": ("20", "F", "Wuhan", "student", "1"), "b": ("30", "M", "Xian", "sales", "2"),
     "c": ("30", "M", "Hefei", "sales", "3"), "d": ("40", "F", "Xian", "teacher", "1")}
CLEAN_USERS = raw_users(F)


def rows_for(user: str, items: list[str]) -> list[tuple]:
    return [(user, item, float(k % 2), "query" if k == 0 else "support") for k, item in enumerate(items)]


@pytest.fixture()
def champion_and_challenger():
    # The champion's window: a, b train on i1-i3; c is its validation user.
    champion = window({"a": F["a"], "b": F["b"], "c": F["c"]}, {"a": "train", "b": "train", "c": "val"},
                      rows_for("a", ["i1", "i2", "i3"]) + rows_for("b", ["i1", "i2"]) + rows_for("c", ["i2", "i3"]))
    # The challenger's window: new item i4, user d; a (which the champion trained on) and c, d validate.
    challenger = window({"b": F["b"], "a": F["a"], "c": F["c"], "d": F["d"]},
                        {"b": "train", "a": "val", "c": "val", "d": "val"},
                        rows_for("b", ["i1", "i4"]) + rows_for("a", ["i2", "i3"]) + rows_for("c", ["i3", "i2", "i4"])
                        + rows_for("d", ["i4", "i1"]))
    return champion, challenger


def test_decoding_then_encoding_a_split_gives_it_back(champion_and_challenger):
    _, challenger = champion_and_challenger
    users, rows = decode_split(challenger, "val")
    assert users["user_id"].to_list() == ["a", "c", "d"]
    ids = users["user_id"].to_list()
    again = encode_split(challenger.tensors["val__user_fields"].numpy(), ids, rows, challenger)
    for name in ("user_fields", "support_items", "support_labels", "support_mask", "query_items", "query_labels", "query_mask"):
        assert torch.equal(getattr(again, name), challenger.tensors[f"val__{name}"]), name
    # Encoding the cleaned values through the vocabulary gives the indices meta_tasks gave.
    assert np.array_equal(user_codes(CLEAN_USERS, ids, challenger), challenger.tensors["val__user_fields"].numpy())


def test_both_models_get_the_same_unseen_users_in_their_own_encoding(champion_and_challenger):
    champion, challenger = champion_and_challenger
    users, rows = shared_tasks(challenger, champion)
    # a: the champion trained on it; d: only i1 is known to both, so no support set is left.
    assert users["user_id"].to_list() == ["c"]
    assert sorted(rows["item_id"].to_list()) == ["i2", "i3"]  # i4 is unknown to the champion
    assert comparison_splits(challenger, champion, CLEAN_USERS) is None  # one user: too few to compare
    theirs = encode_split(user_codes(CLEAN_USERS, ["c"], champion), ["c"], rows, champion)
    ours = encode_split(challenger.tensors["val__user_fields"].numpy()[users["user_row"].to_numpy()], ["c"], rows, challenger)
    assert torch.equal(ours.query_labels, theirs.query_labels) and torch.equal(ours.support_mask, theirs.support_mask)
    # The champion's vocabulary comes from its training users a and b: c's age 30, M and sales are
    # theirs too; Hefei and spend level 3 are only c's, so they are the champion's unknown index.
    vocab = champion.frame("vocab")
    expected = [int(vocab.filter((pl.col("field") == f) & (pl.col("value") == v))["index"].item())
                if v in ("30", "M", "sales") else UNKNOWN_INDEX for f, v in zip(SPEC.user_fields, F["c"])]
    assert theirs.user_fields[0].tolist() == expected
    for tasks, split in ((challenger, ours), (champion, theirs)):
        assert split.query_items[0, 0].item() == dict(tasks.frame("items").iter_rows())["i3"]


def test_backoff_fields_fall_back_to_the_longest_known_prefix():
    vocab = pl.DataFrame({"field": ["zip"] * 3, "value": ["12345", "123*", "9*"], "index": [2, 3, 4]})
    values = pl.Series(["12345", "12399", "98765", "55555", None])
    assert lookup_codes(values, vocab, (3, 1)).tolist() == [2, 3, 4, UNKNOWN_INDEX, UNKNOWN_INDEX]
    assert lookup_codes(values, vocab).tolist() == [2, UNKNOWN_INDEX, UNKNOWN_INDEX, UNKNOWN_INDEX, UNKNOWN_INDEX]


def test_a_model_in_service_of_an_older_form_is_replaced_not_loaded():
    from dataclasses import replace

    from assets.method_assets import train_method
    from assets.promotion import Champion, compare
    from models.learners import LearnerConfig
    from models.network import NetworkConfig
    from models.training import TrainConfig
    from tests.model_fixtures import tiny_task_data
    from tests.test_tuning import tensors_of

    tensors, info = tensors_of(tiny_task_data())
    tasks = Bundle(tensors=tensors, info=info)
    config = LearnerConfig(network=NetworkConfig(embedding_dim=4, hidden=(8,)))
    challenger, _ = train_method("at_paml", tasks, config, TrainConfig(epochs=1, meta_batch=4), [0], processes=1)
    assert challenger.info["form"] == 2
    # The same weights under an older form's label: what a store from before the change holds.
    old = replace(challenger, info={**challenger.info, "form": 1})
    decision, losses = compare(challenger, tasks, Champion(old, tasks), pl.DataFrame())
    assert decision.promoted and "form 1" in decision.reason and losses.height == 1


def test_a_challenger_too_few_users_to_compare_replaces_the_model_in_service_only_if_trained_on_as_many(
        champion_and_challenger):
    from assets.method_assets import train_method
    from assets.promotion import Champion, compare
    from models.learners import LearnerConfig
    from models.network import NetworkConfig
    from models.training import TrainConfig

    champion_tasks, challenger_tasks = champion_and_challenger  # one comparable user, c
    config = LearnerConfig(network=NetworkConfig(embedding_dim=4, hidden=(8,)))
    trained = {name: train_method("melu", tasks, config, TrainConfig(epochs=1, meta_batch=2), [0], processes=1)[0]
               for name, tasks in (("champion", champion_tasks), ("challenger", challenger_tasks))}
    # The challenger's window trained on one user (b), the model in service on two (a, b): a window
    # that lost most of its days. It used to be promoted because nothing could be compared.
    decision, losses = compare(trained["challenger"], challenger_tasks, Champion(trained["champion"], champion_tasks),
                               CLEAN_USERS)
    assert not decision.promoted and losses["n_users"].to_list() == [1]
    assert decision.reason == ("rejected: 1 validation user(s) unseen by both models, too few to compare, and trained on "
                               "1 users, fewer than the 2 of the model in service")
    # The other way round (the champion's window as the challenger): as many users or more, promoted as before.
    back, _ = compare(trained["champion"], champion_tasks, Champion(trained["challenger"], challenger_tasks), CLEAN_USERS)
    assert back.promoted and back.reason.endswith("trained on 2 users, the model in service on 1")
