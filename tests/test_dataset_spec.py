"""Dataset specs: a rating spec (MovieLens-100K as shipped), a click spec (quoted CSV + user table,
YAML), a Parquet log; every spec mistake; the CLI's dataset add/list/remove; the GX suite from a spec."""

import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec
from assets.expectations import users_suite, validate_clean_logs
from assets.raw_text import EmptyRawFileError, RawFileError
from pipelines import cli
from tests.fixtures import CLICKS_SPEC, ML100K_GENRES, clicks_dir, ml100k_dir


def ml100k_clean(directory: Path):
    dataset = load_spec(directory)
    return dataset, clean_logs_from_raw(read_custom(dataset), dataset.spec)


def rejected_at(bundle, source_file: str, line: int) -> dict:
    rows = bundle.frame("rejected").filter((pl.col("source_file") == source_file) & (pl.col("line") == line))
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def test_ml100k_as_shipped_is_read_cleaned_and_bucketed(tmp_path):
    users = ["1|22|F|none|55111", "2|73|M|writer|55122", "3|7|F|student|K7L5J", "4|80|M|writer|55133",
             "5|30|X|writer|55144", "6|abc|M|writer|55155", "7|30|M||55166"]
    ratings = [f"{u}\t{i}\t{1 + (u + i) % 5}\t{880000000 + i}" for u in (1, 2, 3) for i in (1, 2, 3)]
    ratings += ["1\t4\t6\t880000000", "2\t4\t3\t97", "3\t4\t3", "9\t1\t4\t880000000", "4\t1\t4\t880000000"]
    dataset, bundle = ml100k_clean(ml100k_dir(tmp_path, n_items=4, users=users, ratings=ratings))
    spec = dataset.spec
    assert spec.task == "rating" and (spec.label_min, spec.label_max) == (1, 5)
    assert spec.item_multi_fields == ("genre",) and spec.item_fields == ("release",)
    assert spec.backoff == (("zip", (3, 1)),)
    kept = bundle.frame("users")
    # Buckets: [7, 18) [18, 25) ... [56, 73]; bounds are inclusive, the last bucket closed.
    assert dict(zip(kept["user_id"], kept["age"])) == {"1": "[18, 25)", "2": "[56, 73]", "3": "[7, 18)"}
    assert kept.filter(pl.col("user_id") == "1")["occupation"].item() == "none"  # spec: only '' is missing
    assert rejected_at(bundle, "ml100k/u.user", 4)["reason"] == "age outside [7, 73]"
    assert rejected_at(bundle, "ml100k/u.user", 5)["reason"] == "gender not one of F, M"
    assert rejected_at(bundle, "ml100k/u.user", 6)["reason"] == "age not a number"
    assert rejected_at(bundle, "ml100k/u.user", 7)["reason"] == "occupation missing"
    assert rejected_at(bundle, "ml100k/u.data", 10)["reason"] == "label outside {1..5}"
    assert rejected_at(bundle, "ml100k/u.data", 11)["reason"].startswith("timestamp outside 1997-09-01..1998-04-30")
    assert rejected_at(bundle, "ml100k/u.data", 12)["reason"] == "malformed line: expected 4 fields separated by '\t', found 3"
    assert rejected_at(bundle, "ml100k/u.data", 13)["reason"] == "unknown user_id"
    assert rejected_at(bundle, "ml100k/u.data", 14)["reason"] == "user dropped by cleaning"
    assert bundle.frame("interactions").height == 9
    # u.item: 19 genre flag columns become one list of the genres whose flag is 1 (fixture: (i + g) % 7 == 0
    # or g == 1 + i % 18); ISO-8859-1 titles decoded.
    items = bundle.frame("items").filter(pl.col("item_id") == "1").row(0, named=True)
    assert items["genre"] == [ML100K_GENRES[2], ML100K_GENRES[6], ML100K_GENRES[13]]
    assert items["title"] == "Café Film 1 (1991)"
    accounting = bundle.frame("accounting")
    assert (accounting["read"] == accounting["kept"] + accounting["rejected"]).all()


def test_click_log_with_user_table_quoted_csv_and_yaml(tmp_path):
    customers = ["customer,age,region,segment,device", 'c1,30,"North, East",vip,ios', "c2,95,South,new,ios",
                 "c3,40,South,gold,ios", "c4,20,West,new,android"]
    clicks = ["customer,product,category,tags,clicked,ts",
              'c1,p1,cat1,"a;b",1,1700000000', 'c1,p1,cat1,"a;b",0,1700000100', 'c1,p2,cat2,"b; c",1,1700000200',
              'c1,p2,cat2,"b; c",1,1700000200', "c1,p3,cat1,a,2,1700000300", "c4,p1,cat1,a,1,1700000000",
              "c4,p2,cat2,b,1,1700000000", "c4,p3,cat3,a,0,1700000000", "c2,p1,cat1,a,1,1700000000"]
    dataset = load_spec(clicks_dir(tmp_path, customers=customers, clicks=clicks))
    assert dataset.spec.task == "ctr" and (dataset.spec.label_min, dataset.spec.label_max) == (0, 1)
    raw = read_custom(dataset)
    # p3 is cat1 on line 6 and cat3 on line 9; p1 and p2 have other tags on later lines: the first line's are used, and counted.
    assert raw.info["varying_log_features"] == {"shop_clicks/clicks.csv (items)": {"category": 1, "tags": 2}}
    bundle = clean_logs_from_raw(raw, dataset.spec)
    users = bundle.frame("users")
    assert users.select("user_id", "region", "age").rows() == [("c1", "North, East", "[25, 40)"), ("c4", "West", "[16, 25)")]
    assert rejected_at(bundle, "shop_clicks/customers.csv", 3)["reason"] == "age outside [16, 90]"
    assert rejected_at(bundle, "shop_clicks/customers.csv", 4)["reason"] == "segment not one of new, regular, vip"
    assert rejected_at(bundle, "shop_clicks/clicks.csv", 5)["reason"] == "duplicate user_id/item_id/ts/label"
    assert rejected_at(bundle, "shop_clicks/clicks.csv", 6)["reason"] == "label outside {0..1}"
    assert rejected_at(bundle, "shop_clicks/clicks.csv", 3)["reason"].startswith("repeated impression, merged")
    interactions = bundle.frame("interactions")
    # c1's two impressions of p1 merge into one clicked example; c1 and c4 each keep 2 clicked items.
    assert interactions.filter(pl.col("user_id") == "c1").select("item_id", "label").rows() == [("p1", 1.0), ("p2", 1.0)]
    # Item features are columns of the log: each item takes its first line's values, accounted apart.
    items = bundle.frame("items")
    assert items.filter(pl.col("item_id") == "p2")["tags"].to_list() == [["b", "c"]]
    assert items.filter(pl.col("item_id") == "p3")["category"].to_list() == ["cat1"]
    assert rejected_at(bundle, "shop_clicks/clicks.csv", 10)["reason"] == "user dropped by cleaning"
    accounting = {r["source_file"]: r for r in bundle.frame("accounting").iter_rows(named=True)}
    assert accounting["shop_clicks/clicks.csv (items)"]["read"] == 3
    assert all(r["read"] == r["kept"] + r["rejected"] for r in accounting.values())


