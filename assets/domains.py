"""Field domains: what each raw field may hold, and the rules that reject anything else.

A domain turns into cleaning rules `(row is bad, reason, offending value)`; each reason names
the field and the rule it broke ("gender not one of F, M", "garbled zip code: mojibake"), the
value goes beside it. Values are compared after trimming surrounding whitespace.

"Garbled" means broken text, not an unfamiliar format: a 6-digit or a Canadian postal code is
a valid value of its own (the minor users this project is about have such values), while
mojibake, control characters, lost characters ('?') and placeholders ('n/a', '', '???') are
not values at all.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Union

import polars as pl

Rule = tuple[pl.Expr, Union[str, pl.Expr], pl.Expr]  # (row is bad, reason, offending value)

# Markers that stand for "no value" in any field (compared lower-case, trimmed).
# "nan": pandas writes a missing value so when a column is cast to text; "#n/a": Excel's "no value" error, as its
# CSV export writes a lookup that found nothing.
MISSING_MARKERS = ("", "null", "\\n", "n/a", "na", "nan", "none", "-", "?", "#n/a")
# Text fields also use these as "no value" (compared after stripping quotes, brackets and dots).
TEXT_PLACEHOLDERS = (*MISSING_MARKERS, "unknown", "x", "xx", "xxx", "n.a", "n/s", "nil", "not applicable")
PLACEHOLDER_WRAPPING = " \t\"'`*()[]{}<>.,;:!¨"
# UTF-8 bytes decoded as ISO-8859-1: a lead byte (U+00C2-U+00F4) before a continuation byte
# (U+0080-U+00BF), e.g. 'Ã¼' for 'ü', also lower-cased ('ã¼') as in Book-Crossing.
MOJIBAKE = r"[\x{C2}-\x{F4}][\x{80}-\x{BF}]"
# ISO-8859-1 symbols that no place name or code holds, but text in another code page read as
# ISO-8859-1 does ('ma³opolska' is cp1250 'małopolska'). Left out: NBSP, the ordinal
# indicators ª º ('8ª región') and the acute accent ´ used as an apostrophe ('l´hospitalet').
STRAY_SYMBOL = r"[\x{A1}-\x{A9}\x{AB}-\x{B3}\x{B5}-\x{B9}\x{BB}-\x{BF}]"
CONTROL = r"[\x{00}-\x{1F}\x{7F}]"  # a line break or tab inside a field, a NUL, ...
# C1 controls: in ISO-8859-1 text they are Windows-1252 punctuation (curly quotes 0x93/0x94).
C1_CONTROL = r"[\x{80}-\x{9F}]"
LOST = r"[?\x{FFFD}]"  # what an encoder writes for a character it cannot represent
HTML_REFERENCE = r"(?i)&(#[0-9]+|#x[0-9a-f]+|[a-z]+);"  # '&#22235;' for '四': text escaped for a web page


def epoch(year: int, month: int = 1, day: int = 1) -> int:
    """Seconds since 1970-01-01 UTC at the start of the given day."""
    return calendar.timegm((year, month, day, 0, 0, 0))


def day_of(seconds: int) -> str:
    """'YYYY-MM-DD' (UTC) of epoch `seconds`."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class IntegerIn:
    """An integer in [low, high], and one of `codes` when given (e.g. ML-1M's age buckets 1, 18, ..., 56)."""

    low: int
    high: int
    codes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Text:
    """Free text that must not be broken (any script, any postal-code format)."""


@dataclass(frozen=True)
class Identifier:
    """A record id: non-blank, and all digits when `digits` (ML-1M and Book-Crossing user ids)."""

    digits: bool = False


@dataclass(frozen=True)
class EpochSeconds:
    """A Unix time in seconds within [low, high) (a cut-off '97' or a 0 is not plausible).

    `format`: the text format a dataset spec converted times from (a value it could not parse
    is left as it was, and named with this format when rejected).
    """

    low: int
    high: int
    why: str
    format: str = ""


@dataclass(frozen=True)
class Category:
    """A categorical value from a dataset spec: not one of `missing`, and one of `values` when given."""

    values: tuple[str, ...] = ()
    missing: tuple[str, ...] = MISSING_MARKERS


@dataclass(frozen=True)
class NumberIn:
    """A number (integer or decimal) in [low, high], from a dataset spec."""

    low: float
    high: float


