"""JSON lines files (Yelp's and Amazon's reviews): one JSON object per line, read into text columns.

Each line's top-level fields are the columns (the spec names them as it names a CSV's): a string
is its text, a number its digits (a whole float as an integer, as for Parquet: `5.0` is `5`), true
and false are `true` and `false`, null or an absent field is missing, and a list of values is a
multi feature's values, as a Parquet list column is. NaN (which Python's json reads) is the text
'NaN', as a CSV's NaN is: cleaning reads it as missing and a rejection shows it as the file wrote it;
in a list it is a missing value. A line that is not valid JSON, not an object, holds an object where
the spec reads a value, or writes a read field twice with different values ({"user": 1, "user": 2}: no
reader should choose one silently) is a rejected row with its line number and reason, as a CSV line with
the wrong number of fields is. A file where no line, or fewer lines than are
rejected, gives a row stops the read: it is not JSON lines (a JSON array, a pretty-printed file,
Python's single-quoted dicts).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import polars as pl

from assets.raw_files import BLANK_LINE, CUT_OFF, LONE_CR, MALFORMED_SCHEMA
from assets.compressed import decompressed
from assets.raw_text import (
    CHUNK_BYTES, UTF8_BOM, Decoding, EmptyRawFileError, RawFileError, check_start, decoding_of,
    starts_with_cr_line_ends,
)

KEY_LINES = 1000  # the lines whose keys name a file's columns when the spec does not list them
SHOWN_CHARACTERS = 120  # of a bad line, in an error message
EXACT_FLOAT = 2.0**53  # whole floats below this are integers exactly
NAN_TEXT = "NaN"  # a field written NaN, as a CSV's NaN reads (a missing-value marker to cleaning)


class NotAValue(ValueError):
    """A field holding a JSON object (or a list of lists) where a value or a list of values is read."""


def field_text(value: Any) -> str | None | list[str | None]:
    """A JSON field as a CSV field would read: text, None for missing, a list of texts for a list.

    Raises NotAValue for an object, or a list holding objects or lists.
    """
    if not isinstance(value, list):
        return scalar_text(value)
    try:
        # NaN in a list is a missing value among the others (a multi feature's), not the value 'NaN'.
        return [None if isinstance(v, float) and math.isnan(v) else scalar_text(v) for v in value]
    except NotAValue as error:
        raise NotAValue(f"a list holding {error}") from None


LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON may escape one (\\ud800); no text encoding holds it


def scalar_text(value: Any) -> str | None:
    """A JSON scalar as text; NotAValue ('an object', 'a list', text holding a lone surrogate) for anything else."""
    if isinstance(value, str) and (surrogate := LONE_SURROGATE.search(value)):
        raise NotAValue(f"text with a lone UTF-16 surrogate escape (\\u{ord(surrogate.group()):04x}), which is no character")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: True is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):  # Python's json reads NaN: the text, as a CSV's NaN (cleaning reads it as missing)
            return NAN_TEXT
        # Whole floats as integers: 5.0 stars is the rating 5, 1700000000.0 is Unix seconds.
        return str(int(value)) if value.is_integer() and abs(value) < EXACT_FLOAT else repr(value)
    raise NotAValue("an object" if isinstance(value, dict) else "a list")


def line_reason(text: str, kept: Collection[str] = ()) -> tuple[dict | None, str | None]:
    """(the object on a line, None) or (None, why the line gives no row); a field among `kept` written
    twice with different values gives no row (`repeated_fields`)."""
    if not text.strip():
        return None, BLANK_LINE
    try:
        value, repeats = parsed_line(text, kept)
    except json.JSONDecodeError as error:
        hint = " (a Python dict, not JSON: single quotes)" if text.lstrip().startswith("{'") else ""
        if "\r" in text:  # in a file of LF line ends a CR alone is no line end: two objects joined by one
            hint += f" ({LONE_CR})"
        return None, f"not valid JSON: {error.msg} at character {error.pos + 1}{hint}"
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(type(value), "a number")
        return None, f"{kind}, not a JSON object"
    for key, values in repeats.items():
        written = [json.dumps(v, ensure_ascii=False) for v in values]
        if len(set(written)) > 1:
            times = "twice" if len(values) == 2 else f"{len(values)} times"
            shown = ", then ".join(w[:SHOWN_CHARACTERS] for w in written)
            return None, f"field {key!r} written {times}, with different values ({shown}); expected it once"
    return value, None


def parsed_line(text: str, kept: Collection[str]) -> tuple[Any, dict[str, list]]:
    """`json.loads(text)` (a key written twice keeps its last value, as Python's json does) and, when it is
    an object, the keys among `kept` it writes more than once, each with its values in order.

    Only a line that may write such a key is parsed with a pairs hook (a third slower): one that writes
    one of them more than once as itself, or holds an escape that may spell one otherwise (\\u, \\/).
    """
    if not kept or ("\\u" not in text and "\\/" not in text
                    and all(text.count(json.dumps(k, ensure_ascii=False)) < 2 for k in kept)):
        return json.loads(text), {}
    repeats: dict[str, list] = {}

    def pairs_object(pairs: list[tuple[str, Any]]) -> dict:
        # Called for each object, innermost first: the last call is the line's own object.
        nonlocal repeats
        value = dict(pairs)
        repeats = {} if len(value) == len(pairs) else {
            k: [v for key, v in pairs if key == k] for k, n in Counter(k for k, _ in pairs).items() if n > 1 and k in kept}
        return value

    value = json.loads(text, object_pairs_hook=pairs_object)
    return value, repeats if isinstance(value, dict) else {}


def line_row(text: str, kept: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(the `kept` fields of a line as text, None) or (None, why the line gives no row)."""
    record, reason = line_reason(text, kept)
    if record is None:
        return None, reason
    row = {}
    for column in kept:
        try:
            row[column] = field_text(record.get(column))
        except NotAValue as error:
            return None, f"field {column!r} holds {error}; expected a value or a list of values"
    return row, None


@dataclass
class LineRows:
    """Rows and rejected lines read one line at a time in Python.

    Attributes:
        lines: each row's 1-based line number.
        values: each kept column's values, one per row (text, None or a list of text).
        listed: the columns some row holds a list in.
        bad: the rejected lines' `line`, `text` and `reason`.
    """

    lines: list[int] = field(default_factory=list)
    values: dict[str, list] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)
    bad: dict[str, list] = field(default_factory=lambda: {"line": [], "text": [], "reason": []})