def test_parquet_log_with_features_in_the_log(tmp_path):
    directory = tmp_path / "pq"
    directory.mkdir()
    pl.DataFrame({
        "uid": [1, 1, 2, 2, 3, 3], "iid": ["a", "b", "a", "c", "b", "c"], "stars": [4.0, 2.0, 5.0, 3.0, 1.0, 2.0],
        "country": ["fr", "fr", "de", "de", "fr", "fr"], "plan": ["free", "free", "pro", "pro", "free", "free"],
        "lang": ["fr", "fr", "de", "de", "en", "en"], "kind": ["x", "y", "x", "z", "y", "z"],
        "labels": [["p", "q"], ["q"], ["p", "q"], [], ["q"], []],
        "price": [9.5, 120.0, 9.5, -1.0, 120.0, -1.0],
        "at": pl.datetime_range(datetime(2024, 1, 1), datetime(2024, 1, 1, 5), "1h", eager=True),
    }).write_parquet(directory / "log.parquet")
    (directory / "dataset.toml").write_text("""
name = "pq_log"
label = { kind = "rating", min = 1, max = 5 }
interactions = { file = "log.parquet", user_id = "uid", item_id = "iid", label = "stars" }
groups = { features = ["country", "plan", "lang"] }
[users.features]
country = { type = "categorical" }
plan = { type = "categorical" }
lang = { type = "categorical" }
[items.features]
kind = { type = "categorical" }
labels = { type = "multi", delimiter = "," }
price = { type = "numeric", min = 0, max = 100, bins = [10, 50] }
""")
    dataset = load_spec(directory)
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert bundle.frame("users").select("user_id", "country", "plan").rows() == [("1", "fr", "free"), ("2", "de", "pro"),
                                                                                ("3", "fr", "free")]
    assert bundle.frame("items").filter(pl.col("item_id") == "a")["labels"].to_list() == [["p", "q"]]
    # An item's numeric value out of bounds is missing, not a rejection: items are kept.
    assert bundle.frame("items").select("item_id", "price").rows() == [("a", "[0, 10)"), ("b", None), ("c", None)]
    assert bundle.frame("interactions").height == 6 and bundle.frame("interactions")["ts"].null_count() == 6
    assert bundle.frame("rejected").height == 0
    # A Parquet datetime column is a time as it is (2024-01-01 00:00 UTC = 1704067200, then hourly).
    spec_path = directory / "dataset.toml"
    spec_path.write_text(spec_path.read_text().replace('label = "stars" }', 'label = "stars", timestamp = "at" }'))
    dataset = load_spec(directory)
    times = clean_logs_from_raw(read_custom(dataset), dataset.spec).frame("interactions").sort("ts")["ts"]
    assert times.to_list() == [1704067200 + 3600 * h for h in range(6)]




@pytest.mark.parametrize(("old", "new", "message"), [
    ('name = "ml100k"', 'nmae = "ml100k"', "nmae: unknown key"),
    ('name = "ml100k"', 'name = "movielens"', "name: 'movielens' is a built-in dataset"),
    ('name = "ml100k"', 'name = "My Data"', "name: a dataset name is lower-case"),
    ('kind = "rating"', 'kind = "stars"', "label.kind: expected one of rating, click (found 'stars')"),
    ("max = 5\n", "max = 1\n", "label.max: must be greater than min (1) (found 1)"),
    ('file = "u.data"', 'file = "u.dat"', "interactions.file: no such file in"),
    ('file = "u.data"', 'file = "u.data"\nformat = "xlsx"', "interactions.format: expected one of csv, tsv, parquet"),
    ('user_id = "user"', 'user_id = "usr"', "interactions.user_id: unknown column; ml100k/u.data has user, movie, rating, time (found 'usr')"),
    ('label = "rating"', "label = 3", "interactions.label: expected text (found 3)"),
    ('separator = "|"\nheader = false\nquote = ""\ncolumns = ["user"', 'separator = "|"\nheader = "no"\nquote = ""\ncolumns = ["user"',
     "users.header: expected true or false (found 'no')"),
    ('encoding = "latin-1"', 'encoding = "latin-9000"', "items.encoding: unknown encoding"),
    ('encoding = "latin-1"', 'encoding = "utf-16"', "items.encoding: expected a text encoding that writes ASCII as ASCII"),
    ('encoding = "latin-1"', 'encoding = "rot13"', "items.encoding: expected a text encoding that writes ASCII as ASCII"),
    # idna reads ASCII as itself but refuses errors="replace", with which line 1 is read (UnicodeError).
    ('encoding = "latin-1"', 'encoding = "idna"', "items.encoding: expected a text encoding that writes ASCII as ASCII"),
    ('encoding = "latin-1"', 'encoding = "unicode_escape"', "items.encoding: expected a text encoding that writes ASCII"),
    ('timestamp_min = "1997-09-01"', 'timestamp_min = "Sept 1997"', "interactions.timestamp_min: expected a date"),
    ('timestamp_max = "1998-05-01"', "timestamp_max = 1000000000000000000000",
     "interactions.timestamp_max: Unix seconds out of the range of dates (years 1-9999) (found 1000000000000000000000)"),
    ('timestamp_min = "1997-09-01"', "timestamp_min = -100000000000000", "interactions.timestamp_min: Unix seconds out of"),
    ("max = 5\n", "max = inf\n", "label.max: expected a finite number (found inf)"),
    ("min = 7, max = 73", "min = nan, max = 73", "users.features.age.min: expected a finite number (found nan)"),
    ('gender = { type = "categorical", values = ["F", "M"] }', 'gender = { type = "multi", delimiter = "," }',
     "users.features.gender.type: expected one of categorical, numeric (a user has one value per feature)"),
    ('gender = { type = "categorical", values = ["F", "M"] }', 'gender = { type = "text" }',
     "users.features.gender.type: expected one of categorical, numeric (found 'text')"),
    ('gender = { type = "categorical", values = ["F", "M"] }', 'gender = { type = "categorical", column = "sex" }',
     "users.features.gender.column: unknown column; ml100k/u.user has user, age, gender, occupation, zip (found 'sex')"),
    ('gender = { type = "categorical", values = ["F", "M"] }', 'gender = { type = "categorical", delimiter = "," }',
     "users.features.gender.delimiter: does not apply to a categorical feature"),
    ("min = 7, max = 73, bins", "max = 73, bins", "users.features.age.min: required key missing"),
    ("bins = [18, 25, 35, 45, 50, 56]", "bins = [18, 80]", "users.features.age.bins: expected increasing bucket edges"),
    ('values = ["F", "M"]', "values = [1, 2]", "users.features.gender.values: expected a list of text values"),
    ("backoff = [3, 1]", "backoff = [1, 3]", "users.features.zip.backoff: expected prefix lengths, longest first"),
    ('genre = { type = "flags", columns = [', 'genre = { type = "flags", columns = ["Comedy", "Drama", "Cartoon", ',
     "items.features.genre.columns: unknown column"),
    ('release = { type = "categorical", column = "released" }', 'label = { type = "categorical", column = "released" }',
     "items.features.label: 'label' is a name the cleaned tables use themselves"),
    ('display = ["title", "released"]', 'display = ["name"]', "items.display: unknown column"),
    ('features = ["age", "gender", "occupation", "zip"]', 'features = ["age", "gender", "income"]',
     "groups.features: not a user feature; the users have age, gender, occupation, zip (found 'income')"),
    ('features = ["age", "gender", "occupation", "zip"]', 'features = ["age", "gender"]',
     "groups.features: a user is major with at least 3 features"),
    ('features = ["age", "gender", "occupation", "zip"]', 'features = ["age", "age", "age"]',
     "groups.features: a feature is listed more than once (found ['age'])"),
    ('features = ["age", "gender", "occupation", "zip"]', 'features = [["age"], "gender", "zip"]',
     "groups.features: not a user feature; the users have age, gender, occupation, zip (found ['age'])"),
    ("[groups]", "[groups", "not valid TOML"),
    ('release = { type = "categorical", column = "released" }',
     'release = { type = "categorical", column = "released", keep_missing = true }',
     "items.features.release.keep_missing: applies to user features (an item keeps a missing feature as missing already)"),
    ('values = ["F", "M"] }', 'values = ["F", "M"], keep_missing = "yes" }',
     "users.features.gender.keep_missing: expected true or false (found 'yes')"),
    # Values the file system refuses, once a ValueError (embedded null byte) or OSError (File name too long).
    ('file = "u.data"', 'file = "u\\u0000.data"', "interactions.file: a file name cannot hold a NUL character (found 'u\\x00.data')"),
    ('file = "u.user"', f'file = "{"x" * 300}"', "users.file: a file or directory name over 255 bytes"),
    ('encoding = "latin-1"', 'encoding = "latin\\u0000-1"', "items.encoding: unknown encoding (e.g. utf-8, latin-1, cp1252) "
     "(found 'latin\\x00-1')"),
    # (5 - 1) / 1e-310 is inf as a float, and round(inf) raised OverflowError.
    ("max = 5\n", "max = 5\nstep = 1e-310\n", "label.step: expected a positive step that divides max - min (4) (found 1e-310)"),
])
def test_every_spec_mistake_names_file_key_and_value(tmp_path, old, new, message):
    directory = ml100k_dir(tmp_path, n_users=4, n_items=3)
    spec_path = directory / "dataset.toml"
    assert_named_mistake(spec_path, spec_path.read_text(), old, new, message)


