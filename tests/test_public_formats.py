"""Public recommender logs as their users have them, described by a spec from docs/data.md alone:
MovieLens-20M/25M CSVs without user features, Yelp's CSV export, a pandas Parquet export. Each
fixture is made up in code, in the layout of the original files."""

from pathlib import Path

import polars as pl
import pytest

from assets.bundle import Bundle
from assets.clean_logs import clean_logs_from_raw
from assets.cold_start_users import select_cold_start
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec
from assets.report import table1
from assets.user_groups import user_groups_for
from tests.fixtures import ml25m_dir, yelp_spec


def cleaned(directory: Path) -> Bundle:
    dataset = load_spec(directory)
    return clean_logs_from_raw(read_custom(dataset), dataset.spec)


def test_a_log_without_user_features_needs_no_groups_and_tags_no_user_major(tmp_path):
    directory = ml25m_dir(tmp_path, n_users=30, n_items=20)
    spec = load_spec(directory).spec
    assert spec.tagging_fields == () and spec.user_fields == ("user",)
    bundle = cleaned(directory)
    assert bundle.frame("rejected").height == 0
    assert bundle.frame("items").filter(pl.col("item_id") == "1")["title"].item() == "American President, The (1995)"
    frames = user_groups_for(bundle.frame("users"), select_cold_start(bundle.frame("interactions")), spec.tagging_fields)
    # The paper's rule (major: >= 3 features holding a top value) tags every user minor when none is counted.
    assert set(frames["groups"]["group"]) == {"minor"} and frames["table1"].height == 0
    shares = frames["shares"].filter(pl.col("population") == "all cleaned users")
    assert shares.select("group", "share").rows() == [("minor", 1.0)]
    # The report's Table 1 says so (major share 0) rather than that the groups are not built yet.
    rows = table1({"ml25m": Bundle(frames=frames, info={})})
    assert rows.select("item", "ours").rows() == [("major share", 0.0)]


def test_a_log_without_an_items_or_users_section_says_to_declare_the_id_as_the_feature(tmp_path):
    # A ratings file alone (no item attributes): the spec without [items] stopped with "items: required key
    # missing", which did not say that the id may be the one feature. Declared so, the log reads.
    directory = ml25m_dir(tmp_path, n_users=6, n_items=5)
    spec_path = directory / "dataset.toml"
    without_items = spec_path.read_text().split("[items]")[0]
    spec_path.write_text(without_items)
    with pytest.raises(SpecError, match=r"dataset.toml: items: section missing: a dataset needs at least one item "
                                        r"feature; without item attributes, the log's item_id column may be the one: "
                                        r"\[items.features\] item = \{ type = \"categorical\", column = \"movieId\" \}"):
        load_spec(directory)
    spec_path.write_text(without_items + '[items.features]\nitem = { type = "categorical", column = "movieId" }\n')
    dataset = load_spec(directory)
    assert dataset.spec.item_fields == ("item",) and cleaned(directory).frame("interactions").height > 0
    spec_path.write_text(without_items.replace('[users.features]\nuser = { type = "categorical", column = "userId" }', ""))
    with pytest.raises(SpecError, match=r"users: section missing: .* \[users.features\] user = \{ type = \"categorical\", "
                                        r"column = \"userId\" \}"):
        load_spec(directory)


def test_one_or_two_group_features_say_to_leave_groups_out(tmp_path):
    directory = ml25m_dir(tmp_path, n_users=4, n_items=3)
    spec_path = directory / "dataset.toml"
    spec_path.write_text(spec_path.read_text() + '\n[groups]\nfeatures = ["user"]\n')
    with pytest.raises(SpecError, match=r"groups.features: .* give at least 3 user features; with fewer, leave out "
                                        r"\[groups\] \(no user is then major: every user is minor\) \(found \('user',\)\)"):
        load_spec(directory)


YELP_SPEC = yelp_spec("review.csv", "user.csv", "business.csv")  # as pandas exports the JSON lines