Domain = Union[IntegerIn, Text, Identifier, EpochSeconds, Category, NumberIn]


# Numbers as spreadsheets export them, named in a rejection so that its reason says what to change.
DECIMAL_COMMA_VALUE = r"^\s*[+-]?\d+,\d+\s*$"  # 4,5
THOUSANDS_VALUE = r"^\s*[+-]?\d{1,3}(,\d{3})+(\.\d+)?\s*$"  # 1,700,000,000 (1,234 reads as a decimal comma first)
EXCEL_SERIAL_VALUE = r"^\s*\d{5}([.,]\d+)?\s*$"  # 45244.987: days since 1899-12-30, years 1927-2173
DECIMAL_COMMA_HINT = "a decimal comma: set decimal = \",\" for this file in the spec"
THOUSANDS_HINT = "thousands separators: export the column as plain numbers"
EXCEL_SERIAL_HINT = "an Excel serial date? set timestamp_format = \"excel\""
# An id whose letters match a known id only once both are in one Unicode form: 'José' written with é as one
# character (NFC) in one file and as e + a combining accent (NFD, as macOS file tools may write) in another.
UNICODE_FORM_HINT = ("a known id has the same letters in another Unicode form: one character (NFC) against a letter and a "
                     "combining accent (NFD); write both files in one form, e.g. unicodedata.normalize('NFC', text)")
# Said of rejected rows that are most likely no data (assets/clean_logs.py, `export_rows`): a second header row
# under line 1, as pandas' to_csv writes one per level of MultiIndex columns, and notes or totals at a file's end.
SECOND_HEADER_HINT = ("a second header row? words where ids and labels should be, under the header: pandas writes one "
                      "header row per level of MultiIndex columns; flatten the columns before exporting (df.columns = "
                      "['_'.join(filter(None, c)) for c in df.columns]) or delete the line")
FOOTER_HINT = ("a notes or totals row at the end of the file? R and spreadsheet exports may end with 'Source: ...' or "
               "'Total,,,'; delete such lines at the end")
BOOLEAN_LABELS = {"true": "1", "false": "0"}  # a click written as a boolean: Excel's TRUE, pandas' True, JSON's true
# Said of click labels true or false in a file whose other labels are not all true or false (`dataset add`,
# `raw_logs`): such a word is read as 1 or 0 only where every label of its file is one (`boolean_labels`,
# `label_classes`); elsewhere cleaning rejects it (label not a number).
STRAY_BOOLEAN_HINT = ("true and false are read as 1 and 0 only in a file that writes every label so; write each file's "
                      "labels one way, all 1/0 or all true/false")


def export_reason(reason: str, value: pl.Expr, time: bool = False) -> pl.Expr:
    """`reason`, followed by the export habit `value` shows when it shows one (a decimal comma, thousands
    separators, and with `time` an Excel serial date): '<reason> (a decimal comma: set decimal = "," ...)'."""
    text = value.cast(pl.String)
    hints = [(EXCEL_SERIAL_VALUE, EXCEL_SERIAL_HINT)] if time else []
    hints += [(DECIMAL_COMMA_VALUE, DECIMAL_COMMA_HINT), (THOUSANDS_VALUE, THOUSANDS_HINT)]
    chain = pl.when(text.str.contains(hints[0][0])).then(pl.lit(f"{reason} ({hints[0][1]})"))
    for pattern, hint in hints[1:]:
        chain = chain.when(text.str.contains(pattern)).then(pl.lit(f"{reason} ({hint})"))
    return chain.otherwise(pl.lit(reason))


DATED_SECONDS = 10**12  # |seconds| below this (years -29719..33658) are shown with their date; beyond, alone


def with_date(seconds: pl.Expr) -> pl.Expr:
    """Unix `seconds` with their UTC time, '253370764800 (9999-01-01 00:00:00 UTC)': a time the spec converted from
    another format (a date, milliseconds) is named as a date, not only as the seconds the file never held."""
    dated = pl.from_epoch(pl.when(seconds.abs() < DATED_SECONDS).then(seconds), time_unit="s")
    return pl.format("{} ({} UTC)", seconds, dated.dt.to_string("%Y-%m-%d %H:%M:%S")).fill_null(seconds.cast(pl.String))


def trimmed(column: str) -> pl.Expr:
    """The column as trimmed text."""
    return pl.col(column).cast(pl.String).str.strip_chars()


