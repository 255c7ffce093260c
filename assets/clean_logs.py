"""Validated cleaning (paper, "Experimental Setup", step 3).

Users are dropped when a feature is blank, the age is missing or outside [10, 100],
or the location is garbled; interactions when malformed, out of range, duplicated,
or pointing at an unknown or dropped user or item; finally users with fewer than
two items (two clicked items for CTR). Every dropped row lands in `rejected` with its
source file, line, id, reason and offending value: nothing is silently lost.
"""


from dataclasses import dataclass

import numpy as np
import polars as pl

from assets.bundle import Bundle
from assets.specs import AGE_MAX, AGE_MIN, MIN_ITEMS_PER_USER, MOVIELENS_AGE_CODES, DatasetSpec

REJECTED_SCHEMA = {
    "dataset": pl.String,
    "source_file": pl.String,
    "line": pl.Int64,
    "record_id": pl.String,
    "reason": pl.String,
    "value": pl.String,
}
# Values that stand for "no value" in the raw files.
PLACEHOLDERS = ("", "n/a", "na", "null", "none", "unknown", "?", "-", ".", "x", "xxx", "n.a.")
# UTF-8 bytes read as ISO-8859-1: 'Ã'/'Â' followed by a continuation byte (e.g. 'Ã¼' for 'ü').
MOJIBAKE = r"[ÂÃ][\x{80}-\x{BF}]"
# Letters (any script), spaces and the punctuation place names use; anything else is garbled.
PLACE_NAME = r"^[\p{L}][\p{L} .'&()/-]*$"
ZIP_CODE = r"^\d{5}(-?\d{4})?$"


@dataclass(frozen=True)
class CleaningRules:
    """Bounds and thresholds of the cleaning step (defaults: the paper's)."""

    age_min: int = AGE_MIN
    age_max: int = AGE_MAX
    min_items: int = MIN_ITEMS_PER_USER


Rule = tuple[pl.Expr, str, pl.Expr]  # (row is bad, reason, offending value)


def rejected_rows(frame: pl.DataFrame, reason: pl.Expr, value: pl.Expr, record_id: pl.Expr, dataset: str) -> pl.DataFrame:
    """Rows of `frame` in REJECTED_SCHEMA (ids and values are built only for rejected rows)."""
    return frame.select(
        pl.lit(dataset).alias("dataset"),
        "source_file",
        "line",
        record_id.cast(pl.String).alias("record_id"),
        reason.cast(pl.String).alias("reason"),
        value.cast(pl.String).alias("value"),
    ).cast(REJECTED_SCHEMA)