def yelp_dir(root: Path) -> Path:
    """Yelp's reviews, users and businesses as pandas' to_csv writes them from the JSON lines: 22-character
    ids, stars '4.0', review text with commas, quotes and line breaks, blank `elite`, dates '2016-03-09 00:00:00'."""
    directory = root / "yelp"
    directory.mkdir()
    users = [f"u{k:021d}" for k in range(6)]
    businesses = [f"b{k:021d}" for k in range(4)]
    reviews = ["review_id,user_id,business_id,stars,useful,funny,cool,text,date"]
    for k, user in enumerate(users):
        for b in businesses[: 2 + k % 3]:
            reviews.append(f'r{k}{b[-3:]},{user},{b},{1.0 + (k + int(b[-1])) % 5:.1f},0,0,0,"Great ""pizza"", slow.\n'
                           f'Would go again.",2016-03-0{1 + k} 00:00:00')
    (directory / "review.csv").write_text("\n".join(reviews) + "\n", encoding="utf-8")
    (directory / "user.csv").write_text("user_id,name,review_count,fans,elite\n" + "".join(
        f'{u},Sam,{3 + 9 * k},{k % 2},{"" if k % 2 else chr(34) + "2015,2016" + chr(34)}\n' for k, u in enumerate(users)), encoding="utf-8")
    (directory / "business.csv").write_text("business_id,name,city,categories\n" + "".join(
        f'{b},"Joe\'s {k}, Inc.",{["Phoenix", "Toronto"][k % 2]},"Restaurants, Pizza"\n' for k, b in enumerate(businesses)),
        encoding="utf-8")
    (directory / "dataset.toml").write_text(YELP_SPEC, encoding="utf-8")
    return directory


def test_a_blank_kept_as_a_value_passes_the_derived_checks(tmp_path):
    from assets.expectations import validate_clean_logs

    dataset = load_spec(yelp_dir(tmp_path))
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert bundle.frame("rejected").height == 0
    users = bundle.frame("users")
    assert sorted(users["elite"]) == ["", "", "", "2015,2016", "2015,2016", "2015,2016"]
    assert bundle.frame("interactions").filter(pl.col("user_id") == "u" + "0" * 21)["ts"].to_list() == [1456790400] * 2
    # `missing = []` keeps the blank as a value in cleaning; the checks derived from the spec must agree.
    outcomes = validate_clean_logs(users, bundle.frame("interactions"), dataset.spec)
    assert [o for o in outcomes if not o.success] == []


PANDAS_SPEC = """\
name = "pandas_export"
label = { kind = "rating", min = 1, max = 5 }
interactions = { file = "ratings.parquet", user_id = "user_id", item_id = "item_id", label = "rating", timestamp = "ts" }

[users.features]
user = { type = "categorical", column = "user_id" }

[items]
file = "items.parquet"
id = "item_id"

[items.features]
genres = { type = "multi" }  # a list column: already split
"""


def pandas_dir(root: Path, genres: list) -> Path:
    """What pandas' to_parquet writes: int64 ids, float ratings, datetime64 times, the index as
    __index_level_0__, and an item table whose genres are a list column (or text)."""
    import pandas as pd

    directory = root / "pandas"
    directory.mkdir()
    log = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3], "item_id": [1, 2, 1, 3, 2, 3], "rating": [4.0, 2.0, 5.0, 3.0, 1.0, 2.0],
                        "ts": pd.to_datetime([1400000000 + 3600 * k for k in range(6)], unit="s")})
    log.set_index(pd.RangeIndex(6) + 10).to_parquet(directory / "ratings.parquet")
    pd.DataFrame({"item_id": [1, 2, 3], "genres": genres}).to_parquet(directory / "items.parquet", index=False)
    (directory / "dataset.toml").write_text(PANDAS_SPEC, encoding="utf-8")
    return directory


def test_a_parquet_list_column_is_a_multi_feature_without_a_delimiter(tmp_path):
    bundle = cleaned(pandas_dir(tmp_path, [["Comedy", "Drama"], ["Drama"], []]))
    assert bundle.frame("items").sort("item_id")["genres"].to_list() == [["Comedy", "Drama"], ["Drama"], []]
    assert bundle.frame("interactions").sort("ts")["ts"].to_list()[:2] == [1400000000, 1400003600]
    assert bundle.frame("rejected").height == 0


def test_a_parquet_text_column_as_a_multi_feature_without_a_delimiter_names_file_column_and_row(tmp_path):
    from assets.raw_text import RawFileError

    directory = pandas_dir(tmp_path, ["Comedy|Drama", "Drama", None])
    with pytest.raises(RawFileError, match=r"pandas_export/items.parquet: column 'genres' of the multi feature 'genres' "
                                           r"is String, not a list; give the feature a delimiter; row 1: 'Comedy\|Drama'"):
        read_custom(load_spec(directory))
    spec_path = directory / "dataset.toml"
    spec_path.write_text(spec_path.read_text().replace('{ type = "multi" }', '{ type = "multi", delimiter = "|" }'))
    assert cleaned(directory).frame("items").sort("item_id")["genres"].to_list() == [["Comedy", "Drama"], ["Drama"], []]


