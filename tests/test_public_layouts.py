"""docs/data.md's "Recipes for common public layouts", read from the doc itself and run on made-up files in each
layout as published (MovieLens-100K and -25M, the Netflix Prize, Amazon reviews 2018, goodbooks-10k), so a
recipe that stops working fails here; and the Netflix layout's two spec options, `block_column` (a line
'MOVIEID:' heading the lines below it) and `last_column_rest` (titles with unquoted commas)."""

import gzip
import json
import re
from pathlib import Path

import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec
from tests.fixtures import ml25m_dir, ml100k_dir

DOC = Path(__file__).resolve().parent.parent / "docs" / "data.md"


def doc_spec(name: str) -> str:
    """The TOML block of docs/data.md whose spec is named `name` (exactly one)."""
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
              if re.search(rf'^name = "{name}"$', b, re.M)]
    assert len(blocks) == 1, f"docs/data.md holds {len(blocks)} specs named {name!r}"
    return blocks[0]


def recipe_section() -> str:
    """The text of the recipes section (up to the next heading)."""
    text = DOC.read_text(encoding="utf-8")
    return text.split("### Recipes for common public layouts", 1)[1].split("\n### ", 1)[0]


def netflix_dir(root: Path, n_users: int = 12, n_movies: int = 6) -> Path:
    """The Netflix Prize's layout: combined_data_<k>.txt, each movie's ratings under a line 'MOVIEID:' (user,rating,
    date; LF), and movie_titles.csv (ISO-8859-1, CRLF, no header, titles with unquoted commas, year NULL)."""
    directory = root / "netflix"
    directory.mkdir()
    half = n_movies // 2
    for part, movies in ((1, range(1, half + 1)), (2, range(half + 1, n_movies + 1))):
        lines = []
        for movie in movies:
            lines.append(f"{movie}:")
            lines += [f"{1488844 + 7 * u},{1 + (u + movie) % 5},2005-0{1 + u % 9}-1{movie % 10}"
                      for u in range(n_users) if (u + movie) % 3]
        (directory / f"combined_data_{part}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    titles = [f"{m},{'NULL' if m == 2 else 1990 + m},{'At Home Among Strangers, A Stranger Among His Own' if m == 1 else f'Amélie {m}'}"
              for m in range(1, n_movies + 1)]
    (directory / "movie_titles.csv").write_bytes(("\r\n".join(titles) + "\r\n").encode("latin-1"))
    (directory / "dataset.toml").write_text(doc_spec("netflix"), encoding="utf-8")
    return directory


def amazon_dir(root: Path, n_users: int = 10) -> Path:
    """Amazon reviews 2018 (5-core) as shipped: gzipped JSON lines with `overall` a float, a nested `style` object
    and `vote`, `image`, `reviewerName` on some lines only; ASINs with leading zeros; the metadata's `category` list
    and `brand` absent on some lines."""
    directory = root / "amazon"
    directory.mkdir()
    asins = ["0000013714", "0005019281", "B00000IJRI", "B0002ZDXFU", "0007420412"]
    reviews = []
    for u in range(n_users):
        for k, asin in enumerate(asins):
            if (u + k) % 4 == 0:
                continue
            review = {"overall": float(1 + (u * k) % 5), "verified": u % 2 == 0, "reviewTime": f"0{1 + k} {1 + u}, 2014",
                      "reviewerID": f"A{u:03d}XRV0LVJN7", "asin": asin, "reviewText": "Good, \"really\".", "summary": "Ok",
                      "unixReviewTime": 1388534400 + 86400 * (u + 31 * k)}
            if k % 2:
                review |= {"style": {"Format:": " Paperback"}, "vote": "1,200", "reviewerName": "Pat"}
            if u == 3:
                review["image"] = ["https://example.com/x.jpg"]
            reviews.append(review)
    meta = [{"asin": a, "title": f"Book {k}", "category": ["Books", "Mystery"][: 1 + k % 2], "details": {},
             **({"brand": "Visit Amazon's Ann Page"} if k % 3 else {})} for k, a in enumerate(asins)]
    for name, records in (("Books_5.json.gz", reviews), ("meta_Books.json.gz", meta)):
        (directory / name).write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode("utf-8")))
    (directory / "dataset.toml").write_text(doc_spec("amazon_books"), encoding="utf-8")
    return directory