def python_rows(numbered: Iterable[tuple[int, str, bool]], kept: list[str], ends_with_newline: bool) -> LineRows:
    """Each (line number, text, whether it is the file's last line) read with `line_row`; a rejected last
    line of a file without a final line ending says it may be cut off."""
    out = LineRows(values={c: [] for c in kept})
    for number, text, last in numbered:
        row, reason = line_row(text, kept)
        if reason is not None:
            if last and not ends_with_newline and reason != BLANK_LINE:
                reason += f" ({CUT_OFF})"
            out.bad["line"].append(number)
            out.bad["text"].append(text)
            out.bad["reason"].append(reason)
            continue
        out.lines.append(number)
        for column, value in row.items():
            out.values[column].append(value)
            if isinstance(value, list):
                out.listed.add(column)
    return out


def rows_frame(read: LineRows, kept: list[str], listed: set[str]) -> pl.DataFrame:
    """`line` and the kept columns of `read`'s rows: a column in `listed` is a list of text (a value alone
    becomes a list of one, a missing one stays missing), the others text."""
    return pl.DataFrame(
        {"line": read.lines, **{c: [[v] if v is not None and not isinstance(v, list) else v for v in read.values[c]]
                                if c in listed else read.values[c] for c in kept}},
        schema={"line": pl.Int64, **{c: pl.List(pl.String) if c in listed else pl.String for c in kept}},
    )


_lines_read = Counter()  # JSON lines this process has read, per reader: "polars", "python" (`lines_read`)


def lines_read() -> dict[str, int]:
    """How many JSON lines this process has read with polars and in Python (the raw_logs step logs what a
    read added): the share the fast path takes on a real file."""
    return {"polars": _lines_read["polars"], "python": _lines_read["python"]}


def count_lines(polars: int, python: int) -> None:
    """Add to `lines_read`."""
    _lines_read.update(polars=polars, python=python)


