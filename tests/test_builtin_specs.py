"""Built-in specs: MovieLens-1M and Book-Crossing are described by spec files of the user-facing
format (assets/builtin_specs/), and the spec options they need work on any dataset."""

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.custom_reader import read_builtin, read_custom
from assets.dataset_spec import SpecError, builtin_spec_path, load_builtin, load_spec, table_files
from assets.domains import IntegerIn, Parts, Text
from assets.specs import SPECS
from tests.fixtures import ML_EXTRA, good_ml_users, ml_ratings_for, movielens_dir, tiny_real_data


def test_each_builtin_spec_loads_and_gives_the_model_its_fields(tmp_path):
    ml, bx = load_builtin("movielens").spec, load_builtin("bookcrossing").spec  # without data: the model's view
    assert (ml.task, ml.label_min, ml.label_max) == ("rating", 1, 5)
    assert ml.user_fields == ("gender", "age", "occupation", "zip")
    assert (ml.item_fields, ml.item_multi_fields) == (("rate",), ("genre", "director", "actor"))
    assert ml.tagging_fields == ("age", "gender", "zip", "occupation") and ml.backoff == (("zip", (3, 1)),)
    assert ml.display_fields == ("title", "genre")
    assert dict(ml.user_domains)["age"] == IntegerIn(1, 56, (1, 18, 25, 35, 45, 50, 56))
    assert dict(ml.user_domains)["zip"] == Text() and ml.item_id_domain.digits
    assert (bx.task, bx.label_min, bx.label_max, bx.implicit_labels) == ("rating", 1, 10, (0.0,))
    assert bx.user_fields == bx.tagging_fields == ("age", "city", "state", "country")
    assert bx.item_fields == ("author", "year", "publisher") and bx.item_multi_fields == ()
    assert bx.display_fields == ("title", "author") and bx.item_missing == (("year", ("0",)),)
    # The location's rules stand where its first part's feature stands: id, age, then location.
    assert [name for name, _ in bx.user_domains] == ["user_id", "age", "location"]
    assert dict(bx.user_domains)["location"] == Parts(("city", "state", "country"), ",", (Text(),) * 3, True)
    assert SPECS["movielens"] == ml and SPECS["bookcrossing"] == bx and SPECS["taobao"].task == "ctr"

    root = tiny_real_data(tmp_path)  # with data: every file and column checked
    assert load_builtin("movielens", root / "ml-1m").details.label == "ml-1m/movies_extrainfos.dat"
    assert load_builtin("bookcrossing", root / "bookcrossing").users.label == "bookcrossing/BX-Users.csv"
    with pytest.raises(SpecError, match="name: 'movielens' is a built-in dataset"):
        load_spec(builtin_spec_path("movielens"))  # a user cannot register it under its own name


def test_ml1m_without_melu_details_takes_genres_from_movies_dat(tmp_path):
    root = movielens_dir(tmp_path, good_ml_users(2), ml_ratings_for(range(1, 3)), extra=None)
    assert load_builtin("movielens", root / "ml-1m").details is None  # the details file is optional
    bundle = clean_logs_from_raw(read_builtin("movielens", root), SPECS["movielens"])
    items = bundle.frame("items").sort("item_id")
    assert items["genre"].to_list() == [["Animation", "Comedy"], ["Action", "Crime"], ["Comedy"]]
    assert items["rate"].to_list() == [None, None, None] and "item_details" not in bundle.frames
    with_details = clean_logs_from_raw(read_builtin("movielens", movielens_dir(tmp_path / "d", good_ml_users(2),
                                                                               ml_ratings_for(range(1, 3)), extra=ML_EXTRA)),
                                       SPECS["movielens"])
    assert with_details.frame("items").sort("item_id")["rate"].to_list() == ["G", "R", None]


