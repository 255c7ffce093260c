"""Meta-learning tasks: encoded features as padded tensors with masks, one task per user.

Vocabularies are built from the training users' data only (and the warm users', which
only the production protocol trains on): a value that only validation or test users have
maps to the unknown index, exactly as it will for a new user in service, so model
selection on validation users sees the same input distribution as the test.
Index 0 is padding (empty multi-hot slots, padded items); index 1 is unknown/missing.
The `warm` split holds one task per chunk of a warm user's history (assets/user_splits.py).

Tensors (U users of a split, S/Q = most support/query items of any user in it):
    item_fields            (N_items + 1, F_item)   int64, row 0 = padding item
    item_multi__<field>    (N_items + 1, M_field)  int64, 0-padded value lists
    <split>__user_fields   (U, F_user)             int64
    <split>__support_items (U, S)  int64 item rows (0 = padding); likewise query_items (U, Q)
    <split>__support_labels / query_labels  float32;  <split>__support_mask / query_mask  bool
"""


from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from assets.specs import DatasetSpec
from assets.user_splits import SPLIT_NAMES, WARM_SPLIT
from models.tasks import FIRST_VALUE_INDEX, PAD_INDEX, UNKNOWN_INDEX

if TYPE_CHECKING:
    import torch

__all__ = ["PAD_INDEX", "UNKNOWN_INDEX", "FIRST_VALUE_INDEX", "build_vocab", "encode", "encode_tasks"]
VOCAB_SOURCE_SPLITS = ("train", WARM_SPLIT)
BACKOFF_MIN_COUNT = 5  # training users a backoff field's value needs to keep its own row


def build_vocab(values: pl.Series, field: str) -> pl.DataFrame:
    """Vocabulary of `values` (nulls excluded): most frequent first, ties by value."""
    counts = (
        values.drop_nulls().cast(pl.String).value_counts(name="count")
        .sort(["count", values.name], descending=[True, False])
    )
    return pl.DataFrame({
        "field": field,
        "value": counts[values.name],
        "index": pl.int_range(FIRST_VALUE_INDEX, FIRST_VALUE_INDEX + counts.height, eager=True),
        "count": counts["count"].cast(pl.Int64),
    }, schema={"field": pl.String, "value": pl.String, "index": pl.Int64, "count": pl.Int64})


def encode(values: pl.Expr, vocab: pl.DataFrame) -> pl.Expr:
    """Map values through `vocab`; unseen or missing values get UNKNOWN_INDEX."""
    mapping = dict(zip(vocab["value"].to_list(), vocab["index"].to_list()))
    return values.cast(pl.String).replace_strict(mapping, default=UNKNOWN_INDEX, return_dtype=pl.Int64)


