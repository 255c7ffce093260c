"""Reading a dataset's raw files, as its spec file describes them, into text frames.

Every dataset is read here, as its spec file says: the built-in MovieLens, Book-Crossing and
Taobao-like logs (assets/builtin_specs/; taobao's days through assets/taobao_logs.py) and those
registered with `dataset add`. The frames are what cleaning
takes (assets/clean_logs.py): `interactions` (user_id, item_id, label, ts), `users` (user_id,
the user features, and each split column whole: cleaning splits it), `items` (item_id, the item
features, display columns), `item_details` (item_id and the [items.details] features) and
`malformed`, every row with its `source_file` and 1-based `line` (a Parquet file's row
number). Values stay text; multi-valued and flag features become lists of values.

Features declared without a users (items) file are the interactions file's columns: each user
(item) takes the values on its first line, and its row is accounted to
'<interactions file> (users)' ('(items)'), so rows read = kept + rejected holds per file; ids whose
later lines hold other values are counted in the info (`varying_log_features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from assets.bundle import Bundle, file_source
from assets.compressed import decompressed
from assets.dataset_spec import CustomDataset, Feature, TableFile, load_builtin, table_files
from assets.domains import BOOLEAN_LABELS, MISSING_MARKERS, trimmed
from assets.json_lines import first_list, read_json_lines
from assets.raw_files import MALFORMED_SCHEMA, decoded_as, read_quoted_csv, require_files, split_lines, unterminated
from assets.raw_text import EmptyRawFileError, RawFileError, starts_with_cr_line_ends

POSITIVE_LABEL = "1"  # every row's label in a log without a label column (plays, purchases; sampled negatives)
FLAG_SET = ("1", "1.0", "true", "yes", "y", "t")  # a flag column's "this value applies" (lower-cased)
# The ISO 8601 forms `timestamp_format = "iso"` reads, each tried per value: polars' own inference takes
# the first value's form for the whole column, and in an expression reads '...Z' and '+02:00' as nothing.
# %.f takes an absent fraction too; %#z takes Z, +02:00 and +0200.
ISO_PATTERNS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M%#z", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def read_table(file: TableFile, used: frozenset[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows, malformed) of one raw table; text columns stay text, Parquet and JSON lists stay lists.

    Unquoted text is split line by line (fast, polars); quoted text goes through Python's csv
    reader so a quoted separator or line break stays inside its field; JSON lines are decoded by
    polars, the lines it could read otherwise by Python's json (assets/json_lines.py). `used`: the columns the spec reads; a Parquet or JSON lines
    file's other columns are not kept (a column of image bytes, a review's text).
    """
    if file.format == "parquet":
        frame = read_parquet(file, used)
        rows = frame.select(
            pl.lit(file.label).alias("source_file"),
            pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("line"),
            *[parquet_text(c, t) for c, t in frame.schema.items()],
        )
        return rows, pl.DataFrame(schema=MALFORMED_SCHEMA)
    if file.format == "jsonl":
        return read_json_lines(file.path, file.label, file.columns, encoding=file.encoding, used=used)
    if file.quote:
        return read_quoted_csv(file.path, file.label, file.columns, n_fields=len(file.columns),
                               header=file.columns if file.header else None, encoding=file.encoding,
                               delimiter=file.separator, quotechar=file.quote, escapechar=file.escape or None,
                               skip_first=file.header)
    return split_lines(file.path, file.label, file.separator, file.fields, encoding=file.encoding, header=file.header,
                       block=file.block, rest=file.rest)


def read_parquet(file: TableFile, used: frozenset[str] | None = None) -> pl.DataFrame:
    """A Parquet table (only the `used` columns, when given), or a RawFileError naming the file: unreadable
    (its footer was checked when the spec was loaded, its pages are read here), without rows, or with a
    column no text can stand for (a duration, a record; bytes that are not UTF-8, named with their row)."""
    columns = None if used is None else [c for c in file.columns if c in used]
    table = parquet_table(file, columns)
    if not table.num_rows:
        raise EmptyRawFileError(f"{file.label} ({file.path}): no data rows (the Parquet file holds none).")
    frame = polars_frame(table, file)
    for column, dtype in frame.schema.items():
        if isinstance(dtype, pl.Duration):  # polars casts no duration to text; a time is a datetime or Unix seconds
            raise RawFileError(f"{file.label} ({file.path}): column {column!r} is a duration ({dtype}); expected "
                               f"text, numbers, dates or lists; row 1: {frame[column][0]!r}")
        if isinstance(dtype, pl.Struct):  # cast to text it reads '{1}', kept as an id; JSON lines reject such objects
            raise RawFileError(f"{file.label} ({file.path}): column {column!r} holds records ({dtype}); expected "
                               f"text, numbers, dates or lists; row 1: {frame[column][0]!r}")
        if dtype == pl.Binary:  # text written as bytes (BINARY without a UTF8 annotation): fine when it is UTF-8
            frame = frame.with_columns(utf8_text(frame[column], f"{file.label} ({file.path})"))
    return frame


