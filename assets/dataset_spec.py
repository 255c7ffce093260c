"""Dataset spec files: your own interaction log described in a small TOML (or YAML) file.

A spec file (`dataset.toml`, `dataset.yaml` or `dataset.yml` beside the data) says where the
files are and how they are written, which columns are the user id, item id, label and time,
the label kind, the user and item features with their types, and which user features the
major/minor rule counts. `load_spec` validates it against the files themselves and turns it
into a `CustomDataset`: the `DatasetSpec` every later step reads (assets/specs.py) plus how to
read the raw files (assets/custom_reader.py). Every mistake is a `SpecError` naming the spec
file, the key and the offending value. The format is documented in docs/data.md.

`dataset add` registers a spec under PAML_HOME/datasets/<name>.toml (one line: the spec file's
path); every process that loads the pipeline sees the registered names as dataset partitions.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import re
import reprlib
import tomllib
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from assets.domains import MISSING_MARKERS, STRAY_BOOLEAN_HINT, Category, EpochSeconds, Identifier, IntegerIn, NumberIn, Parts, Text, epoch
from assets.compressed import READABLE_SUFFIXES, decompressed, present
from assets.raw_files import HEADING, LAYOUTS, check_header, field_limit, header_key, header_names, shown_columns
from assets.raw_text import WIDE_BOMS, RawEncodingError, RawFileError, check_prefix, check_start, describe_bytes, position
from assets.specs import DATASETS, MAJOR_MIN_TOP_FEATURES, MULTI_VALUES_LIMIT, DatasetSpec, NumericField

SPEC_FILE_NAMES = ("dataset.toml", "dataset.yaml", "dataset.yml")
FORMATS = ("csv", "tsv", "parquet", "jsonl")
# The format a file's suffix implies (a compression suffix looked through: reviews.json.gz); others are csv.
SUFFIX_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
LABEL_KINDS = ("rating", "click")
USER_FEATURE_TYPES = ("categorical", "numeric")
ITEM_FEATURE_TYPES = ("categorical", "numeric", "multi", "flags")
# Names the cleaned tables use themselves; a feature may not take them.
RESERVED = ("user_id", "item_id", "label", "ts", "source_file", "line")
NAME_PATTERN = r"[a-z][a-z0-9_]{0,39}"
# Default plausible times: after the first day of the epoch (0 is a placeholder), before 2100.
DEFAULT_TIME_RANGE = ("1970-01-02", "2100-01-01")
# How times are written: Unix seconds, Unix milliseconds, ISO 8601, Excel serial days, or a strftime pattern ('%d/%m/%Y %H:%M').
# "excel": a spreadsheet's serial date, days since 1899-12-30 with the time of day as the fraction (45244.5 is
# 2023-11-14 12:00), as a date column formatted as a number exports.
TIME_FORMATS = ("unix", "unix_ms", "iso", "excel")

TOP_KEYS = ("name", "label", "interactions", "users", "items", "groups")
# [label] keys of a click log of positives only: sampled unclicked impressions (assets/negative_sampling.py).
NEGATIVE_KEYS = ("negatives_per_positive", "negatives_seed")
FILE_KEYS = ("file", "format", "separator", "encoding", "quote", "escape", "header", "columns", "decimal", "block_column",
             "last_column_rest")
# The keys that only a delimited text file takes (a Parquet file takes none of them; JSON lines, encoding, columns, decimal).
TEXT_ONLY_KEYS = ("separator", "quote", "escape", "header", "block_column", "last_column_rest")
DECIMAL_MARKS = (".", ",")  # a text file's decimal mark; ',' as a spreadsheet in a European locale writes 4,5
SECTION_KEYS = {
    "interactions": (*FILE_KEYS, "user_id", "item_id", "label", "timestamp", "timestamp_format", "timestamp_min",
                     "timestamp_max", "timestamp_reason"),
    "users": (*FILE_KEYS, "id", "id_digits", "split", "features"),
    "items": (*FILE_KEYS, "id", "id_digits", "display", "details", "features"),
    "items.details": (*FILE_KEYS, "id", "optional", "features"),
}
SPLIT_KEYS = ("separator", "parts", "lowercase")
FEATURE_KEYS = ("type", "column", "columns", "values", "missing", "min", "max", "bins", "integer", "backoff", "delimiter",
                "reject_garbled", "keep_missing", "max_values")
BUILTIN_SPEC_DIR = Path(__file__).resolve().parent / "builtin_specs"  # the built-in datasets' spec files
HEADER_BYTES = 1 << 20  # a header line is read up to this length (a file without line ends is not read whole)
GLOB_CHARACTERS = "*?["  # an interactions file named with these is a pattern: the log is every file it matches
# A spec file is a few KiB; PyYAML parses ~1 MiB a second in pure Python, so a larger one is refused, not parsed for minutes.
SPEC_FILE_BYTES = 1 << 20
NAME_MAX = 255  # the longest file name (one path component) Linux, macOS and Windows file systems hold, in bytes
# The values a message shows: YAML anchors can nest a list of 9 references 9 levels deep in a few lines
# (9**9 items), whose full repr would never finish; a long list or text is shown cut ('...').
SHOWN = reprlib.Repr()
SHOWN.maxlevel, SHOWN.maxlist, SHOWN.maxtuple, SHOWN.maxdict, SHOWN.maxset = 3, 20, 20, 20, 20
SHOWN.maxstring, SHOWN.maxother, SHOWN.maxlong = 400, 400, 400
YAML_BOOLEANS = "yes, no, on, off, true, false"  # YAML 1.1 (PyYAML) reads these, unquoted, as true or false


class SpecError(ValueError):
    """A dataset spec that cannot be used; the message names the spec file, the key and the value."""


class PositivesOnlyError(SpecError):
    """A click log with no label 0 (plays, purchases, likes) and no negative sampling in its spec."""


@dataclass(frozen=True)
class TableFile:
    """One raw table of a custom dataset and how it is written.

    Attributes:
        path: the file.
        label: its name in rejected rows and accounting ('<dataset>/<file name>').
        format: 'csv' (any separator), 'parquet' or 'jsonl' (JSON lines, assets/json_lines.py).
        separator, quote: csv files only; quote '' = fields are never quoted. encoding: csv and jsonl.
        escape: text files with quotes: the character that escapes a quote inside a field ('' = none).
        decimal: text files: the decimal mark of labels, numeric features and times ('.' or ',').
        header: whether line 1 names the columns (checked against `columns` when the spec lists them).
        columns: the column names (from the header, the spec's `columns`, or the Parquet schema); with `block`,
            the fields of a data line, then `block` last.
        block: unquoted text files: the column a line 'VALUE:' gives the lines below it (the Netflix Prize's
            combined_data files head each movie's ratings with 'MOVIEID:'); '' = none.
        rest: unquoted text files: the last column holds the rest of the line, separators included (Netflix's
            movie_titles.csv writes titles with commas unquoted).
    """

    path: Path
    label: str
    format: str
    separator: str
    encoding: str
    quote: str
    header: bool
    columns: tuple[str, ...]
    escape: str = ""
    root: Path | None = None  # set when `path` is a pattern (a log in several files): the directory it is relative to
    decimal: str = "."
    block: str = ""
    rest: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        """The columns a data line holds: `columns` without the block column."""
        return self.columns[:-1] if self.block else self.columns


@dataclass(frozen=True)
class Feature:
    """One user or item feature of a spec: its cleaned name, type and source column(s)."""

    name: str
    type: str
    columns: tuple[str, ...]  # one column; flags: one column per value
    delimiter: str = ""


@dataclass(frozen=True)
class Split:
    """A users column holding several values ('city, state, country'), split at `separator` into `parts`."""

    column: str
    separator: str
    parts: tuple[str, ...]
    lowercase: bool


@dataclass(frozen=True)
class CustomDataset:
    """A validated spec file: the DatasetSpec later steps read, and how to read the raw files.

    `users` / `items` are None when their features are columns of the interactions file;
    `details` is None when the spec has no [items.details] or its optional file is absent.
    """

    spec: DatasetSpec
    spec_path: Path
    interactions: TableFile
    # user_id, item_id, label, ts -> column; ts may be None, and label too when the spec samples negatives
    interaction_columns: dict[str, str | None]
    time_format: str  # one of TIME_FORMATS or a strftime pattern
    users: TableFile | None
    user_id_column: str
    user_features: tuple[Feature, ...]
    items: TableFile | None
    item_id_column: str
    item_features: tuple[Feature, ...]
    display: tuple[tuple[str, str], ...]  # (name shown, items column or item feature)
    splits: tuple[Split, ...] = ()
    details: TableFile | None = None
    details_id_column: str = ""
    details_features: tuple[Feature, ...] = ()


def finite_float(value: int | float) -> bool:
    """Whether `value` converts to a finite float (an int past about 1.8e308 does not: OverflowError)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


class Checker:
    """Turns a mistake at `key` into a SpecError naming the spec file, the key and the value."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str, value: Any = None) -> SpecError:
        found = "" if value is None else f" (found {SHOWN.repr(value)})"
        return SpecError(f"{self.path}: {key}: {problem}{found}")

    def table(self, raw: Any, key: str, known: tuple[str, ...]) -> dict[str, Any]:
        """`raw` as a table without unknown keys (a typo would otherwise be silently ignored)."""
        if not isinstance(raw, dict):
            raise self.fail(key, "expected a table of keys", raw)
        for name in raw:
            if name not in known:
                raise self.fail(f"{key}.{name}" if key else name, f"unknown key; known: {', '.join(known)}", name)
        return raw

    def typed(self, table: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """table[key] checked to be `kind` (bool is not a number), or `default` when absent."""
        full = f"{where}.{key}" if where else key
        if key not in table:
            if default is ...:
                raise self.fail(full, "required key missing")
            return default
        value = table[key]
        numbers = (int, float)
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            names = {str: "text", bool: "true or false", list: "a list", dict: "a table", int: "a whole number"}
            wanted = "a number" if kind == numbers else names.get(kind, str(kind))
            raise self.fail(full, f"expected {wanted}", value)
        if isinstance(value, float) and not math.isfinite(value):  # TOML and YAML both write inf and nan
            raise self.fail(full, "expected a finite number", value)
        if isinstance(value, int) and float in (kind if isinstance(kind, tuple) else (kind,)) and not finite_float(value):
            # YAML writes whole numbers of any size; one past float's range would stop the float() of a bound
            raise self.fail(full, "expected a finite number (this one is too large for a floating-point number)", value)
        return value

    def column(self, table: dict[str, Any], key: str, where: str, file: TableFile, default: Any = ...,
               parts: tuple[str, ...] = ()) -> Any:
        """table[key] as a column name of `file` (or one of the `parts` its split columns give)."""
        name = self.typed(table, key, where, str, default)
        if name is not None and name not in file.columns and name not in parts:
            raise self.fail(f"{where}.{key}", f"unknown column; {file.label} has {shown_columns((*file.columns, *parts))}"
                            f"{column_hint(file, name)}", name)
        return name


TITLE_LINES = 10  # how far down `column_hint` looks for a header under a title row


def column_hint(file: TableFile, name: str) -> str:
    """Why column `name` may be missing from `file`: a header that writes it in another case or with spaces
    ('User ID' for 'user_id'), or a header below line 1 (a title row above it, as a sheet may hold); else ''."""
    similar = [c for c in file.columns if header_key([c]) == header_key([name])]
    if similar:
        return f" ({similar[0]!r} differs in case, spaces, '-' or '_': name the column as the file writes it)"
    if heading := block_heading(file):
        return (f" (line 1, {heading!r}, heads the lines below it, as the Netflix Prize's combined_data files give each "
                f"movie's ratings their movie: set block_column = {name!r} to read that value as the column {name!r}; "
                "docs/data.md, \"Recipes for common public layouts\")")
    if file.format != "csv" or not file.header or file.root is not None or not file.path.is_file():
        return ""
    with decompressed(file.path, str(file.path)).open("rb") as handle:
        head = [handle.readline(HEADER_BYTES) for _ in range(TITLE_LINES)]
    for number, line in enumerate(head, start=1):
        text = line.removeprefix(codecs.BOM_UTF8).decode(file.encoding, errors="replace").rstrip("\r\n")
        try:
            row = split_line(text, file.separator, file.quote)
        except csv.Error:  # a CR alone inside the line, a field over the csv limit: no header, and only a hint
            continue
        if number > 1 and name in header_names(row):
            return (f" (line {number} names it: the header must be line 1; remove the {number - 1} line(s) above it, "
                    "a title row?)")
    return ""


def block_heading(file: TableFile) -> str:
    """Line 1 of an unheaded text file (or the first file of its pattern) when it is a block's heading, 'VALUE:'
    without the separator (the Netflix Prize's '1:'), and the file has no block column; else ''."""
    first = next(iter(table_files(file)), None)
    if file.format != "csv" or file.block or first is None or not first.path.is_file():
        return ""
    try:
        with decompressed(first.path, str(first.path)).open("rb") as handle:
            line = handle.readline(HEADER_BYTES).removeprefix(codecs.BOM_UTF8).decode(file.encoding, errors="replace").strip()
    except (OSError, RawFileError):  # unreadable: the read names it, with the file's label
        return ""
    return line if re.match(HEADING, line) and file.separator not in line else ""


def read_spec_file(path: Path) -> dict[str, Any]:
    """The spec file parsed (TOML, or YAML for .yaml/.yml), or a SpecError naming the syntax error."""
    try:
        with path.open("rb") as handle:
            data = handle.read(SPEC_FILE_BYTES + 1)
        if len(data) > SPEC_FILE_BYTES:
            raise SpecError(f"{path}: over {SPEC_FILE_BYTES >> 20} MiB, too large for a dataset spec (a spec is a few "
                            "KiB; is this a data file named as the spec?)")
        for mark, name in WIDE_BOMS:  # PowerShell's `>` writes UTF-16
            if data.startswith(mark):
                raise SpecError(f"{path}: the spec file is {name} text (it starts with a byte-order mark); save it as UTF-8")
        text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8")  # Windows editors may start UTF-8 with a BOM
        if path.suffix == ".toml":
            return tomllib.loads(text)
        import yaml

        loaded = yaml.safe_load(text)
        return loaded if loaded is not None else {}
    except UnicodeDecodeError as error:
        offset = error.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line, byte = position(path, offset)
        raise SpecError(f"{path}: not UTF-8 text at line {line}, byte {byte} ({describe_bytes(path, offset)}); "
                        "save the spec file as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:  # tomllib and PyYAML parse nested arrays and tables by recursion
        raise SpecError(f"{path}: not a usable spec: lists or tables nested too deeply to parse") from None
    except OSError as error:  # permission denied
        raise SpecError(f"{path}: cannot be read: {error.strerror or error}") from None
    except Exception as error:  # noqa: BLE001 - yaml's errors share no base class we import
        if type(error).__module__.startswith("yaml"):
            raise SpecError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
        raise


def find_spec_file(location: Path) -> Path:
    """The spec file at `location`: the file itself, or the one spec file in the directory."""
    if location.is_file():
        return location.resolve()
    if location.is_symlink() and not location.exists():
        raise SpecError(f"{location}: a symbolic link to nothing (it points at {os.readlink(location)})")
    if not location.is_dir():
        raise SpecError(f"{location}: no such file or directory")
    found = [location / name for name in SPEC_FILE_NAMES if (location / name).is_file()]
    if len(found) != 1:
        problem = "holds no dataset spec" if not found else "holds more than one dataset spec"
        raise SpecError(f"{location}: {problem}; write one of {', '.join(SPEC_FILE_NAMES)} (docs/data.md)")
    return found[0].resolve()


def header_line(path: Path, separator: str, quote: str, encoding: str) -> tuple[str, ...]:
    """The column names on line 1 of a text file (a UTF-8 byte-order mark is skipped; a compressed
    file's decompressed text, assets/compressed.py).

    Raises a RawFileError for a file that cannot be read or is not text (zstd-compressed, UTF-16, a NUL
    byte on line 1), as reading it would: its first line would name garbage columns.
    """
    source = decompressed(path, str(path))
    check_start(source, str(path), encoding)
    with source.open("rb") as handle:
        first = handle.readline(HEADER_BYTES).removeprefix(codecs.BOM_UTF8)
    if b"\x00" in first:
        raise RawEncodingError(f"{path}: NUL byte on line 1: not {encoding} text (UTF-16 or UTF-32 without a "
                               "byte-order mark, or a binary file).")
    # Split at any line end: a file with CR-only line ends reads as one line.
    text = re.split(r"\r\n|\r|\n", first.decode(encoding, errors="replace"), maxsplit=1)[0]
    with field_limit([text]):  # a field on line 1 is no longer than the line: split it as the read does
        row = split_line(text, separator, quote)
    return header_names(row) if any(name.strip() for name in row) else ()


def split_line(text: str, separator: str, quote: str) -> list[str]:
    """One line's fields as the read splits them: an unquoted file at each `separator`, which may be several
    characters (MovieLens' '::'; the csv module takes only one, TypeError), a quoted one by the csv module."""
    if not quote:
        return text.split(separator)
    return next(csv.reader(io.StringIO(text), delimiter=separator, quotechar=quote, quoting=csv.QUOTE_MINIMAL), [])


def ascii_compatible(encoding: str) -> bool:
    """True for a text codec that reads ASCII bytes as themselves: lines, separators and quotes are
    found byte-wise, so UTF-16/32 (two or four bytes a character) and codecs such as rot13 or hex cannot work.
    The sample is also decoded with errors="replace", as header lines are: idna reads ASCII as itself but refuses
    that (UnicodeError); its backslash-n keeps out unicode_escape, which reads it as a line break."""
    sample = b"id,name;\"x\"\t1\\n\r\n"
    try:
        return all(sample.decode(encoding, errors=errors) == sample.decode("ascii") for errors in ("strict", "replace"))
    except (LookupError, UnicodeError):
        return False


def table_file(check: Checker, raw: dict[str, Any], section: str, directory: Path, prefix: str,
               check_files: bool = True) -> TableFile:
    """The file of a section, checked to exist (unless not `check_files`), with its column names.

    Its label in rejected rows is '<prefix>/<file>'.
    """
    name = file_name(check, raw, section)
    pattern = any(c in name for c in GLOB_CHARACTERS)
    if pattern and (section != "interactions" or Path(name).is_absolute()):
        raise check.fail(f"{section}.file", "only the interactions file may be a pattern (a log in several files), "
                         "relative to the spec", name)
    try:
        path, name, first = looked_up(directory, name, pattern, check_files)
    except RuntimeError:  # Python 3.11 resolves a symbolic link that points back at itself so
        raise check.fail(f"{section}.file", f"a symbolic link that loops, in {directory}", name) from None
    except OSError as error:  # a path over PATH_MAX, a directory that may not be searched
        raise check.fail(f"{section}.file", f"cannot be looked up in {directory}: {error.strerror or error}", name) from None
    root = directory.resolve() if pattern else None
    if check_files and (first is None or not first.is_file()):
        problem = (f"no file matches in {directory}" if pattern else
                   f"{'a directory, not a file,' if first.is_dir() else 'not a regular file'} in {directory}" if first.exists()
                   else f"no such file in {directory}")
        raise check.fail(f"{section}.file", problem, name)
    fmt = check.typed(raw, "format", section, str, suffix_format(path))
    if fmt not in FORMATS:
        raise check.fail(f"{section}.format", f"expected one of {', '.join(FORMATS)}", fmt)
    label = f"{prefix}/{path.name if Path(name).is_absolute() else name}"
    if fmt == "parquet":
        for key in (*TEXT_ONLY_KEYS, "encoding", "columns", "decimal"):
            if key in raw:
                raise check.fail(f"{section}.{key}", "does not apply to a Parquet file", raw[key])
        import pyarrow.parquet as pq

        try:
            columns = tuple(pq.read_schema(first).names)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            raise check.fail(f"{section}.file", f"not a readable Parquet file ({error})", name) from None
        if repeated := sorted({c for c in columns if columns.count(c) > 1}):  # pyarrow's read would stop, in its words
            positions = ", ".join(str(i) for i, c in enumerate(columns, start=1) if c == repeated[0])
            raise check.fail(f"{section}.file", f"the Parquet schema names column {repeated[0]!r} more than once "
                             f"(columns {positions}): rename all but one in the file, as the spec cannot tell them apart", name)
        return TableFile(path, label, "parquet", "", "", "", True, columns, root=root)
    if fmt == "jsonl":
        for key in TEXT_ONLY_KEYS:
            if key in raw:
                raise check.fail(f"{section}.{key}", "does not apply to a JSON lines file (fields are named in each "
                                 "line; list them in columns)", raw[key])
    separator = check.typed(raw, "separator", section, str, "\t" if fmt == "tsv" else ",")
    if len(separator) == 0 or separator in ("\n", "\r"):
        raise check.fail(f"{section}.separator", "expected one or more characters, not a line break", separator)
    encoding = check.typed(raw, "encoding", section, str, "utf-8")
    try:
        codecs.lookup(encoding)  # kept as written: messages name the encoding as the spec does
    except (LookupError, ValueError):  # ValueError: a name holding a NUL character ("\\u0000" in TOML or YAML)
        raise check.fail(f"{section}.encoding", "unknown encoding (e.g. utf-8, latin-1, cp1252)", encoding) from None
    decimal = check.typed(raw, "decimal", section, str, ".")
    if decimal not in DECIMAL_MARKS:
        raise check.fail(f"{section}.decimal", "expected \".\" or \",\" (a decimal comma, as 4,5)", decimal)
    if not ascii_compatible(encoding):
        raise check.fail(f"{section}.encoding", "expected a text encoding that writes ASCII as ASCII (e.g. utf-8, "
                         "latin-1, cp1252, shift_jis); convert UTF-16 or UTF-32 files to UTF-8 first", encoding)
    if fmt == "jsonl":
        return TableFile(path, label, "jsonl", "", encoding, "", False, json_columns(check, raw, section, name, first, encoding),
                         root=root, decimal=decimal)
    block = check.typed(raw, "block_column", section, str, "")
    rest = check.typed(raw, "last_column_rest", section, bool, False)
    # A line heading a block, or a last column that keeps its separators, is read line by line: never quoted.
    quote = check.typed(raw, "quote", section, str, "" if block or rest else '"')
    if quote and (block or rest):
        key = "block_column" if block else "last_column_rest"
        raise check.fail(f"{section}.{key}", "a file read so is never quoted: leave quote out or set quote = ''", quote)
    if len(quote) > 1 or (quote and len(separator) > 1):
        problem = "expected one character, or '' for none" if len(quote) > 1 else \
            "quoted fields need a one-character separator; set quote = '' if fields are never quoted"
        raise check.fail(f"{section}.quote", problem, quote)
    if decimal == separator and not quote:  # 4,5 would be two fields
        raise check.fail(f"{section}.decimal", "a decimal comma needs another separator (Excel writes ';' with it), "
                         "or quoted fields", decimal)
    escape = check.typed(raw, "escape", section, str, "")
    if len(escape) > 1 or (escape and not quote) or (escape and escape == quote):
        raise check.fail(f"{section}.escape", "expected one character other than the quote, in a quoted file "
                         "(e.g. a backslash when a quote inside a field is written as backslash-quote)", escape)
    header = check.typed(raw, "header", section, bool, True)
    if header and "columns" not in raw:
        if first is None or not first.is_file():
            raise check.fail(f"{section}.columns", "needed when the file is not there to name them", None)
        try:
            columns = header_line(first, separator, quote, encoding)
        except RawFileError as error:
            raise check.fail(f"{section}.file", str(error), name) from None
        if not any(columns):
            empty = "the file is empty" if first.stat().st_size == 0 else "line 1 names no columns"
            raise check.fail(f"{section}.file", f"{empty}; expected the header line (or header = false "
                             "and the columns listed)", name)
    else:  # with a header, line 1 must name these columns (checked when the file is read)
        columns = tuple(check.typed(raw, "columns", section, list))
        bad = [c for c in columns if not isinstance(c, str) or not c.strip()]
        if bad or not columns:
            raise check.fail(f"{section}.columns", "expected a list of column names (text)", bad[0] if bad else columns)
    # source_file and line are the columns the reader adds to every row (the file and the line it was read from)
    if block and not re.fullmatch(r"[^\s:]+", block) or block in (*columns, "source_file", "line"):
        raise check.fail(f"{section}.block_column", "expected a new column name (not one of the line's columns, nor "
                         "source_file or line, which the reader adds; no spaces or ':'): the column that a line 'VALUE:' "
                         "gives the lines below it", block)
    if rest and len(columns) < 2:
        raise check.fail(f"{section}.last_column_rest", "needs at least two columns", columns)
    columns = (*columns, block) if block else columns
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated and "columns" in raw:
        raise check.fail(f"{section}.columns", "column names must be distinct", repeated[0])
    if repeated:
        positions = ", ".join(str(i) for i, c in enumerate(columns, start=1) if c == repeated[0])
        raise check.fail(f"{section}.file", f"line 1 names column {repeated[0]!r} more than once (columns {positions}): "
                         "rename all but one in the file, as the spec cannot tell them apart", name)
    file = TableFile(path, label, "csv", separator, encoding, quote, header, columns, escape, root, decimal, block, rest)
    if check_files and len(columns) > 1 and (heading := block_heading(file)):
        # Read as rows, the headings would be rejected and every row below kept without the value they give it.
        raise check.fail(f"{section}.block_column", f"missing: line 1 of {table_files(file)[0].label} is {heading!r}, a line "
                         "heading the lines below it, as the Netflix Prize's combined_data files give each movie's ratings "
                         "their movie: set block_column = \"<name>\" to read its value as the column <name> (docs/data.md, "
                         "\"Recipes for common public layouts\")")
    return file


def file_name(check: Checker, raw: dict[str, Any], section: str) -> str:
    """raw['file'] checked to be a name the file system can look up: os calls refuse a NUL character
    (ValueError), a lone surrogate that YAML's "\\ud800" writes (UnicodeEncodeError), and a name over NAME_MAX
    bytes (OSError), each otherwise a bare Python error out of the lookup."""
    name = check.typed(raw, "file", section, str)
    if "\0" in name:
        raise check.fail(f"{section}.file", "a file name cannot hold a NUL character", name)
    try:
        parts = [os.fsencode(part) for part in Path(name).parts]
    except UnicodeEncodeError:
        raise check.fail(f"{section}.file", "not a file name the file system can hold (a lone UTF-16 surrogate)", name) from None
    if any(len(part) > NAME_MAX for part in parts):
        raise check.fail(f"{section}.file", f"a file or directory name over {NAME_MAX} bytes, longer than file systems "
                         "hold", name)
    return name


def looked_up(directory: Path, name: str, pattern: bool, check_files: bool) -> tuple[Path, str, Path | None]:
    """(path, name, first) of a section's file `name` in `directory`: a compressed copy found in place of an
    absent file (then named as that copy), and the file whose header names the columns (a pattern's first match).
    Raises what the file system raises (OSError, RuntimeError for a looping link), for table_file to name."""
    path = directory.resolve() / name if pattern else (directory / name).resolve()
    if not pattern and check_files and not path.exists() and (copy := present(path)) is not None:
        # Kept compressed beside its place (ml-1m/ratings.dat.gz): read, and named, as that file.
        path, name = copy, str(Path(name).with_name(copy.name))
    first = next(iter(pattern_matches(directory, name)), None) if pattern else path
    return path, name, first


def suffix_format(path: Path) -> str:
    """The format a file name implies: parquet (.parquet), jsonl (.jsonl, .ndjson, .json; also compressed:
    .json.gz), else csv."""
    suffix = path.suffix.lower()
    if suffix in READABLE_SUFFIXES:
        suffix = Path(path.stem).suffix.lower()
    return SUFFIX_FORMATS.get(suffix, "csv")


def json_columns(check: Checker, raw: dict[str, Any], section: str, name: str, first: Path | None,
                 encoding: str) -> tuple[str, ...]:
    """A JSON lines file's columns: the spec's `columns`, or the keys of its first lines."""
    if "columns" in raw:
        columns = tuple(check.typed(raw, "columns", section, list))
        bad = [c for c in columns if not isinstance(c, str) or not c]
        if bad or not columns or len(set(columns)) != len(columns):
            raise check.fail(f"{section}.columns", "expected a list of distinct field names (text)", bad[0] if bad else columns)
        return columns
    if first is None or not first.is_file():
        raise check.fail(f"{section}.columns", "needed when the file is not there to name them", None)
    from assets.json_lines import json_keys

    try:
        return json_keys(first, encoding)
    except RawFileError as error:
        raise check.fail(f"{section}.file", str(error), name) from None


def table_files(file: TableFile) -> tuple[TableFile, ...]:
    """The files a table is read from: itself, or every file its pattern matches, in name order
    (a log with one file per day: 'logs/dt=*/impressions.csv'), each labelled by its own path."""
    if file.root is None:
        return (file,)
    pattern = file.path.relative_to(file.root).as_posix()
    prefix = file.label.removesuffix(pattern)
    return tuple(replace(file, path=p, label=prefix + p.relative_to(file.root).as_posix(), root=None)
                 for p in pattern_matches(file.root, pattern))


def pattern_matches(root: Path, pattern: str) -> list[Path]:
    """The files under `root` that `pattern` matches, in name order, each or, in its place, a compressed copy of
    it (`READABLE_SUFFIXES`, the first found, as `present` finds a named file's): 'logs/dt=*/impressions.csv'
    matches a day kept as impressions.csv.gz, which left out would be rows dropped unseen. A file the pattern
    matches itself is read as it is, and its compressed copy beside it is not read again."""
    matches = set(root.glob(pattern))
    for suffix in READABLE_SUFFIXES:
        for copy in root.glob(pattern + suffix):
            text = copy.with_name(copy.name[: -len(suffix)])
            if copy not in matches and text not in matches and not any(text.with_name(text.name + s) in matches
                                                                       for s in READABLE_SUFFIXES):
                matches.add(copy)
    return sorted(matches)


def features(check: Checker, table: dict[str, Any], section: str, file: TableFile,
             types: tuple[str, ...], parts: tuple[str, ...] = ()) -> tuple[tuple[Feature, ...], dict]:
    """The features of a section and their per-feature options (domains, bins, backoff).

    `parts`: the names a split column gives (users), usable as a categorical feature's column.
    """
    where = f"{section}.features"
    found, options = [], {}
    for name, body in table.items():
        key = f"{where}.{name}"
        if not isinstance(name, str):  # a YAML key written as a number, a date, or yes/no/on/off
            raise check.fail(key, f"a feature name is text; quote it (YAML reads {YAML_BOOLEANS}, numbers and dates "
                             "unquoted as values, not names)", name)
        if not re.fullmatch(NAME_PATTERN, name) or name in RESERVED:
            problem = f"'{name}' is a name the cleaned tables use themselves" if name in RESERVED else \
                f"a feature name is lower-case letters, digits and '_', starting with a letter ({NAME_PATTERN})"
            raise check.fail(key, problem, name)
        body = check.table(body, key, FEATURE_KEYS)
        kind = check.typed(body, "type", key, str)
        if kind not in types:
            hint = " (a user has one value per feature)" if kind in ("multi", "flags") else ""
            raise check.fail(f"{key}.type", f"expected one of {', '.join(types)}{hint}", kind)
        allowed = {"categorical": ("values", "missing", "backoff", "reject_garbled", "keep_missing"),
                   "numeric": ("min", "max", "bins", "integer", "values", "keep_missing"), "multi": ("delimiter", "missing", "max_values"),
                   "flags": ("max_values",)}[kind]
        for option in body:
            if option not in ("type", "column", "columns", *allowed):
                raise check.fail(f"{key}.{option}", f"does not apply to a {kind} feature", body[option])
        if kind == "flags":
            columns = tuple(check.typed(body, "columns", key, list))
            for column in columns:
                if column not in file.columns:
                    raise check.fail(f"{key}.columns", f"unknown column; {file.label} has {shown_columns(file.columns)}", column)
            if not columns:
                raise check.fail(f"{key}.columns", "expected the flag columns (one per value)", columns)
        else:
            if "columns" in body:
                raise check.fail(f"{key}.columns", "only a flags feature reads several columns; use column", body["columns"])
            columns = (check.column(body, "column", key, file, name, parts),)
            if columns[0] in parts and kind != "categorical":
                raise check.fail(f"{key}.type", "a part of a split column is a categorical feature", kind)
        delimiter = ""
        if kind == "multi":
            # A Parquet or JSON list column is already split; a text column there still needs its delimiter (checked when read).
            delimiter = check.typed(body, "delimiter", key, str, "" if file.format in ("parquet", "jsonl") else ...)
            if not delimiter and "delimiter" in body:
                raise check.fail(f"{key}.delimiter", "expected one or more characters", delimiter)
            if file.format == "csv" and delimiter == file.separator:
                raise check.fail(f"{key}.delimiter", "must differ from the file's separator", delimiter)
        options[name] = feature_options(check, body, key, kind)
        if check.typed(body, "keep_missing", key, bool, False):
            if section != "users":
                raise check.fail(f"{key}.keep_missing", "applies to user features (an item keeps a missing feature as "
                                 "missing already)", True)
            if columns[0] in parts:
                raise check.fail(f"{key}.keep_missing", "does not apply to a part of a split column (a value with "
                                 "another number of parts is rejected whole)", True)
            options[name]["keep_missing"] = True
        found.append(Feature(name, kind, columns, delimiter))
    return tuple(found), options


def feature_options(check: Checker, body: dict[str, Any], key: str, kind: str) -> dict[str, Any]:
    """A categorical feature's values, missing markers, backoff and text check; a numeric one's bounds,
    bins, integer flag and allowed values.

    Returns {"domain", "backoff", "missing" (only when the spec gives it)} or {"domain", "numeric"}; a multi or
    flags feature's {"missing", "max_values"}, each only when the spec gives it.
    """
    if kind == "categorical":
        values = check.typed(body, "values", key, list, [])
        missing = check.typed(body, "missing", key, list, list(MISSING_MARKERS))
        for option, items in (("values", values), ("missing", missing)):
            bad = [v for v in items if not isinstance(v, str)]
            if bad:
                raise check.fail(f"{key}.{option}", "expected a list of text values (quote numbers: \"1\")", bad[0])
        backoff = check.typed(body, "backoff", key, list, [])
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in backoff) or backoff != sorted(backoff, reverse=True):
            raise check.fail(f"{key}.backoff", "expected prefix lengths, longest first (e.g. [3, 1])", backoff)
        options = {"domain": Category(tuple(values), tuple(missing)), "backoff": tuple(backoff)}
        if "missing" in body:
            options["missing"] = tuple(missing)
        if check.typed(body, "reject_garbled", key, bool, False):
            for option in ("values", "missing"):
                if option in body:
                    raise check.fail(f"{key}.{option}", "does not apply with reject_garbled (free text: any value that "
                                     "is not broken text)", body[option])
            options["domain"] = Text()
        return options
    if kind == "numeric":
        low = check.typed(body, "min", key, (int, float))
        high = check.typed(body, "max", key, (int, float))
        if not low < high:
            raise check.fail(f"{key}.max", f"must be greater than min ({low})", high)
        bins = check.typed(body, "bins", key, list, [])
        numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bins)
        if not numbers or bins != sorted(set(bins)) or any(not low < b < high for b in bins):
            raise check.fail(f"{key}.bins", f"expected increasing bucket edges strictly between min {low} and max {high}", bins)
        integer = check.typed(body, "integer", key, bool, False)
        values = check.typed(body, "values", key, list, [])
        if integer and not all(isinstance(b, int) and not isinstance(b, bool) for b in (low, high)):
            raise check.fail(f"{key}.min", "an integer feature has whole-number bounds", [low, high])
        if values and (not integer or any(isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high for v in values)):
            problem = "needs integer = true (the allowed codes of an integer feature)" if not integer else \
                f"expected whole numbers between min {low} and max {high}"
            raise check.fail(f"{key}.values", problem, values)
        name = key.split(".")[-1]
        field = NumericField(name, float(low), float(high), tuple(float(b) for b in bins), integer)
        domain = IntegerIn(low, high, tuple(values)) if integer else NumberIn(float(low), float(high))
        return {"domain": domain, "numeric": field}
    options = {}
    if kind == "multi" and "missing" in body:  # values dropped from the list (ML-20M's '(no genres listed)')
        missing = check.typed(body, "missing", key, list)
        if not all(isinstance(v, str) for v in missing):
            raise check.fail(f"{key}.missing", "expected a list of text values", missing)
        options["missing"] = tuple(missing)
    if "max_values" in body:  # multi or flags: the most values an item keeps (assets/meta_tasks.py `capped_lists`)
        cap = body["max_values"]
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MULTI_VALUES_LIMIT:
            raise check.fail(f"{key}.max_values", f"expected a whole number from 1 to {MULTI_VALUES_LIMIT}", cap)
        options["max_values"] = cap
    return options


def time_range(check: Checker, section: dict[str, Any]) -> EpochSeconds:
    """The plausible interaction times (epoch seconds) from timestamp_min/timestamp_max dates."""
    bounds = []
    for key, default in zip(("timestamp_min", "timestamp_max"), DEFAULT_TIME_RANGE):
        value = section.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):  # Unix seconds, for a range that is not whole days
            try:
                datetime.fromtimestamp(value, tz=timezone.utc)  # the range is shown as dates, and times are Int64
            except (OverflowError, OSError, ValueError):
                raise check.fail(f"interactions.{key}", "Unix seconds out of the range of dates (years 1-9999)",
                                 value) from None
            bounds.append(value)
            continue
        if isinstance(value, datetime):
            value = value.date()
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError:
                value = None
        if not isinstance(value, date):
            raise check.fail(f"interactions.{key}", "expected a date, YYYY-MM-DD, or Unix seconds", section.get(key))
        bounds.append(epoch(value.year, value.month, value.day))
    if not bounds[0] < bounds[1]:
        raise check.fail("interactions.timestamp_max", "must be after timestamp_min", section.get("timestamp_max"))
    start, end = (datetime.fromtimestamp(b, tz=timezone.utc).date() for b in bounds)
    time_format = check.typed(section, "timestamp_format", "interactions", str, "unix")
    if time_format not in TIME_FORMATS and "%" not in time_format:
        raise check.fail("interactions.timestamp_format",
                         f"expected one of {', '.join(TIME_FORMATS)} or a strftime pattern such as '%Y-%m-%d %H:%M:%S'", time_format)
    if time_format not in TIME_FORMATS and (problem := pattern_problem(time_format)):
        raise check.fail("interactions.timestamp_format", problem, time_format)
    why = check.typed(section, "timestamp_reason", "interactions", str,
                      f"the spec's timestamp_min {start} .. timestamp_max {end}")
    return EpochSeconds(bounds[0], bounds[1], why, "" if time_format == "unix" else time_format)


def pattern_problem(pattern: str) -> str | None:
    """Why polars cannot read times written as strftime `pattern`, or None: a time written with it
    must read back as itself (an unknown directive such as %Q, or a pattern without a whole date, does not)."""
    import polars as pl

    sample = datetime(2001, 2, 13, 14, 15, 16)
    try:
        written = pl.Series([sample]).dt.replace_time_zone("UTC").dt.strftime(pattern)  # aware: %z can be written
        read = written.str.to_datetime(pattern, strict=False, time_unit="us")
    except pl.exceptions.PolarsError as error:
        return f"not a pattern polars can write times with ({str(error).splitlines()[0]})"
    if read[0] is None or read[0].date() != sample.date():
        return f"a time written with it ({written[0]!r}) does not read back as that time: the pattern needs a whole date"
    return None


def label_range(check: Checker, raw: Any) -> tuple[str, float, float, float, tuple[float, ...]]:
    """(task, label_min, label_max, label_step, implicit labels) from the [label] table."""
    label = check.table(raw, "label", ("kind", "min", "max", "step", "implicit", *NEGATIVE_KEYS))
    kind = check.typed(label, "kind", "label", str)
    if kind not in LABEL_KINDS:
        raise check.fail("label.kind", f"expected one of {', '.join(LABEL_KINDS)}", kind)
    if kind == "click":
        for key in ("min", "max", "step", "implicit"):
            if key in label:
                raise check.fail(f"label.{key}", "a click label is 0 or 1; min, max, step and implicit apply to ratings",
                                 label[key])
        return "ctr", 0.0, 1.0, 1.0, ()
    for key in NEGATIVE_KEYS:
        if key in label:  # a rating log's low ratings are its negatives: an unrated item is no rating
            raise check.fail(f"label.{key}", "applies to click logs (kind = \"click\") of positives only; a rating "
                             "log's labels are the ratings themselves, and an unrated item has no rating to sample",
                             label[key])
    low, high = check.typed(label, "min", "label", (int, float)), check.typed(label, "max", "label", (int, float))
    if not low < high:
        raise check.fail("label.max", f"must be greater than min ({low})", high)
    step = check.typed(label, "step", "label", (int, float), 1)
    if not 0 < step <= high - low or not step_divides(low, high, step):
        raise check.fail("label.step", f"expected a positive step that divides max - min ({float(high) - float(low):g})", step)
    implicit = check.typed(label, "implicit", "label", (int, float, list), [])
    implicit = implicit if isinstance(implicit, list) else [implicit]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or low <= v <= high for v in implicit):
        raise check.fail("label.implicit", f"expected label values outside min {low:g} .. max {high:g} that record an "
                         "implicit interaction (e.g. 0)", label["implicit"])
    return "rating", float(low), float(high), float(step), tuple(float(v) for v in implicit)