LIBRARY_SPEC = """\
name = "library"

[label]
kind = "rating"
min = 1
max = 5
implicit = 0

[interactions]
file = "loans.csv"
separator = ";"
escape = "\\\\"
columns = ["member", "book", "score", "day"]
user_id = "member"
item_id = "book"
label = "score"
timestamp = "day"
timestamp_format = "iso"
timestamp_min = "2020-01-01"
timestamp_max = "2022-01-01"
timestamp_reason = "the library opened in 2020"

[users]
file = "members.csv"
separator = ";"
escape = "\\\\"
id = "Member"
id_digits = true

[users.split.Where]
separator = ","
parts = ["city", "region", "country"]
lowercase = true

[users.features]
level = { type = "numeric", column = "Level", integer = true, min = 1, max = 3, values = [1, 2] }
city = { type = "categorical", reject_garbled = true }
region = { type = "categorical", reject_garbled = true }
country = { type = "categorical", values = ["pt", "fr", "de", "us"] }

[items]
file = "books.csv"
separator = ";"
id = "Book"
display = { name = "Title" }

[items.features]
year = { type = "categorical", column = "Year", missing = ["0"] }
publisher = { type = "categorical", column = "Publisher" }

[items.details]
file = "tags.csv"
optional = true
separator = ";"
columns = ["Book", "Tags"]
id = "Book"

[items.details.features]
tags = { type = "multi", column = "Tags", delimiter = "|" }

[groups]
features = ["level", "city", "region", "country"]
"""


def library_dir(root: Path) -> Path:
    """A small quoted ';' dataset with escaped quotes, a split location, codes, implicit 0s and a details file."""
    directory = root / "library"
    directory.mkdir(parents=True)
    files = {
        "loans.csv": ['"Member";"Book";"Score";"Day"', '"1";"b1";"4";"2021-01-02"', '"1";"b2";"0";"2021-01-03"',
                      '"1";"b3";"5";"2021-01-04"', '"2";"b1";"3";"2021-01-02"', '"2";"b2";"5";"2021-01-05"',
                      '"3";"b1";"2";"2021-01-02"', '"3";"b2";"2";"2021-01-02"', '"4";"b1";"5";"2019-06-01"'],
        "members.csv": ['"Member";"Where";"Level"', '"1";"Porto, \\"Norte\\", PT";"2"', '"2";"lyon, rhone, FR";"1"',
                        '"3";"k&#246;ln, nrw, DE";"2"', '"4";"austin, texas";"1"', '"5";"reno, nevada, US";"3"',
                        '"6";"reno, nevada, US";"2.5"', '"7";"reno, nevada, XX";"1"'],
        "books.csv": ['"Book";"Title";"Year";"Publisher"', '"b1";"One";"0";"Pub A"', '"b2";"Two";"1999";"n/a"',
                      '"b3";"Three";"2001";"Pub B"'],
        "tags.csv": ['"Book";"Tags"', '"b1";"x|y|x"', '"b9";"z"'],
    }
    for name, lines in files.items():
        (directory / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "dataset.toml").write_text(LIBRARY_SPEC, encoding="utf-8")
    return directory


