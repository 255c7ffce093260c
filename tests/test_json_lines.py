"""JSON lines, as Yelp and Amazon ship their reviews (`format = "jsonl"`, inferred from .json/.jsonl/.ndjson,
compressed or not): top-level fields are columns, a list field is a multi feature, and a line that is not a
JSON object is a rejected row with its line number and reason. Fixtures are made up in code, in the
layout and with the field names of the original files."""

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec
from assets.json_lines import field_text, read_json_lines
from assets.raw_text import EmptyRawFileError, RawFileError
from pipelines import cli
from tests.fixtures import clicks_dir, yelp_spec


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_json_lines(path: Path, records: list, extra: dict[int, str] | None = None) -> Path:
    """One JSON object per line (gzipped for a .gz name); `extra` puts raw text lines at 0-based positions."""
    lines = [json.dumps(r) for r in records]
    for index, text in sorted((extra or {}).items()):
        lines.insert(index, text)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


YELP_SPEC = yelp_spec("yelp_academic_dataset_review.json.gz", "yelp_academic_dataset_user.json",
                      "yelp_academic_dataset_business.json")


def yelp_json_dir(root: Path, review_lines: dict[int, str] | None = None) -> Path:
    """Yelp's academic dataset as shipped: JSON lines with stars as floats, a review's text with quotes and
    line breaks, `elite` a string ('' for never), `attributes` and `hours` objects (or null), `categories`
    one comma-separated string (or null)."""
    directory = root / "yelp"
    directory.mkdir()
    users = [f"u{k:021d}" for k in range(6)]
    businesses = [f"b{k:021d}" for k in range(4)]
    reviews = [{"review_id": f"r{k}{b[-3:]}", "user_id": u, "business_id": b, "stars": float(1 + (k + int(b[-1])) % 5),
                "useful": 0, "funny": 0, "cool": 0, "text": 'Great "pizza", slow.\nWould go again.',
                "date": f"2016-03-0{1 + k} 00:00:00"}
               for k, u in enumerate(users) for b in businesses[: 2 + k % 3]]
    write_json_lines(directory / "yelp_academic_dataset_review.json.gz", reviews, review_lines)
    write_json_lines(directory / "yelp_academic_dataset_user.json", [
        {"user_id": u, "name": "Sam", "review_count": 3 + 9 * k, "yelping_since": "2012-01-01 00:00:00",
         "friends": "None", "fans": k % 2, "elite": "" if k % 2 else "2015,2016", "average_stars": 3.5}
        for k, u in enumerate(users)])
    write_json_lines(directory / "yelp_academic_dataset_business.json", [
        {"business_id": b, "name": f"Joe's {k}, Inc.", "city": ["Phoenix", "Toronto"][k % 2], "stars": 4.5,
         "is_open": 1, "attributes": None if k else {"WiFi": "u'free'"}, "hours": {"Monday": "8:0-22:0"},
         "categories": "Restaurants, Pizza" if k != 3 else None} for k, b in enumerate(businesses)])
    (directory / "dataset.toml").write_text(YELP_SPEC, encoding="utf-8")
    return directory


def test_yelp_json_lines_read_without_converting_and_bad_lines_are_rejected_rows(tmp_path, capsys):
    from assets.expectations import validate_clean_logs
    from assets.raw_logs import read_raw

    directory = yelp_json_dir(tmp_path, {2: '{"review_id": "cut", "user_id": ', 5: "[1, 2]",
                                         7: '{"user_id": {"id": "u1"}, "business_id": "b1", "stars": 3}'})
    assert cli.main(["dataset", "add", str(directory)]) == 0
    assert "registered dataset 'yelp'" in capsys.readouterr().out
    dataset = load_spec(directory)
    assert dataset.interactions.format == "jsonl" and dataset.users.format == "jsonl"  # from the suffixes
    raw = read_raw("yelp", tmp_path / "none")
    assert raw.frame("malformed").select("source_file", "line", "reason").rows() == [
        ("yelp/yelp_academic_dataset_review.json.gz", 3, "not valid JSON: Expecting value at character 33"),
        ("yelp/yelp_academic_dataset_review.json.gz", 6, "an array, not a JSON object"),
        ("yelp/yelp_academic_dataset_review.json.gz", 8,
         "field 'user_id' holds an object; expected a value or a list of values"),
    ]
    bundle = clean_logs_from_raw(raw, dataset.spec)
    rejected = bundle.frame("rejected")
    assert rejected.height == 3 and rejected["reason"].str.starts_with("malformed line: ").all()
    interactions = bundle.frame("interactions")
    assert interactions.height == 18 and interactions["line"].max() == 21  # 18 reviews on lines 1..21, 3 lines bad
    assert interactions.filter(pl.col("user_id") == "u" + "0" * 21).sort("item_id")["label"].to_list() == [1.0, 2.0]
    assert interactions["ts"].min() == 1456790400  # '2016-03-01 00:00:00'
    users = bundle.frame("users").sort("user_id")
    assert users["elite"].to_list() == ["2015,2016", "", "2015,2016", "", "2015,2016", ""]  # '' kept: never elite
    items = bundle.frame("items").sort("item_id")
    assert items["categories"].to_list() == [["Restaurants", "Pizza"]] * 3 + [[]]  # null: no categories
    assert items["name"][0] == "Joe's 0, Inc."
    assert [o for o in validate_clean_logs(bundle.frame("users"), interactions, dataset.spec) if not o.success] == []
    assert {Path(s.path).name for s in raw.sources} >= {"yelp_academic_dataset_review.json.gz"}


