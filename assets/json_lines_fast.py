"""JSON lines read by polars: the frames of assets/json_lines.py's line-by-line Python reader, in parallel.

polars splits a UTF-8 file into lines and decodes each line's used fields as text (`str.json_decode`,
streaming, on every core; memory as for the Python reader). A line whose reading by polars could differ
from Python's `json.loads` goes to the Python reader (`python_rows`):

- a line that is not exactly `{...}` (blank, cut off, not an object, spaces around it);
- a used key written twice (Python rejects the line when its values differ, polars reads the first), or a used key's `"name"`
  also written elsewhere on the line: the lines where the used keys' `"name"`s (each character as itself
  or as its `\\u` escape) are not exactly the fields present, one each, and the fields that are null, each
  as often as its `"name": null` is written (a null field stays with polars, as a missing one does:
  every way the key is written gives null to Python too);
- a value polars writes in another form than Python: polars writes the number 5.0 as '5' (as Python's
  reader does), but 1e300 as '1000...0', 1e-7 as '0.0000001' and -0.0 as '-0', and it writes the string
  "5.0" as '5.0'; which of them a value was is not kept, so a value that reads as a number stays only
  when every reading gives the same text (an integer of at most 15 digits; a decimal of at most 15
  significant digits, from 0.0001, without trailing zeros);
- a lone UTF-16 surrogate (`\\ud800`), which polars decodes as NUL: a value holding NUL;
- Infinity (Python reads it, polars stops): the word anywhere on a line. NaN, which Python reads as the
  text 'NaN' (a missing value inside a list), polars decodes written null, and a used field it read null
  where the line writes `"key": NaN` is given 'NaN' back (`nan_fields`; a 200,000-line log with 30 % of
  its ratings null or NaN sent those lines to Python, 2x the time of a log without; now about the same),
  except where that is not sure or changes more than the NaN: a line that writes that key more than once
  or holds an object inside it (`{` more than once, in a string too), a used value then holding 'null'
  (NaN was in a string), NaN after a backslash (an escape once it is null), or used keys whose names hold
  NaN or null (every NaN line);
- a used field holding an object (a rejected row), once polars has stopped on the file (see below).

The first reading decodes every used field as text. When polars stops on it (a field holds a list,
or some line is beyond it), a second one decodes them as lists of text and also sends the lines where
a used key holds an object to Python; a field is a list column when some line (of those polars reads)
writes `"name": [`, or Python's reader finds a list. When polars stops on that one too (a line that is
not valid JSON although between braces, a raw control character in a string, a number past 128 bits),
the file is decoded again in blocks of lines, each block polars stops on halved down to pieces of
PIECE_LINES lines, and the pieces it stops on go to Python (`decoded_blocks`: such a file takes nearly
as long as the Python reader, at most about 3 times as long where one line in a hundred is such). A file in another encoding, or whose used fields include one named `line` or with a
quote, backslash, slash or control character in its name, is read in Python (`polars_rows` gives None).
"""

from __future__ import annotations

import polars as pl

from assets.json_lines import count_lines, numbered_lines, python_rows, rows_frame
from assets.raw_files import UNIT_SEPARATOR
from assets.raw_text import Decoding, normalize_encoding

# A value polars may have written for a JSON number: an integer's digits, or a float in Rust's shortest
# form (no exponent; `-0` for -0.0).
NUMBER = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$|^-?inf$|^NaN$"
# Numbers whose text is the same read as a string, an integer or a float (Python: `scalar_text`), when
# at most SAME_LENGTH characters long: an integer below 2**53 (a whole float is that integer too; not
# -0), or a decimal from 0.0001 without trailing zeros and of at most 15 significant digits (such
# decimals are distinct doubles, each written back by Python's repr as itself).
SAME_NUMBER = r"^(?:0|-?[1-9][0-9]{0,14}|-?0\.0{0,3}[1-9](?:[0-9]*[1-9])?|-?[1-9][0-9]*\.[0-9]*[1-9])$"
SAME_LENGTH = 16  # with a sign or a point: at most 15 digits, leading zeros counted
# Values that Python reads and polars stops on, matched anywhere on a line (in a string too: such a
# line goes to Python needlessly). NaN, which Python reads as the text 'NaN', polars reads written null
# (`NAN_AS_NULL`, then 'NaN' again: `nan_fields`); a backslash before it would make an escape of that null.
PYTHON_ONLY = r"Infinity|\\NaN"
NAN, NAN_AS_NULL = "NaN", "null"
NAN_SURE, NAN_UNSURE = 1, 2  # `nan_states`
BLOCK_LINES = 1 << 16  # lines decoded at a time in a file polars stops on some line of
# A piece of a block polars stops on is read whole in Python from this size down: Python reads this many
# lines in less time than polars takes to start one decoding, and halving down to single lines cost a
# file with one such line in a hundred a decoding per few lines (50 times the Python reader's time).
PIECE_LINES = 1024
RESERVED = ("line", "source_file")  # columns the frames add: a field of that name is left to Python


