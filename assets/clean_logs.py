"""Validated cleaning (paper, "Experimental Setup", step 3).

Every field is trimmed and checked against the domain its dataset's spec file gives it (the
built-ins' in assets/builtin_specs/; the rules themselves in `assets/domains.py`): users are dropped when a feature is missing, outside its domain (ML-1M gender M/F,
occupation 0-20, age buckets; ages in [10, 100]) or garbled (broken text, not a foreign
format); interactions when malformed, out of range, implausibly timed, duplicated, or
pointing at an unknown or dropped user or item; finally users with fewer than two items
(two clicked items for CTR). Every dropped row lands in `rejected` with its source file,
line, id, reason and offending value, and the `accounting` frame proves it per raw file:
rows read = rows kept + rows rejected. A click log of positives only whose spec says
`negatives_per_positive` then gets its sampled negatives (assets/negative_sampling.py): rows
added to the kept interactions, never read, so outside the accounting and counted in the info.
"""


from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from assets.bundle import Bundle
from assets.domains import (
    FIELD_LABELS, FOOTER_HINT, MISSING_MARKERS, SECOND_HEADER_HINT, THOUSANDS_HINT, THOUSANDS_VALUE, UNICODE_FORM_HINT,
    EpochSeconds,
    Identifier, Parts, Rule, export_reason, field_rules, id_rules, is_missing, kept_missing_rules, missing_value,
    parts_columns, parts_rules,
)
from assets.negative_sampling import sample_negatives
from assets.raw_files import BLANK_LINE
from assets.specs import DATASETS, MIN_ITEMS_PER_USER, DatasetSpec, NumericField

REJECTED_SCHEMA = {
    "dataset": pl.String,
    "source_file": pl.String,
    "line": pl.Int64,
    "record_id": pl.String,
    "reason": pl.String,
    "value": pl.String,
}
# Placeholders an item field may hold instead of a value (they become missing, not rejections): every
# missing marker of a user field ('nan' as pandas writes one, Excel's '#N/A') and a few more.
ITEM_PLACEHOLDERS = (*MISSING_MARKERS, "unknown", ".")


class CleaningError(ValueError):
    """Cleaning left nothing to learn from, or lost rows; the message names files and reasons."""


@dataclass(frozen=True)
class CleaningRules:
    """Thresholds of the cleaning step (default: the paper's); field domains come from the dataset's spec."""

    min_items: int = MIN_ITEMS_PER_USER


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
    A rule's reason is a text or an expression (e.g. naming what is broken in the value).
    Columns in `drop` are left out of the kept rows without being copied.
    """
    if not rules:
        return frame.drop(*drop), rejected_rows(frame.clear(), pl.lit(""), pl.lit(""), record_id, dataset)
    # First pass over all rows computes only a small rule index; reasons and offending values
    # (strings) are built for the rejected rows alone.
    rule_index = pl.when(rules[0][0].fill_null(True)).then(pl.lit(0, dtype=pl.UInt16))
    for index, (bad, _, _) in enumerate(rules[1:], start=1):
        rule_index = rule_index.when(bad.fill_null(True)).then(pl.lit(index, dtype=pl.UInt16))
    flagged = frame.with_columns(_rule=rule_index.otherwise(None))
    failed = flagged.filter(pl.col("_rule").is_not_null())

    def by_rule(position: int) -> pl.Expr:
        chain = pl.when(pl.col("_rule") == 0).then(pl.lit(rules[0][position]) if isinstance(rules[0][position], str)
                                                  else rules[0][position].cast(pl.String))
        for index, rule in enumerate(rules[1:], start=1):
            part = rule[position]
            chain = chain.when(pl.col("_rule") == index).then(pl.lit(part) if isinstance(part, str) else part.cast(pl.String))
        return chain.otherwise(None)

    rejected = rejected_rows(failed, by_rule(1), by_rule(2), record_id, dataset)
    kept = flagged.lazy().filter(pl.col("_rule").is_null()).drop("_rule", *drop).collect()
    return kept, rejected


def trim_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text field without surrounding whitespace (ids too: ' 12 ' is user 12)."""
    return frame.with_columns(
        pl.col(name).str.strip_chars() for name, dtype in frame.schema.items() if dtype == pl.String and name != "source_file"
    )


def item_id_domain(spec: DatasetSpec) -> Identifier:
    """What an item id of `spec`'s dataset must look like (any non-blank text unless its spec says digits)."""
    return spec.item_id_domain or Identifier()


def time_domain(spec: DatasetSpec) -> EpochSeconds | None:
    """The plausible interaction times of `spec`'s dataset, or None for a log without times."""
    return spec.time_domain


def numeric_value(field: NumericField) -> pl.Expr:
    """A numeric feature as a number (an integer feature: Int64), or as its bucket's label when the spec gives bins.

    Out-of-bounds values were rejected (users) or become missing (items) before this.
    """
    number = pl.col(field.name).cast(pl.String).str.strip_chars().cast(pl.Int64 if field.integer else pl.Float64, strict=False)
    number = pl.when(number.is_between(field.low, field.high)).then(number).otherwise(None)
    if not field.bins:
        return number.alias(field.name)
    # left_closed: [a, b) buckets; the last one, [edge, inf), holds `high` itself.
    return number.cut(list(field.bins), labels=list(field.labels()), left_closed=True).cast(pl.String).alias(field.name)


