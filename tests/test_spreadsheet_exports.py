"""Logs and feature tables as people export them from spreadsheets and data tools: Excel in a European
locale (';', decimal commas, cp1252, CRLF, padded columns), R's write.csv, pandas' to_csv, Google Sheets.
Each fixture is made up in code, in the layout such an export writes."""

from pathlib import Path

import polars as pl
import pytest

from assets.bundle import Bundle
from assets.clean_logs import CleaningError, clean_logs_from_raw
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec

SPEC = """\
name = "sheet"
[label]
{label}
[interactions]
file = "log.csv"
user_id = "user"
item_id = "item"
label = "rating"
timestamp = "ts"
{interactions}
[users]
file = "users.csv"
id = "user"
{users}
[users.features]
age = {{ type = "numeric", min = 10, max = 90 }}
country = {{ type = "categorical" }}
[items]
file = "items.csv"
id = "item"
{items}
[items.features]
genre = {{ type = "categorical" }}
price = {{ type = "numeric", min = 0, max = 100 }}
"""
RATING = 'kind = "rating"\nmin = 0.5\nmax = 5\nstep = 0.5'
LOG = ["user,item,rating,ts", "1,a,4.5,1700000000", "1,b,3,1700000060", "2,a,2,1700000120", "2,c,5,1700000180",
       "3,b,1.5,1700000240", "3,c,4,1700000300"]
USERS = ["user,age,country", "1,30,de", "2,40,at", "3,50,ch"]
ITEMS = ["item,genre,price", "a,drama,3.5", "b,comedy,4", "c,action,12.25"]


def sheet_dir(root: Path, log: list[str] = LOG, users: list[str] = USERS, items: list[str] = ITEMS, *,
              label: str = RATING, interactions: str = "", users_keys: str = "", items_keys: str = "",
              encoding: str = "utf-8", newline: str = "\n", bom: bytes = b"") -> Path:
    """A log (log.csv), users.csv and items.csv written as an export writes them, and the spec reading them;
    `interactions`, `users_keys` and `items_keys` are extra keys of those sections."""
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in (("log.csv", log), ("users.csv", users), ("items.csv", items)):
        (root / name).write_bytes(bom + (newline.join(lines) + newline).encode(encoding))
    (root / "dataset.toml").write_text(SPEC.format(label=label, interactions=interactions, users=users_keys,
                                                   items=items_keys), encoding="utf-8")
    return root


def cleaned(directory: Path) -> Bundle:
    dataset = load_spec(directory)
    return clean_logs_from_raw(read_custom(dataset), dataset.spec)


def test_the_plain_export_reads_whole(tmp_path):
    bundle = cleaned(sheet_dir(tmp_path))
    assert bundle.frame("rejected").height == 0
    assert sorted(bundle.frame("interactions")["label"]) == [1.5, 2.0, 3.0, 4.0, 4.5, 5.0]


def test_excel_and_pandas_missing_markers_are_missing_in_users_and_items(tmp_path):
    # Excel writes a lookup that found nothing as #N/A; pandas writes a missing text value as nan.
    users = ["user,age,country", "1,30,#N/A", "2,40,nan", "3,50,ch"]
    items = ["item,genre,price", "a,#N/A,3.5", "b,nan,4", "c,action,#N/A"]
    directory = sheet_dir(tmp_path, users=users, items=items)
    bundle = cleaned(directory)
    rejected = bundle.frame("rejected").filter(pl.col("source_file").str.ends_with("users.csv"))
    assert rejected.select("line", "reason", "value").rows()[:2] == [(2, "country missing", "#N/A"),
                                                                     (3, "country missing", "nan")]
    items_ = bundle.frame("items").sort("item_id")
    assert items_["genre"].to_list() == [None, None, "action"] and items_["price"].to_list()[2] is None


def semicolons(lines: list[str], padding: str = "") -> list[str]:
    """Lines as Excel writes them in a European locale: ';' between fields, each padded with `padding`."""
    return [line.replace(",", ";") + padding for line in lines]


SEMICOLON_FILES = 'separator = ";"\nencoding = "cp1252"'