def polars_rows(decoding: Decoding, kept: list[str]) -> tuple[pl.DataFrame, dict[str, list]] | None:
    """(`line` and the `kept` columns of every row, the rejected lines' `line`, `text`, `reason`) as
    `read_json_lines` gives them, or None where polars cannot read the file the same way (then the
    file is read in Python)."""
    if not fast_readable(decoding, kept):
        return None
    decoded, lists = decoded_file(decoding, kept)
    n_lines = decoded.height
    by_python = decoded.filter(pl.col("_python").is_not_null()).select("line", "_python")
    read = python_rows(((n, text, n == n_lines) for n, text in by_python.iter_rows()), kept, decoding.ends_with_newline)
    count_lines(n_lines - by_python.height, by_python.height)
    by_polars = decoded.filter(pl.col("_python").is_null()) if by_python.height else decoded
    listed = read.listed | ({c for c in kept if by_polars[f"_list_{c}"].any()} if lists else set())
    rows = by_polars.select(pl.col("line").cast(pl.Int64),
                            *[as_listed(pl.col("_decoded").struct.field(c), c in listed, lists).alias(c) for c in kept])
    if read.lines:  # rows in line order
        rows = pl.concat([rows, rows_frame(read, kept, listed)]).sort("line")
    return rows, read.bad


def fast_readable(decoding: Decoding, kept: list[str]) -> bool:
    """Whether polars can read this file's lines as Python does: UTF-8 text and used keys that JSON
    writes only as themselves (no quote, backslash, slash or control character: those have escapes)."""
    return (normalize_encoding(decoding.encoding) == "utf-8" and bool(kept)
            and not any(c in RESERVED or any(ch in c for ch in '"\\/') or any(ord(ch) < 0x20 for ch in c) for c in kept))


def decoded_file(decoding: Decoding, kept: list[str]) -> tuple[pl.DataFrame, bool]:
    """`decoding_query` on every line of the file, and whether it decoded the fields as lists: the used
    fields as text, else as lists, else block by block (`decoded_blocks`)."""
    try:
        return decoded_lines(decoding, kept, lists=False), False
    except pl.exceptions.PolarsError as error:
        # Only a speed choice: a line that is not JSON stops the second reading too.
        if "json parsing error" not in str(error):
            try:
                return decoded_lines(decoding, kept, lists=True), True
            except pl.exceptions.PolarsError:
                pass
    return decoded_blocks(decoding, kept), True


def decoded_lines(decoding: Decoding, kept: list[str], *, lists: bool) -> pl.DataFrame:
    """`decoding_query` on every line of the file, split by polars, streaming; raises a PolarsError
    where polars stops on a line."""
    lines = (pl.scan_csv(decoding.source, has_header=False, separator=UNIT_SEPARATOR, quote_char=None,
                         eol_char=decoding.line_end, schema={"text": pl.String}, raise_if_empty=False)
             .with_row_index("line", offset=1)
             .with_columns(pl.col("text").fill_null("")))  # a blank line
    return decoding_query(lines, kept, lists=lists).collect(engine="streaming")


def decoded_blocks(decoding: Decoding, kept: list[str]) -> pl.DataFrame:
    """`decoding_query` (with lists) on blocks of the file's lines as Python splits them; a block polars
    stops on is halved until the lines it stops on are alone, and those go to Python."""
    frames, block = [], []
    for number, text, _ in numbered_lines(decoding):
        block.append((number, text))
        if len(block) == BLOCK_LINES:
            frames += decoded_block(block, kept)
            block = []
    return pl.concat(frames + decoded_block(block, kept), how="vertical")


