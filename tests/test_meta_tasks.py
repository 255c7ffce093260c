"""Task encoding: vocabularies without test users, OOV, padding and masks, capped multi-hot lists."""

from dataclasses import replace

import polars as pl
import torch

from assets.meta_tasks import PAD_INDEX, UNKNOWN_INDEX, backoff_values, build_vocab, encode_tasks, truncation_warning
from assets.specs import DatasetSpec
from models.tasks import ItemTable

SPEC = DatasetSpec(name="toy", task="rating", user_fields=("city",), item_fields=("brand",),
                   item_multi_fields=("tags",), tagging_fields=("city",), label_min=1, label_max=5)


def toy_inputs():
    users = pl.DataFrame({"user_id": ["a", "b", "t"], "city": ["rome", "oslo", "lima"]})
    items = pl.DataFrame({"item_id": ["i1", "i2", "i3"], "brand": ["acme", None, "zeta"],
                          "tags": [["x", "y"], ["y"], ["q"]]})
    split_users = pl.DataFrame({"user_id": ["a", "b", "t"], "split": ["train", "val", "test"]})
    split_items = pl.DataFrame({
        "user_id": ["a", "a", "a", "b", "b", "t", "t"],
        "item_id": ["i1", "i2", "i1", "i2", "i1", "i3", "i1"],
        "label": [5.0, 3.0, 5.0, 4.0, 2.0, 1.0, 3.0],
        "set": ["support", "support", "query", "support", "query", "support", "query"],
    }).unique(["user_id", "item_id", "set"], maintain_order=True)
    return users, items, {"users": split_users, "items": split_items}


def test_vocab_is_frequency_ordered_from_index_two():
    vocab = build_vocab(pl.Series("v", ["b", "a", "b", None, "c", "a", "b"]), "f")
    assert vocab.select("value", "index").rows() == [("b", 2), ("a", 3), ("c", 4)]


def test_values_of_validation_and_test_users_only_map_to_unknown_and_padding_is_zero():
    frames, tensors, info = encode_tasks(*toy_inputs(), SPEC)
    vocab = frames["vocab"]
    assert "lima" not in vocab["value"].to_list()  # only the test user lives in lima
    assert "oslo" not in vocab["value"].to_list()  # only the validation user lives in oslo
    assert tensors["val__user_fields"].tolist() == [[UNKNOWN_INDEX]]
    assert "zeta" not in vocab["value"].to_list() and "q" not in vocab["value"].to_list()  # i3: test users only
    assert tensors["test__user_fields"].tolist() == [[UNKNOWN_INDEX]]
    item_row = dict(frames["items"].iter_rows())
    assert tensors["item_fields"][item_row["i3"]].tolist() == [UNKNOWN_INDEX]
    assert tensors["item_fields"][item_row["i2"]].tolist() == [UNKNOWN_INDEX]  # missing brand
    assert tensors["item_fields"][PAD_INDEX].tolist() == [PAD_INDEX]
    assert info["vocab_sizes"] == {"city": 3, "brand": 3, "tags": 4}


def test_support_query_tensors_are_padded_with_masks():
    frames, tensors, _ = encode_tasks(*toy_inputs(), SPEC)
    rows = dict(frames["items"].iter_rows())
    assert tensors["train__support_items"].tolist() == [[rows["i1"], rows["i2"]]]
    assert tensors["train__support_labels"].tolist() == [[5.0, 3.0]]
    assert tensors["train__query_mask"].tolist() == [[True]]
    multi = tensors["item_multi__tags"]
    assert multi.shape == (4, 2)
    assert multi[rows["i2"]].tolist()[1] == PAD_INDEX
    assert all(t.dtype in (torch.int64, torch.float32, torch.bool) for t in tensors.values())


def test_vocabulary_holds_no_value_of_a_validation_or_test_user():
    users, items, splits = toy_inputs()
    users = users.with_columns(pl.Series("city", ["rome", "rome", "rome"]))
    frames, _, _ = encode_tasks(users, items, splits, SPEC)
    held_out = users.join(splits["users"].filter(pl.col("split") != "train"), on="user_id")
    # "rome" is in the vocabulary because a training user has it, not because held-out users do.
    assert frames["vocab"].filter(pl.col("field") == "city")["count"].to_list() == [1]
    assert held_out.height == 2


def test_warm_users_become_chunked_tasks_with_their_own_vocabulary_rows():
    users, items, splits = toy_inputs()
    users = pl.concat([users, pl.DataFrame({"user_id": ["w"], "city": ["kyiv"]})])
    warm_users = pl.concat([splits["users"], pl.DataFrame({"user_id": ["w"], "split": ["warm"]})])
    warm_items = pl.DataFrame({
        "user_id": ["w"] * 4, "item_id": ["i1", "i2", "i3", "i2"], "label": [4.0, 2.0, 5.0, 2.0],
        "set": ["support", "query", "support", "query"], "chunk": [0, 0, 1, 1],
    }).unique(["user_id", "item_id", "set", "chunk"], maintain_order=True)
    item_sets = pl.concat([splits["items"].with_columns(chunk=pl.lit(0, dtype=pl.Int64)), warm_items])
    frames, tensors, info = encode_tasks(users, items, {"users": warm_users, "items": item_sets}, SPEC)
    assert info["splits"] == ["train", "val", "test", "warm"]
    assert frames["users__warm"].select("user_id", "chunk").rows() == [("w", 0), ("w", 1)]
    assert tensors["warm__support_mask"].sum(1).tolist() == [1, 1]
    assert "kyiv" in frames["vocab"]["value"].to_list()  # warm users are training data
    assert tensors["warm__user_fields"][0, 0] == tensors["warm__user_fields"][1, 0] != UNKNOWN_INDEX


