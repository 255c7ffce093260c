"""The gaps a systematic corruption matrix found (one corruption at a time, on one line or column of a small
valid file of every raw format: docs/data.md, "What a broken file gives"): each case here read wrong, or
stopped with a wrong or unclear message, before its fix. Fixtures are made up in code."""

import gzip
import json
import re
from pathlib import Path

import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec
from assets.raw_files import HEADER_AGAIN, check_header, read_bookcrossing, read_movielens
from assets.raw_text import RawFileError
from assets.specs import SPECS
from tests.fixtures import bookcrossing_dir, bx_location, good_ml_users, ml_ratings_for, movielens_dir, quoted, write_lines

LOG_SPEC = """\
name = "corrupt"
label = { kind = "rating", min = 1, max = 5 }

[interactions]
file = "log.csv"
user_id = "user"
item_id = "item"
label = "rating"
timestamp = "when"
timestamp_format = "%Y-%m-%d %H:%M:%S"

[users.features]
user = { type = "categorical", column = "user" }

[items.features]
item = { type = "categorical", column = "item" }
"""
HEADER = "user,item,rating,when"


def log_rows() -> list[str]:
    """Four users rating three items each, in a quoted CSV with a header (features come from the log)."""
    return [f"u{u},i{i},{1 + (u + i) % 5},2024-01-0{u} 10:00:0{i}" for u in range(1, 5) for i in range(1, 4)]


def cleaned_log(root: Path, lines: list[str], *, quote: str = '"'):
    """The log `lines` (header first) with LOG_SPEC beside it, read and cleaned as the pipeline does; with
    `quote = ""` the log is split line by line (as taobao's logs are), else read as quoted CSV."""
    root.mkdir(parents=True, exist_ok=True)
    spec = LOG_SPEC if quote else LOG_SPEC.replace('file = "log.csv"', 'file = "log.csv"\nquote = ""')
    (root / "dataset.toml").write_text(spec, encoding="utf-8")
    write_lines(root / "log.csv", lines, encoding="utf-8")
    dataset = load_spec(root)
    return clean_logs_from_raw(read_custom(dataset), dataset.spec)


def reasons(bundle) -> list[tuple[int, str, str]]:
    """(line, reason, value) of every rejected row, in order."""
    return bundle.frame("rejected").select("line", "reason", "value").rows()


LONG = 200_000  # characters: over Python's csv field limit (131,072)


@pytest.mark.parametrize("layout", ["bookcrossing", "spec csv"])
def test_a_quoted_field_longer_than_the_csv_limit_on_one_line_is_read_not_taken_for_an_open_quote(tmp_path, layout):
    # Before: the whole file stopped with "field larger than field limit ... a quote that is never closed?",
    # although every quote was closed: a long review or title on one line is text, not a broken file.
    long_item = "i" + "x" * LONG
    if layout == "bookcrossing":
        users = [quoted(str(u), bx_location(u), "30") for u in (1, 2)]
        ratings = [quoted("1", "0001", "5"), quoted("1", long_item, "7"), quoted("1", "0002", "6"),
                   quoted("2", "0001", "4"), quoted("2", "0003", "3")]
        bundle = clean_logs_from_raw(read_bookcrossing(bookcrossing_dir(tmp_path, users, ratings)), SPECS["bookcrossing"])
    else:
        bundle = cleaned_log(tmp_path, [HEADER, *log_rows()[:2], f'u1,"{long_item}",4,2024-01-01 10:00:09', *log_rows()[2:]])
        assert reasons(bundle) == []  # items come from the log here: the long id is an item of its own
        assert bundle.frame("interactions").filter(pl.col("item_id") == long_item)["line"].to_list() == [4]
        return
    rejected = bundle.frame("rejected").filter(pl.col("line") == 3)
    assert rejected["reason"].to_list() == ["unknown item_id"] and rejected["value"].to_list() == [long_item]