def step_divides(low: float, high: float, step: float) -> bool:
    """Whether `step` divides max - min: False also when there are too many steps to count as a float
    (min -1e308, max 1e308: the span is inf, and round(inf) raises OverflowError)."""
    try:
        steps = (high - low) / step
    except OverflowError:  # two whole numbers whose difference is past float's range
        return False
    return math.isfinite(steps) and abs(steps - round(steps)) <= 1e-9


def negative_sampling(check: Checker, raw: Any) -> tuple[int, int]:
    """(negatives_per_positive, negatives_seed) from the [label] table: (0, 0) without sampling.

    label_range has rejected both keys on a rating spec already.
    """
    label = raw if isinstance(raw, dict) else {}
    per_positive = check.typed(label, "negatives_per_positive", "label", int, 0)
    if "negatives_per_positive" in label and per_positive < 1:
        raise check.fail("label.negatives_per_positive", "expected a whole number of sampled negatives per positive, "
                         "1 or more (leave the key out for none)", per_positive)
    seed = check.typed(label, "negatives_seed", "label", int, 0)
    if seed < 0 or "negatives_seed" in label and not per_positive:
        problem = "expected a whole number, 0 or more" if seed < 0 else "needs negatives_per_positive (it seeds that sampling)"
        raise check.fail("label.negatives_seed", problem, seed)
    return per_positive, seed