def test_excel_padding_and_an_empty_last_row_read_as_unnamed_columns_and_an_empty_row(tmp_path):
    # Excel pads every line, the header too, up to the widest row the sheet held, and writes a cleared
    # row as separators alone; cp1252, CRLF.
    pad = lambda lines: semicolons(lines, ";;;") + [";;;;;;"]  # noqa: E731
    directory = sheet_dir(tmp_path, pad(LOG), pad(USERS), pad(ITEMS), interactions=SEMICOLON_FILES,
                          users_keys=SEMICOLON_FILES, items_keys=SEMICOLON_FILES, encoding="cp1252", newline="\r\n")
    assert load_spec(directory).interactions.columns == ("user", "item", "rating", "ts", "unnamed_5", "unnamed_6",
                                                         "unnamed_7")
    bundle = cleaned(directory)
    assert bundle.frame("interactions").height == 6 and bundle.frame("users").height == 3
    rejected = bundle.frame("rejected").sort("source_file")
    assert rejected.select("source_file", "line", "reason", "value").rows() == [
        (f"sheet/{name}", line, "malformed line: an empty row: only separators, no value (a spreadsheet's empty row)",
         ";;;;;;") for name, line in (("items.csv", 5), ("log.csv", 8), ("users.csv", 5))]


def test_rows_padded_beyond_the_header_stop_the_read_saying_so(tmp_path):
    log = semicolons(LOG[:1]) + semicolons(LOG[1:], ";;")
    directory = sheet_dir(tmp_path, log, interactions='separator = ";"\nquote = ""')
    with pytest.raises(Exception, match=r"line 2: '1;a;4.5;1700000000;;' \(expected 4 fields separated by ';', found 6\)"
                                        r"\. Its last 2 fields are empty: a spreadsheet pads every row"):
        read_custom(load_spec(directory))


def test_r_write_csv_and_pandas_index_columns_are_unnamed_columns(tmp_path):
    # R's write.csv: every text quoted, the row names first under an empty name, NA for missing.
    log = ['"","user","item","rating","ts"'] + [f'"{n}",' + line for n, line in enumerate(LOG[1:], start=1)]
    users = ['"","user","age","country"', '"1",1,30,"de"', '"2",2,NA,"at"', '"3",3,50,"ch"']
    items = [",item,genre,price"] + [f"{n}," + line for n, line in enumerate(ITEMS[1:])]  # pandas: index from 0
    directory = sheet_dir(tmp_path, log, users, items)
    assert load_spec(directory).interactions.columns[0] == "unnamed_1"
    bundle = cleaned(directory)
    assert bundle.frame("rejected").select("source_file", "line", "reason", "value").rows()[0] == \
        ("sheet/users.csv", 3, "age missing", "NA")
    assert bundle.frame("users")["user_id"].sort().to_list() == ["1", "3"]


def reasons(bundle: Bundle) -> dict[tuple[str, int], str]:
    return {(r["source_file"], r["line"]): r["reason"] for r in bundle.frame("rejected").iter_rows(named=True)}


SECOND_HEADER = ("a second header row? words where ids and labels should be, under the header: pandas writes one header "
                 "row per level of MultiIndex columns; flatten the columns before exporting (df.columns = "
                 "['_'.join(filter(None, c)) for c in df.columns]) or delete the line")
NOTES = ("a notes or totals row at the end of the file? R and spreadsheet exports may end with 'Source: ...' or "
         "'Total,,,'; delete such lines at the end")


def test_a_pandas_multiindex_header_and_notes_at_the_end_are_rejected_saying_what_they_are(tmp_path):
    import pandas as pd

    # An aggregate exported as pandas writes MultiIndex columns: a second header row (',,mean,first'); R and
    # spreadsheet exports may end with totals and a source note.
    rows = [line.split(",") for line in LOG[1:]]
    frame = pd.DataFrame({("user", ""): [r[0] for r in rows], ("item", ""): [r[1] for r in rows],
                          ("rating", "mean"): [float(r[2]) for r in rows], ("ts", "first"): [int(r[3]) for r in rows]})
    log = frame.to_csv(index=False).splitlines() + ["Total,,19.5,", "Source: made up", ""]
    assert log[:2] == ["user,item,rating,ts", ",,mean,first"]
    bundle = cleaned(sheet_dir(tmp_path, log))
    assert reasons(bundle) == {
        ("sheet/log.csv", 2): f"user_id missing ({SECOND_HEADER})",
        ("sheet/log.csv", 9): f"item_id missing ({NOTES})",
        ("sheet/log.csv", 10): f"malformed line: expected 4 fields separated by ',', found 1 ({NOTES})",
        ("sheet/log.csv", 11): "malformed line: blank line",
    }
    assert bundle.frame("interactions").height == 6  # every data row kept, every other line rejected
    # The level names as the second row (an index's names): words where the label should be.
    levels = pd.DataFrame({("user", "id"): ["1"], ("item", "id"): ["a"], ("rating", "value"): [4.5], ("ts", "s"): [1]})
    assert levels.to_csv(index=False).splitlines()[1] == "id,id,value,s"
    bundle = cleaned(sheet_dir(tmp_path / "levels", LOG[:1] + ["id,id,value,s"] + LOG[1:]))
    assert reasons(bundle) == {("sheet/log.csv", 2): f"label not a number ({SECOND_HEADER})"}


