"""Splits and task encoding one user range at a time give the unsharded results, number for number."""

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from assets.clean_logs import clean_logs_from_raw
from assets.cold_start_users import select_cold_start
from assets.meta_tasks import encode_tasks
from assets.raw_files import read_taobao
from assets.sharded import clean_sharded, shard_taobao
from assets.sharded_tasks import (
    TensorFile, check_task_order, cut_by_range, encode_sharded, range_bounds, split_sharded,
)
from assets.specs import SPECS, DatasetSpec
from assets.taobao_generator import GeneratorConfig, generate
from assets.user_splits import assign_chunks, assign_support_query, uniform_draws, user_splits_for

SPEC = SPECS["taobao"]


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def test_an_advanced_generator_draws_the_whole_draws_numbers():
    # The claim the sharded splits rest on: PCG64 spends one output per double, advance(k) skips k.
    whole = np.random.default_rng(11).random(10_000)
    for offset, n in [(0, 5), (1, 1), (4_321, 2_000), (9_999, 1)]:
        assert np.array_equal(uniform_draws(11, n, offset), whole[offset:offset + n])
    pieces = [uniform_draws(11, 2_500, k * 2_500) for k in range(4)]
    assert np.array_equal(np.concatenate(pieces), whole)


def rows_for(counts: dict[str, int]) -> pl.DataFrame:
    rows = [(u, f"i{k:02d}", float(k % 2)) for u, n in counts.items() for k in range(n)]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "label"], orient="row")


def test_per_user_draws_of_a_range_of_users_equal_the_whole_logs():
    counts = {"a": 7, "b": 2, "c": 12, "d": 5, "e": 9}
    whole = rows_for(counts)
    # Users a-b come first in (user, item) order: 9 rows precede c.
    head, tail = whole.filter(pl.col("user_id") < "c"), whole.filter(pl.col("user_id") >= "c")
    sets = pl.concat([assign_support_query(head, 4), assign_support_query(tail, 4, offset=9)])
    assert sets.equals(assign_support_query(whole, 4))
    chunks = pl.concat([assign_chunks(head, 3, 4), assign_chunks(tail, 3, 4, offset=9)])
    assert chunks.equals(assign_chunks(whole, 3, 4))
    # ... and without the offset they differ, so the test can fail.
    assert not pl.concat([assign_support_query(head, 4), assign_support_query(tail, 4)]).equals(assign_support_query(whole, 4))


def test_range_bounds_balance_rows_and_never_cut_a_user():
    counts = pl.DataFrame({"user_id": ["a", "b", "c", "d", "e", "f"], "n_logs": [4, 4, 4, 4, 4, 4]})
    assert range_bounds(counts, 3) == ("c", "e")  # 8 rows each
    assert range_bounds(counts, 1) == ()
    heavy = pl.DataFrame({"user_id": ["a", "b", "c"], "n_logs": [1, 100, 1]})
    assert range_bounds(heavy, 4) == ("b", "c")  # b alone outweighs a range: 3 ranges, not 4
    with pytest.raises(ValueError, match="shards must be >= 1"):
        range_bounds(counts, 0)


def test_ids_that_sort_differently_as_task_keys_are_refused():
    check_task_order(pl.Series(["1", "10", "100", "u1", "u1a", "u2"]))  # '0', 'a' sort after '#'
    with pytest.raises(ValueError, match=r"'u1' and 'u1 b'.*one range"):
        check_task_order(pl.Series(["u2", "u1 b", "u1"]))


def test_a_tensor_file_written_in_row_blocks_loads_as_safetensors(tmp_path):
    from safetensors.torch import load_file

    ints, flags = np.arange(12, dtype=np.int64).reshape(4, 3), np.array([True, False, True])
    with TensorFile(tmp_path / "t.safetensors", {"ints": (ints.dtype, ints.shape), "flags": (flags.dtype, flags.shape),
                                                 "none": (np.dtype(np.float32), (4, 0))}) as out:
        out.write_rows("ints", 2, ints[2:])
        out.write_rows("ints", 0, ints[:2])
        out.write_rows("flags", 0, flags)
        out.write_rows("none", 0, np.zeros((4, 0), np.float32))
    loaded = load_file(str(tmp_path / "t.safetensors"))
    assert torch.equal(loaded["ints"], torch.from_numpy(ints)) and torch.equal(loaded["flags"], torch.from_numpy(flags))
    assert loaded["none"].shape == (4, 0)
    with pytest.raises(RuntimeError, match="rows written / expected"):
        with TensorFile(tmp_path / "short.safetensors", {"ints": (ints.dtype, ints.shape)}) as out:
            out.write_rows("ints", 0, ints[:3])
    with pytest.raises(ValueError, match="ints"):
        with TensorFile(tmp_path / "wrong.safetensors", {"ints": (ints.dtype, ints.shape)}) as out:
            out.write_rows("ints", 0, ints.astype(np.int32))