def feature_source(check: Checker, raw: dict[str, Any], section: str, directory: Path, prefix: str,
                   interactions: TableFile, check_files: bool = True) -> TableFile:
    """A section's own file, or the interactions file when the section names none."""
    if "file" in raw:
        return table_file(check, raw, section, directory, prefix, check_files)
    for key in FILE_KEYS:
        if key in raw:
            raise check.fail(f"{section}.{key}", "without a file, features are columns of the interactions file", raw[key])
    return interactions


def split_columns(check: Checker, raw: Any, file: TableFile) -> tuple[Split, ...]:
    """The [users.split.<column>] tables: columns holding several values, and the names of their parts."""
    found = []
    for column, body in check.table(raw, "users.split", file.columns).items():
        key = f"users.split.{column}"
        body = check.table(body, key, SPLIT_KEYS)
        separator = check.typed(body, "separator", key, str)
        if not separator:
            raise check.fail(f"{key}.separator", "expected one or more characters", separator)
        parts = tuple(check.typed(body, "parts", key, list))
        for part in parts:
            if not isinstance(part, str) or not re.fullmatch(NAME_PATTERN, part) or part in RESERVED or part in file.columns:
                problem = f"a part is named like a feature ({NAME_PATTERN}) and not like a column of {file.label} or " \
                    "a name the cleaned tables use"
                raise check.fail(f"{key}.parts", problem, part)
        if len(parts) < 2 or len(set(parts)) != len(parts):
            raise check.fail(f"{key}.parts", "expected at least two distinct part names", parts)
        found.append(Split(column, separator, parts, check.typed(body, "lowercase", key, bool, False)))
    taken = [p for s in found for p in s.parts]
    if len(taken) != len(set(taken)):
        raise check.fail("users.split", "two split columns give parts of the same name", sorted(taken))
    return tuple(found)