def test_rows_that_only_resemble_a_second_header_or_notes_keep_their_plain_reason(tmp_path):
    # A bad data row on line 2 (an id with digits), in the middle, or among more rejected lines at the end than
    # notes run to, is data gone wrong, not an export's extra line.
    log = [LOG[0], "u1,,4,1700000000", *LOG[1:4], "x,,4,1700000001", *LOG[4:], *(f"w{k},,4,1700000002" for k in range(6))]
    bundle = cleaned(sheet_dir(tmp_path, log))
    assert reasons(bundle) == {("sheet/log.csv", line): "item_id missing" for line in (2, 6, *range(10, 16))}
    # Without a header (line 1 is data), line 2 is data too.
    headerless = sheet_dir(tmp_path / "headerless", [LOG[1], "id,id,value,s", *LOG[2:]],
                           interactions='header = false\ncolumns = ["user", "item", "rating", "ts"]')
    assert reasons(cleaned(headerless)) == {("sheet/log.csv", 2): "label not a number"}


def test_a_data_line_cut_off_at_the_end_keeps_its_plain_reason_and_a_note_still_gets_its_hint(tmp_path):
    # '3,c': fewer fields than the header, first field user 3 of the file: a data line cut off, not "notes or
    # totals" (it holds a letter, which was all the hint looked for).
    assert reasons(cleaned(sheet_dir(tmp_path, LOG + ["3,c"]))) == {
        ("sheet/log.csv", 8): "malformed line: expected 4 fields separated by ',', found 2"}
    # An id no row of the file has, or a note, is still taken for an export's extra line.
    assert reasons(cleaned(sheet_dir(tmp_path / "note", LOG + ["Source: made up"]))) == {
        ("sheet/log.csv", 8): f"malformed line: expected 4 fields separated by ',', found 1 ({NOTES})"}
    assert reasons(cleaned(sheet_dir(tmp_path / "other", LOG + ["Total,19.5"]))) == {
        ("sheet/log.csv", 8): f"malformed line: expected 4 fields separated by ',', found 2 ({NOTES})"}


@pytest.mark.parametrize("header, problem", [
    ("User,Item,Rating,TS", r"has User, Item, Rating, TS \('User' differs in case, spaces, '-' or '_': name the column as "
                            r"the file writes it\) \(found 'user'\)"),
    ("user,item,rating,ts,note,note", r"interactions.file: line 1 names column 'note' more than once \(columns 5, 6\): "
                                      r"rename all but one in the file"),
])
def test_a_header_the_spec_does_not_match_says_how_it_differs(tmp_path, header, problem):
    directory = sheet_dir(tmp_path, [header] + [line + ",," * ("note" in header) for line in LOG[1:]])
    with pytest.raises(SpecError, match=problem):
        load_spec(directory)


def test_a_title_row_above_the_header_is_named_with_the_line_of_the_header(tmp_path):
    # A sheet with a title in A1 exports it as line 1 (Google Sheets pads it with separators).
    directory = sheet_dir(tmp_path, ["Ratings export November,,,"] + LOG)
    with pytest.raises(SpecError, match=r"interactions.user_id: unknown column; sheet/log.csv has Ratings export November, "
                                        r"unnamed_2, unnamed_3, unnamed_4 \(line 2 names it: the header must be line 1; "
                                        r"remove the 1 line\(s\) above it, a title row\?\)"):
        load_spec(directory)


def european(lines: list[str]) -> list[str]:
    """Lines of `LOG` as Excel writes them in a German locale: ';' between fields, decimal commas."""
    return [line.replace(",", ";").replace(".", ",") for line in lines]