GOODBOOKS_COLUMNS = ("id,book_id,best_book_id,work_id,books_count,isbn,isbn13,authors,original_publication_year,"
                     "original_title,title,language_code,average_rating,ratings_count,work_ratings_count,"
                     "work_text_reviews_count,ratings_1,ratings_2,ratings_3,ratings_4,ratings_5,image_url,small_image_url")


def goodbooks_dir(root: Path, n_users: int = 10, n_books: int = 6) -> Path:
    """goodbooks-10k: ratings.csv (user_id,book_id,rating; no time) and books.csv (23 columns, `authors` a quoted
    comma-separated list, years written '2008.0' and one negative, a blank isbn and language, isbn13 as a float)."""
    directory = root / "goodbooks"
    directory.mkdir()
    authors = ["Suzanne Collins", '"J.K. Rowling, Mary GrandPré"', "Homer"]
    books = [GOODBOOKS_COLUMNS] + [
        f"{i},{2767052 + i},{2767052 + i},{2792775 + i},272,{'' if i == 2 else '439023483'},9.78043902348e+12,"
        f"{authors[i % 3]},{'-750.0' if i % 3 == 2 else f'{2000 + i}.0'},\"The Hunger Games, {i}\",\"Title {i} (Series, #1)\","
        f"{'' if i == 4 else 'eng'},4.34,4780653,4942365,155254,66715,127936,560092,1481305,2706317,https://x/{i}m.jpg,https://x/{i}s.jpg"
        for i in range(1, n_books + 1)]
    ratings = ["user_id,book_id,rating"] + [f"{u},{i},{1 + (u + i) % 5}" for u in range(1, n_users + 1)
                                            for i in range(1, n_books + 1) if (u + i) % 3]
    (directory / "books.csv").write_text("\n".join(books) + "\n", encoding="utf-8")
    (directory / "ratings.csv").write_text("\n".join(ratings) + "\n", encoding="utf-8")
    (directory / "dataset.toml").write_text(doc_spec("goodbooks"), encoding="utf-8")
    return directory


def with_doc_spec(directory: Path, name: str) -> Path:
    """`directory` with its spec replaced by docs/data.md's spec named `name`."""
    (directory / "dataset.toml").write_text(doc_spec(name), encoding="utf-8")
    return directory


LAYOUTS = {
    "ml100k": lambda root: with_doc_spec(ml100k_dir(root, n_users=12, n_items=10), "ml100k"),
    "ml25m": lambda root: with_doc_spec(ml25m_dir(root, n_users=12, n_items=10), "ml25m"),
    "netflix": netflix_dir,
    "amazon_books": amazon_dir,
    "goodbooks": goodbooks_dir,
}


def test_the_recipes_section_names_every_layout_tested_here():
    section = recipe_section()
    for name in ("netflix", "amazon_books", "goodbooks"):
        assert f'name = "{name}"' in section
    assert '(`name = "ml100k"`)' in section and "`ml25m`" in section


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_recipe_reads_and_cleans_its_layout_without_rejecting_a_row(tmp_path, name):
    dataset = load_spec(LAYOUTS[name](tmp_path))
    assert dataset.spec.name == name
    raw = read_custom(dataset)
    bundle = clean_logs_from_raw(raw, dataset.spec)
    assert bundle.frame("rejected").height == 0, bundle.frame("rejected")
    assert raw.frame("interactions").height == bundle.frame("interactions").height > 0
    accounting = bundle.frame("accounting")
    assert (accounting["read"] == accounting["kept"]).all()