def padded(frame: pl.DataFrame, row_col: str, value_col: str, n_rows: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Scatter `value_col` into a (n_rows, max_per_row) array by `row_col`, with a mask."""
    if frame.height == 0:
        return np.zeros((n_rows, 0), dtype), np.zeros((n_rows, 0), bool)
    ordered = frame.sort(row_col).with_columns(_pos=pl.int_range(pl.len()).over(row_col))
    width = int(ordered["_pos"].max()) + 1
    values = np.zeros((n_rows, width), dtype)
    mask = np.zeros((n_rows, width), bool)
    rows, cols = ordered[row_col].to_numpy(), ordered["_pos"].to_numpy()
    values[rows, cols] = ordered[value_col].to_numpy().astype(dtype)
    mask[rows, cols] = True
    return values, mask


def backoff_values(values: pl.Series, training: pl.Series, prefixes: tuple[int, ...], min_count: int) -> pl.Series:
    """Each value held by fewer than `min_count` training users becomes its longest prefix
    ('123*') that at least `min_count` training users share, else null (UNKNOWN).

    A value only one or two training users hold gets an embedding row trained on those users
    alone, which then identifies them: a coarser, shared value generalizes to new users.
    Counts come from the training users only; `min_count` 0 or 1 leaves values as they are.
    """
    if min_count <= 1:
        return values
    def counts(series: pl.Series) -> dict[str, int]:
        frame = series.drop_nulls().cast(pl.String).value_counts(name="n")
        return dict(zip(frame[series.name].to_list(), frame["n"].to_list()))

    full = counts(training)
    prefix_counts = {n: counts(training.cast(pl.String).str.slice(0, n) + "*") for n in prefixes}

    def back_off(value: str | None) -> str | None:
        if value is None or full.get(value, 0) >= min_count:
            return value
        for n in prefixes:
            if prefix_counts[n].get(value[:n] + "*", 0) >= min_count:
                return value[:n] + "*"
        return None

    return values.cast(pl.String).map_elements(back_off, return_dtype=pl.String)


def encode_tasks(
    users: pl.DataFrame, items: pl.DataFrame, splits: dict[str, pl.DataFrame], spec: DatasetSpec,
    backoff_min_count: int = 0,
) -> tuple[dict[str, pl.DataFrame], dict[str, "torch.Tensor"], dict]:
    """Encode cleaned users/items and the split assignment into task tensors.

    `backoff_min_count` > 1 backs rare values of the spec's `backoff` fields off to prefixes.
    Returns (frames: vocab, items index, users per split; tensors; info with vocab sizes).
    """
    import torch

    user_split, item_sets = splits["users"], splits["items"]
    known_users = user_split.filter(pl.col("split").is_in(VOCAB_SOURCE_SPLITS))
    known_rows = item_sets.join(known_users, on="user_id", how="semi")
    known_items = items.join(known_rows.select("item_id").unique(), on="item_id", how="semi")
    split_users = users.join(user_split, on="user_id", how="inner")
    training_users = split_users.filter(pl.col("split") == "train")
    for field, prefixes in spec.backoff:
        split_users = split_users.with_columns(
            backoff_values(split_users[field], training_users[field], prefixes, backoff_min_count).alias(field))

    vocabs = [build_vocab(split_users.filter(pl.col("split").is_in(VOCAB_SOURCE_SPLITS))[f], f) for f in spec.user_fields]
    vocabs += [build_vocab(known_items[f], f) for f in spec.item_fields]
    vocabs += [build_vocab(known_items[f].explode(), f) for f in spec.item_multi_fields]
    vocab = pl.concat(vocabs)
    by_field = {f: vocab.filter(pl.col("field") == f) for f in vocab["field"].unique().to_list()}
    empty = pl.DataFrame(schema=vocab.schema)

    used_items = items.join(item_sets.select("item_id").unique(), on="item_id", how="semi").sort("item_id")
    item_index = used_items.select("item_id", pl.int_range(1, used_items.height + 1, dtype=pl.Int64).alias("row"))
    tensors: dict[str, torch.Tensor] = {}
    single = used_items.select(encode(pl.col(f), by_field.get(f, empty)).alias(f) for f in spec.item_fields)
    item_matrix = single.to_numpy().astype(np.int64).reshape(used_items.height, len(spec.item_fields))
    tensors["item_fields"] = torch.from_numpy(np.vstack([np.zeros((1, item_matrix.shape[1]), np.int64), item_matrix]))
    for field in spec.item_multi_fields:
        exploded = (
            used_items.with_row_index("row", offset=1)
            .select(pl.col("row").cast(pl.Int64), field)
            .explode(field)
            .drop_nulls(field)
            .with_columns(code=encode(pl.col(field), by_field.get(field, empty)))
        )
        values, _ = padded(exploded, "row", "code", used_items.height + 1, np.int64)
        tensors[f"item_multi__{field}"] = torch.from_numpy(values)

    frames = {"vocab": vocab, "items": item_index}
    if "chunk" not in item_sets.columns:
        item_sets = item_sets.with_columns(chunk=pl.lit(0, dtype=pl.Int64))
    rows = item_sets.join(item_index, on="item_id", how="inner")
    chunks = item_sets.select("user_id", "chunk").unique()
    splits_present = [s for s in (*SPLIT_NAMES, WARM_SPLIT) if s in SPLIT_NAMES or (user_split["split"] == s).any()]
    for split in splits_present:
        # One task per (user, chunk): cold-start users have one chunk, warm users several.
        members = (split_users.filter(pl.col("split") == split).join(chunks, on="user_id", how="inner")
                   .sort("user_id", "chunk").with_row_index("user_row"))
        members = members.with_columns(pl.col("user_row").cast(pl.Int64))
        frames[f"users__{split}"] = members.select("user_id", "chunk", "user_row") if split == WARM_SPLIT else members.select("user_id", "user_row")
        if split == WARM_SPLIT:
            # The chunks of one warm user share its identity: the models' fits (MF, kNN) and
            # AT-PAML's memory then see one user with all of its ratings, as the references do.
            identity = members["user_id"].cast(pl.String).rank("dense").to_numpy().astype(np.int64) - 1
            tensors[f"{split}__user_index"] = torch.from_numpy(identity)
        codes = members.select(encode(pl.col(f), by_field.get(f, empty)).alias(f) for f in spec.user_fields)
        tensors[f"{split}__user_fields"] = torch.from_numpy(
            codes.to_numpy().astype(np.int64).reshape(members.height, len(spec.user_fields))
        )
        user_rows = rows.join(members.select("user_id", "chunk", "user_row"), on=["user_id", "chunk"], how="inner")
        for part in ("support", "query"):
            chosen = user_rows.filter(pl.col("set") == part).sort("user_row", "item_id")
            item_ids, mask = padded(chosen, "user_row", "row", members.height, np.int64)
            labels, _ = padded(chosen, "user_row", "label", members.height, np.float32)
            tensors[f"{split}__{part}_items"] = torch.from_numpy(item_ids)
            tensors[f"{split}__{part}_labels"] = torch.from_numpy(labels)
            tensors[f"{split}__{part}_mask"] = torch.from_numpy(mask)
    info = {
        "dataset": spec.name,
        "task": spec.task,
        "user_fields": list(spec.user_fields),
        "item_fields": list(spec.item_fields),
        "item_multi_fields": list(spec.item_multi_fields),
        "vocab_sizes": {f: FIRST_VALUE_INDEX + by_field.get(f, empty).height for f in
                        (*spec.user_fields, *spec.item_fields, *spec.item_multi_fields)},
        "n_items": used_items.height,
        "n_users": {s: frames[f"users__{s}"].height for s in splits_present},
        "splits": splits_present,
        "backoff_min_count": backoff_min_count,
    }
    return frames, tensors, info


# -- Dagster asset ---------------------------------------------------------------------
import dagster as dg  # noqa: E402
from pydantic import Field  # noqa: E402

from assets.bundle import Bundle  # noqa: E402
from assets.specs import spec_for  # noqa: E402
from pipelines.outputs import bundle_output  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402


class TaskConfig(dg.Config):
    """How categorical values are encoded."""

    backoff_min_count: int = Field(default=BACKOFF_MIN_COUNT, description=(
        "A value of a backoff field (e.g. zip) held by fewer training users falls back to a prefix; 0 = off."))


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"pytorch", "safetensors"}, code_version="3",
    description="Encoded meta-learning tasks: padded support/query tensors with masks, vocabularies from training users only.",
)
def meta_tasks(context: dg.AssetExecutionContext, config: TaskConfig, clean_logs: Bundle, user_splits: Bundle) -> dg.Output[Bundle]:
    spec = spec_for(context.partition_key)
    frames, tensors, info = encode_tasks(clean_logs.frame("users"), clean_logs.frame("items"), user_splits.frames, spec,
                                         config.backoff_min_count)
    bundle = Bundle(frames=frames, tensors=tensors, info=info)
    shapes = {name: list(t.shape) for name, t in tensors.items()}
    return bundle_output(bundle, tensor_shapes=dg.MetadataValue.json(shapes), vocab_sizes=dg.MetadataValue.json(info["vocab_sizes"]))
