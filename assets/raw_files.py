"""Reading raw dataset files in their original formats into text frames.

Readers do no cleaning: every field stays a string (multi-valued fields become
lists), each row keeps its `source_file` and 1-based `line`, and lines that do not
split into the expected fields go to a `malformed` frame instead of being dropped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from assets.bundle import Bundle, file_source

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
    """Return the dataset directory, or raise naming the missing files and their source."""
    layout = LAYOUTS[dataset]
    directory = data_dir / layout.subdir
    missing = [name for name in layout.required if not (directory / name).is_file()]
    if missing:
        raise MissingRawFilesError(
            f"{dataset}: missing raw file(s) {', '.join(missing)} in {directory} "
            f"(PAML_DATA_DIR={data_dir}). To obtain them: {layout.obtain}."
        )
    return directory


# A byte that never occurs in text files: reading with it as the separator yields whole lines.
UNIT_SEPARATOR = "\x1f"


def read_text_lines(path: Path, encoding: str) -> pl.Series:
    """Every line of a text file, blank lines included (as ""), without the final newline.

    UTF-8 files are read by polars' native reader (tens of millions of lines in bounded
    memory); other encodings are decoded in Python.
    """
    if encoding.replace("-", "").lower() == "utf8":
        frame = pl.read_csv(
            path, has_header=False, separator=UNIT_SEPARATOR, quote_char=None,
            schema={"text": pl.String}, raise_if_empty=False,
        )
        return frame["text"].fill_null("")
    lines = path.read_bytes().decode(encoding).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline, not a blank line
    return pl.Series("text", lines, dtype=pl.String)


def split_lines(
    path: Path, label: str, sep: str, names: tuple[str, ...], *, encoding: str, header: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a delimited text file into string columns `names`.

    Returns (rows, malformed). Rows carry `source_file` (= `label`) and the 1-based
    `line`; a line with the wrong number of fields, or a blank line, is malformed.
    """
    text = read_text_lines(path, encoding)
    frame = pl.DataFrame({"line": pl.int_range(1, text.len() + 1, eager=True), "text": text}).with_columns(
        pl.col("text").str.strip_suffix("\r")
    )
    if header:
        frame = frame.slice(1)
    frame = frame.with_columns(parts=pl.col("text").str.split(sep))
    n_parts = pl.col("parts").list.len()
    good = (n_parts == len(names)) & (pl.col("text") != "")
    rows = frame.filter(good).select(
        pl.lit(label).alias("source_file"),
        "line",
        *[pl.col("parts").list.get(i).alias(name) for i, name in enumerate(names)],
    )
    malformed = frame.filter(~good).select(
        pl.lit(label).alias("source_file"),
        "line",
        "text",
        pl.when(pl.col("text") == "")
        .then(pl.lit("blank line"))
        .otherwise(pl.format(f"expected {len(names)} fields separated by '{sep}', found {{}}", n_parts))
        .alias("reason"),
    )
    return rows, malformed.cast(MALFORMED_SCHEMA)