def is_missing(column: str) -> pl.Expr:
    """True where the value is null, blank or a 'no value' marker such as NULL or n/a."""
    return pl.col(column).is_null() | trimmed(column).str.to_lowercase().is_in(MISSING_MARKERS)


def text_problem(text: pl.Expr) -> pl.Expr:
    """What is broken about each text value: 'blank', 'placeholder', 'control character',
    'mojibake', 'stray symbol', 'HTML character reference', 'lost characters'; null when nothing is."""
    stripped = text.str.strip_chars()
    core = stripped.str.strip_chars(PLACEHOLDER_WRAPPING).str.to_lowercase()
    return (
        pl.when(text.is_null() | (stripped == "")).then(pl.lit("blank"))
        .when(core.is_in(TEXT_PLACEHOLDERS) | ~stripped.str.contains(r"[\p{L}\p{N}]")).then(pl.lit("placeholder"))
        .when(stripped.str.contains(CONTROL)).then(pl.lit("control character"))
        .when(stripped.str.contains(MOJIBAKE)).then(pl.lit("mojibake"))
        .when(stripped.str.contains(C1_CONTROL)).then(pl.lit("C1 control character (Windows-1252 text read as ISO-8859-1?)"))
        .when(stripped.str.contains(STRAY_SYMBOL)).then(pl.lit("stray symbol (text from another code page)"))
        .when(stripped.str.contains(HTML_REFERENCE)).then(pl.lit("HTML character reference"))
        .when(stripped.str.contains(LOST)).then(pl.lit("lost characters ('?')"))
        .otherwise(None)
    )


def text_rules(text: pl.Expr, label: str, value: pl.Expr) -> list[Rule]:
    """'<label> missing' for blank or placeholder text, 'garbled <label>: <problem>' for broken text."""
    problem = text_problem(text)
    return [
        (problem.is_in(["blank", "placeholder"]).fill_null(False), f"{label} missing", value),
        (problem.is_not_null(), pl.concat_str(pl.lit(f"garbled {label}: "), problem), value),
    ]


def missing_value(column: str, domain: Domain) -> pl.Expr:
    """True where `column` holds no value for `domain`: the condition of its '<label> missing' rule."""
    if isinstance(domain, Text):
        return text_problem(pl.col(column).cast(pl.String)).is_in(["blank", "placeholder"]).fill_null(False)
    if isinstance(domain, Category):
        return pl.col(column).is_null() | trimmed(column).str.to_lowercase().is_in([m.lower() for m in domain.missing])
    return is_missing(column)


def kept_missing_rules(column: str, domain: Domain, label: str | None = None) -> list[Rule]:
    """`field_rules` for a feature whose missing value is kept (a dataset spec's `keep_missing`): no
    '<label> missing' rule, and the other rules judge only the values that are there."""
    label = label or column
    present = ~missing_value(column, domain)
    return [(present & bad, reason, value) for bad, reason, value in field_rules(column, domain, label)
            if not (isinstance(reason, str) and reason == f"{label} missing")]


def field_rules(column: str, domain: Domain, label: str | None = None) -> list[Rule]:
    """The rules that reject values of `column` outside `domain`, in the order they are tried."""
    label = label or column
    value, text = pl.col(column), trimmed(column)
    if isinstance(domain, Text):
        return text_rules(pl.col(column).cast(pl.String), label, value)
    if isinstance(domain, Category):
        rules = [(missing_value(column, domain), f"{label} missing", value)]
        if domain.values:
            rules.append((~text.is_in(domain.values), f"{label} not one of {', '.join(domain.values)}", value))
        return rules
    if isinstance(domain, NumberIn):
        number = text.cast(pl.Float64, strict=False)
        return [
            (is_missing(column), f"{label} missing", value),
            (number.is_null() | number.is_nan(), export_reason(f"{label} not a number", value), value),
            (~number.is_between(domain.low, domain.high), f"{label} outside [{domain.low:g}, {domain.high:g}]", value),
        ]
    rules: list[Rule] = [(is_missing(column), f"{label} missing", value)]
    if isinstance(domain, Identifier):
        rules += id_rules(column, label)
        if domain.digits:
            rules.append((~text.str.contains(r"^\d+$"), f"{label} not an integer", value))
    elif isinstance(domain, IntegerIn):
        number = text.cast(pl.Int64, strict=False)
        rules.append((number.is_null(), export_reason(f"{label} not an integer", value), value))
        if domain.codes:
            rules.append((~number.is_in(domain.codes), f"{label} not one of {', '.join(map(str, domain.codes))}", value))
        else:
            rules.append((~number.is_between(domain.low, domain.high), f"{label} outside [{domain.low}, {domain.high}]", value))
    elif isinstance(domain, EpochSeconds):
        number = text.cast(pl.Int64, strict=False)
        unparsed = f"{label} not a time in the format {domain.format}" if domain.format else f"{label} not an integer"
        outside = f"{label} outside {day_of(domain.low)}..{day_of(domain.high - 1)} ({domain.why})"
        # Unix seconds are the default: a serial date or a formatted number there is an export to name.
        unix = not domain.format
        rules.append((number.is_null(), export_reason(unparsed, value, time=True) if unix else unparsed, value))
        rules.append(((number < domain.low) | (number >= domain.high),
                      export_reason(outside, value, time=True) if unix else outside, value if unix else with_date(number)))
    else:  # pragma: no cover - the Domain union is closed
        raise TypeError(f"unknown domain {domain!r}")
    return rules