def decoded_block(block: list[tuple[int, str]], kept: list[str]) -> list[pl.DataFrame]:
    """`decoding_query` (with lists) on `block`'s (line number, text), in pieces around the lines polars stops on
    (a piece of at most PIECE_LINES lines that it stops on is left to Python whole)."""
    lines = pl.DataFrame({"line": [n for n, _ in block], "text": [t for _, t in block]},
                         schema={"line": pl.UInt32, "text": pl.String})
    query = decoding_query(lines.lazy(), kept, lists=True)
    try:
        return [query.collect(engine="streaming")]
    except pl.exceptions.PolarsError:
        if len(block) > PIECE_LINES:
            return decoded_block(block[: len(block) // 2], kept) + decoded_block(block[len(block) // 2:], kept)
    decoded = pl.Struct({c: pl.List(pl.String) for c in kept})
    return [lines.select("line", pl.col("text").alias("_python"), pl.lit(None, decoded).alias("_decoded"),
                         *[pl.lit(False).alias(f"_list_{c}") for c in kept])]


def decoding_query(lines: pl.LazyFrame, kept: list[str], *, lists: bool) -> pl.LazyFrame:
    """Each line (`line`, `text`): `line`, `_python` (its text where Python is to read it, else null) and
    `_decoded` (a struct of the kept fields as text, or as lists of text with `lists`; then `_list_<c>`
    says the line holds a list in c)."""
    keys = "|".join(key_pattern(c) for c in kept)
    text = pl.col("text")
    kind = pl.List(pl.String) if lists else pl.String
    # Decoded with NaN written null: polars stops on NaN (the field is 'NaN' again below). A NaN in a
    # string changes that string: a line where a used value then holds 'null' goes to Python, and so do all
    # NaN lines when a used key's name holds NaN or null (a key the change could make or unmake).
    nan_as_null = not any(NAN in c or NAN_AS_NULL in c for c in kept)
    # Each only on the lines that need it (when/then evaluates it there alone: a tenth of the time).
    readable = (pl.when(text.str.contains(NAN, literal=True)).then(text.str.replace_all(NAN, NAN_AS_NULL, literal=True))
                .otherwise(text)) if nan_as_null else text
    python_only = PYTHON_ONLY if nan_as_null else f"{PYTHON_ONLY}|{NAN}"
    lines = (lines.with_columns(_readable=readable)
             .with_columns(_shaped=text.str.starts_with("{") & text.str.ends_with("}")
                           & ~text.str.contains(python_only + (rf"|(?:{keys})\s*:\s*\{{" if lists else "")),
                           _keys=pl.col("_readable").str.count_matches(keys),
                           _nulls=pl.when(pl.col("_readable").str.contains(NAN_AS_NULL, literal=True))
                           .then(pl.col("_readable").str.extract_all(rf"(?:{keys})\s*:\s*null"))
                           .otherwise(pl.lit([], pl.List(pl.String))))
             .with_columns(_decoded=pl.when("_shaped").then("_readable").otherwise(pl.lit("{}"))
                           .str.json_decode(pl.Struct({c: kind for c in kept}))))
    fields = [pl.col("_decoded").struct.field(c) for c in kept]
    present = pl.sum_horizontal([f.is_not_null() for f in fields])
    # Each used key as written is the one key polars read (1 where the field is present), or null (as
    # often as the key is written: every one of them null; Python reads null too, or a missing field).
    null_keys = [pl.col("_nulls").list.eval(pl.element().str.contains("^" + key_pattern(c))).list.any() for c in kept]
    miscounted = ((pl.col("_keys") != present + pl.col("_nulls").list.len())
                  | pl.any_horizontal([f.is_not_null() & n for f, n in zip(fields, null_keys)]))
    unsure = pl.any_horizontal([(f.list.eval(unsure_text(pl.element())).list.any() if lists else unsure_text(f))
                                .fill_null(False) for f in fields])
    changed = pl.any_horizontal([(f.list.eval(pl.element().str.contains(NAN_AS_NULL, literal=True)).list.any() if lists
                                  else f.str.contains(NAN_AS_NULL, literal=True)).fill_null(False) for f in fields])
    python = ~pl.col("_shaped") | miscounted | unsure | (text.str.contains(NAN, literal=True) & changed)
    decoded = pl.col("_decoded")
    if nan_as_null:  # a field read null that the line writes NaN: 'NaN', as Python reads it, where that is sure
        lines = lines.with_columns(nan_states(text, kept, fields))
        states = [pl.col(f"_nan_{i}") for i in range(len(kept))]
        python = python | pl.any_horizontal([state == NAN_UNSURE for state in states])
        nan = pl.lit([NAN], pl.List(pl.String)) if lists else pl.lit(NAN)
        decoded = pl.struct([pl.when(state == NAN_SURE).then(nan).otherwise(f).alias(c)
                             for c, f, state in zip(kept, fields, states)])
    marks = [text.str.contains(rf"{key_pattern(c)}\s*:\s*\[").alias(f"_list_{c}") for c in kept] if lists else []
    # A copy of the text, not the line itself: polars' strings are views into the block of lines they were
    # read in, which would keep the whole file in memory.
    python_text = pl.concat_str([pl.when(python).then(text), pl.lit("")]).alias("_python")
    return lines.select("line", python_text, decoded.alias("_decoded"), *marks)


def nan_states(text: pl.Expr, kept: list[str], fields: list[pl.Expr]) -> list[pl.Expr]:
    """Per kept field, `_nan_<i>`: NAN_SURE where polars read it null and the line writes it NaN (Python
    reads the text 'NaN'), NAN_UNSURE where the line may (then Python reads the line), else 0.

    A key followed by NaN as a value (`"key": NaN`, after `{` or `,`: inside a string a key's quotes would
    be escaped) is the line's own field only when the key is written once on a line of one object ({
    once); else it may be an object's inside the line, or written twice, NaN and null (rejected in Python).
    """
    has_nan = text.str.contains(NAN, literal=True)
    states = []
    for i, (column, value) in enumerate(zip(kept, fields)):
        key = key_pattern(column)
        sure = (text.str.count_matches("{", literal=True) == 1) & (text.str.count_matches(key) == 1)
        # Each pattern only on the lines holding NaN (when/then evaluates it there alone).
        written = pl.when(text.str.contains(rf"[{{,]\s*{key}\s*:\s*{NAN}")).then(
            pl.when(sure).then(pl.lit(NAN_SURE, pl.Int8)).otherwise(pl.lit(NAN_UNSURE, pl.Int8)))
        states.append(pl.when(has_nan & value.is_null()).then(written).otherwise(pl.lit(0, pl.Int8))
                      .fill_null(0).alias(f"_nan_{i}"))
    return states


def unsure_text(value: pl.Expr) -> pl.Expr:
    """True for a decoded value whose text Python may write otherwise (see the module docstring)."""
    same = value.str.contains(SAME_NUMBER) & (value.str.len_bytes() <= SAME_LENGTH)
    return (value.str.contains(NUMBER) & ~same) | value.str.contains("\x00", literal=True)


def as_listed(value: pl.Expr, listed: bool, decoded_as_list: bool) -> pl.Expr:
    """A decoded column as the Python reader gives it: a list column when some row holds a list (a value
    alone a list of one), else text."""
    if listed == decoded_as_list:
        return value
    if listed:
        return pl.when(value.is_null()).then(None).otherwise(pl.concat_list(value))
    return value.list.first()


def key_pattern(key: str) -> str:
    """A pattern of polars' (Rust) regex matching `"key"` as JSON may write it: each character as itself or
    as its `\\u` escape (a surrogate pair beyond U+FFFF), hex digits in either case."""
    def escaped(ch: str) -> str:
        data = ch.encode("utf-16-be")
        return "".join(r"\\u" + "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in data[i:i + 2].hex())
                       for i in range(0, len(data), 2))

    def literal(ch: str) -> str:
        return ch if ch.isalnum() or ch == "_" else f"\\x{{{ord(ch):x}}}"

    return '"' + "".join(f"(?:{literal(ch)}|{escaped(ch)})" for ch in key) + '"'
