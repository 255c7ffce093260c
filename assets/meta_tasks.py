"""Meta-learning tasks: encoded features as padded tensors with masks, one task per user.

Vocabularies are built from the training users' data only (and the warm users', which
only the production protocol trains on): a value that only validation or test users have
maps to the unknown index, exactly as it will for a new user in service, so model
selection on validation users sees the same input distribution as the test.
Index 0 is padding (empty multi-hot slots, padded items); index 1 is unknown/missing.
The `warm` split holds one task per chunk of a warm user's history (assets/user_splits.py).

Tensors (U users of a split, S/Q = most support/query items of any user in it):
    item_fields            (N_items + 1, F_item)   int64, row 0 = padding item
    item_multi__<field>    (N_items + 1, M_field)  int64, 0-padded value lists, M_field <= the field's cap
                                                   (`capped_lists`; info["truncated_lists"] counts what it cut)
    <split>__user_fields   (U, F_user)             int64
    <split>__support_items (U, S)  int64 item rows (0 = padding); likewise query_items (U, Q)
    <split>__support_labels / query_labels  float32;  <split>__support_mask / query_mask  bool
"""


from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from assets.specs import MULTI_VALUES_LIMIT, DatasetSpec
from assets.user_splits import SPLIT_NAMES, WARM_SPLIT
from models.configs import FIRST_VALUE_INDEX, PAD_INDEX, UNKNOWN_INDEX

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