def read_quoted_csv(
    path: Path, label: str, names: tuple[str, ...], *, n_fields: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read a Book-Crossing style CSV: ';' separated, quoted, '\\' escapes, ISO-8859-1.

    A record may span lines (a quoted line break); its `line` is the line it starts on.
    Only the first len(names) fields are kept; a record with other than `n_fields`
    fields is malformed.
    """
    records: dict[str, list] = {"line": [], **{name: [] for name in names}}
    bad: dict[str, list] = {"line": [], "text": [], "reason": []}
    with path.open(encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle, delimiter=";", escapechar="\\")
        next_line = 1
        for index, row in enumerate(reader):
            start, next_line = next_line, reader.line_num + 1
            if index == 0:
                continue  # header
            if len(row) != n_fields:
                bad["line"].append(start)
                bad["text"].append(";".join(row))
                bad["reason"].append(f"expected {n_fields} fields separated by ';', found {len(row)}")
                continue
            records["line"].append(start)
            for name, value in zip(names, row):
                records[name].append(value)
    rows = pl.DataFrame(records, schema={"line": pl.Int64, **{n: pl.String for n in names}})
    rows = rows.select(pl.lit(label).alias("source_file"), pl.all())
    malformed = pl.DataFrame(bad, schema={"line": pl.Int64, "text": pl.String, "reason": pl.String})
    malformed = malformed.select(pl.lit(label).alias("source_file"), pl.all())
    return rows, malformed.cast(MALFORMED_SCHEMA)


def _list_field(column: str, sep: str) -> pl.Expr:
    """Split a multi-valued text field into a list of trimmed, non-blank values."""
    return (
        pl.col(column)
        .fill_null("")
        .str.split(sep)
        .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
        .alias(column)
    )


def read_movielens(data_dir: Path) -> Bundle:
    """Read ML-1M (users.dat, movies.dat, ratings.dat; '::' separated, ISO-8859-1).

    Item features come from MeLU's movies_extrainfos.dat (rate, genre, director, actor)
    when present; otherwise genre comes from movies.dat and the rest are missing.
    """
    directory = require_files("movielens", data_dir)
    sub = LAYOUTS["movielens"].subdir
    read = lambda name, cols, enc="latin-1": split_lines(  # noqa: E731
        directory / name, f"{sub}/{name}", "::", cols, encoding=enc, header=False
    )
    users, bad_users = read("users.dat", ("user_id", "gender", "age", "occupation", "zip"))
    movies, bad_movies = read("movies.dat", ("item_id", "title", "genres"))
    ratings, bad_ratings = read("ratings.dat", ("user_id", "item_id", "label", "ts"))
    malformed = [bad_users, bad_movies, bad_ratings]
    sources = [file_source(directory / n) for n in ("users.dat", "movies.dat", "ratings.dat")]
    extra_path = directory / "movies_extrainfos.dat"
    if extra_path.is_file():
        extra_cols = ("item_id", "title", "year", "rate", "released", "genre", "director",
                      "writer", "actor", "plot", "poster")
        extra, bad_extra = read("movies_extrainfos.dat", extra_cols, "utf-8")
        malformed.append(bad_extra)
        sources.append(file_source(extra_path))
        extra = extra.unique("item_id", keep="first", maintain_order=True).select(
            "item_id", "rate", _list_field("genre", ","), _list_field("director", ","),
            _list_field("actor", ",")
        )
        items = movies.select("source_file", "line", "item_id").join(extra, on="item_id", how="left")
        items = items.with_columns(
            pl.col(c).fill_null(pl.lit([], dtype=pl.List(pl.String))) for c in ("genre", "director", "actor")
        )
    else:
        items = movies.select(
            "source_file", "line", "item_id",
            pl.lit(None, dtype=pl.String).alias("rate"),
            _list_field("genres", "|").alias("genre"),
            pl.lit([], dtype=pl.List(pl.String)).alias("director"),
            pl.lit([], dtype=pl.List(pl.String)).alias("actor"),
        )
    return Bundle(
        frames={"users": users, "items": items, "interactions": ratings, "malformed": pl.concat(malformed)},
        info={"dataset": "movielens", "item_features_from": "movies_extrainfos.dat" if extra_path.is_file() else "movies.dat"},
        sources=tuple(sources),
    )


def read_bookcrossing(data_dir: Path) -> Bundle:
    """Read the Book-Crossing CSV dump (users, books, ratings) in its original format."""
    directory = require_files("bookcrossing", data_dir)
    sub = LAYOUTS["bookcrossing"].subdir
    users, bad_users = read_quoted_csv(
        directory / "BX-Users.csv", f"{sub}/BX-Users.csv", ("user_id", "location", "age"), n_fields=3
    )
    books, bad_books = read_quoted_csv(
        directory / "BX-Books.csv", f"{sub}/BX-Books.csv",
        ("item_id", "title", "author", "year", "publisher"), n_fields=8,
    )
    ratings, bad_ratings = read_quoted_csv(
        directory / "BX-Book-Ratings.csv", f"{sub}/BX-Book-Ratings.csv",
        ("user_id", "item_id", "label"), n_fields=3,
    )
    return Bundle(
        frames={
            "users": users,
            "items": books.drop("title"),
            "interactions": ratings.with_columns(pl.lit(None, dtype=pl.String).alias("ts")),
            "malformed": pl.concat([bad_users, bad_books, bad_ratings]),
        },
        info={"dataset": "bookcrossing"},
        sources=tuple(file_source(directory / n) for n in LAYOUTS["bookcrossing"].required),
    )


TAOBAO_USER_COLUMNS = ("user_id", "age", "gender", "city", "segment", "spend_level")
TAOBAO_ITEM_COLUMNS = ("item_id", "category", "brand", "price_level")
TAOBAO_LOG_COLUMNS = ("user_id", "item_id", "ts", "clicked")


def read_taobao(directory: Path, max_days: int | None = None) -> Bundle:
    """Read a Taobao-like click-log directory written by `taobao_generator`.

    Layout: user_profile.csv, item_catalogue.csv, logs/dt=*/impressions.csv, and the
    evaluation-only ground truth _truth/user_groups.csv (kept in its own frame). With
    `max_days`, only the first `max_days` day files (by date) are read.
    """
    required = ("user_profile.csv", "item_catalogue.csv")
    missing = [n for n in required if not (directory / n).is_file()]
    day_files = sorted(directory.glob("logs/dt=*/impressions.csv"))[:max_days]
    if missing or not day_files:
        missing += [] if day_files else ["logs/dt=*/impressions.csv"]
        raise MissingRawFilesError(
            f"taobao: missing raw file(s) {', '.join(missing)} in {directory}; "
            "generate them with assets.taobao_generator.generate (the raw_logs asset does this "
            "when PAML_DATA_DIR has no taobao/ directory)."
        )
    read = lambda rel, cols: split_lines(  # noqa: E731
        directory / rel, f"taobao/{rel}", ",", cols, encoding="utf-8", header=True
    )
    users, bad_users = read("user_profile.csv", TAOBAO_USER_COLUMNS)
    items, bad_items = read("item_catalogue.csv", TAOBAO_ITEM_COLUMNS)
    logs, malformed = [], [bad_users, bad_items]
    for path in day_files:
        rows, bad = read(str(path.relative_to(directory)), TAOBAO_LOG_COLUMNS)
        logs.append(rows)
        malformed.append(bad)
    interactions = pl.concat(logs).rename({"clicked": "label"})
    frames = {"users": users, "items": items, "interactions": interactions, "malformed": pl.concat(malformed)}
    truth_path = directory / "_truth" / "user_groups.csv"
    if truth_path.is_file():
        frames["truth"] = pl.read_csv(truth_path, schema={"user_id": pl.String, "true_group": pl.String})
    paths = [directory / n for n in required] + day_files
    return Bundle(
        frames=frames,
        info={"dataset": "taobao", "days": len(day_files)},
        sources=tuple(file_source(p) for p in paths),
    )
