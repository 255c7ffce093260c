"""Reading raw dataset files in their original formats into text frames.

The line splitter and the quoted-CSV reader here serve every dataset spec (assets/custom_reader.py
reads the built-in MovieLens, Book-Crossing and Taobao-like logs as their spec files in
assets/builtin_specs/ describe them; `read_movielens`, `read_bookcrossing` and `read_taobao` are
those readers by dataset). Readers do no cleaning: every field stays a string (multi-valued fields become
lists), each row keeps its `source_file` and 1-based `line`, and lines that do not
split into the expected fields go to a `malformed` frame instead of being dropped.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from assets.bundle import Bundle
from assets.compressed import READABLE_SUFFIXES, packed_copy, present
from assets.raw_text import (
    Decoding, EmptyRawFileError, RawFileError, RawHeaderError, decode_text, decoding_of, position,
)

MALFORMED_SCHEMA = {"source_file": pl.String, "line": pl.Int64, "text": pl.String, "reason": pl.String}


@dataclass(frozen=True)
class RawLayout:
    """Where a dataset's raw files live under the data directory."""

    subdir: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    obtain: str


LAYOUTS: dict[str, RawLayout] = {
    "movielens": RawLayout(
        subdir="ml-1m",
        required=("users.dat", "movies.dat", "ratings.dat"),
        optional=("movies_extrainfos.dat",),
        obtain=(
            "download https://files.grouplens.org/datasets/movielens/ml-1m.zip and unzip it there; "
            "movies_extrainfos.dat (item features) comes from the MeLU repository (hoyeoplee/MeLU)"
        ),
    ),
    "bookcrossing": RawLayout(
        subdir="bookcrossing",
        required=("BX-Users.csv", "BX-Books.csv", "BX-Book-Ratings.csv"),
        optional=(),
        obtain=(
            "download the Book-Crossing CSV dump (BX-CSV-Dump.zip, "
            "http://www2.informatik.uni-freiburg.de/~cziegler/BX/) and unzip it there"
        ),
    ),
}


class MissingRawFilesError(FileNotFoundError):
    """Raised when a real dataset's raw files are not where the pipeline looks."""


def require_files(dataset: str, data_dir: Path) -> Path:
    """Return the dataset directory, or raise naming the missing files and their source.

    A file kept compressed (`ratings.dat.gz`: gzip, bzip2, xz or a zip of one file) is there: it is
    read as the text it holds (assets/compressed.py).
    """
    layout = LAYOUTS[dataset]
    directory = data_dir / layout.subdir
    missing = [name for name in layout.required if present(directory / name) is None]
    if missing:
        others = [name for name in missing if (directory / name).exists()]  # e.g. a directory where the file should be
        packed = [copy.name for name in missing if (copy := packed_copy(directory / name)) is not None]
        raise MissingRawFilesError(
            f"{dataset}: missing raw file(s) {', '.join(missing)} in {directory} "
            + (f"({', '.join(others)}: there, but not a regular file) " if others else "")
            + (f"({', '.join(packed)}: there, compressed in a form not read ({', '.join(READABLE_SUFFIXES)} are); "
               "decompress it there) " if packed else "")
            + f"({data_dir_setting(data_dir, layout.subdir)}). To obtain them: {layout.obtain}."
        )
    return directory


def data_dir_setting(data_dir: Path, subdir: str) -> str:
    """`PAML_DATA_DIR=<dir>`, or, when the variable is not set, that it is not: forgetting it is the
    usual reason a real dataset's files are not found, and the default directory's name does not say so."""
    if os.environ.get("PAML_DATA_DIR"):
        return f"PAML_DATA_DIR={data_dir}"
    return f"PAML_DATA_DIR is not set: export PAML_DATA_DIR=<the directory that holds {subdir}/>"


# A byte that never occurs in text files: reading with it as the separator yields whole lines.
UNIT_SEPARATOR = "\x1f"
BLANK_LINE = "blank line"  # the one reason every reader gives for a line with nothing on it
# A line of separators alone (';;;'): a spreadsheet exports an empty row, or a row whose cells were cleared, so.
EMPTY_ROW = "an empty row: only separators, no value (a spreadsheet's empty row)"
# Said of a line that does not split and holds a CR that ends no line, in a file whose lines end with LF.
LONE_CR = ("the line holds a carriage return (CR) alone: two records joined by an old Mac line end, or a stray CR "
           "in a field?")