def test_netflix_rows_take_their_movie_from_the_heading_line_and_titles_keep_their_commas(tmp_path):
    dataset = load_spec(netflix_dir(tmp_path))
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    interactions = bundle.frame("interactions")
    # combined_data_1.txt: line 1 is '1:', line 2 the first rating of movie 1; file 2 starts with movie 4.
    first = interactions.filter(pl.col("source_file") == "netflix/combined_data_1.txt").sort("line").row(0, named=True)
    assert (first["line"], first["item_id"], first["user_id"], first["label"]) == (2, "1", "1488844", 2.0)
    assert first["ts"] == 1105401600  # 2005-01-11
    second = interactions.filter(pl.col("source_file") == "netflix/combined_data_2.txt")
    assert sorted(second["item_id"].unique()) == ["4", "5", "6"]
    # every rating under its own heading: the movie is the last heading above the line
    lines = (tmp_path / "netflix" / "combined_data_1.txt").read_text().splitlines()
    for row in interactions.filter(pl.col("source_file") == "netflix/combined_data_1.txt").iter_rows(named=True):
        above = [text for text in lines[: row["line"]] if text.endswith(":")][-1]
        assert row["item_id"] == above.removesuffix(":")
    items = bundle.frame("items").sort("item_id")
    assert items["title"][0] == "At Home Among Strangers, A Stranger Among His Own"
    assert items["year"].to_list()[:3] == ["1991", None, "1993"] and items["title"][2] == "Amélie 3"


def test_amazon_and_goodbooks_features_read_as_their_files_write_them(tmp_path):
    amazon = load_spec(amazon_dir(tmp_path))
    items = clean_logs_from_raw(read_custom(amazon), amazon.spec).frame("items").sort("item_id")
    assert items["item_id"].to_list()[:2] == ["0000013714", "0005019281"]  # ASINs stay text
    assert items["category"].to_list()[:2] == [["Books"], ["Books", "Mystery"]] and items["brand"][0] is None
    goodbooks = load_spec(goodbooks_dir(tmp_path))
    bundle = clean_logs_from_raw(read_custom(goodbooks), goodbooks.spec)
    books = bundle.frame("items").sort("item_id")
    assert books["authors"].to_list()[:2] == [["J.K. Rowling", "Mary GrandPré"], ["Homer"]]
    assert books["year"].to_list()[:2] == ["[2000, 2010)", None]  # 2001.0 in its bucket; -750.0 out of bounds: missing
    assert bundle.frame("interactions")["ts"].is_null().all()


def test_amazon_review_time_reads_with_the_pattern_the_recipe_gives(tmp_path):
    directory = amazon_dir(tmp_path)
    assert '`timestamp_format = "%m %d, %Y"`' in recipe_section()
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('timestamp = "unixReviewTime"',
                                             'timestamp = "reviewTime"\ntimestamp_format = "%m %d, %Y"'))
    dataset = load_spec(directory)
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert bundle.frame("rejected").height == 0
    row = bundle.frame("interactions").filter((pl.col("user_id") == "A000XRV0LVJN7") & (pl.col("item_id") == "0005019281"))
    assert row["ts"].to_list() == [1391212800]  # "02 1, 2014": the day is not zero-padded


NAIVE_NETFLIX = """\
name = "netflix"
label = { kind = "rating", min = 1, max = 5 }
[interactions]
file = "combined_data_*.txt"
header = false
columns = ["user", "rating", "date"]
user_id = "user"
item_id = "movie"
label = "rating"
[users.features]
user = { type = "categorical", column = "user" }
[items.features]
item = { type = "categorical", column = "movie" }
"""