def test_rare_values_back_off_to_the_longest_shared_prefix():
    training = pl.Series("zip", ["12345", "12399", "12301", "55501", "55502", "90210", "90210"])
    values = pl.Series("zip", ["12345", "12777", "55555", "90210", "70000", None])
    # min 2: 12345 is held once -> "123*" (3 training users); 12777 -> "127*" is held by none,
    # "1*" by 3; 55555 -> "555*" (2); 90210 is held twice: kept; 70000 -> nothing shared: null.
    out = backoff_values(values, training, (3, 1), min_count=2)
    assert out.to_list() == ["123*", "1*", "555*", "90210", None, None]
    assert backoff_values(values, training, (3, 1), min_count=0).to_list() == values.to_list()


def test_backoff_counts_only_training_users():
    users, items, splits = toy_inputs()
    users = users.with_columns(pl.Series("city", ["rome", "roma", "romsdal"]))
    spec = DatasetSpec(name="toy", task="rating", user_fields=("city",), item_fields=("brand",),
                       item_multi_fields=("tags",), tagging_fields=("city",), label_min=1, label_max=5,
                       backoff=(("city", (3,)),))
    frames, tensors, _ = encode_tasks(users, items, splits, spec, backoff_min_count=2)
    # Only the training user has "rom": 1 < 2 training users share it, so everyone is UNKNOWN,
    # although validation and test users would make "rom*" look frequent.
    assert tensors["train__user_fields"].tolist() == [[UNKNOWN_INDEX]]
    assert frames["vocab"].filter(pl.col("field") == "city").height == 0


CAPPED = replace(SPEC, multi_caps=(("tags", 2),))


def capped_inputs():
    """i1 (rated by the training user) lists four tags, i2 (training too) two, i3 (test only) three,
    two of which no training user's item holds. Vocabulary (counts over i1, i2): x 2, y 2, w 1, z 1."""
    users, items, splits = toy_inputs()
    items = items.with_columns(pl.Series("tags", [["z", "w", "y", "x"], ["y", "x"], ["q", "x", "r"]]))
    return users, items, splits


def test_a_list_longer_than_its_cap_keeps_its_most_frequent_values_in_list_order_and_is_counted():
    frames, tensors, info = encode_tasks(*capped_inputs(), CAPPED)
    code = dict(frames["vocab"].filter(pl.col("field") == "tags").select("value", "index").iter_rows())
    assert code == {"x": 2, "y": 3, "w": 4, "z": 5}  # most frequent first, ties by value
    rows = dict(frames["items"].iter_rows())
    multi = tensors["item_multi__tags"]
    assert multi.shape == (4, 2)
    # i1: x and y are the most frequent; they keep their order in the list (y before x).
    assert multi[rows["i1"]].tolist() == [code["y"], code["x"]]
    # i3: x first (known), then the first of the unknown values by list position (q; r dropped).
    assert multi[rows["i3"]].tolist() == [UNKNOWN_INDEX, code["x"]]
    assert info["truncated_lists"] == {"tags": {"cap": 2, "longest": 4, "items_truncated": 2, "values_dropped": 3}}
    note = truncation_warning(info["truncated_lists"])
    assert "tags: 2 items longer than 2 values (longest 4)" in note and "3 values dropped" in note


def test_lists_within_the_cap_are_untouched_and_leave_no_count():
    _, capped, _ = encode_tasks(*capped_inputs(), CAPPED)
    frames, whole, info = encode_tasks(*capped_inputs(), SPEC)  # the default cap, 64: nothing cut
    assert "truncated_lists" not in info and truncation_warning(info.get("truncated_lists", {})) is None
    rows = dict(frames["items"].iter_rows())
    code = dict(frames["vocab"].filter(pl.col("field") == "tags").select("value", "index").iter_rows())
    assert whole["item_multi__tags"][rows["i1"]].tolist() == [code[v] for v in ("z", "w", "y", "x")]
    assert capped["item_multi__tags"][rows["i2"]].tolist() == whole["item_multi__tags"][rows["i2"]][:2].tolist()
    for name, tensor in whole.items():  # everything but the cut lists is the same
        if name != "item_multi__tags":
            assert torch.equal(capped[name], tensor), name


def test_a_capped_item_embeds_as_the_mean_of_its_kept_values():
    from models.network import NetworkConfig, PreferenceNetwork
    from models.tasks import task_data_from_tensors

    frames, tensors, info = encode_tasks(*capped_inputs(), CAPPED)
    config = NetworkConfig(embedding_dim=2, statistics=False, factor_dim=0, mf_foldin=False, knn_foldin=False)
    embedder = PreferenceNetwork(task_data_from_tensors(tensors, info), config).embedder.eval()
    with torch.no_grad():  # row k of the tags table is (k, 10 k)
        rows_k = torch.arange(embedder.tables["tags"].num_embeddings, dtype=torch.float32)
        embedder.tables["tags"].weight.copy_(torch.stack([rows_k, 10 * rows_k], 1))
    rows = dict(frames["items"].iter_rows())
    features = embedder.items(ItemTable(tensors["item_fields"], {"tags": tensors["item_multi__tags"]})).features
    tags = features[:, 2:4]  # after the brand field's 2 columns
    # i1 keeps y (3) and x (2): ((3, 30) + (2, 20)) / 2; all four would give ((2+3+4+5)/4, ...) = (3.5, 35).
    assert tags[rows["i1"]].tolist() == [2.5, 25.0]
    # i2 (y, x) is within the cap: the same mean as without one.
    assert tags[rows["i2"]].tolist() == [2.5, 25.0]
    # i3 keeps UNKNOWN (1) and x (2): ((1, 10) + (2, 20)) / 2.
    assert tags[rows["i3"]].tolist() == [1.5, 15.0]