@pytest.fixture(scope="module")
def whole_and_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("taobao")
    generate(root, GeneratorConfig(seed=5, n_users=500, n_items=120, n_days=3))
    whole = clean_logs_from_raw(read_taobao(root), SPEC)
    return whole, root


@pytest.mark.parametrize(("hash_shards", "ranges"), [(1, 1), (4, 3)])
def test_sharded_splits_and_encoding_equal_the_whole_logs(whole_and_log, tmp_path, hash_shards, ranges):
    whole, root = whole_and_log
    seed = 7
    cold = select_cold_start(whole.frame("interactions"))
    splits = user_splits_for(cold, whole.frame("interactions"), seed)
    frames, tensors, info = encode_tasks(whole.frame("users"), whole.frame("items"), splits, SPEC)

    clean = clean_sharded(shard_taobao(root, tmp_path / "raw", hash_shards), SPEC, tmp_path / "clean")
    sharded_cold = select_cold_start(clean.interactions())
    cut = cut_by_range(clean.interaction_files(), sharded_cold, ranges, tmp_path / "ranges")
    assert cut.shards == ranges
    sharded = split_sharded(cut, sharded_cold, seed, tmp_path / "splits")
    assert sharded.users.equals(splits["users"])
    assert set(sharded.users["split"]) == {"train", "val", "test", "warm"}
    assert canonical(sharded.scan_items().collect()).equals(canonical(splits["items"]))
    # Each range file holds whole users of its range only.
    owners = pl.concat([sharded.items(r).select("user_id").unique().with_columns(r=pl.lit(r)) for r in range(ranges)])
    assert owners["user_id"].is_unique().all()

    encoded = encode_sharded(clean.users(), clean.items, sharded, SPEC, tmp_path / "tasks")
    got_frames, got_tensors, got_info = encoded.load()
    assert got_info == info
    assert got_frames.keys() == frames.keys()
    for name, frame in frames.items():
        assert got_frames[name].equals(frame), name
    assert got_tensors.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert got_tensors[name].dtype == tensor.dtype and torch.equal(got_tensors[name], tensor), name
    assert tensors["warm__user_index"].unique().numel() > 1 and tensors["train__support_mask"].any()


@pytest.mark.parametrize("caps", [(), (("tags", 1),)])
def test_sharded_encoding_backs_off_and_encodes_multi_hot_fields_as_the_whole_one(tmp_path, caps):
    spec = DatasetSpec(name="toy", task="rating", user_fields=("zip",), item_fields=("brand",), item_multi_fields=("tags",),
                       tagging_fields=("zip",), label_min=1, label_max=5, backoff=(("zip", (3, 1)),), multi_caps=caps)
    rng = np.random.default_rng(0)
    n_users = 60
    ids = [f"{u:03d}" for u in range(n_users)]
    users = pl.DataFrame({"user_id": ids, "zip": [f"{rng.integers(1, 4)}{rng.integers(0, 3)}{rng.integers(0, 9)}99" for _ in ids]})
    items = pl.DataFrame({"item_id": [f"i{k:02d}" for k in range(30)],
                          "brand": [None if k % 7 == 0 else f"b{k % 4}" for k in range(30)],
                          "tags": [[f"t{(k + j) % 5}" for j in range(k % 3)] for k in range(30)]})
    rows = pl.DataFrame([(u, f"i{k:02d}", float(rng.integers(1, 6))) for u in ids
                         for k in rng.choice(30, size=2 + int(u) % 9, replace=False)],
                        schema=["user_id", "item_id", "label"], orient="row")
    cold = select_cold_start(rows)
    splits = user_splits_for(cold, rows, 3)
    frames, tensors, info = encode_tasks(users, items, splits, spec, backoff_min_count=3)
    assert any(v.endswith("*") for v in frames["vocab"]["value"])  # some zips did back off

    files = []
    for k in range(2):  # two "hash shards" of the cleaned rows, each sorted by user and item
        files.append(tmp_path / f"clean{k}.parquet")
        rows.filter(pl.col("user_id").str.slice(2).cast(pl.Int64) % 2 == k).sort("user_id", "item_id").write_parquet(files[-1])
    cut = cut_by_range(files, cold, 4, tmp_path / "ranges", buffer_rows=100)  # a flush after each file
    assert cut.shards == 4
    assert max(pq.ParquetFile(f).num_row_groups for f in (tmp_path / "ranges").rglob("*.parquet")) == 2
    sharded = split_sharded(cut, cold, 3, tmp_path / "splits")
    got_frames, got_tensors, got_info = encode_sharded(users, items, sharded, spec, tmp_path / "tasks", 3).load()
    assert got_info == info
    for name, frame in frames.items():
        assert got_frames[name].equals(frame), name
    for name, tensor in tensors.items():
        assert torch.equal(got_tensors[name], tensor), name
    assert tensors["item_multi__tags"].shape[1] == (1 if caps else 2)
    assert ("truncated_lists" in info) == bool(caps)  # and the same count in the sharded encoding's info