def test_a_decimal_comma_is_rejected_saying_what_to_set_and_read_with_decimal(tmp_path):
    log = european(LOG)
    directory = sheet_dir(tmp_path, log, interactions='separator = ";"')
    rejected = cleaned(directory).frame("rejected").filter(pl.col("reason").str.starts_with("label"))
    assert rejected.select("line", "reason", "value").rows() == [
        (line, 'label not a number (a decimal comma: set decimal = "," for this file in the spec)', value)
        for line, value in ((2, "4,5"), (6, "1,5"))]
    items = ["item;genre;price", "a;drama;3,5", "b;comedy;4", "c;action;12,25"]
    users = ["user;age;country", "1;30,5;de", "2;40;at", "3;50;ch"]
    semicolon = 'separator = ";"\ndecimal = ","'
    directory = sheet_dir(tmp_path / "read", log, users, items, interactions=semicolon, users_keys=semicolon,
                          items_keys=semicolon)
    bundle = cleaned(directory)
    assert bundle.frame("rejected").height == 0
    assert sorted(bundle.frame("interactions")["label"]) == [1.5, 2.0, 3.0, 4.0, 4.5, 5.0]
    assert bundle.frame("items").sort("item_id")["price"].to_list() == ["3.5", "4.0", "12.25"]
    assert bundle.frame("users").sort("user_id")["age"].to_list() == [30.5, 40.0, 50.0]


def test_a_decimal_comma_needs_another_separator_or_quotes(tmp_path):
    with pytest.raises(SpecError, match=r"interactions.decimal: a decimal comma needs another separator"):
        load_spec(sheet_dir(tmp_path, interactions='quote = ""\ndecimal = ","'))
    with pytest.raises(SpecError, match=r"interactions.decimal: expected \".\" or \",\""):
        load_spec(sheet_dir(tmp_path, interactions='decimal = "·"'))


def serial(line: str, comma: bool = False) -> str:
    """A LOG line with its Unix time written as a spreadsheet's serial date (days since 1899-12-30)."""
    *fields, seconds = line.split(",")
    days = f"{int(seconds) / 86400 + 25569:.8f}"
    return ",".join([*fields, days.replace(".", ",") if comma else days])


def test_excel_serial_dates_are_rejected_saying_so_and_read_with_timestamp_format_excel(tmp_path):
    log = LOG[:1] + [serial(line) for line in LOG[1:]]
    with pytest.raises(CleaningError, match=r"'timestamp not an integer \(an Excel serial date\? set timestamp_format = "
                                            r"\"excel\"\)' \(sheet/log.csv line 2: '45244.92592593'\)"):
        cleaned(sheet_dir(tmp_path, log))
    days = LOG[:1] + [line.rsplit(",", 1)[0] + ",45244" for line in LOG[1:]]  # a date without a time: whole days
    with pytest.raises(CleaningError, match=r"timestamp outside 1970-01-02..2099-12-31 \(.*\) \(an Excel serial date\?"):
        cleaned(sheet_dir(tmp_path / "days", days))
    expected = [1700000000, 1700000060, 1700000120, 1700000180, 1700000240, 1700000300]
    for name, lines in (("point", log), ("comma", european(LOG[:1]) + [serial(line, comma=True).replace(",", ";", 3)
                                                                       for line in LOG[1:]])):
        keys = 'timestamp_format = "excel"' + ('\nseparator = ";"\ndecimal = ","' if name == "comma" else "")
        bundle = cleaned(sheet_dir(tmp_path / name, lines, interactions=keys))
        assert bundle.frame("interactions").sort("ts")["ts"].to_list() == expected


def test_an_excel_serial_date_past_any_time_is_rejected_with_its_value_not_as_missing(tmp_path):
    # 9e15 days is past what a 64-bit count of seconds holds: the conversion gave no value, and the row read
    # 'timestamp missing' with the value null.
    log = LOG[:1] + [serial(line) for line in LOG[1:]]
    log[3] = log[3].rsplit(",", 1)[0] + ",9e15"
    bundle = cleaned(sheet_dir(tmp_path, log, interactions='timestamp_format = "excel"'))
    rejected = bundle.frame("rejected").filter((pl.col("source_file") == "sheet/log.csv") & (pl.col("line") == 4))
    assert rejected.select("reason", "value").rows()[0][1] == "9e15"
    assert "missing" not in rejected["reason"][0]