def read_json_lines(path: Path, label: str, columns: tuple[str, ...], *, encoding: str = "utf-8",
                    used: frozenset[str] | None = None, fast: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows, malformed) of a JSON lines file: `source_file`, `line` and each of `columns` (only the
    `used` ones, when given) as text, or a list of text for a column some line holds a list in.

    UTF-8 files are read by polars (assets/json_lines_fast.py), in parallel, with the lines it cannot
    vouch for read in Python; `fast=False` reads every line in Python (the reference that path is
    tested against). The two give the same frames.

    Raises a RawFileError for a file that does not decode (assets/raw_text.py), or where fewer lines
    give a row than are rejected (`require_objects`).
    """
    decoding = decoding_of(path, label, encoding)
    kept = [c for c in columns if used is None or c in used]
    rows = None
    if fast:
        from assets.json_lines_fast import polars_rows  # that module reads its odd lines with this one's

        rows, bad = polars_rows(decoding, kept) or (None, None)
    if rows is None:
        read = python_rows(numbered_lines(decoding), kept, decoding.ends_with_newline)
        rows, bad = rows_frame(read, kept, read.listed), read.bad
        count_lines(0, len(read.lines) + len(read.bad["line"]))
    rows = rows.select(pl.lit(label).alias("source_file"), pl.all())
    malformed = pl.DataFrame(bad, schema={"line": pl.Int64, "text": pl.String, "reason": pl.String})
    malformed = malformed.select(pl.lit(label).alias("source_file"), pl.all()).cast(MALFORMED_SCHEMA)
    require_objects(rows.height, malformed, f"{label} ({path})")
    return rows, malformed


def numbered_lines(decoding: Decoding) -> Iterator[tuple[int, str, bool]]:
    """(1-based line number, text without its line end, whether it is the last line) of each line.

    Lines end at `decoding.line_end`, as every text reader here counts them: '\\n' (a '\\r' before it is
    dropped), or '\\r' in a file of CR line ends alone (old Mac OS).
    """
    with decoding.source.open("rb") as handle:
        handle.seek(decoding.bom_bytes)
        previous = None
        for number, raw in enumerate(raw_lines(handle, decoding.line_end.encode()), start=1):
            if previous is not None:
                yield previous[0], previous[1], False
            previous = (number, raw.decode(decoding.encoding).removesuffix("\n").removesuffix("\r"))
        if previous is not None:
            yield previous[0], previous[1], True


def raw_lines(handle: BinaryIO, end: bytes) -> Iterator[bytes]:
    """The lines of a binary file, each with its line end `end` (b"\\n" or b"\\r"; the last line may lack it).

    Splitting the bytes is safe in every encoding a file may be read in: no multi-byte character (UTF-8,
    Shift-JIS, GBK) holds the byte 0x0A or 0x0D, and wider encodings are refused before.
    """
    if end == b"\n":
        yield from handle  # Python's own line iteration, which ends a line at LF only
        return
    rest = b""
    while chunk := handle.read(CHUNK_BYTES):
        *whole, rest = (rest + chunk).split(end)
        yield from (line + end for line in whole)
    if rest:
        yield rest


def first_list(path: Path, label: str, encoding: str, column: str) -> tuple[int, list] | None:
    """(line, value) of the first line of a JSON lines file whose field `column` holds a list, or None.

    The rows a file gives cannot say it: once one line holds a list, a value alone reads as a list of one
    (`rows_frame`), so `[4]` and `4` look the same there. Read again in Python, on the error path only.
    """
    for number, text, _ in numbered_lines(decoding_of(path, label, encoding)):
        record, _ = line_reason(text)
        if record is not None and isinstance(record.get(column), list):
            return number, record[column]
    return None


def require_objects(n_rows: int, malformed: pl.DataFrame, where: str) -> None:
    """Raise when no line gave a row (EmptyRawFileError), or fewer than were rejected (RawFileError):
    such a file is not JSON lines, and its rows would be a fraction read by chance."""
    lines = malformed.filter(pl.col("reason") != BLANK_LINE)
    if n_rows and n_rows >= lines.height:
        return
    if not lines.height:
        raise EmptyRawFileError(f"{where}: no data rows (the file holds only blank lines).")
    first = lines.row(0, named=True)
    shown = f"line {first['line']}: {first['text'][:SHOWN_CHARACTERS]!r} ({first['reason']})"
    hint = ""
    if first["line"] == 1 and first["text"].lstrip().startswith("["):
        hint = (" Line 1 opens a JSON array: the file is one JSON document, not JSON lines; convert it, e.g. "
                "pl.read_json(path).write_ndjson(path_jsonl).")
    elif first["text"].strip() == "{":
        hint = " An object spread over several lines (pretty-printed JSON) is not JSON lines: one object per line."
    if not n_rows:
        raise EmptyRawFileError(f"{where}: none of its {lines.height} lines is a JSON object; {shown}.{hint}")
    raise RawFileError(f"{where}: not JSON lines: {lines.height} lines are rejected and {n_rows} give a row; {shown}.{hint}")


def json_keys(path: Path, encoding: str) -> tuple[str, ...]:
    """The top-level keys of the objects on the first `KEY_LINES` lines, in first-seen order: the
    columns of a JSON lines file whose spec does not list them. Only those lines are read (a compressed
    file is decompressed first); bytes that do not decode are replaced, as the read checks them all.
    Raises a RawFileError naming the file when it is not text or those lines hold no object."""
    where = str(path)
    source = decompressed(path, where)
    head = check_start(source, where, encoding)
    keys: dict[str, None] = {}
    first_bad = None
    with source.open("rb") as handle:
        handle.seek(len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0)
        end = b"\r" if starts_with_cr_line_ends(source) else b"\n"  # as `decoding_of` finds it from the whole file
        first = [raw.decode(encoding, errors="replace").removesuffix("\n").removesuffix("\r")
                 for _, raw in zip(range(KEY_LINES), raw_lines(handle, end))]
    for number, text in enumerate(first, start=1):
        record, reason = line_reason(text)
        if record is None:
            first_bad = first_bad or f"line {number}: {text[:SHOWN_CHARACTERS]!r} ({reason})"
            continue
        keys.update(dict.fromkeys(record))
    if not keys:
        raise RawFileError(f"{where}: no JSON object among its first {KEY_LINES} lines to name the columns"
                           f"{'; ' + first_bad if first_bad else ''}")
    return tuple(keys)