AMAZON_SPEC = """\
name = "amazon"
label = { kind = "rating", min = 1, max = 5 }

[interactions]
file = "Books_5.json.gz"
user_id = "reviewerID"
item_id = "asin"
label = "overall"
timestamp = "unixReviewTime"

[users.features]
user = { type = "categorical", column = "reviewerID" }

[items]
file = "meta_Books.json.gz"
id = "asin"
display = ["title"]

[items.features]
category = { type = "multi" }  # a JSON list: already split
brand = { type = "categorical" }
"""


def amazon_dir(root: Path) -> Path:
    """Amazon reviews (2018) as shipped: gzipped JSON lines; `overall` a float, `verified` a boolean,
    `style` an object, `vote` and `image` only on some lines; the metadata's `category` a list and
    `brand` missing on some lines; ids like '0000013714' that must stay text."""
    directory = root / "amazon"
    directory.mkdir()
    items = [f"{k:010d}" for k in (13714, 13715, 13716)]
    reviews = []
    for u in range(5):
        for i, asin in enumerate(items[: 2 + u % 2]):
            review = {"overall": float(1 + (u + i) % 5), "verified": u % 2 == 0, "reviewTime": "09 13, 2009",
                      "reviewerID": f"A{u:013d}", "asin": asin, "style": {"Format:": " Paperback"},
                      "reviewerName": "Pat", "reviewText": "Good.", "summary": "Ok", "unixReviewTime": 1252800000 + u * 86400 + i}
            if u == 1:
                review |= {"vote": "2", "image": ["https://example.com/1.jpg"]}
            reviews.append(review)
    write_json_lines(directory / "Books_5.json.gz", reviews)
    write_json_lines(directory / "meta_Books.json.gz", [
        {"asin": asin, "title": f"Book {k}", "category": ["Books", "Literature & Fiction"][: 1 + k % 2],
         **({"brand": "Visit Amazon's Ann Author Page"} if k else {}), "price": "$7.99"}
        for k, asin in enumerate(items)])
    (directory / "dataset.toml").write_text(AMAZON_SPEC, encoding="utf-8")
    return directory


def test_amazon_reviews_read_with_list_fields_as_multi_features_and_ids_as_text(tmp_path):
    dataset = load_spec(amazon_dir(tmp_path))
    raw = read_custom(dataset)
    assert raw.frame("malformed").height == 0
    bundle = clean_logs_from_raw(raw, dataset.spec)
    assert bundle.frame("rejected").height == 0
    items = bundle.frame("items").sort("item_id")
    assert items["item_id"].to_list() == ["0000013714", "0000013715", "0000013716"]
    assert items["category"].to_list() == [["Books"], ["Books", "Literature & Fiction"], ["Books"]]
    assert items["brand"].to_list()[0] is None  # a field absent from a line is missing
    interactions = bundle.frame("interactions")
    assert interactions.height == 12 and interactions["ts"].min() == 1252800000
    assert sorted(set(interactions["label"].to_list())) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_click_log_in_json_lines_is_added_with_its_labels_counted(tmp_path, capsys):
    shop = clicks_dir(tmp_path, n_users=20, n_items=12)
    clicks = pl.read_csv(shop / "clicks.csv", schema_overrides={"customer": pl.String})
    clicks.write_ndjson(shop / "clicks.ndjson")  # clicked and ts as JSON numbers
    (shop / "clicks.csv").unlink()
    spec = shop / "dataset.yaml"
    spec.write_text(spec.read_text().replace("file: clicks.csv", "file: clicks.ndjson"))
    assert cli.main(["dataset", "add", str(shop)]) == 0
    assert "clicks (0/1)" in capsys.readouterr().out
    dataset = load_spec(shop)
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert bundle.frame("rejected").height == 0 and bundle.frame("interactions").height == clicks.height
    # A log of positives only is still stopped at `dataset add`, as for a CSV.
    clicks.with_columns(clicked=pl.lit(1)).write_ndjson(shop / "clicks.ndjson")
    with pytest.raises(SystemExit, match=r"every label in column 'clicked' that is a number is '1'"):
        cli.main(["dataset", "add", str(shop)])