@pytest.mark.parametrize("column, value, reason", [
    ("ts", '"1,700,000,000"', "timestamp not an integer (thousands separators: export the column as plain numbers)"),
    ("user", '"1,001"', "unknown user_id (thousands separators: export the column as plain numbers)"),
])
def test_thousands_separators_are_named_in_the_reason(tmp_path, column, value, reason):
    header, first, *rest = LOG
    fields = dict(zip(header.split(","), first.split(",")))
    fields[column] = value
    bundle = cleaned(sheet_dir(tmp_path, [header, ",".join(fields.values()), *rest]))
    rejected = bundle.frame("rejected").filter((pl.col("line") == 2) & (pl.col("source_file") == "sheet/log.csv"))
    assert rejected.select("reason", "value").rows() == \
        [(reason, value.strip('"'))]


CLICK = 'kind = "click"'


def clicks(values: list[str]) -> list[str]:
    """LOG with its labels replaced by `values` (clicks)."""
    return LOG[:1] + [",".join([*line.split(",")[:2], value, line.split(",")[3]]) for line, value in zip(LOG[1:], values)]


def test_click_labels_written_as_booleans_read_as_1_and_0_per_file(tmp_path):
    # Excel writes a boolean cell TRUE/FALSE, pandas a bool column True/False.
    directory = sheet_dir(tmp_path, clicks(["TRUE", "FALSE", "True", "false", "TRUE", "TRUE"]), label=CLICK)
    raw = read_custom(load_spec(directory))
    assert raw.info["boolean_labels"] == {"sheet/log.csv": 6}
    assert raw.frame("interactions")["label"].to_list() == ["1", "0", "1", "0", "1", "1"]
    bundle = cleaned(directory)  # users 1 and 2 have one click each: dropped as any such user
    assert bundle.frame("interactions")["label"].to_list() == [1.0, 1.0]
    assert not bundle.frame("rejected")["reason"].str.contains("not a number").any()
    assert "stray_boolean_labels" not in raw.info
    # A column of 0 and 1 with a stray 'true' was not written as booleans: that value stays unread, and is counted.
    mixed = load_spec(sheet_dir(tmp_path / "mixed", clicks(["1", "0", "true", "0", "1", "1"]), label=CLICK))
    raw = read_custom(mixed)
    assert raw.info["stray_boolean_labels"] == {"sheet/log.csv": 1} and "boolean_labels" not in raw.info
    bundle = clean_logs_from_raw(raw, mixed.spec)
    assert bundle.frame("rejected").filter(pl.col("line") == 4).select("reason", "value").rows()[0] == \
        ("label not a number", "true")


def test_the_label_scan_of_dataset_add_reads_true_and_false_as_cleaning_does(tmp_path):
    from assets.custom_reader import label_classes

    # Day 1 writes its labels as booleans (and a missing one); day 2 writes 0/1 with a stray TRUE and a 'yes'.
    directory = sheet_dir(tmp_path, LOG, label=CLICK)
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('file = "log.csv"', 'file = "day*/log.csv"'))
    for day, values in (("day1", ["TRUE", "FALSE", "", "false", "True", "TRUE"]), ("day2", ["1", "0", "TRUE", "0", "yes", "1"])):
        (directory / day).mkdir()
        (directory / day / "log.csv").write_text("\n".join(clicks(values)) + "\n")
    (directory / "log.csv").unlink()
    dataset = load_spec(directory)
    read = read_custom(dataset).frame("interactions")["label"].cast(pl.Float64, strict=False)
    found = label_classes(dataset.interactions, "rating")
    # Day 1's words are 2 zeros and 3 ones; day 2's TRUE is no number (rejected in cleaning), as is its 'yes'.
    assert (found.rows, found.zeros, found.ones, found.stray_booleans) == (12, 4, 5, 1)
    assert (found.zeros, found.ones) == ((read == 0).sum(), (read == 1).sum())
    assert found.one_as == "TRUE"  # day 1's first click, as written


def test_a_log_of_ones_whose_only_zeros_are_stray_falses_is_stopped_at_dataset_add_saying_why(tmp_path, monkeypatch):
    from assets.dataset_spec import PositivesOnlyError, register

    # Counted as a 0 by the label scan, FALSE among 1s let the log through, to be rejected in cleaning (label not
    # a number), leaving positives only.
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    directory = sheet_dir(tmp_path, clicks(["1", "1", "FALSE", "1", "false", "1"]), label=CLICK)
    with pytest.raises(PositivesOnlyError, match=r"every label in column 'rating' that is a number is '1' \(4 rows\), "
                                                 r"none is 0 \(2 rows write it true or false among other labels, which cleaning "
                                                 r"rejects: true and false are read as 1 and 0 only in a file that "
                                                 r"writes every label so"):
        register(directory)
    assert not (tmp_path / "home" / "datasets").exists()