def user_rules(spec: DatasetSpec, rules: CleaningRules) -> list[Rule]:
    """The per-user rules of `spec`'s dataset as (bad, reason, offending value), in order."""
    checks: list[Rule] = duplicate_rules("user_id")  # see clean_users
    for field, domain in spec.user_domains:
        if isinstance(domain, Parts):
            checks += parts_rules(field, domain)
        elif field in spec.user_keep_missing:
            checks += kept_missing_rules(field, domain, FIELD_LABELS.get(field))
        else:
            checks += field_rules(field, domain, FIELD_LABELS.get(field))
    return checks


def clean_users(users: pl.DataFrame, spec: DatasetSpec, rules: CleaningRules) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Apply the user rules; return (users with typed features, rejected frames)."""
    users = with_repeats(trim_text(users), "user_id")
    kept, rejected = split_by_rules(users, user_rules(spec, rules), pl.col("user_id"), spec.name, drop=REPEAT_COLUMNS)
    for field, domain in spec.user_domains:
        if isinstance(domain, Parts):
            kept = kept.with_columns(parts_columns(field, domain))
    numeric = {f.name: numeric_value(f) for f in spec.numeric if f.name in spec.user_fields}
    columns = ["source_file", "line", "user_id", *spec.user_fields]
    domains = dict(spec.user_domains)
    value = lambda f: numeric.get(f, pl.col(f).cast(pl.String).str.strip_chars())  # noqa: E731
    # A kept missing value ('n/a', blank) is null: the model's UNKNOWN, no value of its own.
    return kept.select(columns).with_columns(
        pl.when(missing_value(f, domains[f])).then(None).otherwise(value(f)).alias(f) if f in spec.user_keep_missing
        else value(f) for f in spec.user_fields
    ), [rejected]


def attach_item_details(
    items: pl.DataFrame, details: pl.DataFrame | None, spec: DatasetSpec
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]:
    """Give every item the fields of its details row (MeLU's movies_extrainfos.dat for ML-1M).

    A details row whose item_id repeats an earlier one, or names no item, is rejected; items
    without details get missing fields. Returns (items, details rows used, rejected).
    Without details, item fields the items lack are missing.
    """
    fields = (*spec.item_fields, *spec.item_multi_fields)
    empty = {f: pl.lit(None, dtype=pl.String) for f in spec.item_fields} | {
        f: pl.lit([], dtype=pl.List(pl.String)) for f in spec.item_multi_fields}
    if details is None:
        return items.with_columns(empty[f].alias(f) for f in fields if f not in items.columns), None, \
            rejected_rows(items.clear(), pl.lit(""), pl.lit(""), pl.lit(""), spec.name)
    details = with_repeats(trim_text(details), "item_id")
    item_file = items["source_file"][0] if items.height else "items"
    rules: list[Rule] = [
        *field_rules("item_id", item_id_domain(spec)),
        *duplicate_rules("item_id"),
        (~pl.col("item_id").is_in(items["item_id"].implode()), f"item_id not in {item_file}", pl.col("item_id")),
    ]
    used, rejected = split_by_rules(details, rules, pl.col("item_id"), spec.name, drop=REPEAT_COLUMNS)
    detail_fields = [f for f in fields if f in used.columns]
    joined = items.drop(*[f for f in detail_fields if f in items.columns]).join(
        used.select("item_id", *detail_fields), on="item_id", how="left", maintain_order="left")
    joined = joined.with_columns(
        pl.col(f).fill_null(pl.lit([], dtype=pl.List(pl.String))) for f in spec.item_multi_fields if f in detail_fields
    ).with_columns(empty[f].alias(f) for f in fields if f not in joined.columns)
    return joined, used.select("source_file", "line", "item_id"), rejected


def clean_items(
    items: pl.DataFrame, spec: DatasetSpec, details: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame | None, list[pl.DataFrame], dict[str, dict]]:
    """Drop items with a missing or repeated id; attach details; placeholder fields become null.

    Returns (items, details rows used or None, rejected frames, `unread_numbers` of the kept items).
    """
    items = with_repeats(trim_text(items), "item_id")
    rules = [*field_rules("item_id", item_id_domain(spec)), *duplicate_rules("item_id")]
    kept, rejected = split_by_rules(items, rules, pl.col("item_id"), spec.name, drop=REPEAT_COLUMNS)
    kept, used_details, rejected_details = attach_item_details(kept, details, spec)
    # A placeholder, or a value the spec lists as missing for that feature (Book-Crossing's year 0), is missing.
    missing = {f: [*ITEM_PLACEHOLDERS, *(m.lower() for m in values)] for f, values in spec.item_missing}
    placeholder = lambda f: pl.col(f).is_null() | pl.col(f).str.strip_chars().str.to_lowercase().is_in(  # noqa: E731
        missing.get(f, ITEM_PLACEHOLDERS))
    single = [pl.when(placeholder(f)).then(None).otherwise(pl.col(f).str.strip_chars()).alias(f) for f in spec.item_fields]
    # A numeric item feature out of bounds or not a number is missing (the item stays: items are not profiles).
    numeric = {f.name: numeric_value(f).cast(pl.String) for f in spec.numeric if f.name in spec.item_fields}
    single = [numeric.get(expr.meta.output_name(), expr) for expr in single]
    unread = unread_numbers(kept, {f.name: f for f in spec.numeric if f.name in spec.item_fields}, placeholder)
    # A multi feature drops only the values its spec lists as missing: placeholders stay values, as they always were.
    listed = dict(spec.item_missing)
    multi = [pl.col(f).list.eval(pl.element().filter(
        ~pl.element().str.strip_chars().str.to_lowercase().is_in([m.lower() for m in listed[f]]))).alias(f)
        if f in listed else pl.col(f) for f in spec.item_multi_fields]
    # Attributes only people read (a title) ride along; the model sees item_fields and item_multi_fields.
    shown = [f for f in spec.display_fields if f in kept.columns and f not in (*spec.item_fields, *spec.item_multi_fields)]
    return (kept.select("source_file", "line", "item_id", *single, *multi, *shown), used_details,
            [rejected, rejected_details], unread)


UNREAD_EXAMPLES = 3  # values shown per feature in `unread_numbers`


def unread_numbers(items: pl.DataFrame, fields: dict[str, NumericField], placeholder) -> dict[str, dict]:
    """Per numeric item feature, the kept items whose value is given (not a placeholder: `placeholder(name)`)
    but is not a number within the spec's bounds, so that it becomes missing (the item stays): {feature:
    {"items": n, "values": the first few such values}}, only for features with any. Such values are not
    rejected rows, but a price written `4,50` or `1,299` must not vanish without a count."""
    found = {}
    for name, field in fields.items():
        if name not in items.columns:
            continue
        lost = items.filter(~placeholder(name) & numeric_value(field).is_null())
        if lost.height:
            found[name] = {"items": lost.height, "values": lost[name].cast(pl.String).head(UNREAD_EXAMPLES).to_list()}
    return found


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


REPEAT_COLUMNS = ("_repeated", "_differs")  # added by `with_repeats`, dropped after the rules


def duplicate_rules(key: str) -> list[Rule]:
    """The rules of a feature table's repeated id (columns from `with_repeats`): only the first row of an id
    is read (kept, unless a rule rejects it); a later row is rejected, and one whose values differ from the
    first row's says so and shows both: a table with two profiles for one id has no silent winner."""
    return [
        (pl.col("_repeated") & pl.col("_differs").is_not_null(), f"duplicate {key} with other values than its first row",
         pl.col("_differs")),
        (pl.col("_repeated"), f"duplicate {key}", pl.col(key)),
    ]