def test_a_file_that_is_not_json_lines_stops_the_read_saying_what_it_is(tmp_path):
    path = tmp_path / "reviews.json"
    records = [{"user_id": f"u{k}", "business_id": "b1", "stars": 4} for k in range(4)]
    path.write_text(json.dumps(records, indent=2))  # one JSON document, pretty-printed
    with pytest.raises(EmptyRawFileError, match=r"^r.json \(.*reviews.json\): none of its \d+ lines is a JSON object; "
                                                r"line 1: '\[' \(not valid JSON: .*\)\. Line 1 opens a JSON array"):
        read_json_lines(path, "r.json", ("user_id",))
    path.write_text("\n".join(json.dumps(r, indent=1) for r in records))  # objects spread over lines
    with pytest.raises(EmptyRawFileError, match=r"line 1: '\{' .*An object spread over several lines"):
        read_json_lines(path, "r.json", ("user_id",))
    # Most lines bad, a few read by chance: an error, not a dataset of the few.
    lines = [json.dumps(records[0])] + [str({"user_id": f"u{k}"}) for k in range(3)]  # Python's repr: single quotes
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RawFileError, match=r"not JSON lines: 3 lines are rejected and 1 give a row; line 2: "
                                           r"\"\{'user_id': 'u0'\}\" \(not valid JSON: .* \(a Python dict, not JSON: single quotes\)\)"):
        read_json_lines(path, "r.json", ("user_id",))
    path.write_text("\n".join(lines[:3] + [lines[0]] * 2) + "\n")  # as many good as bad: read, the bad rejected
    rows, bad = read_json_lines(path, "r.json", ("user_id",))
    assert rows.height == 3 and bad["line"].to_list() == [2, 3]


def test_json_lines_spec_keys_and_columns(tmp_path):
    directory = yelp_json_dir(tmp_path)
    spec = directory / "dataset.toml"
    text = spec.read_text()
    spec.write_text(text.replace('[users]\n', '[users]\nseparator = ","\n'))
    with pytest.raises(SpecError, match=r"users.separator: does not apply to a JSON lines file"):
        load_spec(directory)
    # The columns are the keys of the first lines; a field first seen further down is listed in `columns`.
    spec.write_text(text.replace('city = { type = "categorical" }', 'city = { type = "categorical" }\n'
                                                                    'postal = { type = "categorical", column = "postal_code" }'))
    with pytest.raises(SpecError, match=r"items.features.postal.column: unknown column; yelp/yelp_academic_dataset_business"
                                        r".json has business_id, name, city, stars, is_open, attributes, hours, categories"):
        load_spec(directory)
    spec.write_text(spec.read_text().replace('file = "yelp_academic_dataset_business.json"\n',
                                             'file = "yelp_academic_dataset_business.json"\ncolumns = ["business_id", '
                                             '"name", "city", "categories", "postal_code"]\n'))
    items = read_custom(load_spec(directory)).frame("items")
    assert items["postal"].null_count() == items.height  # listed, absent from every line: missing


@pytest.mark.parametrize(("value", "text"), [
    ("Pizza", "Pizza"), (5.0, "5"), (4.5, "4.5"), (1252800000, "1252800000"), (True, "true"), (None, None),
    (float("nan"), "NaN"), (["Books", 7, None], ["Books", "7", None]), (["Books", float("nan")], ["Books", None]),
])
def test_a_json_field_reads_as_a_csv_field_would(value, text):
    assert field_text(value) == text