def user_domains(check: Checker, features_: tuple[Feature, ...], options: dict, splits: tuple[Split, ...],
                 id_digits: bool) -> tuple[tuple[str, object], ...]:
    """Every users field and its domain, in the order cleaning tries them: the id, then each feature;
    a split column's rules (its number of parts, then each part's) stand where its first part's feature stands.

    A split column's parts are named after the features that read them (a part no feature reads is not checked).
    """
    part_of = {part: split for split in splits for part in split.parts}
    feature_of: dict[str, str] = {}
    for feature in features_:
        column = feature.columns[0]
        if column in part_of:
            if column in feature_of:
                raise check.fail(f"users.features.{feature.name}.column", f"part {column!r} is already feature "
                                 f"{feature_of[column]!r}", column)
            feature_of[column] = feature.name
    split_columns_ = {split.column for split in splits}
    domains: list[tuple[str, object]] = [("user_id", Identifier(digits=id_digits))]
    for feature in features_:
        if feature.columns[0] in split_columns_:
            raise check.fail(f"users.features.{feature.name}.column", "the column is split into parts; a feature reads "
                             "one of its parts", feature.columns[0])
        split = part_of.get(feature.columns[0])
        if split is None:
            domains.append((feature.name, options[feature.name]["domain"]))
        elif split.column not in dict(domains):
            names = tuple(feature_of.get(p, p) for p in split.parts)
            parts = tuple(options[feature_of[p]]["domain"] if p in feature_of else None for p in split.parts)
            domains.append((split.column, Parts(names, split.separator, parts, split.lowercase)))
    return tuple(domains)