def test_a_netflix_log_without_block_column_stops_dataset_add_naming_the_heading_and_the_key(tmp_path):
    # Read as rows, the headings were rejected and the ratings below kept with whatever column the spec named as the
    # item (a date, a rating): the log must not get past `dataset add`.
    directory = netflix_dir(tmp_path)
    for item in ("movie", "date"):
        (directory / "dataset.toml").write_text(NAIVE_NETFLIX.replace('"movie"', f'"{item}"'), encoding="utf-8")
        with pytest.raises(SpecError, match=r"interactions.block_column: missing: line 1 of netflix/combined_data_1.txt is "
                                            r"'1:', a line heading the lines below it, .* set block_column = \"<name>\""):
            load_spec(directory)
    # Left with its default header = true, line 1 names one column, '1:'; the unknown column says the same.
    (directory / "dataset.toml").write_text(NAIVE_NETFLIX.replace('header = false\ncolumns = ["user", "rating", "date"]\n', ""))
    with pytest.raises(SpecError, match=r"interactions.user_id: unknown column; netflix/combined_data_\*.txt has 1: \(line "
                                        r"1, '1:', heads the lines below it, .* set block_column = 'user'"):
        load_spec(directory)


@pytest.mark.parametrize("quote", ["''", "'\"'"])
def test_a_heading_line_read_as_a_row_is_rejected_saying_what_it_is(tmp_path, quote):
    # A heading below line 1 (a file whose first line is a stray row) gets past `dataset add`; the headings were
    # rejected only as 'expected 3 fields ..., found 1', with nothing saying that they carry the movie of the lines below.
    directory = netflix_dir(tmp_path)
    for log in directory.glob("combined_data_*.txt"):
        log.write_text("1488844,3,2005-09-06\n" + log.read_text())
    naive = NAIVE_NETFLIX.replace('item_id = "movie"', 'item_id = "date"').replace('column = "movie"', 'column = "date"')
    (directory / "dataset.toml").write_text(naive.replace('header = false', f"header = false\nquote = {quote}"))
    malformed = read_custom(load_spec(directory)).frame("malformed")
    assert malformed.height == 6 and set(malformed["text"]) == {f"{m}:" for m in range(1, 7)}
    assert set(malformed["reason"]) == {"expected 3 fields separated by ',', found 1 (a line 'VALUE:' heading the lines "
                                        "below it, as the Netflix Prize's combined_data files name each movie: set "
                                        "block_column in the spec to read it as a column; docs/data.md, \"Recipes for "
                                        "common public layouts\")"}


def test_a_row_above_the_first_heading_or_under_an_empty_one_is_rejected_and_blank_lines_stay_blank(tmp_path):
    directory = netflix_dir(tmp_path)
    log = directory / "combined_data_1.txt"
    log.write_text("99,5,2005-01-01\n\n" + log.read_text() + "\n:\n98,4,2005-01-02\n")
    dataset = load_spec(directory)
    malformed = read_custom(dataset).frame("malformed").sort("line").select("line", "text", "reason").rows()
    end = len(log.read_text().splitlines())
    # The row under ':' is not one of the movie above: it names none.
    assert malformed == [(1, "99,5,2005-01-01", "a row above the file's first line 'VALUE:' (which gives its rows their movie)"),
                         (2, "", "blank line"), (end - 2, "", "blank line"),
                         (end, "98,4,2005-01-02", "a row under a line ':' that names no movie")]
    rejected = clean_logs_from_raw(read_custom(dataset), dataset.spec).frame("rejected")
    assert rejected.filter(pl.col("line") == 1)["reason"].item().startswith("malformed line: a row above")


@pytest.mark.parametrize(("change", "message"), [
    ('block_column = "movie"', r"interactions.block_column: a file read so is never quoted: leave quote out or set "
                               r"quote = '' \(found '\"'\)"),
    ('block_column = "user"', r"interactions.block_column: expected a new column name \(not one of the line's columns"),
    ('block_column = "movie id"', r"interactions.block_column: expected a new column name"),
    ('last_column_rest = true', r"interactions.last_column_rest: a file read so is never quoted"),
])
def test_block_and_rest_options_are_checked(tmp_path, change, message):
    directory = netflix_dir(tmp_path)
    spec = NAIVE_NETFLIX.replace('header = false', f'header = false\n{change}')
    if "quoted" in message:
        spec = spec.replace('header = false', 'header = false\nquote = "\\""')
    (directory / "dataset.toml").write_text(spec)
    with pytest.raises(SpecError, match=message):
        load_spec(directory)