def assert_named_mistake(spec_path: Path, text: str, old: str, new: str, message: str) -> None:
    """Write `text` with `old` replaced by `new` as the spec; loading it is a SpecError naming the file and `message`."""
    assert old in text, old
    spec_path.write_text(text.replace(old, new, 1))
    with pytest.raises(SpecError) as raised:
        load_spec(spec_path.parent)
    assert str(raised.value).startswith(f"{spec_path}: ")
    assert message in str(raised.value)


def test_yaml_mistakes_and_missing_spec(tmp_path):
    directory = clicks_dir(tmp_path, n_users=3, n_items=3)
    spec_path = directory / "dataset.yaml"
    spec_path.write_text(CLICKS_SPEC.replace("label: {kind: click}", "label: {kind: click, max: 1}"))
    with pytest.raises(SpecError, match=r"label.max: a click label is 0 or 1"):
        load_spec(directory)
    spec_path.write_text(CLICKS_SPEC.replace("tags: {type: multi, delimiter: \";\"}", "tags: {type: multi, delimiter: \",\"}"))
    with pytest.raises(SpecError, match=r"items.features.tags.delimiter: must differ from the file's separator"):
        load_spec(directory)
    spec_path.write_text(CLICKS_SPEC.replace("  file: clicks.csv\n", "  file: clicks.csv\n  header: false\n"))
    with pytest.raises(SpecError, match=r"interactions.columns: required key missing"):
        load_spec(directory)
    spec_path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(directory)
    spec_path.unlink()
    with pytest.raises(SpecError, match="holds no dataset spec; write one of dataset.toml"):
        load_spec(directory)


@pytest.mark.parametrize(("old", "new", "message"), [
    # YAML 1.1 reads an unquoted on/off/yes/no as true/false: a feature so named reached re.fullmatch (TypeError).
    ("    device: {type: categorical}", "    on: {type: categorical, column: device}",
     "users.features.True: a feature name is text; quote it (YAML reads yes, no, on, off"),
    ("    category: {type: categorical}", "    2024: {type: categorical, column: category}", "items.features.2024: a feature name is text"),
    # YAML writes whole numbers of any size; float() of a bound past 1.8e308 raised OverflowError.
    ("age: {type: numeric, min: 16, max: 90,", f"age: {{type: numeric, min: 16, max: 1{'0' * 400},",
     "users.features.age.max: expected a finite number (this one is too large for a floating-point number)"),
    # A lone surrogate ("\\ud800") cannot be encoded as a file name (UnicodeEncodeError out of os.stat).
    ("  file: customers.csv", '  file: "\\ud800.csv"', "users.file: not a file name the file system can hold"),
    # A shown name that is no text was accepted, a display field named 1 or True for the later steps.
    ("display: [category]", "display: {yes: category}", "items.display: a shown name is text (quote it in YAML"),
    ("display: [category]", "display: {1: category}", "items.display: a shown name is text"),
])
def test_yaml_values_python_cannot_use_are_named_not_raised(tmp_path, old, new, message):
    assert_named_mistake(clicks_dir(tmp_path, n_users=3, n_items=3) / "dataset.yaml", CLICKS_SPEC, old, new, message)