# Said of an id holding a control character: a quoted line break or a tab inside a field, a NUL. Trimmed from its
# ends like any whitespace, inside an id it made an id of its own ('p\n2' a new item) that prints as another.
GARBLED_ID = "garbled {}: control character (a line break or tab inside the id)"


def id_rules(column: str, label: str | None = None) -> list[Rule]:
    """The rule of an id with a control character inside it (after trimming), rejected naming the value."""
    return [(trimmed(column).str.contains(CONTROL), GARBLED_ID.format(label or column), pl.col(column))]


@dataclass(frozen=True)
class Parts:
    """A composite text field: `names` separated by `sep` (Book-Crossing's 'city, state, country').

    Each part becomes its own field, checked against its domain in `parts` (None: not checked),
    trimmed of spaces and quotes, and lower-cased when `lowercase`.
    """

    names: tuple[str, ...]
    sep: str
    parts: tuple[Domain | None, ...]
    lowercase: bool = False


PART_WRAPPING = " \t\"'"  # spaces and quotes around a part of a composite field are not part of its value


def part_value(part: pl.Expr, lowercase: bool) -> pl.Expr:
    """A part of a composite field as its cleaned value: trimmed of spaces and quotes, lower-cased when asked."""
    part = part.str.strip_chars(PART_WRAPPING)
    return part.str.to_lowercase() if lowercase else part


def part_rules(part: pl.Expr, domain: Domain, label: str, value: pl.Expr, lowercase: bool) -> list[Rule]:
    """The rules of one part of a composite field: free text checked as written, a category as cleaned."""
    if isinstance(domain, Text):
        return text_rules(part, label, value)
    if isinstance(domain, Category):
        cleaned = part_value(part, lowercase)
        rules = [(part.is_null() | cleaned.str.to_lowercase().is_in([m.lower() for m in domain.missing]), f"{label} missing", value)]
        if domain.values:
            rules.append((~cleaned.is_in(domain.values), f"{label} not one of {', '.join(domain.values)}", value))
        return rules
    raise TypeError(f"a part of a composite field is text or a category, not {domain!r}")


def parts_rules(column: str, domain: Parts) -> list[Rule]:
    """A wrong number of parts, then each part's rules ('garbled location (city): ...')."""
    parts = pl.col(column).str.split(domain.sep)
    rules: list[Rule] = [
        (parts.list.len() != len(domain.names), f"{column} not '{(domain.sep + ' ').join(domain.names)}'", pl.col(column))
    ]
    for index, (name, part) in enumerate(zip(domain.names, domain.parts)):
        if part is not None:
            rules += part_rules(parts.list.get(index, null_on_oob=True), part, f"{column} ({name})", pl.col(column),
                                domain.lowercase)
    return rules


def parts_columns(column: str, domain: Parts) -> list[pl.Expr]:
    """The parts of a composite field that a feature reads, as columns named after them, without the
    spaces and quotes around them ('dallas, "texas", usa' has the state texas), lower-cased when the
    domain says so."""
    parts = pl.col(column).str.split(domain.sep)
    return [part_value(parts.list.get(i), domain.lowercase).alias(name)
            for i, (name, part) in enumerate(zip(domain.names, domain.parts)) if part is not None]


FIELD_LABELS = {"zip": "zip code", "ts": "timestamp"}  # how rejection reasons name these fields