def test_a_header_field_longer_than_the_csv_limit_is_a_column_name_not_a_csv_error(tmp_path):
    # Line 1 was split with Python's csv reader at its default limit: a header field over 131,072 characters
    # stopped load_spec with a bare "_csv.Error: field larger than field limit" naming no file. Split as the
    # read splits it (the limit raised to the line's length), it is a column name, here one the spec names.
    long_column = "w" * LONG
    root = tmp_path / "long"
    root.mkdir()
    (root / "dataset.toml").write_text(LOG_SPEC.replace('timestamp = "when"', f'timestamp = "{long_column}"'), encoding="utf-8")
    write_lines(root / "log.csv", [HEADER.replace("when", long_column), *log_rows()], encoding="utf-8")
    dataset = load_spec(root)
    assert dataset.interactions.columns[-1] == long_column
    assert clean_logs_from_raw(read_custom(dataset), dataset.spec).frame("interactions").height == 12


def test_a_header_naming_a_very_long_column_is_named_in_a_message_of_readable_length(tmp_path):
    # A line of 200,000 characters above the header (a joined or broken file) became one column name, and the
    # spec error listing the file's columns was 200 KB on one line; the header check shows what it found too.
    root = tmp_path / "long"
    root.mkdir()
    (root / "dataset.toml").write_text(LOG_SPEC, encoding="utf-8")
    write_lines(root / "log.csv", ["y" * LONG, HEADER, *log_rows()], encoding="utf-8")
    with pytest.raises(SpecError) as error:
        load_spec(root)
    message = str(error.value)
    assert len(message) < 1000
    assert f"interactions.user_id: unknown column; corrupt/log.csv has {'y' * 120}... (200,000 characters)" in message
    assert "(line 2 names it: the header must be line 1" in message
    with pytest.raises(RawFileError) as error:
        check_header(["y" * LONG], ("user", "item"), "corrupt/log.csv", root / "log.csv")
    assert len(str(error.value)) < 1000 and str(error.value).endswith(f"found {'y' * 120}... (200,000 characters).")


def test_a_byte_order_mark_at_the_start_of_a_data_line_is_no_part_of_its_id(tmp_path):
    # Two ML-1M style files joined, the second saved with a BOM: user '\ufeff2' was rejected as an unknown
    # user_id whose value prints as '2', a user that exists.
    ratings = ml_ratings_for(range(1, 4))
    ratings[3] = "\xef\xbb\xbf" + ratings[3]  # the BOM's bytes, in a latin-1 file that is then valid UTF-8
    bundle = clean_logs_from_raw(read_movielens(movielens_dir(tmp_path, good_ml_users(3), ratings)), SPECS["movielens"])
    assert bundle.frame("rejected").height == 0
    assert bundle.frame("interactions").height == 9


@pytest.mark.parametrize("layout", ["spec csv", "spec unquoted", "bookcrossing"])
def test_a_header_line_with_a_byte_order_mark_among_the_data_is_taken_for_a_header(tmp_path, layout):
    # Two exports joined (`cat a.csv b.csv`), each saved with a BOM ("CSV UTF-8"): the second header was not
    # known for one, and was rejected as a row of an unknown user, or with a label that is no number.
    if layout == "bookcrossing":
        users = [quoted(str(u), bx_location(u), "30") for u in (1, 2)]
        ratings = [quoted("1", "0001", "5"), quoted("1", "0002", "6"), "BOM" + quoted("User-ID", "ISBN", "Book-Rating"),
                   quoted("2", "0001", "4"), quoted("2", "0003", "3")]
        path = bookcrossing_dir(tmp_path, users, ratings) / "bookcrossing/BX-Book-Ratings.csv"
        path.write_bytes(path.read_bytes().replace(b"BOM", b"\xef\xbb\xbf"))
        bundle = clean_logs_from_raw(read_bookcrossing(tmp_path), SPECS["bookcrossing"])
    else:
        rows = log_rows()
        lines = ["\ufeff" + HEADER, *rows[:2], "\ufeff" + HEADER, *rows[2:]]
        bundle = cleaned_log(tmp_path, lines, quote='"' if layout == "spec csv" else "")
    assert [(line, reason) for line, reason, _ in reasons(bundle)] == [(4, f"malformed line: {HEADER_AGAIN}")]