@pytest.mark.parametrize("name", ["text", "parts", "_header", "_heading"])
def test_a_block_column_named_as_the_readers_own_working_columns_reads_the_same(tmp_path, name):
    # The block's values went into a column of that name beside the reader's own: 'text' replaced the lines' text
    # (every line then one field, the file refused), '_header' the values with False, 'parts' stopped on a cast.
    directory = netflix_dir(tmp_path)
    spec = directory / "dataset.toml"
    expected = read_custom(load_spec(directory)).frame("interactions")
    spec.write_text(spec.read_text().replace('"movie"', f'"{name}"'))
    interactions = read_custom(load_spec(directory)).frame("interactions")
    assert interactions.equals(expected)


@pytest.mark.parametrize("name", ["line", "source_file"])
def test_a_block_column_named_as_a_column_the_reader_adds_is_refused(tmp_path, name):
    directory = netflix_dir(tmp_path)
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('"movie"', f'"{name}"'))
    with pytest.raises(SpecError, match=rf"interactions.block_column: expected a new column name .*found '{name}'"):
        load_spec(directory)


def test_block_and_rest_options_do_not_apply_to_json_lines_or_parquet(tmp_path):
    directory = amazon_dir(tmp_path)
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('timestamp = "unixReviewTime"', 'timestamp = "unixReviewTime"\nblock_column = "x"'))
    with pytest.raises(SpecError, match=r"interactions.block_column: does not apply to a JSON lines file"):
        load_spec(directory)


def test_goodbooks_keyed_on_books_own_book_id_names_the_column_that_holds_the_ratings_ids(tmp_path):
    # books.csv's `book_id` is a Goodreads id; the ratings name its `id`. Every rating was rejected as
    # 'unknown item_id' and the cleaning stopped without a word about which column the ids are in.
    from assets.clean_logs import CleaningError

    directory = goodbooks_dir(tmp_path)
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('id = "id"', 'id = "book_id"'))
    dataset = load_spec(directory)
    raw = read_custom(dataset)
    note = ("100% of the log's 6 item ids are not in the column 'book_id' of goodbooks/books.csv, while its column 'id' "
            "holds 100% of them: set items.id = \"id\" in the dataset spec")
    assert raw.info["id_column_hints"] == {"goodbooks/books.csv": note}
    with pytest.raises(CleaningError, match=r"no users left after cleaning; rejected: \d+ x 'unknown item_id'.*"
                                            + re.escape(f"goodbooks/books.csv: {note}")):
        clean_logs_from_raw(raw, dataset.spec)
    (tmp_path / "right").mkdir()
    assert "id_column_hints" not in read_custom(load_spec(goodbooks_dir(tmp_path / "right"))).info


def test_an_iso_8859_1_file_read_as_utf8_shows_its_text_and_the_key_to_set(tmp_path):
    # ML-100K's u.item is ISO-8859-1; a spec without its `encoding` line stopped with the bytes alone (0xE9 0x20 ...).
    from assets.raw_text import RawEncodingError

    directory = LAYOUTS["ml100k"](tmp_path)
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('encoding = "latin-1"\n', ""))
    with pytest.raises(RawEncodingError, match=r"ml100k/u.item .*is not valid UTF-8 at line 1, byte 6 \(0xE9 .*Read as "
                                               r"ISO-8859-1 it says '1\|Café Film 1 \(199': if that is the text, the file "
                                               r"is not UTF-8; set encoding = \"latin-1\""):
        read_custom(load_spec(directory))