def test_a_multi_feature_drops_the_values_its_spec_lists_as_missing(tmp_path):
    directory = ml25m_dir(tmp_path, n_users=30, n_items=12)
    assert "11,Film 11 (1971),(no genres listed)" in (directory / "movies.csv").read_text()
    items = cleaned(directory).frame("items")
    assert items.filter(pl.col("item_id") == "11")["genres"].to_list() == [[]]  # no genre, not a genre of its own
    assert items.filter(pl.col("item_id") == "4")["genres"].to_list() == [["Children", "Drama"]]
    spec_path = directory / "dataset.toml"
    spec_path.write_text(spec_path.read_text().replace(', missing = ["(no genres listed)"]', ""))
    assert cleaned(directory).frame("items").filter(pl.col("item_id") == "11")["genres"].to_list() == [["(no genres listed)"]]


def test_iso_times_with_a_zone_or_in_mixed_forms_are_read():
    from assets.custom_reader import unix_seconds

    written = ["2006-11-14T22:41:12Z", "2006-11-14T22:41:12+02:00", "2006-11-14 22:41:12", "2006-11-14T22:41:12.5Z",
               "2006-11-14 22:41:12+0100", "2006-11-14T22:41", "2006-11-14", "2006-13-14", "20061114", None]
    read = pl.DataFrame({"t": written}).select(unix_seconds("t", "iso"))["t"].to_list()
    # Last.fm-1K writes '...Z' (UTC); an offset is converted to UTC; a value without a zone is read as UTC.
    assert read == ["1163544072", "1163536872", "1163544072", "1163544072", "1163540472", "1163544060", "1163462400",
                    "2006-13-14", "20061114 (not iso)", None]


def test_lastfm_1k_layout_reads_with_its_iso_times_and_hash_header(tmp_path):
    directory = tmp_path / "lastfm"
    directory.mkdir()
    plays = [f"user_{u:06d}\t2009-05-0{1 + i}T23:08:5{i}Z\t{'' if i else 'f1b1cf71-bd35-4e99-8624-24a6e15f133a'}\t"
             f"Artist {i}\t\tTrack \"{i}\" (Live)\t{(u + i) % 2}" for u in (1, 2) for i in range(3)]
    (directory / "plays.tsv").write_text("\n".join(plays) + "\n", encoding="utf-8")
    (directory / "userid-profile.tsv").write_text("#id\tgender\tage\tcountry\tregistered\n"
                                                  "user_000001\tm\t22\tJapan\tAug 13, 2006\n"
                                                  "user_000002\tf\t31\tCôte d'Ivoire\tFeb 1, 2007\n", encoding="utf-8")
    (directory / "dataset.toml").write_text("""
name = "lastfm"
label = { kind = "click" }
groups = { features = ["gender", "age", "country"] }
[interactions]
file = "plays.tsv"
format = "tsv"
header = false
quote = ""
columns = ["user", "time", "artist_mbid", "artist", "track_mbid", "track", "clicked"]
user_id = "user"
item_id = "artist"
label = "clicked"
timestamp = "time"
timestamp_format = "iso"
[users]
file = "userid-profile.tsv"
format = "tsv"
quote = ""
id = "#id"
[users.features]
gender = { type = "categorical", values = ["m", "f"] }
age = { type = "numeric", integer = true, min = 10, max = 100 }
country = { type = "categorical" }
[items.features]
artist = { type = "categorical" }
""", encoding="utf-8")
    bundle = cleaned(directory)
    assert not bundle.frame("rejected")["reason"].str.starts_with("timestamp").any()
    assert sorted(bundle.frame("interactions")["ts"].to_list())[0] == 1241219330  # 2009-05-01T23:08:50Z


def test_times_in_milliseconds_stop_the_cleaning_with_the_format_to_set(tmp_path):
    from assets.clean_logs import CleaningError

    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    ratings = directory / "ratings.csv"
    header, *rows = ratings.read_text().splitlines()
    ratings.write_text("\n".join([header] + [f"{row}000" for row in rows]) + "\n")  # seconds -> milliseconds
    with pytest.raises(CleaningError, match=r"no (users|interactions) left.*timestamp outside.*look like Unix milliseconds "
                                            r"\(1147881045000 s would be after the year 5000\): set "
                                            r'interactions.timestamp_format = "unix_ms"'):
        cleaned(directory)
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('timestamp = "timestamp"', 'timestamp = "timestamp"\ntimestamp_format = "unix_ms"'))
    assert cleaned(directory).frame("interactions").height == len(rows)  # as the hint says