def with_repeats(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """`frame` (rows in file order) with `_repeated` (`repeated_rows` on `key`) and `_differs`: for a repeated
    row whose other values differ from its key's first row, what differs, e.g. "age '41', plan 'c' (line 3:
    age '40', plan 'b')"; null for every other row."""
    repeated = repeated_rows(frame, [key])
    differs = pl.Series("_differs", [None] * frame.height, dtype=pl.String)
    if repeated.any():
        fields = [c for c in frame.columns if c not in ("source_file", "line", key)]
        rows = frame.with_row_index("_row").filter(pl.col(key).is_in(frame.filter(repeated)[key].implode()))
        text = rows.select("_row", "line", key, *[shown_value(c, frame.schema[c]) for c in fields])
        first = text.filter(pl.col(key).is_first_distinct()).drop("_row")
        later = text.filter(~pl.col(key).is_first_distinct()).join(first, on=key, suffix="_first", maintain_order="left")
        found = later.select("_row", pl.format("{} (line {}: {})", differing(fields, ""), "line_first",
                                               differing(fields, "_first")).alias("_differs"),
                             differing(fields, "").alias("_this"))
        found = found.filter(pl.col("_this") != "")
        differs = differs.scatter(found["_row"], found["_differs"])
    return frame.with_columns(repeated, differs)


def differing(fields: list[str], suffix: str) -> pl.Expr:
    """The fields whose value differs from `<field>_first`, with the value of `<field><suffix>`: "age '41', plan 'c'"."""
    return pl.concat_str([pl.when(pl.col(c).ne_missing(pl.col(f"{c}_first"))).then(
        pl.format("{} {}", pl.lit(c), pl.col(f"{c}{suffix}"))) for c in fields], separator=", ", ignore_nulls=True)


def shown_value(column: str, dtype: pl.DataType) -> pl.Expr:
    """A raw field as a message shows it: quoted text, a list as ['a', 'b'], a missing value as null."""
    value = pl.col(column)
    if isinstance(dtype, pl.List):
        value = pl.concat_str(pl.lit("["), value.list.eval(pl.format("'{}'", pl.element())).list.join(", "), pl.lit("]"))
    else:
        value = pl.format("'{}'", value.cast(pl.String))
    return pl.when(pl.col(column).is_null()).then(pl.lit("null")).otherwise(value).alias(column)


LABEL_GRID_TOLERANCE = 1e-6  # in steps: 4.5 read as 4.4999999 is still a half-star rating
RECORD_ID = pl.concat_str(["user_id", "item_id"], separator="|")  # an interaction's id in rejected_rows


def id_reason(reason: str, value: pl.Expr, known: pl.Series | None = None) -> pl.Expr:
    """`reason` for an id, saying so when the id is a number written with thousands separators ('1,234'), or
    when it matches one of the `known` ids once both are in Unicode's NFC form: the message shows both as the
    same text, so without the hint the rejection reads as a bug."""
    hinted = pl.when(value.str.contains(THOUSANDS_VALUE)).then(pl.lit(f"{reason} ({THOUSANDS_HINT})"))
    if known is not None:
        other = ~value.str.contains(r"^[\x00-\x7f]*$") & value.str.normalize("NFC").is_in(known.str.normalize("NFC").implode())
        hinted = hinted.when(other).then(pl.lit(f"{reason} ({UNICODE_FORM_HINT})"))
    return hinted.otherwise(pl.lit(reason))


def interaction_rules(spec: DatasetSpec, users: pl.DataFrame, items: pl.DataFrame, raw_user_ids: pl.Series) -> list[Rule]:
    """Rules of one interaction row, in order: ids, label, time, then users and items it names."""
    label = pl.col("_label")
    rules: list[Rule] = [
        (is_missing("user_id"), "user_id missing", pl.col("user_id")),
        (is_missing("item_id"), "item_id missing", pl.col("item_id")),
        *id_rules("user_id"), *id_rules("item_id"),
        (is_missing("label"), "label missing", pl.col("label")),
        (label.is_null() | label.is_nan(), export_reason("label not a number", pl.col("label")), pl.col("label")),
    ]
    for implicit in spec.implicit_labels:  # e.g. Book-Crossing's 0: the user saw the book, did not rate it
        rules.append((label == implicit, f"implicit rating {implicit:g} (not an explicit {spec.label_min:g}-{spec.label_max:g} rating)",
                      pl.col("label")))
    steps = (label - spec.label_min) / spec.label_step
    rules.append(((label < spec.label_min) | (label > spec.label_max) | ((steps - steps.round()).abs() > LABEL_GRID_TOLERANCE),
                  f"label outside {{{spec.label_range_text()}}}", pl.col("label")))
    if (times := time_domain(spec)) is not None:
        rules += field_rules("ts", times, FIELD_LABELS["ts"])
    else:  # a dataset without times (Book-Crossing) may still carry them
        rules.append((pl.col("ts").is_not_null() & pl.col("_ts").is_null(),
                      export_reason("timestamp not an integer", pl.col("ts"), time=True), pl.col("ts")))
    rules += [
        (~pl.col("user_id").is_in(raw_user_ids.implode()), id_reason("unknown user_id", pl.col("user_id"), raw_user_ids),
         pl.col("user_id")),
        (~pl.col("user_id").is_in(users["user_id"].implode()), "user dropped by cleaning", pl.col("user_id")),
        (~pl.col("item_id").is_in(items["item_id"].implode()), id_reason("unknown item_id", pl.col("item_id"), items["item_id"]),
         pl.col("item_id")),
    ]
    return rules


def clean_interactions(
    interactions: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame, raw_user_ids: pl.Series, spec: DatasetSpec
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Type-check labels and timestamps, drop duplicates and rows of unknown or dropped users/items.

    Two passes over the (possibly tens of millions of) rows: the row rules, then duplicates
    among the survivors; neither copies the frame more than once.
    """
    frame = trim_text(interactions).with_columns(
        _label=pl.col("label").cast(pl.Float64, strict=False),
        _ts=pl.col("ts").cast(pl.Int64, strict=False),
    )
    row_rules = interaction_rules(spec, users, items, raw_user_ids.str.strip_chars())
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
    duplicates = [(pl.col("_repeated"), f"duplicate {dup_name}", value)]
    drop = ("_repeated",)
    # A dataset added by a spec is told which rating was kept and which dropped; the built-ins' rejected
    # rows stay as they were (their reasons are compared across versions).
    if spec.task == "rating" and spec.name not in DATASETS:
        frame = frame.with_columns(other_ratings(frame, dup_key))
        duplicates.insert(0, (pl.col("_repeated") & pl.col("_other_rating").is_not_null(), OTHER_RATING, pl.col("_other_rating")))
        drop += ("_other_rating",)
    frame, rejected_dups = split_by_rules(frame, duplicates, RECORD_ID, spec.name, drop=drop)
    frame = frame.rename({"_label": "label", "_ts": "ts"})
    rejected = [rejected_rules, rejected_dups]
    if spec.task == "ctr":
        frame, merged = merge_impressions(frame, spec.name)
        rejected.append(merged)
    return frame, rejected


OTHER_RATING = "duplicate user_id/item_id with another rating than its first row"


def other_ratings(frame: pl.DataFrame, keys: list[str]) -> pl.Series:
    """`_other_rating`: for a repeated row (`_repeated`) whose rating differs from its key's first row's, both,
    e.g. "rating 2 (line 3: rating 4, kept)" (the first row's file named too when it is another); null for
    every other row."""
    differs = pl.Series("_other_rating", [None] * frame.height, dtype=pl.String)
    if not frame["_repeated"].any():
        return differs
    shown = pl.when(pl.col("_label") == pl.col("_label").round()).then(pl.col("_label").cast(pl.Int64, strict=False).cast(pl.String)) \
        .otherwise(pl.col("_label").cast(pl.String))
    rows = (frame.with_row_index("_row").join(frame.filter("_repeated").select(keys).unique(), on=keys, how="semi",
                                              maintain_order="left")
            .select("_row", "source_file", "line", *keys, "_repeated", shown.alias("_shown")))
    first = rows.filter(~pl.col("_repeated")).drop("_row", "_repeated")
    later = rows.filter("_repeated").join(first, on=keys, suffix="_first", maintain_order="left")
    found = later.filter(pl.col("_shown") != pl.col("_shown_first")).select(
        "_row", pl.format("rating {} ({}line {}: rating {}, kept)", "_shown",
                          pl.when(pl.col("source_file_first") != pl.col("source_file"))
                          .then(pl.format("{} ", "source_file_first")).otherwise(pl.lit("")),
                          "line_first", "_shown_first").alias("_other_rating"))
    return differs.scatter(found["_row"], found["_other_rating"])


MERGED_IMPRESSION = "repeated impression, merged into the user's first impression of the item (clicked if any was)"


def merge_impressions(frame: pl.DataFrame, dataset: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Collapse repeated impressions of one item to one example: clicked if any was clicked.

    Keeps the earliest impression's file, line and time so the example traces to a raw line;
    the later impressions are returned as rejected rows (merged), so every raw row is accounted for.
    """
    ordered = frame.sort("ts", "source_file", "line").with_columns(
        _first=pl.int_range(pl.len()).over("user_id", "item_id") == 0
    )
    merged = (
        ordered.filter("_first").drop("_first")
        .join(ordered.group_by("user_id", "item_id").agg(_clicked=pl.col("label").max()), on=["user_id", "item_id"],
              maintain_order="left")
        .with_columns(pl.col("_clicked").alias("label")).drop("_clicked")
        .select("source_file", "line", "user_id", "item_id", "label", "ts")
    )
    absorbed = ordered.filter(~pl.col("_first"))
    value = pl.concat_str(pl.col("ts").cast(pl.String), pl.col("label").cast(pl.String), separator=",")
    return merged, rejected_rows(absorbed, pl.lit(MERGED_IMPRESSION), value, RECORD_ID, dataset)


def drop_thin_users(
    users: pl.DataFrame, interactions: pl.DataFrame, spec: DatasetSpec, rules: CleaningRules
) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """Drop users with fewer than `min_items` items (clicked items for CTR), and their rows."""
    n_items = (pl.col("label") > 0).sum() if spec.task == "ctr" else pl.len()
    counts = interactions.group_by("user_id").agg(n=n_items.cast(pl.Int64))
    unit = "clicked items" if spec.task == "ctr" else "items"
    users = users.join(counts, on="user_id", how="left", maintain_order="left").with_columns(pl.col("n").fill_null(0))
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


# The reasons of rejected rows that an export's extra lines get, only as reasons without a hint of their own: a
# line with another number of fields, an id missing (notes and totals: 'Source: ...', 'Total,,,'), and under the
# header a label missing or not a number too (a second header row names no ids: ',,mean'; or other words: 'id,id,value').
MALFORMED_FIELDS = r"^malformed line: expected \d+ fields [^()]*$"
NOTE_REASONS = ("user_id missing", "item_id missing")
HEADER_REASONS = (*NOTE_REASONS, "label missing", "label not a number")
FOOTER_LINES = 5  # at most this many rejected lines at a file's end are taken for notes (more are data gone wrong)
WORD = r"\p{L}"  # a header word or a note holds a letter ...
NO_WORD = r"\d"  # ... and a column name no digit (a data row's id or number does)


def raw_tables(raw: Bundle) -> list[tuple[pl.LazyFrame, pl.Expr, pl.Expr]]:
    """Each raw table and the malformed lines, with what makes a line's `fields` (its text fields as a list; a
    malformed line's text) and whether it is `blank`."""
    frames = [raw.frame(name) for name in ("interactions", "users", "items", "item_details") if name in raw.frames]
    tables = [(frame.lazy(), pl.concat_list([pl.col(c).cast(pl.String) for c, t in frame.schema.items()
                                             if c not in ("source_file", "line") and t == pl.String] or [pl.lit(None, pl.String)]),
               pl.lit(False)) for frame in frames]
    return [*tables, (raw.frame("malformed").lazy(), pl.concat_list("text"), pl.col("reason") == BLANK_LINE)]


def export_rows(rejected: pl.DataFrame, raw: Bundle) -> pl.DataFrame:
    """`rejected` with the reason of a row that is most likely no data but an export's extra line saying so, in a
    text file with a header: a second header row (`SECOND_HEADER_HINT`: the lines right under the header whose
    fields are words without digits or empty), or notes at the end (`FOOTER_HINT`: at most FOOTER_LINES lines
    holding a letter, after the file's last other line, blank lines aside; not a line cut short whose first field
    is an id of another row of the file). Only rows rejected for a missing or
    unread id or label, or a wrong number of fields, are looked at (notes: an id missing or a wrong number of
    fields): a row is never rejected for looking so."""
    malformed = pl.col("reason").str.contains(MALFORMED_FIELDS)
    candidates = rejected.with_row_index("_order").filter(pl.col("reason").is_in(HEADER_REASONS) | malformed)
    if not candidates.height:
        return rejected
    tables = raw_tables(raw)
    keys = candidates.select("source_file", "line").lazy()
    # The fields of the candidates' lines alone (a line read into two tables, one file as both, once).
    fields = (pl.concat([frame.join(keys, on=["source_file", "line"], how="semi").select("source_file", "line", fields=made)
                         for frame, made, _ in tables]).unique(["source_file", "line"], keep="first"))
    files = candidates["source_file"].unique().implode()
    lines = pl.concat([frame.filter(pl.col("source_file").is_in(files)).select("source_file", "line", blank=blank)
                       for frame, _, blank in tables])
    text = pl.col("fields").list.eval(pl.element().fill_null("").str.strip_chars())
    missing = pl.element().str.to_lowercase().is_in(MISSING_MARKERS)
    # A line with fewer fields than the header whose first field is an id of another row of its file ('u1,i') is
    # a data line cut off, not a note: it keeps its plain reason.
    counts = pl.col("reason").str.extract_groups(r"expected (?<n>\d+) fields separated by '(?<sep>.+?)', found (?<found>\d+)")
    ids = pl.concat([frame.filter(pl.col("source_file").is_in(files))
                     .select("source_file", _id=pl.col(c).cast(pl.String))
                     for frame, _, _ in tables[:-1] for c in ("user_id", "item_id") if c in frame.collect_schema().names()]
                    or [pl.LazyFrame(schema={"source_file": pl.String, "_id": pl.String})]).unique()
    first = pl.col("fields").list.first().str.split(pl.col("sep")).list.first().str.strip_chars()
    cut = (candidates.lazy().filter(malformed).join(fields, on=["source_file", "line"], how="left")
           .with_columns(counts.alias("_counts")).unnest("_counts")
           .filter(pl.col("found").cast(pl.Int64) < pl.col("n").cast(pl.Int64))
           .with_columns(_id=first).join(ids, on=["source_file", "_id"], how="semi").select("_order"))
    looks = candidates.lazy().join(fields, on=["source_file", "line"], how="left").join(cut, on="_order", how="anti").select(
        "_order", "source_file", "line",
        _headerish=text.list.eval(missing | (pl.element().str.contains(WORD) & ~pl.element().str.contains(NO_WORD))).list.all()
        & text.list.eval(~missing).list.any(),
        _noteish=(pl.col("reason").is_in(NOTE_REASONS) | malformed) & text.list.eval(pl.element().str.contains(WORD)).list.any(),
    ).collect()
    # Only in a text file with a header (no row or line read at line 1), as exports write them: not in a Parquet or
    # JSON lines file, nor in a file without one (ML-1M's), whose odd lines are data gone wrong.
    first = lines.group_by("source_file").agg(_first=pl.col("line").min())
    looks = looks.lazy().join(first.filter(pl.col("_first") == 2), on="source_file", how="semi")
    # Second header rows: the run of such rows from line 2.
    run = (looks.filter("_headerish").sort("source_file", "line")
           .filter(pl.col("line") - 2 == pl.int_range(pl.len()).over("source_file"))
           .select("_order", _hint=pl.lit(SECOND_HEADER_HINT)))
    # Notes: the rows after the file's last line that is neither such a row nor blank.
    notes = looks.filter("_noteish")
    last = (lines.filter(~pl.col("blank")).join(notes, on=["source_file", "line"], how="anti")
            .group_by("source_file").agg(_last=pl.col("line").max()))
    tail = (notes.join(last, on="source_file", how="left").filter(pl.col("line") > pl.col("_last").fill_null(0))
            .filter(pl.len().over("source_file") <= FOOTER_LINES).join(run, on="_order", how="anti")
            .select("_order", _hint=pl.lit(FOOTER_HINT)))
    hints = pl.concat([run, tail]).collect()
    return (rejected.with_row_index("_order").join(hints, on="_order", how="left", maintain_order="left")
            .with_columns(pl.when(pl.col("_hint").is_not_null()).then(pl.format("{} ({})", "reason", "_hint"))
                          .otherwise("reason").alias("reason")).drop("_order", "_hint"))


def rows_by_file(frames: list[pl.DataFrame], name: str) -> pl.DataFrame:
    """Rows per source file over `frames`, in column `name`."""
    parts = [f.select("source_file") for f in frames if f is not None and "source_file" in f.columns]
    if not parts:
        return pl.DataFrame(schema={"source_file": pl.String, name: pl.Int64})
    return pl.concat(parts).group_by("source_file").agg(pl.len().cast(pl.Int64).alias(name))


def row_accounting(raw: Bundle, kept: list[pl.DataFrame], rejected: pl.DataFrame) -> pl.DataFrame:
    """Per raw file: rows read, kept and rejected (read = kept + rejected when nothing is lost)."""
    read = rows_by_file([f for name, f in raw.frames.items() if name != "truth"], "read")
    table = read.join(rows_by_file(kept, "kept"), on="source_file", how="full", coalesce=True)
    table = table.join(rows_by_file([rejected], "rejected"), on="source_file", how="full", coalesce=True)
    table = table.with_columns(pl.col("read", "kept", "rejected").fill_null(0)).sort("source_file")
    # Rebuilt from plain values: after group_by and joins the Arrow string buffers are laid out
    # differently run to run, and the content hash is computed over the Arrow bytes.
    return pl.DataFrame(table.to_dict(as_series=False), schema=table.schema)


def check_accounting(accounting: pl.DataFrame, dataset: str) -> None:
    """Raise a CleaningError naming every file whose rows are not all kept or rejected."""
    lost = accounting.filter(pl.col("read") != pl.col("kept") + pl.col("rejected"))
    if lost.height:
        files = "; ".join(f"{r['source_file']}: read {r['read']}, kept {r['kept']}, rejected {r['rejected']}"
                          for r in lost.iter_rows(named=True))
        raise CleaningError(f"{dataset}: cleaning lost track of rows ({files})")


def require_survivors(heights: dict[str, int], rejected: pl.DataFrame | pl.LazyFrame, dataset: str,
                      id_hints: dict[str, str] | None = None) -> None:
    """Raise a CleaningError naming the main reasons when no user or no interaction is left (and `id_hints`, the
    raw read's notes of an id column that the log's ids are not in: `id_column_hint`)."""
    for name in ("users", "interactions"):
        if heights[name] == 0:
            top = rejected.lazy().group_by("source_file", "reason").agg(pl.len().alias("n"), pl.col("line").first(),
                                                                        pl.col("value").first()).collect()
            top = top.sort("n", descending=True).head(3)
            reasons = "; ".join(f"{r['n']} x {r['reason']!r} ({r['source_file']} line {r['line']}: {r['value']!r})"
                                for r in top.iter_rows(named=True))
            hint = time_unit_hint(top.head(1)["reason"].to_list(), top.head(1)["value"].to_list())
            hint += "".join(f". {label}: {note}" for label, note in (id_hints or {}).items())
            raise CleaningError(f"{dataset}: no {name} left after cleaning; rejected: {reasons or 'nothing'}{hint}")


# Unix seconds beyond this are after the year 5000: such "seconds" are almost surely milliseconds.
MILLISECONDS_FROM = 10**11


def time_unit_hint(reasons: list[str], values: list[str | None]) -> str:
    """A hint when the commonest rejection is a time out of range that reads as Unix milliseconds."""
    if not reasons or not reasons[0].startswith("timestamp outside") or values[0] is None:
        return ""
    try:
        value = int(str(values[0]).strip())
    except ValueError:
        return ""
    if value < MILLISECONDS_FROM:
        return ""
    return (f". The times look like Unix milliseconds ({value} s would be after the year 5000): "
            "set interactions.timestamp_format = \"unix_ms\" in the dataset spec")


def clean_logs_from_raw(raw: Bundle, spec: DatasetSpec, rules: CleaningRules = CleaningRules()) -> Bundle:
    """Apply every cleaning rule to a raw bundle; return users, items, interactions, rejected.

    Also returns `accounting` (per raw file: rows read, kept, rejected) and, for ML-1M with
    MeLU's details, `item_details` (the details rows attached to items). With the spec's
    `negatives_per_positive`, the interactions include the sampled negatives. Raises a
    CleaningError when no user or interaction is left, or a row is unaccounted for.
    """
    users, rejected = clean_users(raw.frame("users"), spec, rules)
    items, used_details, rejected_items, unread = clean_items(raw.frame("items"), spec, raw.frames.get("item_details"))
    interactions, rejected_rows_ = clean_interactions(
        raw.frame("interactions"), users, items, raw.frame("users")["user_id"], spec
    )
    users, interactions, rejected_thin = drop_thin_users(users, interactions, spec, rules)
    rejected_all = pl.concat(
        [malformed_rejections(raw.frame("malformed"), spec.name), *rejected, *rejected_items, *rejected_rows_, *rejected_thin]
    )
    if spec.name not in DATASETS:  # the built-ins' cleaned outputs are fixed (taobao's are also made in user shards)
        rejected_all = export_rows(rejected_all, raw)
    frames = {
        "users": users.sort("user_id"),
        "items": items.sort("item_id"),
        "interactions": interactions.sort("user_id", "item_id"),
        "rejected": rejected_all,
    }
    if used_details is not None:
        frames["item_details"] = used_details.sort("item_id")
    require_survivors({name: frames[name].height for name in ("users", "interactions")}, rejected_all, spec.name,
                      raw.info.get("id_column_hints"))
    kept = [frames[n] for n in ("users", "items", "interactions", "item_details") if n in frames]
    frames["accounting"] = row_accounting(raw, kept, rejected_all)
    check_accounting(frames["accounting"], spec.name)
    if "truth" in raw.frames:
        frames["truth"] = raw.frame("truth").join(users.select("user_id"), on="user_id", how="semi").sort("user_id")
    info = {"dataset": spec.name, "rules": rules.__dict__}
    if unread:
        info["item_numbers_unread"] = unread
    if spec.negatives_per_positive:  # after the accounting: sampled rows were never read
        sampled = sample_negatives(interactions, items, raw.frame("interactions"), spec.negatives_per_positive,
                                   spec.negatives_seed)
        frames["interactions"] = pl.concat([interactions, sampled.rows]).sort("user_id", "item_id")
        info |= sampled.info(spec.negatives_per_positive, spec.negatives_seed)
    return Bundle(frames=frames, info=info)


def clean_in_shards(raw: Bundle, spec: DatasetSpec, scratch: Path, rules: CleaningRules = CleaningRules()) -> Bundle:
    """clean_logs_from_raw on a log read in user shards (assets/sharded.py), one shard at a time."""
    from assets.sharded import clean_bundle, clean_sharded, log_of

    if spec.negatives_per_positive:  # only taobao's logs are sharded, and its spec samples none
        raise CleaningError(f"{spec.name}: negatives_per_positive is not supported on a log read in user shards "
                            "(PAML_SHARDS); unset PAML_SHARDS to clean it whole")
    clean = clean_sharded(log_of(raw), spec, scratch / "clean", rules)
    bundle = clean_bundle(clean, spec.name, rules, scratch)
    require_survivors({name: bundle.parts[name].height() for name in ("users", "interactions")},
                      bundle.scan("rejected"), spec.name)
    return bundle


# -- Dagster asset ---------------------------------------------------------------------
import dagster as dg  # noqa: E402

from assets.specs import spec_for  # noqa: E402
from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402


SAMPLING_FACTS = ("sampled_negatives", "users_short_of_negatives", "users_without_negatives")  # metadata when sampled


def rejected_summary(rejected: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Rejected rows counted by source file and reason."""
    return (rejected.lazy().group_by("source_file", "reason").agg(rows=pl.len()).collect(engine="streaming")
            .sort("rows", "source_file", "reason", descending=[True, False, False]))


def reasons_text(summary: pl.DataFrame, most: int = 25) -> str:
    """The console's view of `rejected_summary`: one line per reason over every file, most rows first, the
    reason in full (a table cut reasons and files short). Per file: the rejected_by_reason metadata."""
    total = int(summary["rows"].sum()) if summary.height else 0
    by_reason = (summary.group_by("reason").agg(rows=pl.col("rows").sum(), files=pl.len())
                 .sort("rows", "reason", descending=[True, False]))
    width = len(f"{int(by_reason['rows'].max()):,}") if by_reason.height else 1
    lines = [f"  {rows:>{width},}  {reason}" + (f" (in {files} files)" if files > 1 else "")
             for reason, rows, files in by_reason.head(most).iter_rows()]
    if by_reason.height > most:
        rest = by_reason.slice(most)
        lines.append(f"  {int(rest['rows'].sum()):>{width},}  ({rest.height} other reasons)")
    files = summary["source_file"].n_unique() if summary.height else 0
    heading = f"rejected {total:,} rows" + (f" of {files} files; by reason (per file: the rejected_by_reason metadata):"
                                           if total else "")
    return "\n".join([heading, *lines])


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars", "duckdb"}, code_version="3",
    description="Validated cleaning: typed users, items and interactions; every dropped row kept with its reason.",
)
def clean_logs(context: dg.AssetExecutionContext, raw_logs: Bundle, paml: PamlResource) -> dg.Output[Bundle]:
    spec = spec_for(context.partition_key)
    if raw_logs.parts:  # read in user shards (PAML_SHARDS): cleaned one shard at a time
        bundle = clean_in_shards(raw_logs, spec, paml.scratch(context.run.run_id, f"clean_logs-{context.partition_key}"))
    else:
        bundle = clean_logs_from_raw(raw_logs, spec)
    summary = rejected_summary(bundle.scan("rejected"))
    context.log.info(reasons_text(summary))
    sampled = {key: bundle.info[key] for key in SAMPLING_FACTS if key in bundle.info}
    if sampled:
        context.log.info(f"sampled negatives (never read, not in rows_per_raw_file): {sampled}")
    unread = {key: bundle.info[key] for key in ("item_numbers_unread",) if key in bundle.info}
    if unread:
        context.log.warning(f"numeric item features whose value is not a number within the spec's bounds, missing for "
                            f"those items (the items stay): {unread['item_numbers_unread']}")
    return bundle_output(bundle, rejected_by_reason=table(summary), rows_per_raw_file=table(bundle.frame("accounting")),
                         **sampled, **{key: dg.MetadataValue.json(value) for key, value in unread.items()})