# What polars does with an Arrow type it cannot hold as text: a 256-bit decimal (past its 38 digits) panics in
# pl.from_arrow (a PanicException, which no `except Exception` catches); a map or a list of lists fails the cast.
NO_TEXT = (pl.exceptions.PolarsError, pl.exceptions.PanicException)


def polars_frame(table: pa.Table, file: TableFile) -> pl.DataFrame:
    """`table` as a polars frame whose every column `parquet_text` writes as text, or a RawFileError naming the
    file and the first column that polars cannot take or write as text (tried one column at a time only then)."""
    try:
        frame = pl.from_arrow(table)
        frame.head(0).select(parquet_text(c, t) for c, t in frame.schema.items())
        frame.select(parquet_text(c, t) for c, t in frame.schema.items() if not is_plain(t))
        return frame
    except NO_TEXT:
        pass
    for name in table.column_names:
        try:
            column = pl.from_arrow(table.select([name]))
            column.select(parquet_text(name, column.schema[name]))
        except NO_TEXT:
            raise RawFileError(f"{file.label} ({file.path}): column {name!r} is of a type no text stands for "
                               f"({table.schema.field(name).type}); expected text, numbers, dates or lists of them; "
                               f"row 1: {table.column(name)[0].as_py()!r}") from None
    return pl.from_arrow(table)


def is_plain(dtype: pl.DataType) -> bool:
    """A type every value of which polars casts to text (numbers, text, booleans, dates): not tried row by row."""
    return dtype.is_numeric() or dtype.is_temporal() or dtype in (pl.String, pl.Boolean, pl.Binary, pl.Null, pl.Categorical)