def test_a_log_of_true_labels_alone_is_stopped_at_dataset_add_as_positives_only(tmp_path, monkeypatch):
    from assets.dataset_spec import PositivesOnlyError, register

    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))  # a registration, were it made, goes there
    directory = sheet_dir(tmp_path, clicks(["TRUE"] * 6), label=CLICK)
    with pytest.raises(PositivesOnlyError, match=r"every label in column 'rating' that is a number is 'TRUE' \(6 rows\)"):
        register(directory)


def test_item_prices_that_are_not_numbers_become_missing_and_are_counted(tmp_path):
    # The items stay (an item is not rejected for a feature), but the lost values are not silent.
    items = ["item;genre;price", "a;drama;3,5", "b;comedy;4", "c;action;1.299,00", "d;drama;250"]  # 250 > max 100
    directory = sheet_dir(tmp_path, european(LOG), items=items, interactions='separator = ";"',
                          users_keys='separator = ";"', items_keys='separator = ";"',
                          users=[line.replace(",", ";") for line in USERS])
    bundle = cleaned(directory)
    assert bundle.frame("items").sort("item_id")["price"].to_list() == [None, "4.0", None, None]
    assert bundle.info["item_numbers_unread"] == {"price": {"items": 3, "values": ["3,5", "1.299,00", "250"]}}
    assert "item_numbers_unread" not in cleaned(sheet_dir(tmp_path / "plain")).info  # all read: nothing to say


@pytest.mark.parametrize("day3, problem", [
    ("user,item,rating,ts\n7,a,4,1700000000\n9,b,3,Caf\xe9\n".encode("latin-1"),
     "is not valid UTF-8 at line 3, byte 10 (0xE9"),  # a latin-1 day among UTF-8 ones
    (b"", "the file is empty; expected utf-8 text with data rows."),
    ("user,item,rating,ts\n7,a,4,1700000000\n".encode("utf-16"), "starts with a UTF-16-LE byte-order mark"),
    (b"user,item,rating\x00,ts\n7,a,4,1700000000\n", "NUL byte at line 1, byte 17"),
    (b"user,item,score,ts\n7,a,4,1700000000\n", "line 1: expected the header user, item, rating, ts; found user, "
                                                 "item, score, ts."),
], ids=["latin-1", "empty", "utf-16", "nul", "header"])
def test_dataset_add_checks_every_file_of_a_pattern_naming_the_file(tmp_path, monkeypatch, day3, problem):
    # Only the pattern's first file was checked: a later day in another encoding, empty, UTF-16 or with another
    # header was registered and stopped the first pipeline step.
    from assets.dataset_spec import register

    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    directory = sheet_dir(tmp_path / "sheet")
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('file = "log.csv"', 'file = "day*/log.csv"'))
    (directory / "log.csv").unlink()
    for day, text in (("day1", "\n".join(LOG[:4]) + "\n"), ("day2", "\n".join(LOG[:1] + LOG[4:]) + "\n")):
        (directory / day).mkdir()
        (directory / day / "log.csv").write_text(text)
    register(directory)  # two good days
    (directory / "day3").mkdir()
    (directory / "day3" / "log.csv").write_bytes(day3)
    with pytest.raises(SpecError) as refused:
        register(directory)
    message = str(refused.value)
    assert message.startswith(f"{spec}: interactions.file: sheet/day3/log.csv ({directory / 'day3' / 'log.csv'})"), message
    assert problem in message, message


@pytest.mark.parametrize("line", ["1,a,4.5\r,1700000000", "1,a," + "x" * 200_000 + ",1700000000"], ids=["lone CR", "long field"])
def test_a_header_the_spec_does_not_match_is_named_whatever_the_lines_below_it_hold(tmp_path, line):
    # The hint that looks for the header further down split each of the first lines with Python's csv reader,
    # which stops on a CR alone inside a line or a field over its limit: dataset add stopped with a bare
    # "_csv.Error: new-line character seen in unquoted field" instead of naming the missing column.
    directory = sheet_dir(tmp_path, ["userid,item,rating,ts", line, *LOG[2:]])
    with pytest.raises(SpecError, match=r"interactions.user_id: unknown column; sheet/log.csv has userid, item, rating, ts "
                                        r"\(found 'user'\)"):
        load_spec(directory)