def test_a_label_written_nan_and_a_field_written_twice_are_rejected_showing_what_the_line_wrote(tmp_path):
    # NaN read as a missing value showed the rejection's value as null; a key written twice kept its last
    # value silently (in both readers).
    user, other, business = "u" + "0" * 21, "u" + "0" * 20 + "1", "b" + "0" * 21
    directory = yelp_json_dir(tmp_path, {
        2: json.dumps({"user_id": user, "business_id": "b" + "0" * 20 + "3", "stars": float("nan"), "date": "2016-03-09 00:00:00"}),
        4: f'{{"user_id": "{user}", "user_id": "{other}", "business_id": "{business}", "stars": 4}}'})
    raw = read_custom(load_spec(directory))
    twice = f'field \'user_id\' written twice, with different values ("{user}", then "{other}"); expected it once'
    assert raw.frame("malformed").select("line", "reason").rows() == [(5, twice)]
    rejected = clean_logs_from_raw(raw, load_spec(directory).spec).frame("rejected")
    assert rejected.select("line", "reason", "value").rows() == [
        (5, f"malformed line: {twice}", f'{{"user_id": "{user}", "user_id": "{other}", "business_id": "{business}", "stars": 4}}'),
        (3, "label missing", "NaN")]


@pytest.mark.parametrize(("line", "reason", "user"), [
    ('{"u": "1", "u": "2", "r": 4}', 'field \'u\' written twice, with different values ("1", then "2"); expected it once', None),
    ('{"u": "1", "r": 4, "\\u0075": 1}', 'field \'u\' written twice, with different values ("1", then 1); expected it once', None),
    ('{"u": "1", "r": 4, "r": null, "r": 4}', "field 'r' written 3 times, with different values (4, then null, then 4); "
                                              "expected it once", None),
    ('{"u": "1", "r": NaN, "r": null}', "field 'r' written twice, with different values (NaN, then null); expected it once", None),
    ('{"u": "1", "u": "1", "r": 4}', None, "1"),  # the same value twice: nothing to choose
    ('{"u": "1", "r": 4, "x": 1, "x": 2}', None, "1"),  # a field the spec does not read
    ('{"u": "1", "r": 4, "meta": {"u": 2, "u": 3}}', None, "1"),  # inside an object: not the line's field
])
def test_a_read_field_written_twice_with_different_values_rejects_its_line_in_both_readers(tmp_path, line, reason, user):
    path = tmp_path / "r.jsonl"
    path.write_text('{"u": "0", "r": 5}\n' + line + '\n{"u": "2", "r": 3}\n')
    for fast in (True, False):
        rows, bad = read_json_lines(path, "r.jsonl", ("u", "r"), used=frozenset({"u", "r"}), fast=fast)
        assert bad.select("line", "reason").rows() == ([(2, reason)] if reason else []), fast
        assert rows["u"].to_list() == ["0", user, "2"] if user else ["0", "2"], fast


def test_a_lone_surrogate_escape_in_a_used_field_rejects_its_line_and_a_pair_is_its_character(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"u": "1", "i": "a", "r": 5}\n{"u": "2", "i": "b\\ud800x", "r": 4}\n'
                    '{"u": "3", "i": "\\ud83d\\ude00", "r": 3}\n{"u": "4", "i": "c", "r": 2, "unused": "\\udc00"}\n')
    rows, bad = read_json_lines(path, "reviews.jsonl", ("u", "i", "r"))  # crashed on building the frame before
    assert rows["i"].to_list() == ["a", "\U0001F600", "c"] and rows["line"].to_list() == [1, 3, 4]
    assert bad.select("line", "reason").rows() == [
        (2, "field 'i' holds text with a lone UTF-16 surrogate escape (\\ud800), which is no character; "
            "expected a value or a list of values")]


def test_the_lines_each_reader_took_are_counted_for_the_raw_logs_step(tmp_path):
    from assets.json_lines import lines_read
    from assets.raw_logs import reader_facts

    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"u": str(k), "r": 4}) + "\n" for k in range(9)) + '{"u": "9", "r": 1e300}\n')
    before = lines_read()
    read_json_lines(path, "r.jsonl", ("u", "r"))  # 1e300 goes to Python, the 9 others to polars
    after = lines_read()
    assert (after["polars"] - before["polars"], after["python"] - before["python"]) == (9, 1)
    read_json_lines(path, "r.jsonl", ("u", "r"), fast=False)
    assert lines_read()["python"] - after["python"] == 10 and lines_read()["polars"] == after["polars"]
    none = {"files": 0, "bytes": 0}
    assert reader_facts(none, {"files": 1, "bytes": 3 * 2**20}, before, after) == [
        "decompressed 1 compressed file(s), 3.0 MiB of text, into PAML_HOME/decompressed (a later read uses the copies)",
        "JSON lines: 9 read by polars, 1 in Python (90.0% by polars)"]
    assert reader_facts(none, none, after, after) == []