def display_columns(check: Checker, raw: Any, file: TableFile, features_: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """items.display as (name shown, column or item feature): a list of names, or a table {name = column}."""
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = [(name, name) for name in raw]
    else:
        raise check.fail("items.display", "expected a list of columns, or a table {shown name = column}", raw)
    for name, column in pairs:
        if not isinstance(name, str) or not name.strip():  # YAML reads {1: title} or {yes: title} as a number or bool key
            raise check.fail("items.display", "a shown name is text (quote it in YAML: \"1\", \"yes\")", name)
        if not isinstance(column, str) or (column not in file.columns and column not in features_):
            raise check.fail("items.display", f"unknown column; {file.label} has {shown_columns(file.columns)}"
                             f"{' and the item features ' + ', '.join(features_) if features_ else ''}", column)
        if name in RESERVED or (name != column and name in features_):
            raise check.fail("items.display", "a shown name may not be a name the cleaned tables use", name)
    return tuple(pairs)


def load_spec(location: Path, data_dir: Path | None = None, *, builtin: bool = False,
              check_files: bool = True) -> CustomDataset:
    """Read and validate a spec file (or the spec in a directory) against its data files.

    The files are looked up in `data_dir` (default: the spec file's directory). `builtin` allows
    a built-in dataset's name and labels rows by its directory under PAML_DATA_DIR ('ml-1m/users.dat');
    without `check_files` the files are not opened (a spec whose columns it lists itself).
    Raises SpecError at the first mistake: a missing or unknown key, a value of the wrong type,
    a missing file, an unknown column, a feature type that cannot apply.
    """
    path = find_spec_file(location)
    check = Checker(path)
    raw = check.table(read_spec_file(path), "", TOP_KEYS)
    name = check.typed(raw, "name", "", str)
    if not re.fullmatch(NAME_PATTERN, name) or (name in DATASETS) != builtin:
        problem = f"'{name}' is a built-in dataset; choose another name" if name in DATASETS else \
            f"a built-in spec is named after its dataset ({', '.join(DATASETS)})" if builtin else \
            f"a dataset name is lower-case letters, digits and '_', starting with a letter ({NAME_PATTERN})"
        raise check.fail("name", problem, name)
    task, label_min, label_max, label_step, implicit = label_range(check, check.typed(raw, "label", "", dict))
    negatives_per_positive, negatives_seed = negative_sampling(check, raw["label"])
    directory = data_dir if data_dir is not None else path.parent
    # Rows are labelled '<dataset>/<file>'; a built-in's by its directory under PAML_DATA_DIR ('ml-1m/users.dat').
    prefix = LAYOUTS[name].subdir if builtin and name in LAYOUTS else name

    section = check.table(check.typed(raw, "interactions", "", dict), "interactions", SECTION_KEYS["interactions"])
    log = table_file(check, section, "interactions", directory, prefix, check_files)
    interaction_columns = {
        "user_id": check.column(section, "user_id", "interactions", log),
        "item_id": check.column(section, "item_id", "interactions", log),
        # A log of plays or purchases has no label column: with sampled negatives every row is a positive.
        "label": check.column(section, "label", "interactions", log, None if negatives_per_positive else ...),
        "ts": check.column(section, "timestamp", "interactions", log, None),
    }
    times = time_range(check, section) if interaction_columns["ts"] else None

    sides, splits = {}, ()
    for side, types in (("users", USER_FEATURE_TYPES), ("items", ITEM_FEATURE_TYPES)):
        id_key = "user_id" if side == "users" else "item_id"
        if side not in raw:  # a log without user (item) attributes still needs the id as a feature
            raise check.fail(side, f"section missing: a dataset needs at least one {side[:-1]} feature; without {side[:-1]} "
                             f"attributes, the log's {id_key} column may be the one: [{side}.features] {side[:-1]} = "
                             f"{{ type = \"categorical\", column = \"{interaction_columns[id_key]}\" }}")
        body = check.table(check.typed(raw, side, "", dict), side, SECTION_KEYS[side])
        file = feature_source(check, body, side, directory, prefix, log, check_files)
        id_column = check.column(body, "id", side, file, interaction_columns[id_key] if file is log else ...)
        if side == "users":
            splits = split_columns(check, body.get("split", {}), file)
        parts = tuple(p for s in splits for p in s.parts) if side == "users" else ()
        found, options = features(check, check.typed(body, "features", side, dict), side, file, types, parts)
        if not found:
            raise check.fail(f"{side}.features", "give at least one feature (an id column may be one: "
                             f"{{ type = \"categorical\", column = \"{id_column}\" }})", {})
        sides[side] = (body, file, id_column, found, options)

    users_body, users_file, user_id_column, user_features, user_options = sides["users"]
    items_body, items_file, item_id_column, item_features, item_options = sides["items"]
    details = details_table(check, items_body, directory, prefix, check_files)
    details_file, details_id_column, details_features, details_options = details or (None, "", (), {})
    all_item_features = {f.name: f for f in (*item_features, *details_features)}  # details replace same-named ones
    all_item_options = item_options | details_options
    display = display_columns(check, items_body.get("display", []), items_file, tuple(all_item_features))
    # A log without user features (MovieLens-10M, Amazon) has no [groups]: the paper's rule then tags no user major.
    groups = check.table(check.typed(raw, "groups", "", dict, {}), "groups", ("features",))
    tagging = tuple(check.typed(groups, "features", "groups", list, []))
    for feature in tagging:
        if not isinstance(feature, str) or feature not in user_options:  # a list or table is not hashable
            raise check.fail("groups.features", f"not a user feature; the users have {', '.join(user_options)}", feature)
    if len(set(tagging)) != len(tagging):  # a feature named twice would count twice towards the major rule
        raise check.fail("groups.features", "a feature is listed more than once", sorted({f for f in tagging if tagging.count(f) > 1}))
    if 0 < len(tagging) < MAJOR_MIN_TOP_FEATURES:
        raise check.fail("groups.features", f"a user is major with at least {MAJOR_MIN_TOP_FEATURES} features holding a "
                         f"top value (paper), so give at least {MAJOR_MIN_TOP_FEATURES} user features; with fewer, leave "
                         "out [groups] (no user is then major: every user is minor)", tagging)

    item_types = {name: f.type for name, f in all_item_features.items()}
    spec = DatasetSpec(
        name=name, task=task,  # type: ignore[arg-type]
        user_fields=tuple(f.name for f in user_features),
        item_fields=tuple(n for n, t in item_types.items() if t in ("categorical", "numeric")),
        item_multi_fields=tuple(n for n, t in item_types.items() if t in ("multi", "flags")),
        tagging_fields=tagging, label_min=label_min, label_max=label_max, label_step=label_step,
        backoff=tuple((f, o["backoff"]) for f, o in user_options.items() if o.get("backoff")),
        display_fields=tuple(shown for shown, _ in display),
        user_domains=user_domains(check, user_features, user_options, splits,
                                  check.typed(users_body, "id_digits", "users", bool, False)),
        item_id_domain=Identifier(digits=check.typed(items_body, "id_digits", "items", bool, False)),
        time_domain=times,
        numeric=tuple(o["numeric"] for o in (*user_options.values(), *all_item_options.values()) if "numeric" in o),
        item_missing=tuple((f, o["missing"]) for f, o in all_item_options.items() if "missing" in o),
        multi_caps=tuple((f, o["max_values"]) for f, o in all_item_options.items() if "max_values" in o),
        user_keep_missing=tuple(f for f, o in user_options.items() if o.get("keep_missing")),
        implicit_labels=implicit,
        spec_file=str(path),
        negatives_per_positive=negatives_per_positive,
        negatives_seed=negatives_seed,
    )
    return CustomDataset(
        spec=spec, spec_path=path, interactions=log, interaction_columns=interaction_columns,
        time_format=times.format or "unix" if times else "unix",
        users=None if users_file is log else users_file, user_id_column=user_id_column, user_features=user_features,
        items=None if items_file is log else items_file, item_id_column=item_id_column, item_features=item_features,
        display=display, splits=splits, details=details_file, details_id_column=details_id_column,
        details_features=details_features,
    )


def details_table(check: Checker, items: dict[str, Any], directory: Path, prefix: str,
                  check_files: bool) -> tuple[TableFile | None, str, tuple[Feature, ...], dict] | None:
    """[items.details]: a second item table joined on the item id, whose features replace the items
    file's features of the same name. None without the section; the file is None when it is
    `optional` and absent (its features are still the dataset's, missing for every item).
    """
    if "details" not in items:
        return None
    where = "items.details"
    body = check.table(items["details"], where, SECTION_KEYS[where])
    optional = check.typed(body, "optional", where, bool, False)
    if optional and "columns" not in body:
        raise check.fail(f"{where}.columns", "an optional details file lists its columns, so that the spec is checked "
                         "when the file is absent", None)
    # Absent means no such path: a directory in the file's place is a mistake to report, not an absent file.
    absent = optional and check_files and absent_file(check, body, where, directory)
    file = table_file(check, body, where, directory, prefix, check_files and not absent)
    id_column = check.column(body, "id", where, file)
    found, options = features(check, check.typed(body, "features", where, dict), where, file, ITEM_FEATURE_TYPES)
    if not found:
        raise check.fail(f"{where}.features", "give at least one feature", {})
    return None if absent else file, id_column, found, options


def absent_file(check: Checker, body: dict[str, Any], where: str, directory: Path) -> bool:
    """Whether the file of section `where` is absent: no such path, nor a compressed copy of it."""
    name = file_name(check, body, where)
    try:
        return present(directory / name) is None and not (directory / name).exists()
    except OSError as error:  # a path over PATH_MAX, a directory that may not be searched
        raise check.fail(f"{where}.file", f"cannot be looked up in {directory}: {error.strerror or error}", name) from None


def builtin_spec_path(name: str) -> Path:
    """The spec file of built-in dataset `name` (assets/builtin_specs/<name>.toml)."""
    return BUILTIN_SPEC_DIR / f"{name}.toml"


def load_builtin(name: str, data_dir: Path | None = None) -> CustomDataset:
    """A built-in dataset's spec; with `data_dir` (its directory under PAML_DATA_DIR) checked against
    the files there, without it read alone (for the DatasetSpec every later step reads)."""
    return load_spec(builtin_spec_path(name), data_dir, builtin=True, check_files=data_dir is not None)


# -- The registry of added datasets -----------------------------------------------------------

def registry_dir() -> Path:
    """PAML_HOME/datasets (PAML_HOME as pipelines/resources.py resolves it)."""
    home = os.environ.get("PAML_HOME", Path(__file__).resolve().parent.parent / ".paml")
    return Path(home).resolve() / "datasets"


def registered_names() -> tuple[str, ...]:
    """The names registered with `dataset add`, sorted (no spec is read)."""
    directory = registry_dir()
    return tuple(sorted(p.stem for p in directory.glob("*.toml"))) if directory.is_dir() else ()


def registered_spec_path(name: str) -> Path:
    """The spec file a registered dataset was added from."""
    entry = registry_dir() / f"{name}.toml"
    with entry.open("rb") as handle:
        return Path(tomllib.load(handle)["spec"])


def load_registered(name: str) -> CustomDataset:
    """The registered dataset `name`, its spec read and validated again (the files may have changed)."""
    return load_spec(registered_spec_path(name))


def require_unclicked(dataset: CustomDataset) -> None:
    """Raise a PositivesOnlyError when a click log's labels hold 1 and never 0, unless its spec samples negatives.

    Checked when a dataset is added: such a log cleans without complaint and would stop only at
    `user_splits` (OneClassError), after reading and cleaning all of it. The label column alone is scanned.
    """
    if dataset.spec.task != "ctr" or dataset.spec.negatives_per_positive:
        return
    from assets.custom_reader import label_classes

    column = dataset.interaction_columns["label"]
    found = label_classes(dataset.interactions, column)
    if found.ones and not found.zeros:
        # A stray false among 1s is no 0 to cleaning, which rejects it: say so, as it may be the log's only 0s.
        stray = (f" ({found.stray_booleans} rows write it true or false among other labels, which cleaning rejects: "
                 f"{STRAY_BOOLEAN_HINT})" if found.stray_booleans else "")
        raise PositivesOnlyError(
            f"{dataset.spec_path}: {dataset.interactions.label} ({dataset.interactions.path}): every label in column "
            f"{column!r} that is a number is {found.one_as!r} ({found.ones} rows), none is 0{stray}: a log of positives "
            "only (plays, purchases, likes) has no unclicked impressions to tell clicks from. Add negatives_per_positive "
            "= 4 to [label] to sample 4 unclicked catalogue items per positive (docs/data.md), or add the log's unclicked "
            "impressions as rows labelled 0"
        )


def check_text_prefixes(dataset: CustomDataset) -> None:
    """Raise a SpecError naming the section's file when the first PREFIX_BYTES of a text file (CSV or JSON
    lines; of a pattern, each file it matches) hold bytes the read would refuse (`check_prefix`): a latin-1
    file declared UTF-8, a NUL byte, a UTF-16 byte-order mark, an empty file are named at `dataset add`, not at
    the first pipeline step. A pattern's files after the first are also checked for line 1 naming the
    first's columns (a header), as the read requires of each."""
    sections = (("interactions", dataset.interactions), ("users", dataset.users), ("items", dataset.items),
                ("items.details", dataset.details))
    for section, table in sections:
        if table is None or table.format not in ("csv", "jsonl"):
            continue
        for index, file in enumerate(table_files(table)):
            try:
                check_prefix(file.path, f"{file.label} ({file.path})", file.encoding)
                if index and file.format == "csv" and file.header:
                    found = header_line(file.path, file.separator, file.quote, file.encoding)
                    check_header(list(found), file.fields, file.label, file.path)
            except RawFileError as error:
                raise Checker(dataset.spec_path).fail(f"{section}.file", str(error)) from None


def register(location: Path) -> tuple[CustomDataset, Path | None]:
    """Validate the spec at `location` and register it; returns (dataset, the spec path it replaced or None)."""
    dataset = load_spec(location)
    require_unclicked(dataset)
    check_text_prefixes(dataset)
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    entry = directory / f"{dataset.spec.name}.toml"
    replaced = registered_spec_path(dataset.spec.name) if entry.is_file() else None
    spec_path = str(dataset.spec_path).replace("\\", "\\\\").replace('"', '\\"')
    # Written to a temporary name, then renamed: a killed `dataset add` leaves no half entry. The name is this
    # writer's own: with one shared name, two adds at once renamed each other's file and one failed (FileNotFoundError).
    partial = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.partial")
    try:
        partial.write_text(f'spec = "{spec_path}"\n', encoding="utf-8")
        partial.replace(entry)
    finally:
        partial.unlink(missing_ok=True)
    return dataset, replaced


def unregister(name: str) -> Path:
    """Remove a registration (the data and its spec stay); returns the spec file it pointed at."""
    if name not in registered_names():
        raise SpecError(f"no dataset {name!r} is registered; registered: {', '.join(registered_names()) or 'none'}")
    spec_path = registered_spec_path(name)
    (registry_dir() / f"{name}.toml").unlink()
    return spec_path