def day(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def test_the_builtins_options_on_a_small_dataset(tmp_path):
    dataset = load_spec(library_dir(tmp_path))
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    users = bundle.frame("users")
    # Parts trimmed of spaces and quotes ('"Norte"' escaped as \\") and lower-cased; the level an integer code.
    assert users.select("user_id", "level", "city", "region", "country").rows() == [
        ("1", 2, "porto", "norte", "pt"), ("2", 1, "lyon", "rhone", "fr")]
    assert users["level"].dtype == pl.Int64
    rejected = {(r["source_file"], r["line"]): r["reason"] for r in bundle.frame("rejected").iter_rows(named=True)}
    assert rejected == {
        ("library/members.csv", 4): "garbled Where (city): HTML character reference",
        ("library/members.csv", 5): "Where not 'city, region, country'",
        ("library/members.csv", 6): "level not one of 1, 2",
        ("library/members.csv", 7): "level not an integer",
        ("library/members.csv", 8): "Where (country) not one of pt, fr, de, us",  # checked lower-cased, as kept
        ("library/loans.csv", 3): "implicit rating 0 (not an explicit 1-5 rating)",
        ("library/loans.csv", 7): "user dropped by cleaning",
        ("library/loans.csv", 8): "user dropped by cleaning",
        ("library/loans.csv", 9): "timestamp outside 2020-01-01..2021-12-31 (the library opened in 2020)",
        ("library/tags.csv", 3): "item_id not in library/books.csv",
    }
    interactions = bundle.frame("interactions")
    assert interactions.select("user_id", "item_id", "label", "ts").rows() == [
        ("1", "b1", 4.0, day("2021-01-02")), ("1", "b3", 5.0, day("2021-01-04")),
        ("2", "b1", 3.0, day("2021-01-02")), ("2", "b2", 5.0, day("2021-01-05"))]
    items = bundle.frame("items")
    # Year 0 is missing as the spec says, 'n/a' always is; the details' tags joined (repeats once); the title shown as 'name'.
    assert items.select("item_id", "year", "publisher", "tags", "name").rows() == [
        ("b1", None, "Pub A", ["x", "y"], "One"), ("b2", "1999", None, [], "Two"), ("b3", "2001", "Pub B", [], "Three")]
    assert dataset.spec.display_fields == ("name",)
    accounting = bundle.frame("accounting")
    assert (accounting["read"] == accounting["kept"] + accounting["rejected"]).all() and accounting.height == 4


def test_a_header_that_is_not_the_spec_columns_stops_the_read(tmp_path):
    from assets.raw_text import RawHeaderError

    directory = library_dir(tmp_path)
    (directory / "loans.csv").write_text('"1";"b1";"4";"2021-01-02"\n', encoding="utf-8")
    with pytest.raises(RawHeaderError, match=r"library/loans.csv .* line 1: expected the header member, book, score, day; "
                                             r"found 1, b1, 4, 2021-01-02"):
        read_custom(load_spec(directory))


@pytest.mark.parametrize(("old", "new", "message"), [
    ('file = "loans.csv"\nseparator = ";"\nescape = "\\\\"', 'file = "loans.csv"\nseparator = ";"\nquote = ""\nescape = "\\\\"',
     "interactions.escape: expected one character other than the quote, in a quoted file"),
    ("values = [1, 2] }", "values = [1, 7] }", "users.features.level.values: expected whole numbers between min 1 and max 3"),
    ("integer = true, min = 1, max = 3, values = [1, 2]", "min = 1, max = 3, values = [1, 2]",
     "users.features.level.values: needs integer = true"),
    ("integer = true, min = 1, max = 3,", "integer = true, min = 1, max = 3.5,", "users.features.level.min: an integer feature"),
    ('city = { type = "categorical", reject_garbled = true }', 'city = { type = "categorical", reject_garbled = true, values = ["a"] }',
     "users.features.city.values: does not apply with reject_garbled"),
    ('parts = ["city", "region", "country"]', 'parts = ["city", "Level", "country"]', "users.split.Where.parts: a part is named"),
    ("[users.split.Where]", "[users.split.Somewhere]", "users.split.Somewhere: unknown key"),
    ('country = { type = "categorical", values', 'where = { type = "categorical", column = "Where" }\ncountry = { type = "categorical", values',
     "users.features.where.column: the column is split into parts"),
    ('city = { type = "categorical", reject_garbled = true }', 'city = { type = "numeric", min = 1, max = 2 }',
     "users.features.city.type: a part of a split column is a categorical feature"),
    ("implicit = 0", "implicit = 3", "label.implicit: expected label values outside min 1 .. max 5"),
    ('display = { name = "Title" }', 'display = { name = "Subtitle" }', "items.display: unknown column"),
    ('id = "Book"\n\n[items.details.features]', 'id = "ISBN"\n\n[items.details.features]',
     "items.details.id: unknown column; library/tags.csv has Book, Tags (found 'ISBN')"),
    ('optional = true\nseparator = ";"\ncolumns = ["Book", "Tags"]', 'optional = true\nseparator = ";"',
     "items.details.columns: an optional details file lists its columns"),
    ('[items.details]\nfile = "tags.csv"\noptional = true', '[items.details]\nfile = "tag.csv"',
     "items.details.file: no such file in"),
])
def test_every_mistake_in_the_new_options_is_named(tmp_path, old, new, message):
    directory = library_dir(tmp_path)
    spec_path = directory / "dataset.toml"
    assert old in LIBRARY_SPEC, old
    spec_path.write_text(LIBRARY_SPEC.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(SpecError) as raised:
        load_spec(directory)
    assert str(raised.value).startswith(f"{spec_path}: ")
    assert message in str(raised.value)


def test_an_optional_details_file_may_be_absent(tmp_path):
    directory = library_dir(tmp_path)
    (directory / "tags.csv").unlink()
    dataset = load_spec(directory)
    assert dataset.details is None and dataset.spec.item_multi_fields == ("tags",)
    items = clean_logs_from_raw(read_custom(dataset), dataset.spec).frame("items")
    assert items["tags"].to_list() == [[], [], []]


def test_taobao_spec_matches_its_generator_and_reads_one_file_per_day(tmp_path):
    from assets.domains import Category, EpochSeconds
    from assets.taobao_generator import GENDERS, SPEND_LEVELS, GeneratorConfig, generate
    from assets.taobao_logs import read_taobao_directory

    spec = load_builtin("taobao").spec
    assert (spec.task, spec.user_fields) == ("ctr", ("age", "gender", "city", "segment", "spend_level"))
    domains = dict(spec.user_domains)
    assert domains["gender"] == Category(GENDERS) and domains["age"] == IntegerIn(10, 100)
    assert domains["spend_level"].values == tuple(str(level) for level in range(1, SPEND_LEVELS + 1))
    assert spec.time_domain == EpochSeconds(10**9, 10**10, "10-digit epoch seconds")  # Unix-seconds bounds
    generate(tmp_path / "tb", GeneratorConfig(n_users=30, n_items=20, n_days=3))
    dataset = load_builtin("taobao", tmp_path / "tb")
    assert dataset.interactions.label == "taobao/logs/dt=*/impressions.csv"
    raw = read_taobao_directory(tmp_path / "tb", max_days=2)
    days = sorted(set(raw.frame("interactions")["source_file"]))
    assert days == ["taobao/logs/dt=2026-01-01/impressions.csv", "taobao/logs/dt=2026-01-02/impressions.csv"]
    assert raw.info["days"] == 2 and "truth" in raw.frames
    assert [Path(s.path).name for s in raw.sources] == ["taobao.toml", "impressions.csv", "impressions.csv",
                                                         "user_profile.csv", "item_catalogue.csv"]


def test_a_log_in_several_files_is_one_pattern(tmp_path):
    directory = library_dir(tmp_path)
    loans = (directory / "loans.csv").read_text().splitlines()
    (directory / "loans").mkdir()
    (directory / "loans" / "2021-a.csv").write_text("\n".join(loans[:5]) + "\n")  # each file with its header
    (directory / "loans" / "2021-b.csv").write_text("\n".join([loans[0], *loans[5:]]) + "\n")
    (directory / "loans.csv").unlink()
    (directory / "dataset.toml").write_text(LIBRARY_SPEC.replace('file = "loans.csv"', 'file = "loans/*.csv"'))
    dataset = load_spec(directory)
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert bundle.frame("interactions").height == 4
    rejected = {(r["source_file"], r["line"]): r["reason"] for r in bundle.frame("rejected").iter_rows(named=True)
                if r["source_file"].startswith("library/loans")}
    assert rejected == {("library/loans/2021-a.csv", 3): "implicit rating 0 (not an explicit 1-5 rating)",
                        ("library/loans/2021-b.csv", 3): "user dropped by cleaning",
                        ("library/loans/2021-b.csv", 4): "user dropped by cleaning",
                        ("library/loans/2021-b.csv", 5): "timestamp outside 2020-01-01..2021-12-31 (the library opened in 2020)"}
    # A file of the pattern kept compressed is read in its place (left out, its rows were dropped unseen),
    # named as itself; beside its text it is not read twice.
    import gzip

    packed = directory / "loans" / "2021-b.csv.gz"
    packed.write_bytes(gzip.compress((directory / "loans" / "2021-b.csv").read_bytes()))
    assert [f.label for f in table_files(load_spec(directory).interactions)] == ["library/loans/2021-a.csv", "library/loans/2021-b.csv"]
    (directory / "loans" / "2021-b.csv").unlink()
    dataset = load_spec(directory)
    assert [f.label for f in table_files(dataset.interactions)] == ["library/loans/2021-a.csv", "library/loans/2021-b.csv.gz"]
    again = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert again.frame("interactions").height == 4
    assert {(r["source_file"], r["line"]) for r in again.frame("rejected").iter_rows(named=True)
            if r["source_file"].startswith("library/loans")} >= {("library/loans/2021-b.csv.gz", 5)}
    (directory / "dataset.toml").write_text(LIBRARY_SPEC.replace('file = "loans.csv"', 'file = "loans/*.tsv"'))
    with pytest.raises(SpecError, match=r"interactions.file: no file matches in .* \(found 'loans/\*.tsv'\)"):
        load_spec(directory)
    (directory / "dataset.toml").write_text(LIBRARY_SPEC.replace('file = "loans.csv"', 'file = "loans/*.csv"')
                                            .replace('file = "members.csv"', 'file = "member*.csv"'))
    with pytest.raises(SpecError, match=r"users.file: only the interactions file may be a pattern"):
        load_spec(directory)