def test_the_milliseconds_hint_needs_a_time_far_out_of_range():
    from assets.clean_logs import time_unit_hint

    assert time_unit_hint(["timestamp outside 1970-01-02..2099-12-31 (implausible)"], ["4102444800"]) == ""  # 2100, seconds
    assert time_unit_hint(["label missing"], ["1147881045000"]) == ""
    assert time_unit_hint([], []) == "" and time_unit_hint(["timestamp outside x"], [None]) == ""
    assert "unix_ms" in time_unit_hint(["timestamp outside x"], [" 1147881045000"])


def test_unix_times_written_as_whole_number_floats_read_as_pandas_writes_them(tmp_path):
    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    expected = cleaned(directory).frame("interactions")
    ratings = directory / "ratings.csv"
    header, *rows = ratings.read_text().splitlines()
    rows[0] = rows[0].rsplit(",", 1)[0] + ",1147881045.5"  # a fraction: not a Unix time
    ratings.write_text("\n".join([header] + [row if i == 0 else f"{row}.0" for i, row in enumerate(rows)]) + "\n")
    bundle = cleaned(directory)
    rejected = bundle.frame("rejected")
    assert rejected.select("reason", "value").rows() == [("timestamp not an integer", "1147881045.5")]
    assert bundle.frame("interactions").drop("source_file", "line").equals(
        expected.filter(pl.col("line") != 2).drop("source_file", "line"))


JOIN_SPEC = """\
name = "joins"
label = { kind = "rating", min = 1, max = 5 }
interactions = { file = "log.csv", user_id = "user", item_id = "item", label = "rating" }
groups = { features = ["age", "country", "plan"] }
[users]
file = "users.csv"
id = "user"
[users.features]
age = { type = "numeric", min = 10, max = 90 }
country = { type = "categorical" }
plan = { type = "categorical" }
[items]
file = "items.csv"
id = "item"
[items.features]
kind = { type = "categorical" }
"""