CUT_OFF = "last line has no line ending: file cut off?"
# Said of a line 'VALUE:' alone in a file read without a block column (the Netflix Prize's '1:' above a movie's ratings).
BLOCK_HINT = ("a line 'VALUE:' heading the lines below it, as the Netflix Prize's combined_data files name each movie: "
              "set block_column in the spec to read it as a column; docs/data.md, \"Recipes for common public layouts\"")
HEADING = r"^\s*[^:\s]+:\s*$"  # a block's heading line, 'VALUE:' (checked not to hold the separator)
EMPTY_HEADING = r"^\s*[^:\s]*:\s*$"  # ... or ':' alone, a heading that names no value (its lines are rejected)
HEADER_AGAIN = "a header line among the data (files joined together?)"  # a line naming the file's columns


# A byte-order mark that starts a line after the first: files joined together (`cat a.csv b.csv`, each saved with a
# BOM, as Excel's "CSV UTF-8" writes them). Like the file's own BOM it is no text: glued to the first field it made
# '\ufeff2' an unknown id that prints as '2', and a header line one that `header_rows` did not know.
BOM = "\ufeff"


def without_line_boms(text: str) -> str:
    """`text` without a byte-order mark at the start of any line."""
    return re.sub(r"(^|\r\n|\r|\n)\ufeff", r"\1", text) if BOM in text else text


def read_text_lines(decoding: Decoding) -> pl.Series:
    """Every line of a text file, blank lines included (as ""), without the final newline.

    UTF-8 files are read by polars' native reader (tens of millions of lines in bounded
    memory); other encodings, lines polars cannot take whole, and files of CR line ends alone
    (`decoding.line_end`: polars ends a line at LF only) are decoded in Python. The bytes were
    validated by `decoding_of` first, so neither path can fail on them. A CRLF line keeps its CR.
    The text is `decoding.source`: the file, or its decompressed copy.
    """
    if decoding.encoding == "utf-8" and decoding.line_end == "\n":
        try:
            frame = pl.read_csv(
                decoding.source, has_header=False, separator=UNIT_SEPARATOR, quote_char=None,
                schema={"text": pl.String}, raise_if_empty=False,
            )
            return frame["text"].fill_null("")
        except pl.exceptions.PolarsError:  # a line holding the separator byte itself
            pass
    lines = decode_text(decoding).split(decoding.line_end)
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline, not a blank line
    return pl.Series("text", lines, dtype=pl.String)


HEADER_NOISE = r"[\s\"'_-]"  # what `header_key` drops from a column name