def padded(
    frame: pl.DataFrame, row_col: str, value_col: str, n_rows: int, dtype: np.dtype, width: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scatter `value_col` into a (n_rows, max_per_row) array by `row_col`, with a mask.

    `width` fixes the second dimension (a shard of a split padded to the whole split's width).
    """
    if frame.height == 0:
        return np.zeros((n_rows, width or 0), dtype), np.zeros((n_rows, width or 0), bool)
    ordered = frame.sort(row_col).with_columns(_pos=pl.int_range(pl.len()).over(row_col))
    if width is None:
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


def split_user_table(users: pl.DataFrame, user_split: pl.DataFrame, spec: DatasetSpec, backoff_min_count: int) -> pl.DataFrame:
    """Every split user's cleaned row with its split; rare backoff-field values backed off."""
    split_users = users.join(user_split, on="user_id", how="inner")
    training_users = split_users.filter(pl.col("split") == "train")
    for field, prefixes in spec.backoff:
        split_users = split_users.with_columns(
            backoff_values(split_users[field], training_users[field], prefixes, backoff_min_count).alias(field))
    return split_users


def vocabularies(split_users: pl.DataFrame, known_items: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Every field's vocabulary, from the vocabulary-source users and the items they rated."""
    vocabs = [build_vocab(split_users.filter(pl.col("split").is_in(VOCAB_SOURCE_SPLITS))[f], f) for f in spec.user_fields]
    vocabs += [build_vocab(known_items[f], f) for f in spec.item_fields]
    vocabs += [build_vocab(known_items[f].explode(), f) for f in spec.item_multi_fields]
    return pl.concat(vocabs)


def vocab_by_field(vocab: pl.DataFrame, spec: DatasetSpec) -> dict[str, pl.DataFrame]:
    """Each field's vocabulary rows; a field without values gets an empty one (every value UNKNOWN)."""
    present = {f: vocab.filter(pl.col("field") == f) for f in vocab["field"].unique().to_list()}
    empty = pl.DataFrame(schema=vocab.schema)
    return {f: present.get(f, empty) for f in (*spec.user_fields, *spec.item_fields, *spec.item_multi_fields)}


def capped_lists(exploded: pl.DataFrame, cap: int) -> tuple[pl.DataFrame, dict[str, int] | None]:
    """At most `cap` values per item of `exploded` (row, code; one line per value, in list order).

    An item with more keeps the `cap` values whose codes come first in the vocabulary (the
    values most frequent among the training users' items, ties by value: `build_vocab`), then
    values outside it (each embeds as UNKNOWN) by their place in the list; the kept values stay
    in list order. The embedding is the mean of the kept values'. Items within the cap are
    untouched. Returns the lines kept and, when an item was cut, {cap, longest, items_truncated,
    values_dropped}; else None.
    """
    lengths = exploded.group_by("row").len()
    longest = int(lengths["len"].max() or 0)
    if longest <= cap:
        return exploded, None
    # One int64 key per value: vocabulary order, UNKNOWN after every known code, then list position.
    order = pl.when(pl.col("code") == UNKNOWN_INDEX).then(pl.col("code").max() + 1).otherwise(pl.col("code"))
    position = pl.int_range(pl.len()).over("row")
    keyed = exploded.with_columns(_key=order * (longest + 1) + position)
    kept = keyed.filter(pl.col("_key").rank("ordinal").over("row") <= cap).drop("_key")
    cut = lengths.filter(pl.col("len") > cap)
    return kept, {"cap": cap, "longest": longest, "items_truncated": cut.height,
                  "values_dropped": int((cut["len"] - cap).sum())}


def item_arrays(used_items: pl.DataFrame, by_field: dict[str, pl.DataFrame], spec: DatasetSpec,
                ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """item_fields (N_items + 1, F_item) and item_multi__<field> (N_items + 1, M_field); row 0 = padding.

    Also returns, per multi-hot field whose lists were cut to the spec's cap, what was cut (`capped_lists`).
    """
    arrays: dict[str, np.ndarray] = {}
    truncated: dict[str, dict[str, int]] = {}
    single = used_items.select(encode(pl.col(f), by_field[f]).alias(f) for f in spec.item_fields)
    item_matrix = single.to_numpy().astype(np.int64).reshape(used_items.height, len(spec.item_fields))
    arrays["item_fields"] = np.vstack([np.zeros((1, item_matrix.shape[1]), np.int64), item_matrix])
    for field in spec.item_multi_fields:
        exploded = (
            used_items.with_row_index("row", offset=1)
            .select(pl.col("row").cast(pl.Int64), field)
            .explode(field)
            .drop_nulls(field)
            .with_columns(code=encode(pl.col(field), by_field[field]))
        )
        exploded, cut = capped_lists(exploded, spec.list_cap(field))
        if cut is not None:
            truncated[field] = cut
        arrays[f"item_multi__{field}"], _ = padded(exploded, "row", "code", used_items.height + 1, np.int64)
    return arrays, truncated


def truncation_warning(truncated: dict[str, dict[str, int]]) -> str | None:
    """One line naming each multi-hot field whose lists were cut to its cap, or None when none was."""
    if not truncated:
        return None
    parts = [f"{field}: {c['items_truncated']} items longer than {c['cap']} values (longest {c['longest']}) keep their "
             f"{c['cap']} most frequent, {c['values_dropped']} values dropped" for field, c in truncated.items()]
    return ("multi-valued item features cut to their cap (`max_values` in the spec raises it, up to "
            f"{MULTI_VALUES_LIMIT}): " + "; ".join(parts))


def split_members(split_users: pl.DataFrame, chunks: pl.DataFrame, split: str, first_row: int = 0) -> pl.DataFrame:
    """The split's tasks, one per (user, chunk), sorted, numbered from `first_row` (`user_row`)."""
    # One task per (user, chunk): cold-start users have one chunk, warm users several.
    members = (split_users.filter(pl.col("split") == split).join(chunks, on="user_id", how="inner")
               .sort("user_id", "chunk").with_row_index("user_row", offset=first_row))
    return members.with_columns(pl.col("user_row").cast(pl.Int64))


def split_arrays(
    members: pl.DataFrame, rows: pl.DataFrame, by_field: dict[str, pl.DataFrame], spec: DatasetSpec, warm: bool,
    widths: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """One split's arrays for `members` (from `split_members`), in their order.

    `rows`: item rows (user_id, chunk, item_id, row = item index, label, set). `widths` fixes
    the support/query widths (a shard padded to its whole split's); none: this split's longest.
    Returns user_index (warm only), user_fields, then <part>_items/_labels/_mask per part.
    """
    arrays: dict[str, np.ndarray] = {}
    local = members.with_columns(_local=pl.int_range(pl.len(), dtype=pl.Int64))
    if warm:
        # The chunks of one warm user share its identity: the models' fits (MF, kNN) and
        # AT-PAML's memory then see one user with all of its ratings, as the references do.
        arrays["user_index"] = members["user_id"].cast(pl.String).rank("dense").to_numpy().astype(np.int64) - 1
    codes = members.select(encode(pl.col(f), by_field[f]).alias(f) for f in spec.user_fields)
    arrays["user_fields"] = codes.to_numpy().astype(np.int64).reshape(members.height, len(spec.user_fields))
    user_rows = rows.join(local.select("user_id", "chunk", "_local"), on=["user_id", "chunk"], how="inner")
    for part in ("support", "query"):
        chosen = user_rows.filter(pl.col("set") == part).sort("_local", "item_id")
        width = None if widths is None else widths[part]
        arrays[f"{part}_items"], arrays[f"{part}_mask"] = padded(chosen, "_local", "row", members.height, np.int64, width)
        arrays[f"{part}_labels"], _ = padded(chosen, "_local", "label", members.height, np.float32, width)
    # The tensors' order in a bundle: items, labels, mask.
    return {k: arrays[k] for k in (*(["user_index"] if warm else []), "user_fields",
                                    *(f"{p}_{n}" for p in ("support", "query") for n in ("items", "labels", "mask")))}


def splits_present(user_split: pl.DataFrame) -> list[str]:
    """The paper's three splits, and `warm` when any user is warm."""
    return [s for s in (*SPLIT_NAMES, WARM_SPLIT) if s in SPLIT_NAMES or (user_split["split"] == s).any()]


def tasks_info(spec: DatasetSpec, by_field: dict[str, pl.DataFrame], n_items: int, n_users: dict[str, int],
               backoff_min_count: int, truncated: dict[str, dict[str, int]] | None = None) -> dict:
    """The JSON facts of an encoding: fields, vocabulary sizes, items and tasks per split, and
    `truncated_lists` (`item_arrays`) only when a multi-hot list was cut."""
    return {
        "dataset": spec.name,
        "task": spec.task,
        "user_fields": list(spec.user_fields),
        "item_fields": list(spec.item_fields),
        "item_multi_fields": list(spec.item_multi_fields),
        "vocab_sizes": {f: FIRST_VALUE_INDEX + by_field[f].height for f in
                        (*spec.user_fields, *spec.item_fields, *spec.item_multi_fields)},
        "n_items": n_items,
        # Tasks per split: one per user, except the warm users, whose histories are cut into chunks
        # of a cold-start user's size, one task each (the key keeps its name for stored bundles).
        "n_users": n_users,
        "splits": list(n_users),
        "backoff_min_count": backoff_min_count,
    } | ({"truncated_lists": truncated} if truncated else {})


def encode_tasks(
    users: pl.DataFrame, items: pl.DataFrame, splits: dict[str, pl.DataFrame], spec: DatasetSpec,
    backoff_min_count: int = 0,
) -> tuple[dict[str, pl.DataFrame], dict[str, "torch.Tensor"], dict]:
    """Encode cleaned users/items and the split assignment into task tensors.

    `backoff_min_count` > 1 backs rare values of the spec's `backoff` fields off to prefixes.
    Returns (frames: vocab, items index, users per split; tensors; info with vocab sizes).
    assets/sharded_tasks.py does the same one user range at a time.
    """
    import torch

    user_split, item_sets = splits["users"], splits["items"]
    known_users = user_split.filter(pl.col("split").is_in(VOCAB_SOURCE_SPLITS))
    known_rows = item_sets.join(known_users, on="user_id", how="semi")
    known_items = items.join(known_rows.select("item_id").unique(), on="item_id", how="semi")
    split_users = split_user_table(users, user_split, spec, backoff_min_count)
    vocab = vocabularies(split_users, known_items, spec)
    by_field = vocab_by_field(vocab, spec)

    used_items = items.join(item_sets.select("item_id").unique(), on="item_id", how="semi").sort("item_id")
    item_index = used_items.select("item_id", pl.int_range(1, used_items.height + 1, dtype=pl.Int64).alias("row"))
    arrays, truncated = item_arrays(used_items, by_field, spec)
    tensors: dict[str, torch.Tensor] = {k: torch.from_numpy(a) for k, a in arrays.items()}

    frames = {"vocab": vocab, "items": item_index}
    if "chunk" not in item_sets.columns:
        item_sets = item_sets.with_columns(chunk=pl.lit(0, dtype=pl.Int64))
    rows = item_sets.join(item_index, on="item_id", how="inner")
    chunks = item_sets.select("user_id", "chunk").unique()
    present = splits_present(user_split)
    for split in present:
        members = split_members(split_users, chunks, split)
        frames[f"users__{split}"] = members.select("user_id", "chunk", "user_row") if split == WARM_SPLIT else members.select("user_id", "user_row")
        arrays = split_arrays(members, rows, by_field, spec, split == WARM_SPLIT)
        tensors.update({f"{split}__{name}": torch.from_numpy(a) for name, a in arrays.items()})
    info = tasks_info(spec, by_field, used_items.height, {s: frames[f"users__{s}"].height for s in present}, backoff_min_count,
                      truncated)
    return frames, tensors, info


# -- Dagster asset ---------------------------------------------------------------------
import dagster as dg  # noqa: E402
from pydantic import Field  # noqa: E402

from assets.bundle import Bundle, tensor_file_shapes  # noqa: E402
from assets.specs import spec_for  # noqa: E402
from pipelines.outputs import bundle_output  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402


class TaskConfig(dg.Config):
    """How categorical values are encoded."""

    backoff_min_count: int = Field(default=BACKOFF_MIN_COUNT, ge=0, description=(
        "A value of a backoff field (e.g. zip) held by fewer training users falls back to a prefix; 0 = off."))


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"pytorch", "safetensors"}, code_version="4",
    description="Encoded meta-learning tasks: padded support/query tensors with masks, vocabularies from training users only.",
)
def meta_tasks(context: dg.AssetExecutionContext, config: TaskConfig, clean_logs: Bundle, user_splits: Bundle,
               paml: PamlResource) -> dg.Output[Bundle]:
    spec = spec_for(context.partition_key)
    if user_splits.parts:  # split in user-id ranges: encoded range by range into one tensor file
        from assets.sharded_tasks import encode_sharded, splits_of, tasks_bundle

        scratch = paml.scratch(context.run.run_id, f"meta_tasks-{context.partition_key}")
        tasks = encode_sharded(clean_logs.frame("users"), clean_logs.frame("items"), splits_of(user_splits), spec,
                               scratch / "tasks", config.backoff_min_count)
        bundle = tasks_bundle(tasks, scratch)
        shapes = tensor_file_shapes(bundle.tensor_file)
    else:
        frames, tensors, info = encode_tasks(clean_logs.frame("users"), clean_logs.frame("items"), user_splits.frames, spec,
                                             config.backoff_min_count)
        bundle = Bundle(frames=frames, tensors=tensors, info=info)
        shapes = {name: list(t.shape) for name, t in tensors.items()}
    truncated = bundle.info.get("truncated_lists", {})
    if note := truncation_warning(truncated):
        context.log.warning(note)
    return bundle_output(bundle, tensor_shapes=dg.MetadataValue.json(shapes),
                         vocab_sizes=dg.MetadataValue.json(bundle.info["vocab_sizes"]),
                         truncated_lists=dg.MetadataValue.json(truncated))