def join_dir(root: Path, log: list[str], users: list[str] | None = None, items: list[str] | None = None) -> Path:
    """A log (user, item, rating) with a users and an items file, as a user's own export may write them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.toml").write_text(JOIN_SPEC)
    users = users or ["7,30,fr,a", "12,40,de,b", " 13 ,50,it,a"]  # ' 13 ' is user 13 (ids are trimmed)
    items = items or ["0001,x", "0002,y", "3,z"]
    (root / "users.csv").write_text("\n".join(["user,age,country,plan", *users]) + "\n")
    (root / "items.csv").write_text("\n".join(["item,kind", *items]) + "\n")
    (root / "log.csv").write_text("\n".join(["user,item,rating", *log]) + "\n")
    return root


def test_an_id_in_another_unicode_form_than_its_feature_file_is_rejected_saying_so(tmp_path):
    # users.csv writes 'Zoë' with ë as one character (NFC), the log as e + a combining diaeresis (NFD): every row of
    # hers was 'unknown user_id' with the value 'Zoë', which reads exactly as the id the users file holds.
    import unicodedata

    nfc, nfd = "Zoë 7", unicodedata.normalize("NFD", "Zoë 7")
    item_nfd = unicodedata.normalize("NFD", "Crème")
    assert nfc != nfd
    log = [f"{nfd},0001,4", f"{nfd},0002,3", f"{nfc},0001,2", f"{nfc},0002,5", "12,0001,4", "12,0002,1", f"12,{item_nfd},3",
           "Zoé 7,0001,1"]
    dataset = load_spec(join_dir(tmp_path / "forms", log, users=[f"{nfc},30,fr,a", "12,40,de,b"],
                                 items=["0001,x", "0002,y", "Crème,z"]))
    bundle = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    hint = ("(a known id has the same letters in another Unicode form: one character (NFC) against a letter and a "
            "combining accent (NFD); write both files in one form, e.g. unicodedata.normalize('NFC', text))")
    assert bundle.frame("rejected").select("line", "reason", "value").sort("line").rows() == [
        (2, f"unknown user_id {hint}", nfd), (3, f"unknown user_id {hint}", nfd), (8, f"unknown item_id {hint}", item_nfd),
        (9, "unknown user_id", "Zoé 7")]  # another letter: no hint
    assert bundle.frame("interactions").group_by("user_id").len().sort("user_id").rows() == [("12", 2), (nfc, 2)]


def test_ids_written_as_whole_number_floats_join_the_integer_ids(tmp_path):
    # pandas writes an integer id column holding a blank as float64: the log says user 7.0, users.csv says 7.
    log = ["7.0,0001,4", "7.0,0002,3", "12.0,0001,2", " 12.0,3,5", "13.0,0002,4", "13.0,3,1", ",3,4", "99.0,3,4",
           "13.0,9,2"]
    dataset = load_spec(join_dir(tmp_path / "floats", log))
    raw = read_custom(dataset)
    assert raw.info["whole_float_ids"] == {"joins/log.csv": {"user": 8}}  # the blank is not a value converted
    bundle = clean_logs_from_raw(raw, dataset.spec)
    assert bundle.frame("interactions").group_by("user_id").len().sort("user_id").rows() == [("12", 2), ("13", 2), ("7", 2)]
    # Item ids with leading zeros (an ASIN such as 0000013714) are not floats: they stay as written and join.
    assert sorted(bundle.frame("interactions")["item_id"].unique()) == ["0001", "0002", "3"]
    rejected = bundle.frame("rejected").select("line", "reason", "value").sort("line").rows()
    # A row naming a user or an item the feature files do not hold is rejected with the id, and counted.
    assert rejected == [(8, "user_id missing", ""), (9, "unknown user_id", "99"), (10, "unknown item_id", "9")]
    accounting = bundle.frame("accounting").filter(pl.col("source_file") == "joins/log.csv")
    assert accounting.select("read", "kept", "rejected").row(0) == (9, 6, 3)


@pytest.mark.parametrize(("ids", "read_as"), [
    (["7.0", "12.0", "", "nan"], ["7", "12", "", "nan"]),  # missing values are left to cleaning
    (["-3.0", " 0.0 "], ["-3", "0"]),
    (["7.0", "A7"], ["7.0", "A7"]),  # a column of text ids: '7.0' is text there
    (["7.0", "12"], ["7.0", "12"]),  # not a float column either: pandas writes every value with '.0'
    (["7.00", "12.00"], ["7.00", "12.00"]),
    (["007.0", "0000013714"], ["007.0", "0000013714"]),  # leading zeros: text
    (["7.5", "1e+16"], ["7.5", "1e+16"]),
])
def test_only_a_column_whose_every_value_is_a_whole_float_is_read_as_integers(ids, read_as):
    from assets.custom_reader import whole_float_ids

    rows = pl.DataFrame({"source_file": ["f"] * len(ids), "id": ids})
    converted, found = whole_float_ids(rows, "id")
    assert converted["id"].to_list() == read_as
    assert found == ({"f": sum(a != b for a, b in zip(ids, read_as))} if ids != read_as else {})


def test_whole_float_ids_are_decided_per_file_of_a_log(tmp_path):
    from assets.custom_reader import whole_float_ids

    rows = pl.DataFrame({"source_file": ["day1", "day1", "day2", "day2"], "id": ["7.0", "8.0", "7.0", "x"]})
    converted, found = whole_float_ids(rows, "id")
    assert converted["id"].to_list() == ["7", "8", "7.0", "x"] and found == {"day1": 2}


def test_a_feature_table_with_two_rows_for_one_id_keeps_the_first_and_shows_what_differs(tmp_path):
    log = ["7,0001,4", "7,0002,3", "12,0001,2", "12,3,5"]
    users = ["7,30,fr,a", "12,40,de,b", "12,41,de,c", "7,30,fr,a"]  # 12 twice with two profiles; 7 twice alike
    items = ["0001,x", "0002,y", "3,z", "3,w"]
    bundle = cleaned(join_dir(tmp_path / "dups", log, users, items))
    rejected = bundle.frame("rejected").sort("source_file", "line").select("source_file", "line", "reason", "value").rows()
    assert rejected == [
        ("joins/items.csv", 5, "duplicate item_id with other values than its first row", "kind 'w' (line 4: kind 'z')"),
        ("joins/users.csv", 4, "duplicate user_id with other values than its first row",
         "age '41', plan 'c' (line 3: age '40', plan 'b')"),
        ("joins/users.csv", 5, "duplicate user_id", "7"),
    ]
    assert bundle.frame("users").sort("user_id").select("user_id", "plan").rows() == [("12", "b"), ("7", "a")]
    # A multi feature's lists are compared and shown whole.
    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    with (directory / "movies.csv").open("a") as movies:
        movies.write("2,Cats (1998),Drama\n")
    row = cleaned(directory).frame("rejected").row(0, named=True)
    assert (row["line"], row["reason"]) == (10, "duplicate item_id with other values than its first row")
    assert row["value"] == "genres ['Drama'], title 'Cats (1998)' (line 3: genres ['Drama', 'Comedy'], title '\"Great Performances\" Cats (1998)')"