def header_key(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Header names compared without case, quotes, spaces, '-' or '_' ('User-ID' = 'user_id')."""
    return tuple(re.sub(HEADER_NOISE, "", name).lower() for name in names)


def header_start(name: str) -> str:
    """A regex matching a field whose `header_key` is `header_key([name])`: cheap to try on every
    line, as it fails at the first character of any field that does not start like the name."""
    return "(?i)^" + "".join(f"{HEADER_NOISE}*{re.escape(c)}" for c in header_key([name])[0]) + f"{HEADER_NOISE}*$"


def header_rows(parts: pl.Series, names: tuple[str, ...]) -> pl.Series:
    """True where a line's fields (a list Series) name the columns `names`, as `header_key` compares them:
    a header line among the data, where files were concatenated (or a header a file read without one has).
    Only lines whose first field starts like the first name are compared whole."""
    candidate = ((parts.list.len() == len(names)) & parts.list.first().str.contains(header_start(names[0]))).fill_null(False)
    if not candidate.any():
        return candidate
    rows = candidate.arg_true()
    normalized = parts.gather(rows).list.eval(pl.element().str.replace_all(HEADER_NOISE, "").str.to_lowercase())
    return candidate.scatter(rows, normalized.list.join("\x1f") == "\x1f".join(header_key(names)))


UNNAMED = "unnamed_{}"  # a header field left empty (a row-names column, a spreadsheet's padding), by its position


def header_names(fields: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The column names a header line's fields give: trimmed, and an empty one named by its 1-based position
    ('unnamed_1'): R's write.csv and pandas' to_csv write the row names' column without a name, and a spreadsheet
    pads every line with empty fields up to the widest row it ever held ('user;item;rating;;;')."""
    names = [field.strip() for field in fields]
    return tuple(name or UNNAMED.format(position) for position, name in enumerate(names, start=1))


NAME_SHOWN = 120  # characters of a column name a message shows


def shown_columns(names: Iterable[str]) -> str:
    """Column names for a message, each cut to NAME_SHOWN characters: a line 1 that is no header (a long line of
    data, a file joined to another) can name a column of 200,000 characters, and the message stays one line."""
    return ", ".join(name if len(name) <= NAME_SHOWN else f"{name[:NAME_SHOWN]}... ({len(name):,} characters)"
                     for name in names)


def check_header(found: list[str], expected: tuple[str, ...], label: str, path: Path) -> None:
    """Raise a RawHeaderError unless the header line names the expected columns (empty fields named as
    `header_names` names them)."""
    if header_key(header_names(found) if found else found) != header_key(expected):
        raise RawHeaderError(
            f"{label} ({path}) line 1: expected the header {', '.join(expected)}; found {shown_columns(found) or 'nothing'}."
        )


def require_rows(rows: pl.DataFrame, malformed: pl.DataFrame, label: str, path: Path, n_fields: int,
                 separator: str = "") -> None:
    """Raise an EmptyRawFileError when no line of the file gave a row (`separator`: the file's, to tell
    a line padded with empty fields, as a spreadsheet pads its rows, from one with other fields)."""
    if rows.height:
        return
    lines = malformed.filter(pl.col("reason") != BLANK_LINE)
    if not lines.height:
        raise EmptyRawFileError(f"{label} ({path}): no data rows (the file holds only a header or blank lines).")
    first = lines.row(0, named=True)
    hint = " Are its lines separated by CR alone (old Mac line ends)?" if malformed.height == 1 and "\r" in first["text"] else ""
    padding = first["text"].split(separator)[n_fields:] if separator else []
    if padding and not any(field.strip() for field in padding):
        hint = (f" Its last {len(padding)} fields are empty: a spreadsheet pads every row up to the widest one it held; "
                "delete those columns in the sheet, or end line 1 with as many separators (empty header fields are read as "
                "unnamed columns).")
    raise EmptyRawFileError(
        f"{label} ({path}): none of its {malformed.height} lines has the expected {n_fields} fields; "
        f"line {first['line']}: {first['text'][:120]!r} ({first['reason']}).{hint}"
    )


def split_lines(
    path: Path, label: str, sep: str, names: tuple[str, ...], *, encoding: str, header: bool,
    shown_as: Path | None = None, require: bool = True, block: str = "", rest: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a delimited text file, decoded strictly in `encoding`, into string columns `names`.

    Returns (rows, malformed). Rows carry `source_file` (= `label`) and the 1-based
    `line`; a line with the wrong number of fields, or a blank line, is malformed. With
    `header`, line 1 must name `names`. Raises a RawFileError for a file that does not decode,
    has another header, or (with `require`) gives no row. `shown_as`: the path messages name
    (a block of a larger file is read from a scratch copy; the user knows the file).
    `block`: a line 'VALUE:' (no separator) heads the lines below it, which get VALUE in column `block`
    (the Netflix Prize's 'MOVIEID:'); such a line is structure, as a header is, not a row, and a line above
    the first one is malformed. `rest`: a line with more fields keeps the rest, separators included, in the last.
    """
    decoding = decoding_of(path, label, encoding)
    shown = shown_as or path
    text = read_text_lines(decoding)
    frame = pl.DataFrame({"line": pl.int_range(1, text.len() + 1, eager=True), "text": text}).with_columns(
        pl.col("text").str.strip_suffix("\r").str.strip_prefix(BOM)
    )
    if header:
        check_header(frame["text"][0].split(sep) if frame.height else [], names, label, shown)
        frame = frame.slice(1)
    if block:  # the values in a column of the reader's own: a block named 'text' or '_header' replaced the reader's
        frame = block_values(frame, sep, BLOCK_VALUE)
    frame = frame.with_columns(parts=pl.col("text").str.split(sep))
    if rest:  # the last column keeps the separators of the rest of the line ('At Home Among Strangers, A Stranger ...')
        parts = pl.col("parts")
        frame = frame.with_columns(parts=pl.when(parts.list.len() > len(names)).then(pl.concat_list(
            parts.list.slice(0, len(names) - 1), parts.list.slice(len(names) - 1).list.join(sep))).otherwise(parts))
    n_parts = pl.col("parts").list.len()
    blank = pl.col("text").str.strip_chars() == ""
    empty_row = (n_parts > 1) & (pl.col("text").str.replace_all(re.escape(sep), "", literal=False).str.strip_chars() == "")
    frame = frame.with_columns(header_rows(frame["parts"], names).alias("_header"))
    above = pl.col(BLOCK_VALUE).is_null() if block else pl.lit(False)  # above the first heading
    no_value = (pl.col(BLOCK_VALUE) == "").fill_null(False) if block else pl.lit(False)  # under a heading ':'
    unheaded = above | no_value
    good = (n_parts == len(names)) & ~blank & ~empty_row & ~pl.col("_header") & ~unheaded
    rows = frame.filter(good).select(
        pl.lit(label).alias("source_file"),
        "line",
        *[pl.col("parts").list.get(i).alias(name) for i, name in enumerate(names)],
        *([pl.col(BLOCK_VALUE).alias(block)] if block else []),
    )
    last = frame["line"].max()  # None for a file of only a header: compared with None, polars warns
    cut_off = (pl.col("line") == (last if last is not None else 0)) & pl.lit(not decoding.ends_with_newline)
    miscount = pl.format(f"expected {len(names)} fields separated by '{sep}', found {{}}", n_parts)
    miscount = (pl.when(pl.col("text").str.contains("\r", literal=True)).then(pl.concat_str(miscount, pl.lit(f" ({LONE_CR})")))
                .when(block_line(pl.col("text"), sep)).then(pl.concat_str(miscount, pl.lit(f" ({BLOCK_HINT})")))
                .otherwise(miscount))
    malformed = frame.filter(~good).select(
        pl.lit(label).alias("source_file"),
        "line",
        "text",
        pl.when(blank).then(pl.lit(BLANK_LINE))
        .when(empty_row).then(pl.lit(EMPTY_ROW))
        .when(pl.col("_header")).then(pl.lit(HEADER_AGAIN))
        .when(above).then(pl.lit(f"a row above the file's first line 'VALUE:' (which gives its rows their {block})"))
        .when(no_value).then(pl.lit(f"a row under a line ':' that names no {block}"))
        .when(cut_off).then(pl.concat_str(miscount, pl.lit(f" ({CUT_OFF})")))
        .otherwise(miscount)
        .alias("reason"),
    ).cast(MALFORMED_SCHEMA)
    if require:
        require_rows(rows, malformed, label, shown, len(names), sep)
    return rows, malformed


def block_line(text: pl.Expr, sep: str, pattern: str = HEADING) -> pl.Expr:
    """Whether a line is a block's heading, 'VALUE:' without the separator (the Netflix Prize's '1:')."""
    return text.str.contains(pattern) & ~text.str.contains(sep, literal=True)


BLOCK_VALUE = "_block_value"  # `split_lines`' working column of a block's value, named as the spec names it at the end


def block_values(frame: pl.DataFrame, sep: str, block: str) -> pl.DataFrame:
    """`frame` (line, text) without its block headings ('1:'), each line given the value of the last heading above it
    in column `block` (null above the first, '' under a heading ':' that names no value)."""
    heading = block_line(pl.col("text"), sep, EMPTY_HEADING)
    value = pl.col("text").str.strip_chars().str.strip_suffix(":")
    return frame.with_columns(pl.when(heading).then(value).forward_fill().alias(block)).filter(~heading)


def quotes_open(text: str) -> bool:
    """True when `text` ends inside a quoted field ('\\"' is an escaped quote)."""
    return text.replace('\\"', "").count('"') % 2 == 1


def whole_records(lines: list[str], n_fields: int, delimiter: str, quotechar: str,
                  escapechar: str | None) -> list[list[str]] | None:
    """Each of `lines` read as a record of its own, or None unless every one is a whole record:
    its quotes balanced and `n_fields` fields.

    A quote that is never closed (`"9";"austin, texas, usa;30`) makes the csv reader run the
    next lines into its field. When those lines are whole records on their own, they are read
    as such; a real line break inside a quoted field leaves its closing quote on the next line,
    which is then unbalanced, so such a record is never split.
    """
    records = []
    for line in lines:
        unescaped = line.replace(escapechar + quotechar, "") if escapechar else line
        if unescaped.count(quotechar) % 2:
            return None
        row = next(csv.reader([line], delimiter=delimiter, quotechar=quotechar, escapechar=escapechar), [])
        if len(row) != n_fields:
            return None
        records.append(row)
    return records


CSV_FIELD_LIMIT = csv.field_size_limit()  # Python's default, 131,072 characters


@contextmanager
def field_limit(physical: list[str]) -> Iterator[None]:
    """Python's csv field limit raised, for the block, to the longest of the file's `physical` lines: a field on
    one line is never longer than its line, so a long review text reads, while a quote never closed still runs
    the lines after it past the limit (`csv_records` names it). The limit is process-wide: it is restored after."""
    before = csv.field_size_limit(max(CSV_FIELD_LIMIT, max(map(len, physical), default=0) + 1))
    try:
        yield
    finally:
        csv.field_size_limit(before)


def csv_records(reader, path: Path, label: str, physical: list[str]) -> Iterator[list[str]]:
    """The records of a csv reader; a csv.Error stops the read as a RawFileError naming the line.

    Python's csv reader gives up on a field longer than its limit (`field_limit`: the file's longest
    line): in a raw file that is a quote opened and never closed, which swallows the lines after it.
    """
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            text = physical[start - 1].removesuffix("\r") if start <= len(physical) else ""
            raise RawFileError(
                f"{label} ({path}) line {start}: {error}; the record starting there runs on to line {reader.line_num}: "
                f"a quote that is never closed? {text[:120]!r}"
            ) from None
        start = reader.line_num + 1
        yield row


def read_quoted_csv(
    path: Path, label: str, names: tuple[str, ...], *, n_fields: int,
    header: tuple[str, ...] | None = None, encoding: str = "latin-1",
    delimiter: str = ";", quotechar: str = '"', escapechar: str | None = "\\", skip_first: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read a Book-Crossing style CSV: ';' separated, quoted, '\\' escapes, ISO-8859-1.

    A record may span lines (a quoted line break); its `line` is the line it starts on.
    Only the first len(names) fields are kept; a record with other than `n_fields`
    fields is malformed. Line 1 is a header (skipped; it must be `header` when one is
    given) unless `skip_first` is False. Other dialects (a dataset spec's) set `delimiter`,
    `quotechar` and `escapechar`.
    """
    decoding = decoding_of(path, label, encoding)
    text = without_line_boms(decode_text(decoding))
    physical = re.split(r"\r\n|\r|\n", text)  # lines as the csv reader counts them (CR-only line ends too)
    records: dict[str, list] = {"line": [], **{name: [] for name in names}}
    bad: dict[str, list] = {"line": [], "text": [], "reason": []}
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar, escapechar=escapechar)
    next_line = 1
    header_names = header_key(header or names)  # a line naming these is a header among the data
    header_first = re.compile(header_start((header or names)[0]))
    with field_limit(physical):  # a long field on one line reads; a run-on quote still stops the read
        for index, row in enumerate(csv_records(reader, path, label, physical)):
            start, next_line = next_line, reader.line_num + 1
            if index == 0 and skip_first:
                if header is not None:
                    check_header(row, header, label, path)
                continue
            raw = "\n".join(line.removesuffix("\r") for line in physical[start - 1 : reader.line_num])
            reason = None
            cut_off = not decoding.ends_with_newline and reader.line_num == len(physical)
            if all(not field.strip() for field in row):
                reason = BLANK_LINE if len(row) <= 1 else EMPTY_ROW
            elif cut_off and quotes_open(raw):
                reason = f"the file ends inside a quoted field ({CUT_OFF})"
            elif len(row) != n_fields:
                reason = f"expected {n_fields} fields separated by '{delimiter}', found {len(row)}" + (f" ({CUT_OFF})" if cut_off else "")
                if len(row) == 1 and re.match(HEADING, raw):
                    reason += f" ({BLOCK_HINT})"
            elif len(header_names) == n_fields and header_first.match(row[0]) and header_key(row) == header_names:
                reason = HEADER_AGAIN
            end = reader.line_num
            rest = whole_records([line.removesuffix("\r") for line in physical[start:end]], n_fields, delimiter, quotechar,
                                 escapechar) if reason and quotechar and end > start and not cut_off else None
            if rest is not None:  # a quote never closed on line `start` swallowed whole records: keep them
                bad["line"].append(start)
                bad["text"].append(physical[start - 1].removesuffix("\r"))
                bad["reason"].append(f"a quote on this line is not closed (the csv reader ran lines {start + 1}..{end} into "
                                     "it; they are whole records and read on their own)")
                for offset, fields in enumerate(rest, start=start + 1):
                    records["line"].append(offset)
                    for name, value in zip(names, fields):
                        records[name].append(value)
                continue
            if reason:
                bad["line"].append(start)
                bad["text"].append(raw)
                bad["reason"].append(reason)
                continue
            records["line"].append(start)
            for name, value in zip(names, row):
                records[name].append(value)
    if next_line == 1:
        raise EmptyRawFileError(f"{label} ({path}): no data rows (the file holds no line).")
    rows = pl.DataFrame(records, schema={"line": pl.Int64, **{n: pl.String for n in names}})
    rows = rows.select(pl.lit(label).alias("source_file"), pl.all())
    malformed = pl.DataFrame(bad, schema={"line": pl.Int64, "text": pl.String, "reason": pl.String})
    malformed = malformed.select(pl.lit(label).alias("source_file"), pl.all()).cast(MALFORMED_SCHEMA)
    require_rows(rows, malformed, label, path, n_fields, delimiter)
    return rows, malformed