def test_a_spec_too_deep_too_large_or_expanding_without_end_is_a_named_error_not_a_hang(tmp_path):
    directory = clicks_dir(tmp_path, n_users=3, n_items=3)
    spec_path = directory / "dataset.yaml"
    # Both parsers recurse per level of nesting: 5,000 levels raised RecursionError.
    spec_path.write_text(f"name: {'[' * 5000}{']' * 5000}\n")
    with pytest.raises(SpecError, match="nested too deeply to parse"):
        load_spec(directory)
    spec_path.unlink()
    (directory / "dataset.toml").write_text(f"name = {'[' * 5000}{']' * 5000}\n")
    with pytest.raises(SpecError, match="nested too deeply to parse"):
        load_spec(directory)
    (directory / "dataset.toml").unlink()
    # PyYAML parsed 20 MB of comments for over 20 seconds.
    spec_path.write_text(CLICKS_SPEC + ("# " + "x" * 1000 + "\n") * 1100)
    with pytest.raises(SpecError, match="over 1 MiB, too large for a dataset spec"):
        load_spec(directory)
    # Nine anchors, each a list of nine references to the one before: the message's repr of 9**9 items never ended.
    levels = ["&l0 [a, a, a, a, a, a, a, a, a]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    spec_path.write_text(CLICKS_SPEC.replace("name: shop_clicks", f"name: [{', '.join(levels)}]"))
    with pytest.raises(SpecError, match=r"name: expected text \(found \[\['a', ") as raised:
        load_spec(directory)
    assert len(str(raised.value)) < 20_000


def test_an_unquoted_file_with_a_separator_of_several_characters_has_its_header_read(tmp_path):
    # The header was split by the csv module, which takes a one-character delimiter only (TypeError for '::').
    (tmp_path / "ratings.dat").write_text("user::movie::stars\n1::10::4\n2::10::3\n", encoding="utf-8")
    (tmp_path / "dataset.toml").write_text("""\
name = "colons"
label = { kind = "rating", min = 1, max = 5 }
[interactions]
file = "ratings.dat"
separator = "::"
quote = ""
user_id = "user"
item_id = "movie"
label = "stars"
[users.features]
user = { type = "categorical", column = "user" }
[items.features]
movie = { type = "categorical", column = "movie" }
""")
    assert load_spec(tmp_path).interactions.columns == ("user", "movie", "stars")
    spec_path = tmp_path / "dataset.toml"
    spec_path.write_text(spec_path.read_text().replace('user_id = "user"', 'user_id = "User"'))
    with pytest.raises(SpecError, match="interactions.user_id: unknown column; colons/ratings.dat has user, movie, stars"):
        load_spec(tmp_path)


def test_an_optional_details_file_named_as_the_root_directory_is_named_not_raised(tmp_path):
    # Looking for a compressed copy of '/' ('/.gz') raised ValueError: PosixPath('/') has an empty name.
    directory = ml100k_dir(tmp_path, n_users=4, n_items=3)
    spec_path = directory / "dataset.toml"
    spec_path.write_text(spec_path.read_text() + """
[items.details]
file = "/"
optional = true
columns = ["movie", "plot"]
id = "movie"
features = { plot = { type = "categorical" } }
""")
    with pytest.raises(SpecError, match=r"items.details.file: a directory, not a file, in .* \(found '/'\)"):
        load_spec(directory)


def test_cli_dataset_add_list_remove(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    ml = ml100k_dir(tmp_path, n_users=4, n_items=3)
    assert cli.main(["dataset", "add", str(ml)]) == 0
    assert "registered dataset 'ml100k'" in capsys.readouterr().out
    assert (tmp_path / "home" / "datasets" / "ml100k.toml").is_file()
    assert cli.main(["dataset", "add", str(ml / "dataset.toml")]) == 0
    assert "updated dataset 'ml100k'" in capsys.readouterr().out
    assert cli.main(["dataset", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[-1] == f"ml100k\t{ml / 'dataset.toml'}\trating" and listed[1] == "movielens\tbuilt-in\trating"
    (ml / "u.item").unlink()  # a registered dataset whose files went away is listed as broken, not hidden
    assert cli.main(["dataset", "list"]) == 0
    assert "ml100k\t" in (out := capsys.readouterr().out) and "broken: " in out and "items.file: no such file" in out
    with pytest.raises(SystemExit, match=r"^error: .*items.file: no such file in .* \(found 'u.item'\)$"):
        cli.main(["dataset", "add", str(ml)])
    assert cli.main(["dataset", "remove", "ml100k"]) == 0
    assert not (tmp_path / "home" / "datasets" / "ml100k.toml").exists()
    with pytest.raises(SystemExit, match="no dataset 'ml100k' is registered"):
        cli.main(["dataset", "remove", "ml100k"])


def test_dataset_add_names_a_text_file_not_in_its_declared_encoding_from_its_first_bytes(tmp_path, monkeypatch):
    # A latin-1 file declared UTF-8 was registered and only named at the first pipeline step.
    from assets.custom_reader import read_table

    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    ml = ml100k_dir(tmp_path, n_users=4, n_items=3)  # u.item is latin-1: 'Café Film 1 (1991)'
    spec = ml / "dataset.toml"
    spec.write_text(spec.read_text().replace('encoding = "latin-1"', 'encoding = "utf-8"'))
    with pytest.raises(SystemExit) as raised:
        cli.main(["dataset", "add", str(ml)])
    message = str(raised.value)
    with pytest.raises(RawFileError) as read:  # what the read says, bar the prefix it was found in
        read_table(load_spec(ml).items)
    assert message == (f"error: {spec}: items.file: {read.value} (`dataset add` checks the first 1 MiB of each text file; "
                       "the read checks all of it)")
    assert "at line 1, byte 6 (0xE9 0x20 0x46 0x69)" in message and "Read as ISO-8859-1 it says '1|Café Film 1 (199'" in message
    assert 'set encoding = "latin-1"' in message
    assert not (tmp_path / "home" / "datasets" / "ml100k.toml").exists()
    # Only the prefix is checked: a bad byte past it, or a character the prefix ends inside, is the read's to find.
    items = (ml / "u.item").read_bytes().replace("é".encode("latin-1"), b"e")
    first = items.index(b"\n") + 1
    monkeypatch.setattr("assets.raw_text.PREFIX_BYTES", first + 1)
    (ml / "u.item").write_bytes(items[:first] + "é".encode() + items[first:] + b"9|Caf\xe9|x\n")
    assert cli.main(["dataset", "add", str(ml)]) == 0
    (ml / "u.item").write_bytes(items[:first] + b"\xe9" + items[first:])
    monkeypatch.setattr("assets.raw_text.PREFIX_BYTES", first + 2)  # the byte after 0xE9 in the prefix: not UTF-8
    with pytest.raises(SystemExit, match=rf"not valid UTF-8 at line 2, byte 1 \(0xE9 0x32 .* checks the first {first + 2} bytes "):
        cli.main(["dataset", "add", str(ml)])


def test_a_duplicate_rating_of_an_added_dataset_names_the_kept_and_the_dropped_rating(tmp_path):
    # Such a row was rejected naming only its key (user 1, item 4), not which rating was dropped.
    directory = ml100k_dir(tmp_path, n_users=12, n_items=6)
    lines = (directory / "u.data").read_text().splitlines()
    user, item, rating, time = lines[0].split("\t")
    other = str(1 + int(rating) % 5)
    lines += [f"{user}\t{item}\t{other}\t{time}", f"{user}\t{item}\t{rating}\t{time}", f"{user}\t{item}\t{other}.0\t{time}"]
    (directory / "u.data").write_text("\n".join(lines) + "\n")
    dataset, bundle = ml100k_clean(directory)
    duplicates = bundle.frame("rejected").filter(pl.col("reason").str.starts_with("duplicate"))
    n = len(lines)
    assert duplicates.select("line", "record_id", "reason", "value").rows() == [
        (n - 2, f"{user}|{item}", "duplicate user_id/item_id with another rating than its first row",
         f"rating {other} (line 1: rating {rating}, kept)"),
        (n - 1, f"{user}|{item}", "duplicate user_id/item_id", f"{user}|{item}"),  # the same rating again
        (n, f"{user}|{item}", "duplicate user_id/item_id with another rating than its first row",
         f"rating {other} (line 1: rating {rating}, kept)")]  # '4.0' is the rating 4
    kept = bundle.frame("interactions").filter((pl.col("user_id") == user) & (pl.col("item_id") == item))
    assert kept.select("line", "label").rows() == [(1, float(rating))]


def test_expectation_suite_derives_from_the_spec(tmp_path):
    dataset, bundle = ml100k_clean(ml100k_dir(tmp_path, n_users=12, n_items=6))
    suite = users_suite(dataset.spec)
    assert ("ExpectColumnValuesToBeInSet", {"column": "age", "value_set": list(dataset.spec.numeric[0].labels())}) in suite
    assert ("ExpectColumnValuesToBeInSet", {"column": "gender", "value_set": ["F", "M"]}) in suite
    users, interactions = bundle.frame("users"), bundle.frame("interactions")
    assert all(o.success for o in validate_clean_logs(users, interactions, dataset.spec))
    # Frames that bypassed cleaning fail the spec's own expectations.
    bad_users = users.with_columns(pl.when(pl.col("user_id") == "1").then(pl.lit("[99, 100)")).otherwise("age").alias("age"))
    bad_rows = interactions.with_columns(pl.lit(0.0).alias("label"))
    failed = {(o.suite, o.column) for o in validate_clean_logs(bad_users, bad_rows, dataset.spec) if not o.success}
    assert failed == {("clean_users", "age"), ("clean_interactions", "label")}


def test_times_in_other_formats_become_unix_seconds(tmp_path):
    directory = tmp_path / "times"
    directory.mkdir()
    (directory / "log.tsv").write_text("u\ti\tr\twhen\tcity\tplan\tlang\tkind\n"
                                       "1\ta\t4\t02/01/2024 10:00\tx\tp\tl\tk\n"
                                       "1\tb\t3\t2024-01-02\tx\tp\tl\tk\n"
                                       "1\tc\t5\t31/12/1999 23:59\tx\tp\tl\tk\n"
                                       "1\td\t2\t03/01/2024 00:00\tx\tp\tl\tk\n"
                                       "1\te\t2\t1704189600\tx\tp\tl\tk\n")
    (directory / "dataset.toml").write_text("""
name = "times"
label = { kind = "rating", min = 1, max = 5 }
groups = { features = ["city", "plan", "lang"] }
[interactions]
file = "log.tsv"
format = "tsv"
user_id = "u"
item_id = "i"
label = "r"
timestamp = "when"
timestamp_format = "%d/%m/%Y %H:%M"
timestamp_min = "2020-01-01"
[users.features]
city = { type = "categorical" }
plan = { type = "categorical" }
lang = { type = "categorical" }
[items.features]
kind = { type = "categorical" }
""")
    dataset = load_spec(directory)
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    # 2024-01-02 10:00 UTC = 1704067200 (2024-01-01) + 86400 + 36000.
    assert bundle.frame("interactions").select("item_id", "ts").rows() == [("a", 1704189600), ("d", 1704240000)]
    assert rejected_at(bundle, "times/log.tsv", 3)["reason"] == "timestamp not a time in the format %d/%m/%Y %H:%M"
    assert rejected_at(bundle, "times/log.tsv", 3)["value"] == "2024-01-02"
    assert rejected_at(bundle, "times/log.tsv", 4)["reason"].startswith("timestamp outside 2020-01-01..")
    # Unix seconds are not a time in this format: kept out, not read as seconds.
    assert rejected_at(bundle, "times/log.tsv", 6)["reason"] == "timestamp not a time in the format %d/%m/%Y %H:%M"
    assert rejected_at(bundle, "times/log.tsv", 6)["value"] == "1704189600 (not %d/%m/%Y %H:%M)"
    spec_path = directory / "dataset.toml"
    spec_path.write_text(spec_path.read_text().replace('"%d/%m/%Y %H:%M"', '"dd/mm/yyyy"'))
    with pytest.raises(SpecError, match=r"interactions.timestamp_format: expected one of unix, unix_ms, iso, excel or a strftime"):
        load_spec(directory)
    spec_path.write_text(spec_path.read_text().replace('"dd/mm/yyyy"', '"%d/%m/%Q"'))
    with pytest.raises(SpecError, match=r"interactions.timestamp_format: not a pattern polars can write times with .*'%d/%m/%Q'"):
        load_spec(directory)
    spec_path.write_text(spec_path.read_text().replace('"%d/%m/%Q"', '"%m/%Y"'))
    with pytest.raises(SpecError, match=r"timestamp_format: a time written with it \('02/2001'\) does not read back"):
        load_spec(directory)


def test_raw_file_sensor_watches_a_registered_dataset(tmp_path, monkeypatch):
    from pipelines.automation import raw_fingerprints
    from pipelines.resources import PamlResource

    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    paml = PamlResource(home=str(tmp_path / "home"), data_dir=str(tmp_path / "no-data"))
    ml = ml100k_dir(tmp_path, n_users=4, n_items=3)
    assert "ml100k" not in raw_fingerprints(paml)
    assert cli.main(["dataset", "add", str(ml)]) == 0
    before = raw_fingerprints(paml)["ml100k"]
    with (ml / "u.data").open("a") as ratings:
        ratings.write("1\t1\t5\t880000000\n")
    assert raw_fingerprints(paml)["ml100k"] != before
    (ml / "u.item").unlink()  # a broken spec is left out, not a sensor crash
    assert "ml100k" not in raw_fingerprints(paml)


ML1M_SPEC = """
name = "ml1m_spec"
label = { kind = "rating", min = 1, max = 5 }
groups = { features = ["age", "gender", "zip", "occupation"] }
[interactions]
file = "ml-1m/ratings.dat"
separator = "::"
quote = ""
encoding = "latin-1"
header = false
columns = ["user", "movie", "rating", "ts"]
user_id = "user"
item_id = "movie"
label = "rating"
timestamp = "ts"
timestamp_min = "2000-01-01"
timestamp_max = "2004-01-01"
[users]
file = "ml-1m/users.dat"
separator = "::"
quote = ""
encoding = "latin-1"
header = false
columns = ["user", "gender", "age", "occupation", "zip"]
id = "user"
id_digits = true
[users.features]
gender = { type = "categorical", values = ["F", "M"] }
age = { type = "categorical", values = ["1", "18", "25", "35", "45", "50", "56"] }
occupation = { type = "categorical", values = [OCCUPATIONS] }
zip = { type = "categorical", backoff = [3, 1] }
[items]
file = "ml-1m/movies.dat"
separator = "::"
quote = ""
encoding = "latin-1"
header = false
columns = ["movie", "title", "genres"]
id = "movie"
[items.features]
genre = { type = "multi", column = "genres", delimiter = "|" }
"""


def test_a_spec_of_ml1m_cleans_as_the_builtin_reader_does(tmp_path):
    """One cleaning path: ML-1M's files described by a spec keep exactly the users and ratings the
    built-in reader keeps (on the real files too: 6,040 users, 1,000,209 ratings, checked by hand)."""
    from assets.raw_files import read_movielens
    from assets.specs import SPECS
    from tests.fixtures import good_ml_users, ml_ratings_for, movielens_dir

    users = good_ml_users(6) + ["7::F::19::3::10001", "8::X::25::3::10002", "9::M::25::21::10003"]
    ratings = ml_ratings_for(range(1, 10)) + ["1::2::5::978300000", "2::1::9::978300000", "3::1::4::97"]
    root = movielens_dir(tmp_path, users, ratings, extra=None)
    occupations = ", ".join(f'"{n}"' for n in range(21))
    (root / "dataset.toml").write_text(ML1M_SPEC.replace("OCCUPATIONS", occupations))
    dataset = load_spec(root)
    ours = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    builtin = clean_logs_from_raw(read_movielens(root), SPECS["movielens"])
    columns = ["user_id", "item_id", "label", "ts"]
    assert ours.frame("interactions").select(columns).equals(builtin.frame("interactions").select(columns))
    assert ours.frame("users")["user_id"].to_list() == builtin.frame("users")["user_id"].to_list() == [str(u) for u in range(1, 7)]
    lines = lambda bundle: sorted((Path(f).name, n) for f, n in bundle.frame("rejected").select("source_file", "line").rows())  # noqa: E731
    assert lines(ours) == lines(builtin) and len(lines(ours)) > 5


def test_half_star_ratings_with_a_label_step(tmp_path):
    directory = tmp_path / "halves"
    directory.mkdir()
    (directory / "log.csv").write_text("u,i,r,city,plan,lang,kind\n1,a,4.5,x,p,l,k\n1,b,0.5,x,p,l,k\n1,c,4.25,x,p,l,k\n")
    spec = """
name = "halves"
label = { kind = "rating", min = 0.5, max = 5, step = 0.5 }
interactions = { file = "log.csv", user_id = "u", item_id = "i", label = "r" }
groups = { features = ["city", "plan", "lang"] }
users.features = { city = { type = "categorical" }, plan = { type = "categorical" }, lang = { type = "categorical" } }
items.features = { kind = { type = "categorical" } }
"""
    (directory / "dataset.toml").write_text(spec)
    dataset = load_spec(directory)
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert bundle.frame("interactions")["label"].to_list() == [4.5, 0.5]
    assert rejected_at(bundle, "halves/log.csv", 4)["reason"] == "label outside {0.5..5 in steps of 0.5}"
    (directory / "dataset.toml").write_text(spec.replace("step = 0.5", "step = 0.7"))
    with pytest.raises(SpecError, match=r"label.step: expected a positive step that divides max - min \(4.5\) \(found 0.7\)"):
        load_spec(directory)


def test_a_numeric_profile_value_is_put_in_its_bucket():
    from assets.cold_start import profile_in_buckets
    from assets.specs import DatasetSpec, NumericField

    age = NumericField("age", 7, 73, (18, 25))
    assert age.labels() == ("[7, 18)", "[18, 25)", "[25, 73]")
    assert [age.bucket(v) for v in (7, 17.9, 18, 25, 73, 74)] == ["[7, 18)", "[7, 18)", "[18, 25)", "[25, 73]", "[25, 73]", None]
    spec = DatasetSpec("x", "rating", ("age", "zip"), (), (), ("age", "zip"), 1, 5, numeric=(age,), spec_file="x.toml")
    assert profile_in_buckets({"age": "20", "zip": "123"}, spec) == {"age": "[18, 25)", "zip": "123"}
    assert profile_in_buckets({"age": "[18, 25)"}, spec) == {"age": "[18, 25)"}
    assert profile_in_buckets({"age": "99"}, spec) == {"age": "99"}  # unseen: the unknown embedding, reported


def test_adding_a_name_again_from_elsewhere_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    first, second = ml100k_dir(tmp_path / "a", n_users=4, n_items=3), ml100k_dir(tmp_path / "b", n_users=4, n_items=3)
    assert cli.main(["dataset", "add", str(first)]) == 0 and cli.main(["dataset", "add", str(second)]) == 0
    assert f"re-pointed (was {first / 'dataset.toml'}) dataset 'ml100k' from {second / 'dataset.toml'}" in capsys.readouterr().out


def test_cr_line_ends_and_a_blank_first_line(tmp_path):
    customers = ["customer,age,region,segment,device", "c1,30,South,vip,ios", "c2,40,West,new,ios"]
    clicks = ["customer,product,category,tags,clicked,ts", "c1,p1,cat1,a,1,1700000000", "c1,p2,cat2,b,1,1700000100",
              "c2,p1,cat1,a,1,1700000000", "c2,p2,cat2,b,1,1700000000", "c2,p3,oops"]
    directory = clicks_dir(tmp_path, customers=customers, clicks=clicks)
    log = directory / "clicks.csv"
    log.write_bytes(log.read_bytes().replace(b"\n", b"\r"))  # old Mac line ends
    dataset = load_spec(directory)
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert bundle.frame("interactions").height == 4
    assert rejected_at(bundle, "shop_clicks/clicks.csv", 6)["value"] == "c2,p3,oops"  # the line itself, not ''
    log.write_bytes(b"\n" + log.read_bytes().replace(b"\r", b"\n"))
    with pytest.raises(SpecError, match=r"dataset.yaml: interactions.file: line 1 names no columns"):
        load_spec(directory)


PQ_SPEC = """
name = "pq_bad"
label = { kind = "rating", min = 1, max = 5 }
interactions = { file = "log.parquet", user_id = "uid", item_id = "iid", label = "stars", timestamp = "at" }
groups = { features = ["country", "plan", "lang"] }
[users.features]
country = { type = "categorical" }
plan = { type = "categorical" }
lang = { type = "categorical" }
[items.features]
kind = { type = "categorical" }
"""


def test_whole_floats_in_parquet_read_as_integers(tmp_path):
    # pandas writes an integer column with a missing value as float64: ids 1.0, times 1704067200.0.
    nan, t = float("nan"), 1704067200.0
    pl.DataFrame({"uid": [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, nan], "iid": ["a", "b", "c", "a", "b", "c", "a"],
                  "stars": [4.0, 2.0, 5.0, 3.0, 1.0, 2.0, 4.0], "country": ["fr"] * 3 + ["de"] * 3 + ["fr"],
                  "plan": [1.0] * 3 + [2.0] * 3 + [1.0], "lang": ["l"] * 7, "kind": ["x", "y", "z"] * 2 + ["x"],
                  "at": [t, t + 60, t + 0.5, t, nan, t + 60, t]}).write_parquet(tmp_path / "log.parquet")
    (tmp_path / "dataset.toml").write_text(PQ_SPEC)
    dataset = load_spec(tmp_path)
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert bundle.frame("users").select("user_id", "plan").rows() == [("1", "1"), ("2", "2")]  # not '1.0'
    kept = bundle.frame("interactions").sort("line")
    assert kept.select("line", "ts").rows() == [(1, 1704067200), (2, 1704067260), (4, 1704067200), (6, 1704067260)]
    rejected = {line: (reason, value) for line, reason, value in
                bundle.frame("rejected").filter(pl.col("source_file") == "pq_bad/log.parquet").select("line", "reason", "value").iter_rows()}
    assert rejected[3] == ("timestamp not an integer", "1704067200.5")  # a fraction of a second stays a float
    assert rejected[5] == ("timestamp missing", None) and rejected[7] == ("user_id missing", None)  # NaN is missing
    from assets.domains import is_missing
    assert pl.DataFrame({"x": ["nan", " NaN ", "7", "nano"]}).select(is_missing("x"))["x"].to_list() == [True, True, False, False]


@pytest.mark.parametrize(("column", "values", "error", "message"), [
    ("stars", [[4.0], [2.0]], RawFileError, "pq_bad/log.parquet: column 'stars' holds lists; expected one value per row "
                                            "(only a multi feature may be a list); row 1: ['4.0']"),
    ("country", [None, ["fr"]], RawFileError, "column 'country' holds lists; expected one value per row (only a multi "
                                              "feature may be a list); row 2: ['fr']"),
    ("at", [timedelta(seconds=1704067200)] * 2, RawFileError, "column 'at' is a duration"),
    # read as the text '{1}' it was kept as a user id; a JSON line holding an object there is rejected
    ("uid", [{"id": 1}, {"id": 2}], RawFileError, "column 'uid' holds records (Struct({'id': Int64})); expected text, "
                                                 "numbers, dates or lists; row 1: {'id': 1}"),
    ("uid", [], EmptyRawFileError, "no data rows (the Parquet file holds none)"),
])
def test_parquet_columns_of_the_wrong_type_name_file_column_and_row(tmp_path, column, values, error, message):
    columns = {"uid": [1, 2], "iid": ["a", "b"], "stars": [4.0, 2.0], "country": ["fr", "de"], "plan": ["p", "q"],
               "lang": ["l", "m"], "kind": ["x", "y"], "at": [1704067200, 1704067300]}
    frame = pl.DataFrame({**columns, column: values}) if values else pl.DataFrame(columns).clear()
    frame.write_parquet(tmp_path / "log.parquet")
    (tmp_path / "dataset.toml").write_text(PQ_SPEC)
    with pytest.raises(error) as raised:
        read_custom(load_spec(tmp_path))
    assert message in str(raised.value)


def test_a_parquet_schema_naming_a_column_twice_stops_the_spec_as_a_csv_header_does(tmp_path):
    names = ["uid", "iid", "stars", "country", "plan", "lang", "kind", "at", "stars"]
    values = [[1, 2], ["a", "b"], [4, 2], ["fr", "de"], ["p", "q"], ["l", "m"], ["x", "y"], [1704067200] * 2, [5, 1]]
    pq.write_table(pa.Table.from_arrays([pa.array(v) for v in values], names=names), tmp_path / "log.parquet")
    (tmp_path / "dataset.toml").write_text(PQ_SPEC)
    # pyarrow's read stopped with its own words ('Multiple matches for FieldRef.Name(stars)')
    with pytest.raises(SpecError, match=r"interactions.file: the Parquet schema names column 'stars' more than once "
                                        r"\(columns 3, 9\): rename all but one"):
        load_spec(tmp_path)


def test_a_parquet_file_with_corrupted_pages_is_a_named_error(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame({"uid": list(range(1000)), "iid": ["a"] * 1000, "stars": [4.0] * 1000, "country": ["fr"] * 1000,
                  "plan": ["p"] * 1000, "lang": ["l"] * 1000, "kind": ["x"] * 1000, "at": [1704067200] * 1000}
                 ).write_parquet(path)
    data = bytearray(path.read_bytes())
    data[40:80] = bytes(40)  # the first column's pages; the footer (read when the spec is loaded) stays whole
    path.write_bytes(bytes(data))
    (tmp_path / "dataset.toml").write_text(PQ_SPEC)
    dataset = load_spec(tmp_path)
    with pytest.raises(RawFileError, match=r"^pq_bad/log.parquet \(.*log.parquet\): not a readable Parquet file: "):
        read_custom(dataset)


@pytest.mark.parametrize(("column", "values", "shown"), [
    ("stars", lambda n: pa.array([Decimal("4.0")] * n, pa.decimal256(40, 1)), "decimal256(40, 1)"),  # past polars' 38 digits
    ("country", lambda n: pa.array([[("fr", 1)]] * n, pa.map_(pa.string(), pa.int64())), "map<string, int64 ('country')>"),
    ("kind", lambda n: pa.array([[["x"]]] * n), "list<element: list<element: string>>"),
])
def test_a_parquet_column_of_a_type_no_text_stands_for_names_file_and_column(tmp_path, column, values, shown):
    # A 256-bit decimal, a map or a list of lists: polars panicked converting the first or stopped with a bare
    # "InvalidOperationError: cannot cast ... to String" naming no file on the others.
    table = pa.table({"uid": [1, 2], "iid": ["a", "b"], "stars": [4.0, 2.0], "country": ["fr", "de"], "plan": ["p", "q"],
                      "lang": ["l", "m"], "kind": ["x", "y"], "at": [1704067200, 1704067300]})
    pq.write_table(table.set_column(table.column_names.index(column), column, values(2)), tmp_path / "log.parquet")
    (tmp_path / "dataset.toml").write_text(PQ_SPEC)
    with pytest.raises(RawFileError) as raised:
        read_custom(load_spec(tmp_path))
    assert str(raised.value).startswith("pq_bad/log.parquet (")
    assert f"column {column!r} is of a type no text stands for ({shown}); expected text, numbers, dates or lists" in str(raised.value)


# Run in a child process: before the fix, polars' reader aborted the whole process on some of these files.
BROKEN_PAGE_HEADERS = """
import sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from assets.custom_reader import read_custom
from assets.dataset_spec import load_spec
from assets.raw_text import RawFileError
root = Path(sys.argv[1])
path = root / "log.parquet"
n = 100
table = pa.table({"uid": [u % 10 for u in range(n)], "iid": ["a", "b"] * (n // 2), "stars": [4.0] * n,
                  "country": ["fr"] * n, "plan": ["p"] * n, "lang": ["l"] * n, "kind": ["x"] * n,
                  "at": [1704067200] * n})
pq.write_table(table, path, compression="none", use_dictionary=False)
whole = path.read_bytes()
row_group = pq.read_metadata(path).row_group(0)
outcomes = set()
for column in range(row_group.num_columns):
    start = row_group.column(column).data_page_offset
    for offset in range(start, start + 24):  # the page header: its sizes and value counts
        for byte in (0x00, 0xFF):
            data = bytearray(whole)
            data[offset] = byte
            path.write_bytes(bytes(data))
            try:
                read_custom(load_spec(root))
                outcomes.add("read")
            except RawFileError as error:
                assert str(error).startswith("pq_bad/log.parquet ("), error
                outcomes.add("named")
print(sorted(outcomes))
"""


def test_a_parquet_file_with_a_broken_page_header_is_a_named_error_not_a_crash(tmp_path):
    # A byte of a data page's header changed (a bad disk, a cut upload): polars 2.1's reader aborted the process
    # ("memory allocation of 2305843009213693704 bytes failed") or raised a PanicException, which no `except
    # Exception` catches, instead of the RawFileError that names the file.
    (tmp_path / "dataset.toml").write_text(PQ_SPEC)
    done = subprocess.run([sys.executable, "-c", BROKEN_PAGE_HEADERS, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['named', 'read']"


def test_keep_missing_keeps_a_user_whose_profile_value_is_missing_as_unknown(tmp_path):
    # Public logs often miss demographics (Last.fm-1K's age, gender, country): without the option every such
    # user is rejected. With keep_missing a missing value is null (the model's UNKNOWN), never a top value,
    # and the values that are there are still checked.
    from assets.meta_tasks import UNKNOWN_INDEX, build_vocab, encode
    from assets.user_groups import feature_concentration, tag_users

    users = ["1|22|F|writer|55111", "2||M|writer|55122", "3|n/a||student|55133", "4|30|X|writer|55144",
             "5|80|M|writer|55155", "6|40|F||55166", "7|30|M|writer|"]
    ratings = [f"{u}\t{i}\t{1 + (u + i) % 5}\t{880000000 + i}" for u in range(1, 8) for i in (1, 2, 3)]
    directory = ml100k_dir(tmp_path, n_items=3, users=users, ratings=ratings)
    spec_file = directory / "dataset.toml"
    spec_file.write_text(spec_file.read_text().replace(
        'bins = [18, 25, 35, 45, 50, 56] }', 'bins = [18, 25, 35, 45, 50, 56], keep_missing = true }').replace(
        'values = ["F", "M"] }', 'values = ["F", "M"], keep_missing = true }').replace(
        'missing = [""] }', 'missing = [""], keep_missing = true }'))
    dataset, bundle = ml100k_clean(directory)
    assert dataset.spec.user_keep_missing == ("age", "gender", "occupation")
    kept = {r["user_id"]: (r["age"], r["gender"], r["occupation"]) for r in bundle.frame("users").iter_rows(named=True)}
    assert kept == {"1": ("[18, 25)", "F", "writer"), "2": (None, "M", "writer"), "3": (None, None, "student"),
                    "6": ("[35, 45)", "F", None)}
    # A value that is there is still checked; a feature without the option still rejects its missing value.
    assert rejected_at(bundle, "ml100k/u.user", 4)["reason"] == "gender not one of F, M"
    assert rejected_at(bundle, "ml100k/u.user", 5)["reason"] == "age outside [7, 73]"
    assert rejected_at(bundle, "ml100k/u.user", 7)["reason"] == "zip code missing"
    # The derived suite allows the nulls it kept, and only there.
    outcomes = validate_clean_logs(bundle.frame("users"), bundle.frame("interactions"), dataset.spec)
    assert [o for o in outcomes if not o.success] == []
    assert {kw["column"] for name, kw in users_suite(dataset.spec) if name == "ExpectColumnValuesToNotBeNull"} == {"user_id", "zip"}
    # Null is no value: not in the vocabulary (UNKNOWN when encoded), never a top value.
    frame = bundle.frame("users")
    vocab = build_vocab(frame["gender"], "gender")
    assert sorted(vocab["value"]) == ["F", "M"]
    codes = frame.select(encode(pl.col("gender"), vocab))["gender"].to_list()
    assert codes[list(frame["user_id"]).index("3")] == UNKNOWN_INDEX
    concentration = {r["feature"]: r for r in feature_concentration(frame, ("age", "gender")).iter_rows(named=True)}
    assert concentration["gender"]["n_values"] == 2 and concentration["gender"]["share_top"] == 2 / 4  # ceil(0.3 * 2) = 1: F (2 users)
    # Top values (ceil(30%) of the values there): age [18, 25) (null, held by two users, is none), gender F,
    # occupation writer.
    tagged = tag_users(frame, frame, ("age", "gender", "occupation")).select("user_id", "n_top_features", "group")
    assert sorted(tagged.iter_rows()) == [("1", 3, "major"), ("2", 1, "minor"), ("3", 0, "minor"), ("6", 1, "minor")]


def test_max_values_sets_a_multi_fields_cap_and_is_checked(tmp_path):
    from assets.specs import MULTI_VALUES_CAP

    directory = clicks_dir(tmp_path, n_users=3, n_items=3)
    spec_path = directory / "dataset.yaml"
    spec_path.write_text(CLICKS_SPEC.replace('tags: {type: multi, delimiter: ";"}', 'tags: {type: multi, delimiter: ";", max_values: 3}'))
    spec = load_spec(directory).spec
    assert spec.multi_caps == (("tags", 3),) and spec.list_cap("tags") == 3
    spec_path.write_text(CLICKS_SPEC)
    assert load_spec(directory).spec.list_cap("tags") == MULTI_VALUES_CAP
    for bad in ("0", "1025", "true", '"5"'):
        spec_path.write_text(CLICKS_SPEC.replace('tags: {type: multi, delimiter: ";"}', f'tags: {{type: multi, delimiter: ";", max_values: {bad}}}'))
        with pytest.raises(SpecError, match=r"items.features.tags.max_values: expected a whole number from 1 to 1024"):
            load_spec(directory)
    spec_path.write_text(CLICKS_SPEC.replace("category: {type: categorical}", "category: {type: categorical, max_values: 3}"))
    with pytest.raises(SpecError, match=r"items.features.category.max_values: does not apply to a categorical feature"):
        load_spec(directory)



CAPPED_CHAIN = """
import json, logging, os
from pathlib import Path
import dagster as dg
from pipelines.definitions import ASSETS, CHECKS, build_resources
from pipelines.jobs import data_job
home = Path(os.environ["PAML_HOME"])
instance = dg.DagsterInstance.ephemeral()
result = dg.materialize(ASSETS + CHECKS, selection=data_job.selection, partition_key="shop_clicks",
                        resources=build_resources(home, home / "no-real-data"), instance=instance)
assert result.success
event = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "meta_tasks"][0]
warnings = [r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.WARNING]
print(json.dumps({"truncated": event.materialization.metadata["truncated_lists"].value, "warnings": warnings}))
"""


def test_a_capped_list_is_counted_in_meta_tasks_metadata_and_warned_in_a_real_run(tmp_path, monkeypatch):
    import json
    import os
    import subprocess
    import sys

    from pipelines.store import LineageStore

    directory = clicks_dir(tmp_path)  # product p<i>'s tags: "t{i % 5};t{i % 3}"
    (directory / "dataset.yaml").write_text(
        CLICKS_SPEC.replace('tags: {type: multi, delimiter: ";"}', 'tags: {type: multi, delimiter: ";", max_values: 1}'))
    home = tmp_path / "home"
    monkeypatch.setenv("PAML_HOME", str(home))
    assert cli.main(["dataset", "add", str(directory)]) == 0
    env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "PAML_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CAPPED_CHAIN], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    store = LineageStore(home, read_only=True)
    assert seen["truncated"] == store.load(store.latest("meta_tasks", "shop_clicks")).info["truncated_lists"]
    # By hand: the catalogue's products that kept two distinct tags (i % 5 != i % 3) each lose one.
    products = store.load(store.latest("clean_logs", "shop_clicks")).frame("items")["item_id"].to_list()
    two = [p for p in products if int(p[1:]) % 5 != int(p[1:]) % 3]
    assert seen["truncated"]["tags"]["cap"] == 1 and seen["truncated"]["tags"]["longest"] == 2
    assert seen["truncated"]["tags"]["items_truncated"] == len(two) == seen["truncated"]["tags"]["values_dropped"]
    assert any("multi-valued item features cut to their cap" in w and "tags:" in w for w in seen["warnings"])


def test_the_same_dataset_added_twice_at_once_registers_it_without_an_error(tmp_path, monkeypatch):
    # Both writers staged the entry under one name (ml100k.toml.partial): one renamed the other's file into
    # place and the other's rename failed with FileNotFoundError (a traceback of `dataset add`).
    import threading

    from assets.dataset_spec import register, registered_names, registered_spec_path, registry_dir

    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    ml = ml100k_dir(tmp_path, n_users=4, n_items=3)
    errors: list[BaseException] = []

    def add_again() -> None:
        for _ in range(25):
            try:
                register(ml)
            except BaseException as error:  # noqa: BLE001 - every failure is the finding
                errors.append(error)

    adders = [threading.Thread(target=add_again) for _ in range(4)]
    for adder in adders:
        adder.start()
    for adder in adders:
        adder.join()
    assert errors == []
    assert registered_names() == ("ml100k",) and registered_spec_path("ml100k") == ml / "dataset.toml"
    assert sorted(p.name for p in registry_dir().iterdir()) == ["ml100k.toml"]  # no staged entry left