def split_by_rules(
    frame: pl.DataFrame, rules: list[Rule], record_id: pl.Expr, dataset: str, drop: tuple[str, ...] = ()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split `frame` into (kept, rejected) in one pass; a row is charged to its first failing rule.

    A rule that evaluates to null (e.g. a comparison on a missing value) counts as failed.
    Columns in `drop` are left out of the kept rows without being copied.
    """
    if not rules:
        return frame.drop(*drop), rejected_rows(frame.clear(), pl.lit(""), pl.lit(""), record_id, dataset)
    # First pass over all rows computes only a small rule index; reasons and offending values
    # (strings) are built for the rejected rows alone.
    rule_index = pl.when(rules[0][0].fill_null(True)).then(pl.lit(0, dtype=pl.UInt8))
    for index, (bad, _, _) in enumerate(rules[1:], start=1):
        rule_index = rule_index.when(bad.fill_null(True)).then(pl.lit(index, dtype=pl.UInt8))
    flagged = frame.with_columns(_rule=rule_index.otherwise(None))
    failed = flagged.filter(pl.col("_rule").is_not_null())
    value = pl.when(pl.col("_rule") == 0).then(rules[0][2].cast(pl.String))
    for index, (_, _, offending) in enumerate(rules[1:], start=1):
        value = value.when(pl.col("_rule") == index).then(offending.cast(pl.String))
    reasons = {index: text for index, (_, text, _) in enumerate(rules)}
    reason = pl.col("_rule").replace_strict(reasons, return_dtype=pl.String)
    rejected = rejected_rows(failed, reason, value.otherwise(None), record_id, dataset)
    kept = flagged.lazy().filter(pl.col("_rule").is_null()).drop("_rule", *drop).collect()
    return kept, rejected


def is_placeholder(column: str) -> pl.Expr:
    """True where the value is null, blank or a placeholder such as 'n/a'."""
    return pl.col(column).is_null() | pl.col(column).str.strip_chars().str.to_lowercase().is_in(PLACEHOLDERS)


def user_rules(spec: DatasetSpec, rules: CleaningRules) -> list[Rule]:
    """The per-user rules of `spec`'s dataset as (bad, reason, offending value), in order."""
    age_text = pl.col("age").str.strip_chars()
    age = age_text.cast(pl.Int64, strict=False)
    checks: list[Rule] = [
        (pl.col("_repeated"), "duplicate user_id", pl.col("user_id")),  # see clean_users
        (is_placeholder("age"), "age missing", pl.col("age")),
        (age.is_null(), "age not an integer", pl.col("age")),
    ]
    if spec.name == "movielens":
        # ML-1M's age is a bucket code (1 = under 18, 18 = 18-24, ...), not an age in years.
        checks.append((~age.is_in(MOVIELENS_AGE_CODES), "age code not one of ML-1M's buckets", pl.col("age")))
    else:
        checks.append(
            ((age < rules.age_min) | (age > rules.age_max), f"age outside [{rules.age_min}, {rules.age_max}]", pl.col("age"))
        )
    if spec.name == "bookcrossing":
        parts = pl.col("location").str.split(",")
        checks.append((parts.list.len() != 3, "location not 'city, state, country'", pl.col("location")))
        for index, name in enumerate(("city", "state", "country")):
            part = parts.list.get(index, null_on_oob=True).str.strip_chars()
            checks.append((is_garbled_place(part), f"garbled location ({name})", pl.col("location")))
    elif spec.name == "movielens":
        checks.append((~pl.col("zip").str.contains(ZIP_CODE).fill_null(False), "garbled zip code", pl.col("zip")))
    elif spec.name == "taobao":
        checks.append((is_garbled_place(pl.col("city").str.strip_chars()), "garbled city", pl.col("city")))
    for field in spec.user_fields:
        if field not in ("age", "city", "state", "country"):
            checks.append((is_placeholder(field), f"blank {field}", pl.col(field)))
    return checks


def is_garbled_place(text: pl.Expr) -> pl.Expr:
    """True where a place name is missing, a placeholder, mojibake, or has non-name characters."""
    lowered = text.str.to_lowercase()
    return (
        text.is_null()
        | lowered.is_in(PLACEHOLDERS)
        | text.str.contains(MOJIBAKE)
        | ~text.str.contains(PLACE_NAME)
    )


def clean_users(users: pl.DataFrame, spec: DatasetSpec, rules: CleaningRules) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Apply the user rules; return (users with typed features, rejected frames)."""
    users = users.with_columns(repeated_rows(users, ["user_id"]))
    kept, rejected = split_by_rules(users, user_rules(spec, rules), pl.col("user_id"), spec.name, drop=("_repeated",))
    if spec.name == "bookcrossing":
        parts = pl.col("location").str.split(",")
        kept = kept.with_columns(
            parts.list.get(i).str.strip_chars().str.to_lowercase().alias(name)
            for i, name in enumerate(("city", "state", "country"))
        )
    kept = kept.with_columns(pl.col("age").str.strip_chars().cast(pl.Int64))
    columns = ["source_file", "line", "user_id", *spec.user_fields]
    return kept.select(columns).with_columns(
        pl.col(f).cast(pl.String).str.strip_chars() for f in spec.user_fields if f != "age"
    ), [rejected]


def clean_items(items: pl.DataFrame, spec: DatasetSpec) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Drop duplicate item ids; blank item fields become null (encoded as missing later)."""
    items = items.with_columns(repeated_rows(items, ["item_id"]))
    duplicate = (pl.col("_repeated"), "duplicate item_id", pl.col("item_id"))
    kept, dup = split_by_rules(items, [duplicate], pl.col("item_id"), spec.name, drop=("_repeated",))
    single = [
        pl.when(is_placeholder(f) | (pl.col(f).str.strip_chars() == "0")).then(None).otherwise(pl.col(f).str.strip_chars()).alias(f)
        if f == "year" else
        pl.when(is_placeholder(f)).then(None).otherwise(pl.col(f).str.strip_chars()).alias(f)
        for f in spec.item_fields
    ]
    return kept.select("source_file", "line", "item_id", *single, *spec.item_multi_fields), [dup]


def repeated_rows(frame: pl.DataFrame, keys: list[str]) -> pl.Series:
    """True for every row whose `keys` equal those of an earlier row (rows in file order).

    Hashes the keys first and compares exactly only rows whose hash repeats: an exact
    distinct-check over tens of millions of string rows costs several GB, the hash 8 bytes a row.
    """
    hashes = frame.select(pl.struct(keys).hash(seed=0)).to_series()
    suspects = hashes.filter(hashes.is_duplicated()).unique()
    candidates = frame.select(keys).with_row_index("_row").filter(hashes.is_in(suspects.implode()))
    repeated_at = candidates.filter(~pl.struct(keys).is_first_distinct())["_row"].to_numpy()
    flags = np.zeros(frame.height, dtype=bool)
    flags[repeated_at] = True
    return pl.Series("_repeated", flags)


RECORD_ID = pl.concat_str(["user_id", "item_id"], separator="|")  # an interaction's id in rejected_rows


def clean_interactions(
    interactions: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame, raw_user_ids: pl.Series, spec: DatasetSpec
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Type-check labels and timestamps, drop duplicates and rows of unknown or dropped users/items.

    Two passes over the (possibly tens of millions of) rows: the row rules, then duplicates
    among the survivors; neither copies the frame more than once.
    """
    label = pl.col("_label")
    frame = interactions.with_columns(
        _label=pl.col("label").str.strip_chars().cast(pl.Float64, strict=False),
        _ts=pl.col("ts").str.strip_chars().cast(pl.Int64, strict=False),
    )
    row_rules: list[Rule] = [
        (label.is_null() | label.is_nan(), "label not a number", pl.col("label")),
        ((label == 0) if spec.name == "bookcrossing" else pl.lit(False),
         "implicit rating 0 (not an explicit 1-10 rating)", pl.col("label")),
        ((label < spec.label_min) | (label > spec.label_max) | (label != label.round()),
         f"label outside {{{spec.label_min:g}..{spec.label_max:g}}}", pl.col("label")),
        (pl.col("ts").is_not_null() & pl.col("_ts").is_null(), "timestamp not an integer", pl.col("ts")),
        (~pl.col("user_id").is_in(raw_user_ids.implode()), "unknown user_id", pl.col("user_id")),
        (~pl.col("user_id").is_in(users["user_id"].implode()), "user dropped by cleaning", pl.col("user_id")),
        (~pl.col("item_id").is_in(items["item_id"].implode()), "unknown item_id", pl.col("item_id")),
    ]
    # The raw label and time strings are only needed as offending values of rejected rows.
    frame, rejected_rules = split_by_rules(frame, row_rules, RECORD_ID, spec.name, drop=("label", "ts"))
    if spec.task == "ctr":
        # An impression log may show the same (user, item, time, click) line twice: a logging
        # duplicate. Repeated impressions at other times are real and are merged below.
        dup_key, dup_name = ["user_id", "item_id", "_ts", "_label"], "user_id/item_id/ts/label"
    else:
        dup_key, dup_name = ["user_id", "item_id"], "user_id/item_id"
    # Rows are in file and line order, so the first occurrence of a key is the one kept.
    frame = frame.with_columns(repeated_rows(frame, dup_key))
    value = pl.concat_str(pl.col("_ts").cast(pl.String), pl.col("_label").cast(pl.String), separator=",", ignore_nulls=True) \
        if spec.task == "ctr" else RECORD_ID
    duplicate = (pl.col("_repeated"), f"duplicate {dup_name}", value)
    frame, rejected_dups = split_by_rules(frame, [duplicate], RECORD_ID, spec.name, drop=("_repeated",))
    frame = frame.rename({"_label": "label", "_ts": "ts"})
    if spec.task == "ctr":
        frame = merge_impressions(frame)
    return frame, [rejected_rules, rejected_dups]


def merge_impressions(frame: pl.DataFrame) -> pl.DataFrame:
    """Collapse repeated impressions of one item to one example: clicked if any was clicked.

    Keeps the earliest impression's file, line and time so the example traces to a raw line.
    """
    return (
        frame.sort("ts", "source_file", "line")
        .group_by("user_id", "item_id", maintain_order=True)
        .agg(pl.col("source_file").first(), pl.col("line").first(), pl.col("label").max(), pl.col("ts").first())
        .select("source_file", "line", "user_id", "item_id", "label", "ts")
    )


def drop_thin_users(
    users: pl.DataFrame, interactions: pl.DataFrame, spec: DatasetSpec, rules: CleaningRules
) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """Drop users with fewer than `min_items` items (clicked items for CTR), and their rows."""
    n_items = (pl.col("label") > 0).sum() if spec.task == "ctr" else pl.len()
    counts = interactions.group_by("user_id").agg(n=n_items.cast(pl.Int64))
    unit = "clicked items" if spec.task == "ctr" else "items"
    users = users.join(counts, on="user_id", how="left").with_columns(pl.col("n").fill_null(0))
    too_few = (pl.col("n") < rules.min_items, f"fewer than {rules.min_items} {unit}", pl.col("n"))
    users, dropped_users = split_by_rules(users, [too_few], pl.col("user_id"), spec.name)
    orphaned = (~pl.col("user_id").is_in(users["user_id"].implode()), f"user has fewer than {rules.min_items} {unit}", pl.col("user_id"))
    interactions, dropped_rows = split_by_rules(interactions, [orphaned], RECORD_ID, spec.name)
    return users.drop("n"), interactions, [dropped_users, dropped_rows]


def malformed_rejections(malformed: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """Malformed raw lines as rejected rows (the line's text is the offending value)."""
    return malformed.select(
        pl.lit(dataset).alias("dataset"), "source_file", "line",
        pl.lit(None, dtype=pl.String).alias("record_id"),
        pl.concat_str(pl.lit("malformed line: "), pl.col("reason")).alias("reason"),
        pl.col("text").alias("value"),
    ).cast(REJECTED_SCHEMA)


def clean_logs_from_raw(raw: Bundle, spec: DatasetSpec, rules: CleaningRules = CleaningRules()) -> Bundle:
    """Apply every cleaning rule to a raw bundle; return users, items, interactions, rejected."""
    users, rejected = clean_users(raw.frame("users"), spec, rules)
    items, rejected_items = clean_items(raw.frame("items"), spec)
    interactions, rejected_rows = clean_interactions(
        raw.frame("interactions"), users, items, raw.frame("users")["user_id"], spec
    )
    users, interactions, rejected_thin = drop_thin_users(users, interactions, spec, rules)
    rejected_all = pl.concat(
        [malformed_rejections(raw.frame("malformed"), spec.name), *rejected, *rejected_items, *rejected_rows, *rejected_thin]
    )
    frames = {
        "users": users.sort("user_id"),
        "items": items.sort("item_id"),
        "interactions": interactions.sort("user_id", "item_id"),
        "rejected": rejected_all,
    }
    if "truth" in raw.frames:
        frames["truth"] = raw.frame("truth").join(users.select("user_id"), on="user_id", how="semi").sort("user_id")
    return Bundle(frames=frames, info={"dataset": spec.name, "rules": rules.__dict__})


# -- Dagster asset ---------------------------------------------------------------------
import dagster as dg  # noqa: E402

from assets.specs import spec_for  # noqa: E402
from pipelines.outputs import bundle_output, markdown_table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402


def rejected_summary(rejected: pl.DataFrame) -> pl.DataFrame:
    """Rejected rows counted by source file and reason."""
    return rejected.group_by("source_file", "reason").agg(rows=pl.len()).sort("rows", descending=True)


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars", "duckdb"}, code_version="1",
    description="Validated cleaning: typed users, items and interactions; every dropped row kept with its reason.",
)
def clean_logs(context: dg.AssetExecutionContext, raw_logs: Bundle) -> dg.Output[Bundle]:
    bundle = clean_logs_from_raw(raw_logs, spec_for(context.partition_key))
    summary = rejected_summary(bundle.frame("rejected"))
    context.log.info(f"rejected {bundle.frame('rejected').height} rows; by reason:\n{summary}")
    return bundle_output(bundle, rejected_by_reason=markdown_table(summary))