def decoded_as(files: dict[str, tuple[Path, str]]) -> dict[str, str]:
    """Files read in another encoding than declared: {label: 'utf-8 (declared latin-1)'}."""
    switched = {}
    for label, (path, declared) in files.items():
        decoding = decoding_of(path, label, declared)
        if decoding.switched:
            switched[label] = f"{decoding.encoding} (declared {declared})"
    return switched


def unterminated(files: dict[str, tuple[Path, str]]) -> dict[str, str]:
    """Files whose last line has no line ending: {label: 'line N: <text>'} (kept as a row when it parses).

    A download cut short ends mid-line; when what is left still parses (a time cut to fewer digits
    that is still a plausible time), nothing else can tell, so the raw_logs step names the line.
    """
    found = {}
    for label, (path, declared) in files.items():
        decoding = decoding_of(path, label, declared)
        if decoding.ends_with_newline:
            continue
        with decoding.source.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(decoding.bom_bytes, size - TAIL_BYTES))
            tail = handle.read()
        line_end = decoding.line_end.encode()
        line = position(decoding.source, size - len(tail.rsplit(line_end, 1)[-1]), line_end)[0]
        text = tail.rsplit(line_end, 1)[-1].decode(decoding.encoding, errors="replace")
        found[label] = f"line {line}: {text[:120]!r}"
    return found


TAIL_BYTES = 4096  # how much of a file's end is read to show its last line


def read_movielens(data_dir: Path) -> Bundle:
    """Read ML-1M from PAML_DATA_DIR/ml-1m as its built-in spec describes it (assets/builtin_specs/movielens.toml)."""
    from assets.custom_reader import read_builtin  # that reader splits lines with this module's functions

    return read_builtin("movielens", data_dir)


def read_bookcrossing(data_dir: Path) -> Bundle:
    """Read the Book-Crossing dump from PAML_DATA_DIR/bookcrossing as its built-in spec describes it
    (assets/builtin_specs/bookcrossing.toml)."""
    from assets.custom_reader import read_builtin

    return read_builtin("bookcrossing", data_dir)


def read_taobao(directory: Path, max_days: int | None = None) -> Bundle:
    """Read a Taobao-like click-log directory (assets/taobao_logs.py `read_taobao_directory`)."""
    from assets.taobao_logs import read_taobao_directory  # that module reads lines with this one's functions

    return read_taobao_directory(directory, max_days)
