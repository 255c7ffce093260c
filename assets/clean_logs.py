"""Validated cleaning (paper, "Experimental Setup", step 3).

Users are dropped when a feature is blank, the age is missing or outside [10, 100],
or the location is garbled; interactions when malformed, out of range, duplicated,
or pointing at an unknown or dropped user or item; finally users with fewer than
two items (two clicked items for CTR). Every dropped row lands in `rejected` with its
source file, line, id, reason and offending value: nothing is silently lost.
"""


from dataclasses import dataclass

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


def split_by(
    frame: pl.DataFrame, bad: pl.Expr, reason: pl.Expr | str, value: pl.Expr, id_col: str, dataset: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split `frame` into (kept, rejected rows in REJECTED_SCHEMA) by the boolean `bad`."""
    flagged = frame.with_columns(_bad=bad.fill_null(True))
    reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
    rejected = flagged.filter(pl.col("_bad")).select(
        pl.lit(dataset).alias("dataset"),
        "source_file",
        "line",
        pl.col(id_col).cast(pl.String).alias("record_id"),
        reason_expr.cast(pl.String).alias("reason"),
        value.cast(pl.String).alias("value"),
    )
    return flagged.filter(~pl.col("_bad")).drop("_bad"), rejected.cast(REJECTED_SCHEMA)


def is_placeholder(column: str) -> pl.Expr:
    """True where the value is null, blank or a placeholder such as 'n/a'."""
    return pl.col(column).is_null() | pl.col(column).str.strip_chars().str.to_lowercase().is_in(PLACEHOLDERS)


def is_garbled_place(column: str) -> pl.Expr:
    """True where a place name is blank, a placeholder, mojibake, or has non-name characters."""
    text = pl.col(column).str.strip_chars()
    return is_placeholder(column) | text.str.contains(MOJIBAKE) | ~text.str.contains(PLACE_NAME)


def user_rules(spec: DatasetSpec, rules: CleaningRules) -> list[tuple[pl.Expr, str, pl.Expr]]:
    """The per-user rules of `spec`'s dataset as (bad, reason, offending value), in order."""
    age_text = pl.col("age").str.strip_chars()
    age = age_text.cast(pl.Int64, strict=False)
    checks: list[tuple[pl.Expr, str, pl.Expr]] = [
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
            checks.append((_garbled(part), f"garbled location ({name})", pl.col("location")))
    elif spec.name == "movielens":
        checks.append((~pl.col("zip").str.contains(ZIP_CODE).fill_null(False), "garbled zip code", pl.col("zip")))
    elif spec.name == "taobao":
        checks.append((_garbled(pl.col("city").str.strip_chars()), "garbled city", pl.col("city")))
    for field in spec.user_fields:
        if field not in ("age", "city", "state", "country"):
            checks.append((is_placeholder(field), f"blank {field}", pl.col(field)))
    return checks


def _garbled(text: pl.Expr) -> pl.Expr:
    """is_garbled_place for an expression rather than a column name."""
    lowered = text.str.to_lowercase()
    return (
        text.is_null()
        | lowered.is_in(PLACEHOLDERS)
        | text.str.contains(MOJIBAKE)
        | ~text.str.contains(PLACE_NAME)
    )


def clean_users(users: pl.DataFrame, spec: DatasetSpec, rules: CleaningRules) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Apply the user rules in order; return (users with typed features, rejected frames)."""
    rejected = []
    kept, dup = split_by(
        users, pl.col("user_id").is_duplicated() & (pl.col("line") != pl.col("line").min().over("user_id")),
        "duplicate user_id", pl.col("user_id"), "user_id", spec.name,
    )
    rejected.append(dup)
    for bad, reason, value in user_rules(spec, rules):
        kept, dropped = split_by(kept, bad, reason, value, "user_id", spec.name)
        rejected.append(dropped)
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
    ), rejected


def clean_items(items: pl.DataFrame, spec: DatasetSpec) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Drop duplicate item ids; blank item fields become null (encoded as missing later)."""
    kept, dup = split_by(
        items, pl.col("item_id").is_duplicated() & (pl.col("line") != pl.col("line").min().over("item_id")),
        "duplicate item_id", pl.col("item_id"), "item_id", spec.name,
    )
    single = [
        pl.when(is_placeholder(f) | (pl.col(f).str.strip_chars() == "0")).then(None).otherwise(pl.col(f).str.strip_chars()).alias(f)
        if f == "year" else
        pl.when(is_placeholder(f)).then(None).otherwise(pl.col(f).str.strip_chars()).alias(f)
        for f in spec.item_fields
    ]
    return kept.select("source_file", "line", "item_id", *single, *spec.item_multi_fields), [dup]


def clean_interactions(
    interactions: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame, raw_user_ids: pl.Series, spec: DatasetSpec
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Type-check labels and timestamps, drop duplicates and rows of unknown or dropped users/items."""
    name = spec.name
    rejected = []
    frame = interactions.with_columns(
        record=pl.concat_str(["user_id", "item_id"], separator="|"),
        _label=pl.col("label").str.strip_chars().cast(pl.Float64, strict=False),
        _ts=pl.col("ts").str.strip_chars().cast(pl.Int64, strict=False),
    )
    steps: list[tuple[pl.Expr, str, pl.Expr]] = [
        (pl.col("_label").is_null() | pl.col("_label").is_nan(), "label not a number", pl.col("label")),
        ((pl.col("_label") == 0) if name == "bookcrossing" else pl.lit(False),
         "implicit rating 0 (not an explicit 1-10 rating)", pl.col("label")),
        ((pl.col("_label") < spec.label_min) | (pl.col("_label") > spec.label_max) | (pl.col("_label") != pl.col("_label").round()),
         f"label outside {{{spec.label_min:g}..{spec.label_max:g}}}", pl.col("label")),
        (pl.col("ts").is_not_null() & pl.col("_ts").is_null(), "timestamp not an integer", pl.col("ts")),
        (~pl.col("user_id").is_in(raw_user_ids.implode()), "unknown user_id", pl.col("user_id")),
        (~pl.col("user_id").is_in(users["user_id"].implode()), "user dropped by cleaning", pl.col("user_id")),
        (~pl.col("item_id").is_in(items["item_id"].implode()), "unknown item_id", pl.col("item_id")),
    ]
    if spec.task == "ctr":
        # An impression log may show the same (user, item, time, click) line twice: a logging
        # duplicate. Repeated impressions at other times are real and are merged below.
        dup_key = ["user_id", "item_id", "ts", "label"]
    else:
        dup_key = ["user_id", "item_id"]
    for bad, reason, value in steps:
        frame, dropped = split_by(frame, bad, reason, value, "record", name)
        rejected.append(dropped)
    # Rows are in file and line order, so the first occurrence of a key is the one kept.
    frame, dropped = split_by(
        frame, ~pl.struct(dup_key).is_first_distinct(), "duplicate " + "/".join(dup_key), pl.col("record"), "record", name
    )
    rejected.append(dropped)
    frame = frame.select("source_file", "line", "user_id", "item_id", pl.col("_label").alias("label"), pl.col("_ts").alias("ts"))
    if spec.task == "ctr":
        frame = merge_impressions(frame)
    return frame, rejected


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
    users, dropped_users = split_by(
        users, pl.col("n") < rules.min_items, f"fewer than {rules.min_items} {unit}", pl.col("n"), "user_id", spec.name
    )
    keep_ids = users["user_id"].implode()
    interactions, dropped_rows = split_by(
        interactions.with_columns(record=pl.concat_str(["user_id", "item_id"], separator="|")),
        ~pl.col("user_id").is_in(keep_ids), f"user has fewer than {rules.min_items} {unit}",
        pl.col("user_id"), "record", spec.name,
    )
    return users.drop("n"), interactions.drop("record"), [dropped_users, dropped_rows]


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