@pytest.mark.parametrize(("field", "value"), [("item", '"i\n2"'), ("user", '"u\t1"'), ("item", '"i\x072"')])
def test_an_id_with_a_control_character_inside_is_rejected_as_garbled(tmp_path, field, value):
    # A quoted line break inside an id made an item 'i\n2' of its own (items read from the log), printed as
    # 'i2' on two lines; an id is never text with a control character inside.
    rows = log_rows()
    parts = rows[4].split(",")  # u2,i2,...
    parts[0 if field == "user" else 1] = value
    rows[4] = ",".join(parts)
    bundle = cleaned_log(tmp_path, [HEADER, *rows])
    garbled = f"garbled {field}_id: control character (a line break or tab inside the id)"
    assert (6, garbled, value.strip('"')) in reasons(bundle)
    ids = bundle.frame("items" if field == "item" else "users")[f"{field}_id"]
    assert not ids.str.contains(r"[\x00-\x1f]").any()


def test_ids_that_differ_only_by_surrounding_spaces_are_one_id_of_a_table_read_from_the_log(tmp_path):
    # ' u1 ' and 'u1' are one user (cleaning trims ids); the users read from the log took both as first rows,
    # and the second was rejected as a 'duplicate user_id' that the file never held.
    rows = log_rows()
    rows[1] = rows[1].replace("u1,i2", " u1 ,\ti2 ")
    bundle = cleaned_log(tmp_path, [HEADER, *rows])
    assert reasons(bundle) == []
    assert bundle.frame("users")["user_id"].to_list() == ["u1", "u2", "u3", "u4"]
    assert bundle.frame("interactions").height == 12


@pytest.mark.parametrize(("written", "shown"), [
    ("9999-01-01 00:00:00", "253370764800 (9999-01-01 00:00:00 UTC)"),
    ("1900-01-01 00:00:00", "-2208988800 (1900-01-01 00:00:00 UTC)"),
])
def test_a_time_converted_from_a_format_and_out_of_range_is_named_with_its_date(tmp_path, written, shown):
    # The rejected value was the Unix seconds alone (253370764800), which the file never held.
    rows = log_rows()
    rows[2] = rows[2].rsplit(",", 1)[0] + "," + written
    rejected = reasons(cleaned_log(tmp_path, [HEADER, *rows]))
    assert [(line, value) for line, reason, value in rejected if reason.startswith("timestamp outside")] == [(4, shown)]


JSON_SPEC = """\
name = "corrupt_json"
label = { kind = "rating", min = 1, max = 5 }
interactions = { file = "reviews.jsonl.gz", user_id = "user", item_id = "item", label = "stars" }
[users.features]
user = { type = "categorical", column = "user" }
[items.features]
item = { type = "categorical", column = "item" }
"""


@pytest.mark.parametrize("column", ["stars", "user"])
def test_a_list_in_a_json_field_read_as_one_value_names_the_line_that_holds_it(tmp_path, column):
    # Before: "row 1: ['3']", the first row, whose value was no list (one value reads as a list of one
    # once any line holds a list): the line with the list was not named.
    records = [{"user": f"u{u}", "item": f"i{i}", "stars": 1 + (u + i) % 5} for u in range(1, 4) for i in range(1, 4)]
    records[4][column] = [records[4][column]]
    (tmp_path / "dataset.toml").write_text(JSON_SPEC, encoding="utf-8")
    (tmp_path / "reviews.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    dataset = load_spec(tmp_path)
    shown = json.dumps(records[4][column]).replace('"', "'")
    with pytest.raises(RawFileError, match=rf"reviews.jsonl.gz: column '{column}' holds lists; .* line 5: {re.escape(shown)}$"):
        read_custom(dataset)