def parquet_table(file: TableFile, columns: list[str] | None) -> pa.Table:
    """The `columns` of a Parquet file (all when None), decoded by pyarrow, or a RawFileError naming the file.

    Not by polars' reader: on a page whose header is corrupt (a flipped byte, a file cut and patched), polars 2.1
    panics (a PanicException, which is no Exception) or aborts the whole process on a huge allocation, where
    pyarrow checks the header and raises an error saying what is wrong with the page.
    """
    import pyarrow.parquet as pq

    try:
        return pq.read_table(file.path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        said = (str(error).splitlines() or [type(error).__name__])[0]  # an error may carry no message
        raise RawFileError(f"{file.label} ({file.path}): not a readable Parquet file: {said}") from None


def utf8_text(values: pl.Series, where: str) -> pl.Series:
    """A Parquet column of bytes as text, or a RawFileError naming the column, how many rows are not
    UTF-8 and the first of them (`where` names the file)."""
    try:
        return values.cast(pl.String)
    except pl.exceptions.PolarsError as error:
        bad = []
        for row, value in enumerate(values.to_list(), start=1):
            try:
                value is None or value.decode("utf-8")
            except UnicodeDecodeError:
                bad.append((row, value))
        if not bad:
            raise RawFileError(f"{where}: column {values.name!r} cannot be read as text: {error}") from None
        raise RawFileError(f"{where}: column {values.name!r} holds bytes that are not UTF-8 text ({len(bad)} rows); "
                           f"row {bad[0][0]}: {bad[0][1]!r}") from None


def require_scalars(rows: pl.DataFrame, columns: set[str], label: str, files: tuple[TableFile, ...] = ()) -> None:
    """Raise a RawFileError for a list column (Parquet, or JSON lines where a line holds a list) among `columns`,
    which hold one value per row; it names the first row (Parquet) or the first line holding a list (JSON lines
    among `files`, the files the rows were read from)."""
    for column in sorted(columns & set(rows.columns)):
        if isinstance(rows.schema[column], (pl.List, pl.Array)):
            first = rows.filter(pl.col(column).is_not_null()).head(1)
            where = f"row {first['line'].item()}: {first[column].item().to_list()!r}" if first.height else "every row null"
            for file in (f for f in files if f.format == "jsonl"):
                if (found := first_list(file.path, file.label, file.encoding, column)) is not None:
                    label, where = file.label, f"line {found[0]}: {found[1]!r}"
                    break
            raise RawFileError(f"{label}: column {column!r} holds lists; expected one value per row (only a multi "
                               f"feature may be a list); {where}")


def scalar_columns(dataset: CustomDataset) -> set[str]:
    """The columns a dataset reads one value per row from: ids, label, time, features but multi ones, display."""
    features = (*dataset.user_features, *dataset.item_features, *dataset.details_features)
    named = {*(c for c in dataset.interaction_columns.values() if c), dataset.user_id_column, dataset.item_id_column,
             dataset.details_id_column, *(c for f in features if f.type != "multi" for c in f.columns),
             *(column for _, column in dataset.display), *(split.column for split in dataset.splits)}
    return named - {""}


def read_columns(dataset: CustomDataset) -> frozenset[str]:
    """Every column the dataset reads from its files: the one-value columns and each multi or flag feature's."""
    features = (*dataset.user_features, *dataset.item_features, *dataset.details_features)
    return frozenset(scalar_columns(dataset) | {c for f in features for c in f.columns})


def parquet_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A Parquet column as text like a CSV field; lists stay lists of text, dates become Unix seconds."""
    if isinstance(dtype, (pl.List, pl.Array)):
        return pl.col(column).cast(pl.List(pl.String))
    if isinstance(dtype, (pl.Datetime, pl.Date)):
        return pl.col(column).cast(pl.Datetime("us")).dt.epoch("s").cast(pl.String)
    if dtype.is_float():
        # Whole floats as integers: pandas stores an integer column with a missing value as float64,
        # and 1700000000.0 would otherwise fail as a time, 25.0 as an age and 7.0 as the id '7'.
        # NaN is pandas' missing value: missing here too, not the text 'NaN' (which would pool every
        # row without a user id into one user 'NaN').
        value = pl.col(column)
        whole = value.is_finite() & (value == value.floor()) & (value.abs() < 2.0**53)
        return (pl.when(value.is_nan()).then(pl.lit(None, dtype=pl.String))
                .when(whole).then(value.cast(pl.Int64).cast(pl.String))
                .otherwise(value.cast(pl.String)).alias(column))
    return pl.col(column).cast(pl.String)


def unix_seconds(column: str, time_format: str) -> pl.Expr:
    """Times written as `time_format` as Unix-seconds text; a value that does not parse stays as it was,
    so cleaning rejects it with the value and the format. Unix times may be written as whole-number
    floats ('978300760.0'); any other fraction is rejected as not an integer.

    Under a text format (iso or a pattern) a bare integer that does not parse is marked
    `<value> (not <format>)`: left as it was it would pass cleaning as Unix seconds, and a mistyped
    compact date ('2024011' for '%Y%m%d') would become a day of January 1970.
    """
    text = pl.col(column).cast(pl.String).str.strip_chars()
    if time_format == "excel":  # serial days from 1899-12-30 (day 25569 is 1970-01-01), read as UTC
        days = text.str.replace(",", ".", literal=True).cast(pl.Float64, strict=False)  # 45244,5 too: no thousands there
        seconds = ((days - EXCEL_UNIX_EPOCH_DAY) * SECONDS_PER_DAY).round().cast(pl.Int64, strict=False)
        # A day past a 64-bit count of seconds (9e15) gives no seconds: kept as written, rejected with its value.
        return pl.when(days.is_finite()).then(seconds.cast(pl.String).fill_null(text)).otherwise(text)
    if time_format in ("unix", "unix_ms"):
        # pandas writes a whole-number column that holds a missing value as floats ('978300760.0')
        text = text.str.replace(r"^([+-]?\d+)\.0+$", "${1}")
    if time_format == "unix":
        return text
    if time_format == "unix_ms":
        return (text.cast(pl.Int64, strict=False) // 1000).cast(pl.String).fill_null(text)
    patterns = ISO_PATTERNS if time_format == "iso" else (time_format,)
    seconds = pl.coalesce([text.str.to_datetime(p, strict=False, time_unit="us").dt.epoch("s") for p in patterns])
    unparsed = text.str.contains(r"^[+-]?\d+$").fill_null(False) & seconds.is_null()
    return (pl.when(unparsed).then(pl.format("{} (not {})", text, pl.lit(time_format)))
            .otherwise(seconds.cast(pl.String).fill_null(text)))


EXCEL_UNIX_EPOCH_DAY = 25569  # the serial day of 1970-01-01 in a spreadsheet's 1900 date system
SECONDS_PER_DAY = 86400
DECIMAL_COMMA = r"^\s*[+-]?\d+,\d+\s*$"  # 4,5 (not 1.234,5 or 1,234,567: a thousands separator stays unread)


def decimal_points(rows: pl.DataFrame, columns: set[str], file: TableFile) -> pl.DataFrame:
    """`rows` with the text `columns` written with a decimal comma ('4,5') rewritten with a point, when
    `file` says `decimal = ","`; a value of another form is left as written (and rejected as it is)."""
    if file.decimal != ",":
        return rows
    text = lambda c: pl.col(c).cast(pl.String)  # noqa: E731
    return rows.with_columns(pl.when(text(c).str.contains(DECIMAL_COMMA)).then(text(c).str.replace(",", ".", literal=True))
                             .otherwise(pl.col(c)).alias(c) for c in sorted(columns) if rows.schema.get(c) == pl.String)


def decimal_columns(dataset: CustomDataset, features: tuple[Feature, ...], log: bool = False) -> set[str]:
    """The columns a decimal mark applies to: numeric features', and with `log` the label and the time."""
    columns = {f.columns[0] for f in features if f.type == "numeric"}
    return columns | {c for k, c in dataset.interaction_columns.items() if c and k in ("label", "ts")} if log else columns


# pandas writes an integer column holding a missing value as float64 ('7.0'). Only this form, one zero after
# the point and no leading zero, is read as the integer: '0000013714' (an ASIN) and '7.00' are not floats pandas writes.
WHOLE_FLOAT = r"^-?(?:0|[1-9][0-9]*)\.0$"


def whole_float_ids(rows: pl.DataFrame, column: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """`rows` with the id `column`'s whole-number floats ('7.0', ' 12.0') as integers ('7', '12') in each
    source file where every value that is not missing is one, and {source_file: values converted} for
    files where any was. In any other file the column stays as read: an id column that mixes '7.0' with
    'A7' or '7' was not written as floats, and '7.0' there is text, not the number 7.
    """
    if not rows.select(pl.col(column).str.contains(".", literal=True).any()).item():
        return rows, {}  # no float at all: one plain scan, not the full check on a log of tens of millions of rows
    text = pl.col(column).str.strip_chars()
    missing = text.is_null() | text.str.to_lowercase().is_in(MISSING_MARKERS)
    whole = text.str.contains(WHOLE_FLOAT).fill_null(False)
    converted = whole & (missing | whole).all().over("source_file")
    flagged = rows.with_columns(_whole=converted)
    counts = flagged.group_by("source_file", maintain_order=True).agg(pl.col("_whole").sum())
    found = {file: int(n) for file, n in counts.iter_rows() if n}
    if not found:
        return rows, {}
    return flagged.with_columns(pl.when("_whole").then(text.str.strip_suffix(".0")).otherwise(pl.col(column))
                                .alias(column)).drop("_whole"), found


def boolean_labels(rows: pl.DataFrame, column: str) -> tuple[pl.DataFrame, dict[str, int], dict[str, int]]:
    """`rows` with the click label `column` read as 1 and 0 in each source file where every value that is not
    missing is true or false (any case), {source_file: values converted}, and {source_file: true/false values
    left as written} for the other files: a column of 0 and 1 that holds a stray 'true' was not written as
    booleans, and that value is rejected (label not a number)."""
    if rows.schema.get(column) != pl.String:
        return rows, {}, {}
    text = pl.col(column).str.strip_chars().str.to_lowercase()
    missing = pl.col(column).is_null() | text.is_in(MISSING_MARKERS)
    boolean = text.is_in(list(BOOLEAN_LABELS)).fill_null(False)
    converted = boolean & (missing | boolean).all().over("source_file")
    flagged = rows.with_columns(_boolean=converted, _stray=boolean & ~converted)
    counts = flagged.group_by("source_file", maintain_order=True).agg(pl.col("_boolean").sum(), pl.col("_stray").sum())
    found = {file: int(n) for file, n, _ in counts.iter_rows() if n}
    stray = {file: int(n) for file, _, n in counts.iter_rows() if n}
    if not found:
        return rows, {}, stray
    return flagged.with_columns(pl.when("_boolean").then(text.replace(BOOLEAN_LABELS)).otherwise(pl.col(column))
                                .alias(column)).drop("_boolean", "_stray"), found, stray


def text_ids(rows: pl.DataFrame, file: TableFile, columns: tuple[str, ...]) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
    """`rows` of a text `file` with its id `columns` read by `whole_float_ids`, and what was converted:
    {source_file: {column: values}}. A Parquet file's float columns were converted as read (`parquet_text`)."""
    converted: dict[str, dict[str, int]] = {}
    if file.format == "parquet":
        return rows, converted
    for column in dict.fromkeys(c for c in columns if c and c in rows.columns):
        if rows.schema[column] != pl.String:
            continue
        rows, found = whole_float_ids(rows, column)
        for label, n in found.items():
            converted.setdefault(label, {})[column] = n
    return rows, converted


UNKNOWN_IDS_SHARE = 0.5  # at least this share of the log's distinct ids missing from a table's id column ...
OTHER_COLUMN_SHARE = 0.9  # ... and at least this share in another of its columns: the spec names the wrong id column


def id_column_hint(log_ids: pl.Series, rows: pl.DataFrame, id_column: str, side: str) -> str:
    """A note when the log's ids are mostly not in `rows`' `id_column` but are in another column of that file,
    as goodbooks-10k's ratings name books.csv's `id`, not its `book_id`: which column holds them and the key
    to set; else ''. `side`: 'users' or 'items'."""
    ids = log_ids.drop_nulls().unique().cast(pl.String).str.strip_chars().unique()  # unique first: a log has few ids
    if not ids.len() or id_column not in rows.columns:
        return ""

    def share(column: str) -> float:
        return float(ids.is_in(rows[column].cast(pl.String).str.strip_chars().drop_nulls().implode()).mean())

    found = share(id_column)
    if found > 1 - UNKNOWN_IDS_SHARE:
        return ""
    others = [(share(c), c) for c, t in rows.schema.items()
              if c not in (id_column, "source_file", "line") and t in (pl.String, pl.Int64)]
    best = max(others, default=(0.0, ""))
    if best[0] < OTHER_COLUMN_SHARE:
        return ""
    return (f"{1 - found:.0%} of the log's {ids.len():,} {side[:-1]} ids are not in the column {id_column!r} of "
            f"{rows['source_file'][0] if rows.height else side}, while its column {best[1]!r} holds {best[0]:.0%} of "
            f"them: set {side}.id = \"{best[1]}\" in the dataset spec")


def feature_value(feature: Feature, schema: pl.Schema) -> pl.Expr:
    """One feature as the cleaned tables name it: text, or a list of values (multi, flags)."""
    column = feature.columns[0]
    if feature.type == "flags":  # one 0/1 column per value: the list of values whose flag is set
        set_ = [pl.when(pl.col(c).cast(pl.String).str.strip_chars().str.to_lowercase().is_in(FLAG_SET)).then(pl.lit(c))
                for c in feature.columns]
        return pl.concat_list(set_).list.drop_nulls().alias(feature.name)
    if feature.type == "multi":
        parts = pl.col(column) if isinstance(schema[column], pl.List) else \
            pl.col(column).fill_null("").str.split(feature.delimiter)
        values = parts.list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
        return values.list.unique(maintain_order=True).alias(feature.name)
    return pl.col(column).cast(pl.String).alias(feature.name)


def feature_table(rows: pl.DataFrame, id_column: str, id_name: str, features: tuple[Feature, ...],
                  extra: tuple[tuple[str, str], ...], derived_label: str | None) -> pl.DataFrame:
    """source_file, line, the id and the features (and `extra` (name, column) pairs as text) of a table.

    With `derived_label`, `rows` are interactions: each id's first row, accounted to that label.
    Features read from a part of a split column are left to cleaning (`extra` carries the column).
    """
    if derived_label is not None:  # ids as cleaning compares them: ' u1' is u1, not a second user with a duplicate row
        rows = rows.filter(trimmed(id_column).is_first_distinct()).with_columns(source_file=pl.lit(derived_label))
    for feature in features:
        column = feature.columns[0]
        if feature.type == "multi" and not feature.delimiter and column in rows.columns \
                and not isinstance(rows.schema[column], (pl.List, pl.Array)):
            first = rows.filter(pl.col(column).is_not_null()).head(1)
            where = f"row {first['line'].item()}: {first[column].item()!r}" if first.height else "every row null"
            label = rows["source_file"][0] if rows.height else "the file"
            raise RawFileError(f"{label}: column {column!r} of the multi feature {feature.name!r} is "
                               f"{rows.schema[column]}, not a list; give the feature a delimiter; {where}")
    named = {f.name for f in features}
    return rows.select(
        "source_file", "line", pl.col(id_column).alias(id_name),
        *[feature_value(f, rows.schema) for f in features if f.columns[0] in rows.columns],
        *[pl.col(column).cast(pl.String).alias(name) for name, column in extra if name not in named],
    )


def varying_features(rows: pl.DataFrame, id_column: str, features: tuple[Feature, ...]) -> dict[str, int]:
    """Features read from the log (no users or items file): per feature column, how many ids hold more than
    one value on their lines ({column: ids}, only where some do). Each id takes its first line's values
    (`feature_table`); this says how often that chose among several."""
    columns = [c for c in dict.fromkeys(c for f in features for c in f.columns) if c in rows.columns and c != id_column]
    if not columns:
        return {}
    varying = rows.group_by(trimmed(id_column)).agg(pl.col(c).drop_nulls().n_unique().gt(1).alias(c) for c in columns)
    counts = varying.select(pl.col(c).sum() for c in columns).row(0, named=True)
    return {c: int(n) for c, n in counts.items() if n}


def read_log_file(file: TableFile, used: frozenset[str] | None = None) -> Bundle:
    """One file of an interactions table as read (frames `interactions`, its raw columns (of a Parquet
    file, only the `used` ones when given), and `malformed`)."""
    rows, malformed = read_table(file, used)
    return Bundle(frames={"interactions": rows, "malformed": malformed}, info={}, sources=(file_source(file.path),))


def read_custom(dataset: CustomDataset, logs: list[Bundle] | None = None) -> Bundle:
    """Read every raw file of a dataset into the frames cleaning takes (module docstring).

    `logs`: the interaction files already read (`read_log_file`), in file order: taobao's days,
    each read by a partition of its own; by default every file of the interactions table is read.
    """
    used = read_columns(dataset)
    logs = [read_log_file(file, used) for file in table_files(dataset.interactions)] if logs is None else logs
    log = pl.concat([b.frame("interactions") for b in logs])
    scalars = scalar_columns(dataset)
    require_scalars(log, scalars, dataset.interactions.label, table_files(dataset.interactions))
    log_bad = pl.concat([b.frame("malformed") for b in logs])
    columns = dataset.interaction_columns
    log, float_ids = text_ids(log, dataset.interactions, (columns["user_id"], columns["item_id"]))
    log_features = (*(dataset.user_features if dataset.users is None else ()), *(dataset.item_features if dataset.items is None else ()))
    log = decimal_points(log, decimal_columns(dataset, log_features, log=True), dataset.interactions)
    booleans: dict[str, int] = {}
    stray_booleans: dict[str, int] = {}
    if dataset.spec.task == "ctr" and columns["label"]:
        log, booleans, stray_booleans = boolean_labels(log, columns["label"])
    log_varying: dict[str, dict[str, int]] = {}
    id_hints: dict[str, str] = {}
    interactions = log.select(
        "source_file", "line",
        *[pl.col(columns[name]).cast(pl.String).alias(name) for name in ("user_id", "item_id")],
        (pl.col(columns["label"]).cast(pl.String) if columns["label"] else pl.lit(POSITIVE_LABEL)).alias("label"),
        (unix_seconds(columns["ts"], dataset.time_format) if columns["ts"] else pl.lit(None, dtype=pl.String)).alias("ts"),
    )
    malformed = []  # in file order: users, items, interactions, details
    tables = {}
    item_names = {f.name for f in (*dataset.item_features, *dataset.details_features)}
    for side, file, id_column, features, extra in (
        ("users", dataset.users, dataset.user_id_column, dataset.user_features,
         tuple((split.column, split.column) for split in dataset.splits)),
        ("items", dataset.items, dataset.item_id_column, dataset.item_features,
         tuple((name, column) for name, column in dataset.display if name not in item_names)),
    ):
        id_name = "user_id" if side == "users" else "item_id"
        if file is None:
            derived = f"{dataset.interactions.label} ({side})"
            tables[side] = feature_table(log, id_column, id_name, features, extra, derived)
            if varying := varying_features(log, id_column, features):
                log_varying[derived] = varying
            continue
        rows, bad = read_table(file, used)
        require_scalars(rows, scalars, file.label, (file,))
        rows, converted = text_ids(rows, file, (id_column,))
        if hint := id_column_hint(log[columns[id_name]], rows, id_column, side):
            id_hints[file.label] = hint
        rows = decimal_points(rows, decimal_columns(dataset, features), file)
        float_ids |= converted
        malformed.append(bad)
        tables[side] = feature_table(rows, id_column, id_name, features, extra, None)
    malformed.append(log_bad)
    frames = {"users": tables["users"], "items": tables["items"], "interactions": interactions}
    if dataset.details is not None:
        rows, bad = read_table(dataset.details, used)
        require_scalars(rows, scalars, dataset.details.label, (dataset.details,))
        rows, converted = text_ids(rows, dataset.details, (dataset.details_id_column,))
        rows = decimal_points(rows, decimal_columns(dataset, dataset.details_features), dataset.details)
        float_ids |= converted
        malformed.append(bad)
        frames["item_details"] = feature_table(rows, dataset.details_id_column, "item_id", dataset.details_features, (), None)
    frames["malformed"] = pl.concat(malformed)
    read = sources_and_info(dataset, logs)
    if booleans:  # click labels written true/false, read as 1/0: in which files, how many
        read["info"]["boolean_labels"] = booleans
    if stray_booleans:  # true/false among other labels: not read as 1/0, rejected in cleaning (label not a number)
        read["info"]["stray_boolean_labels"] = stray_booleans
    if float_ids:  # ids written as whole-number floats, read as integers ('7.0' is user 7): which and how many
        read["info"]["whole_float_ids"] = float_ids
    if log_varying:  # features taken from the log whose ids hold several values: the first line's is used
        read["info"]["varying_log_features"] = log_varying
    if id_hints:  # the log's ids are in another column of a users or items file than the spec's id
        read["info"]["id_column_hints"] = id_hints
    return Bundle(frames=frames, **read)


def sources_and_info(dataset: CustomDataset, logs: list[Bundle]) -> dict:
    """The files read (spec, log files, feature tables; each once) and, in `info`, those decoded
    in another encoding than declared."""
    tables = [f for f in (dataset.users, dataset.items, dataset.details) if f is not None]
    log_sources = [source for bundle in logs for source in bundle.sources]
    read_paths = {Path(source.path) for source in log_sources}
    log_files = [f for f in table_files(dataset.interactions) if f.path in read_paths]
    info = {"dataset": dataset.spec.name, "spec_file": str(dataset.spec_path)}
    text_files = {f.label: (f.path, f.encoding) for f in (*log_files, *tables) if f.format in ("csv", "jsonl")}
    if switched := decoded_as(text_files):
        info["decoded_as"] = switched
    if cut := unterminated(text_files):  # kept as read; a download cut short may have left a value cut short
        info["unterminated"] = cut
    table_sources = [file_source(path) for path in dict.fromkeys(f.path for f in tables) if path not in read_paths]
    return {"info": info, "sources": (file_source(dataset.spec_path), *log_sources, *table_sources)}


def read_builtin(dataset: str, data_dir: Path) -> Bundle:
    """Read MovieLens or Book-Crossing from its directory under `data_dir`
    (PAML_DATA_DIR) as its spec file in assets/builtin_specs/ describes it.

    Raises MissingRawFilesError naming the missing files and where to get them.
    """
    return read_custom(load_builtin(dataset, require_files(dataset, data_dir)))


# -- The label column alone, for `dataset add` ------------------------------------------------

SCAN_LINE_SEPARATOR = "\x1f"  # a byte no log holds: polars reads each text line as one field, split here


@dataclass(frozen=True)
class LabelClasses:
    """How the labels of a log divide: its rows, those labelled 0 and 1, how its first 1 is written, and the
    true/false words left unread (cleaning rejects them: `boolean_labels`)."""

    rows: int
    zeros: int
    ones: int
    one_as: str | None  # the first label equal to 1 as the file writes it ('1', '1.0', 'TRUE'); None without one
    stray_booleans: int = 0  # true/false labels in files whose other labels are not all true/false


def label_scan(file: TableFile, column: str, whole: bool = False) -> pl.LazyFrame:
    """The label column of one log file as text (column `label`), scanned lazily: only that column is kept.

    Unquoted text is read line by line and split at the separator (which may be several
    characters); quoted text goes through polars' CSV parser. Both decode UTF-8 leniently: the
    label is ASCII in any encoding a spec may declare. With `whole` (and for a quoted file with an
    escape character, which polars' parser does not know: Book-Crossing's \\"), the file is read
    with the project's reader instead, as is an unquoted file of CR line ends (polars ends a line at LF only).
    """
    if file.format == "parquet":
        return polars_frame(parquet_table(file, [column]), file).lazy().select(pl.col(column).cast(pl.String).alias("label"))
    source = decompressed(file.path, f"{file.label} ({file.path})")  # a compressed log's text is its decompressed copy
    if file.format == "jsonl":
        return read_table(file, frozenset({column}))[0].lazy().select(pl.col(column).alias("label"))
    if whole or (file.quote and file.escape) or file.block or file.rest or (not file.quote and starts_with_cr_line_ends(source)):
        return read_table(file)[0].lazy().select(pl.col(column).alias("label"))
    skip = 1 if file.header else 0
    if not file.quote:
        lines = pl.scan_csv(source, has_header=False, separator=SCAN_LINE_SEPARATOR, quote_char=None, skip_rows=skip,
                            schema={"text": pl.String}, encoding="utf8-lossy", truncate_ragged_lines=True)
        index = file.columns.index(column)
        return lines.select(pl.col("text").str.split(file.separator).list.get(index, null_on_oob=True).alias("label"))
    return pl.scan_csv(source, has_header=False, separator=file.separator, quote_char=file.quote, skip_rows=skip,
                       schema=dict.fromkeys(file.columns, pl.String), encoding="utf8-lossy",
                       truncate_ragged_lines=True).select(pl.col(column).alias("label"))


def label_classes(file: TableFile, column: str) -> LabelClasses:
    """Count the 0 and 1 labels in `column` of an interactions table (every file of a pattern), as cleaning
    reads them: true and false are 1 and 0 in a file where every label that is not missing is one of them,
    and elsewhere are no number (`boolean_labels`; counted as `stray_booleans`).

    One streaming pass over that column per file, not a read of the log: `dataset add` runs it on logs of
    any size. Files whose quoting polars' parser rejects are read with the project's reader.
    """
    files = table_files(file)

    def count(whole: bool) -> list[dict]:
        scans = [label_scan(f, column, whole).select(label_counts()) for f in files]
        return [frame.row(0, named=True) for frame in pl.collect_all(scans, engine="streaming")]

    try:
        per_file = count(whole=False)
    except pl.exceptions.PolarsError:
        per_file = count(whole=True)
    return combined_classes(per_file)


def label_counts() -> list[pl.Expr]:
    """One file's label column (`label`) counted: rows, numbers 0 and 1 and the first 1 as written, the true
    and false words and the first true as written, and the labels that are not missing."""
    value = pl.col("label").str.strip_chars()
    word = value.str.to_lowercase()
    number = value.cast(pl.Float64, strict=False)
    return [pl.len().alias("rows"), (number == 0).sum().alias("zeros"), (number == 1).sum().alias("ones"),
            value.filter(number == 1).first().alias("one_as"), (word == "false").sum().alias("falses"),
            (word == "true").sum().alias("trues"), value.filter(word == "true").first().alias("true_as"),
            (value.is_not_null() & ~word.is_in(MISSING_MARKERS)).sum().alias("present")]


def combined_classes(per_file: list[dict]) -> LabelClasses:
    """The `label_counts` of each file, in file order, as one LabelClasses: a file's true and false are 1 and 0
    where they are all its labels that are not missing, else stray."""
    rows = zeros = ones = stray = 0
    one_as = None
    for found in per_file:
        booleans = found["trues"] + found["falses"]
        boolean_file = booleans and booleans == found["present"]
        rows += found["rows"]
        zeros += found["falses"] if boolean_file else found["zeros"]
        ones += found["trues"] if boolean_file else found["ones"]
        stray += 0 if boolean_file else booleans
        one_as = one_as or (found["true_as"] if boolean_file else found["one_as"])
    return LabelClasses(rows=rows, zeros=zeros, ones=ones, one_as=one_as, stray_booleans=stray)
