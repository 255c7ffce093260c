"""Each cleaning rule against its own tiny fixture file."""

from pathlib import Path

import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.raw_files import read_bookcrossing, read_movielens, read_taobao
from assets.specs import SPECS
from tests.fixtures import ML_EXTRA, bookcrossing_dir, good_ml_users, ml_ratings_for, movielens_dir, quoted, write_lines


def clean_ml(tmp_path: Path, users: list[str], ratings: list[str]):
    return clean_logs_from_raw(read_movielens(movielens_dir(tmp_path, users, ratings)), SPECS["movielens"])


def reasons(bundle) -> dict[str, int]:
    rejected = bundle.frame("rejected")
    return dict(rejected.group_by("reason").len().iter_rows())


def test_ml_age_is_a_bucket_code_not_years(tmp_path):
    users = ["1::F::1::10::48067", "2::M::7::10::48067", "3::M::18::3::55117"]
    bundle = clean_ml(tmp_path, users, ml_ratings_for(range(1, 4)))
    kept = bundle.frame("users")["user_id"].to_list()
    assert kept == ["1", "3"]  # code 1 (under 18) is kept; 7 is no bucket
    row = bundle.frame("rejected").filter(pl.col("record_id") == "2").row(0, named=True)
    assert row["reason"] == "age not one of 1, 18, 25, 35, 45, 50, 56"
    assert (row["source_file"], row["line"], row["value"]) == ("ml-1m/users.dat", 2, "7")


def users_rejected(bundle, file: str = "users.dat") -> dict[str, str]:
    return dict(bundle.frame("rejected").filter(pl.col("source_file").str.ends_with(file))
                .select("record_id", "reason").iter_rows())


def test_ml_foreign_zips_are_values_and_broken_zips_are_garbled(tmp_path):
    users = [
        "1::::25::10::48067", "2::M::25::10::4806x7", "3::M::25::10::98107-4914", "4::F::25::10::98107",
        "5::F::25::10::T8H1N", "6::M::25::10::5849574", "7::F::25::10::n/a", "8::M::25::10::981\t07",
        "9::F::25::10::\x93480\x94",
    ]
    bundle = clean_ml(tmp_path, users, ml_ratings_for(range(1, 10)))
    kept = bundle.frame("users")
    assert kept["user_id"].to_list() == ["2", "3", "4", "5", "6"]
    assert kept.filter(pl.col("user_id") == "5")["zip"].item() == "T8H1N"  # a Canadian code is its own value
    assert users_rejected(bundle) == {
        "1": "gender missing", "7": "zip code missing", "8": "garbled zip code: control character",
        "9": "garbled zip code: C1 control character (Windows-1252 text read as ISO-8859-1?)",  # curly quotes
    }


OCCUPATION_CODES = "occupation not one of " + ", ".join(str(code) for code in range(21))  # README: codes 0-20


def test_ml_fields_outside_the_readme_domains(tmp_path):
    users = good_ml_users(2) + [
        "3::m::25::3::12345", "4::Female::25::3::12345", "5::X::25::3::12345", "6::F::25::99::12345",
        "7::F::25::x1::12345", "abc::F::25::3::12345", " 8 :: M :: 25 :: 3 :: 12345 ",
    ]
    ratings = ml_ratings_for(range(1, 9)) + ["abc::1::4::978300000"]
    bundle = clean_ml(tmp_path, users, ratings)
    assert users_rejected(bundle) == {
        "3": "gender not one of F, M", "4": "gender not one of F, M", "5": "gender not one of F, M",
        "6": OCCUPATION_CODES, "7": OCCUPATION_CODES, "abc": "user_id not an integer",
    }
    # Ids and fields are trimmed like the label: ' 8 ' is user 8, and its ratings are kept.
    assert bundle.frame("users").filter(pl.col("user_id") == "8").select("gender", "zip").row(0) == ("M", "12345")
    assert bundle.frame("interactions").filter(pl.col("user_id") == "8").height == 3


def test_ml_implausible_timestamps(tmp_path):
    ratings = ml_ratings_for(range(1, 3)) + [
        "1::4::3::0", "1::5::3::-5", "1::6::3::97", "1::7::3::", "1::8::3::97830000x", "2::4::3::1072915200",
    ]
    movies = [f"{i}::Movie {i} (1999)::Drama" for i in range(1, 9)]
    bundle = clean_logs_from_raw(
        read_movielens(movielens_dir(tmp_path, good_ml_users(2), ratings, movies=movies, extra=None)), SPECS["movielens"])
    by_line = dict(bundle.frame("rejected").select("line", "reason").iter_rows())
    outside = "timestamp outside 2000-01-01..2003-12-31 (ML-1M's users joined in 2000, the data is from 2000-2003)"
    assert by_line == {7: outside, 8: outside, 9: outside, 10: "timestamp missing", 11: "timestamp not an integer",
                       12: outside}
    assert bundle.frame("interactions").height == 6


def test_malformed_lines_are_rejected_with_file_and_line(tmp_path):
    ratings = ml_ratings_for(range(1, 3)) + ["1::2::5", "", "2::3::4::978300000::extra"]
    bundle = clean_ml(tmp_path, good_ml_users(2), ratings)
    malformed = bundle.frame("rejected").filter(pl.col("reason").str.starts_with("malformed line"))
    assert malformed.select("source_file", "line").rows() == [("ml-1m/ratings.dat", 7), ("ml-1m/ratings.dat", 8), ("ml-1m/ratings.dat", 9)]
    assert malformed["value"].to_list() == ["1::2::5", "", "2::3::4::978300000::extra"]
    assert bundle.frame("interactions").height == 6


def test_duplicate_and_out_of_range_ratings(tmp_path):
    ratings = ml_ratings_for(range(1, 3)) + ["1::1::5::978300001", "2::1::6::978300002", "2::2::x::978300003"]
    bundle = clean_ml(tmp_path, good_ml_users(2), ratings)
    counts = reasons(bundle)
    assert counts["duplicate user_id/item_id"] == 1
    # A built-in's rejected rows stay as they were: another rating (5, the kept one 3) is not spelled out.
    assert bundle.frame("rejected").filter(pl.col("reason").str.starts_with("duplicate")).select("reason", "value").rows() == [
        ("duplicate user_id/item_id", "1|1")]
    assert counts["label outside {1..5}"] == 1
    assert counts["label not a number"] == 1
    assert bundle.frame("interactions").height == 6


def test_users_with_fewer_than_two_items_are_dropped_with_their_rows(tmp_path):
    ratings = ml_ratings_for(range(1, 3)) + ["3::1::4::978300000"]
    bundle = clean_ml(tmp_path, good_ml_users(3), ratings)
    assert "3" not in bundle.frame("users")["user_id"].to_list()
    counts = reasons(bundle)
    assert counts["fewer than 2 items"] == 1
    assert counts["user has fewer than 2 items"] == 1


def test_unknown_user_and_item(tmp_path):
    ratings = ml_ratings_for(range(1, 3)) + ["9::1::4::978300000", "1::99::4::978300000"]
    bundle = clean_ml(tmp_path, good_ml_users(2), ratings)
    counts = reasons(bundle)
    assert counts["unknown user_id"] == 1 and counts["unknown item_id"] == 1


def bx_users(*rows: tuple[str, str | None]) -> list[str]:
    return [quoted(str(i), loc, age) for i, (loc, age) in enumerate(rows, start=1)]


def test_bx_age_bounds_missing_and_garbled_locations(tmp_path):
    users = bx_users(
        ("austin, texas, usa", "30"), ("austin, texas, usa", None), ("austin, texas, usa", "5"),
        ("austin, texas, usa", "101"), ("m\u00c3\u00bcnchen, bayern, germany", "40"), ("n/a, texas, usa", "40"),
        ("austin, usa", "40"), ("paris, , france", "33"), ("köln, nrw, germany", "28"),
        ("st. john`s, newfoundland, canada", "35"), ("66123, saarland, germany", "41"),
        ("kraków, ma\u00b3opolska, poland", "22"), ("shanghai, &#20013;&#22269;, china", "23"),
        ("mons-en-bar?ul, nord, france", "24"), ('"n/a", texas, usa', "25"), ('dallas, "texas", usa', "26"),
    )
    ratings = [quoted(str(u), isbn, "7") for u in range(1, 17) for isbn in ("0001", "0002")]
    bundle = clean_logs_from_raw(read_bookcrossing(bookcrossing_dir(tmp_path, users, ratings)), SPECS["bookcrossing"])
    kept = bundle.frame("users")
    assert kept["user_id"].to_list() == ["1", "10", "11", "16", "9"]
    assert users_rejected(bundle, "BX-Users.csv") == {
        "2": "age missing", "3": "age outside [10, 100]", "4": "age outside [10, 100]",
        "5": "garbled location (city): mojibake", "6": "location (city) missing",
        "7": "location not 'city, state, country'", "8": "location (state) missing",
        "12": "garbled location (state): stray symbol (text from another code page)",
        "13": "garbled location (state): HTML character reference",
        "14": "garbled location (city): lost characters ('?')", "15": "location (city) missing",
    }
    cities = dict(kept.select("user_id", "city").iter_rows())
    # Foreign spellings, apostrophes and a postal code in the city field are values of their own.
    assert cities == {"1": "austin", "9": "köln", "10": "st. john`s", "11": "66123", "16": "dallas"}
    assert kept.filter(pl.col("user_id") == "16")["state"].item() == "texas"


def test_bx_multiline_location_escaped_quotes_and_implicit_zero(tmp_path):
    users = [quoted("1", 'dallas, "texas", usa', "30"), '"2";"line\nbreak, texas, usa";"44"', quoted("3", "reno, nevada, usa", "50")]
    ratings = [quoted("1", "0001", "0"), quoted("1", "0002", "8"), quoted("1", "0003", "11"),
               quoted("3", "0001", "3"), quoted("3", "0002", "10")]
    raw = read_bookcrossing(bookcrossing_dir(tmp_path, users, ratings))
    assert raw.frame("users")["line"].to_list() == [2, 3, 5]  # record 2 spans lines 3-4
    bundle = clean_logs_from_raw(raw, SPECS["bookcrossing"])
    counts = reasons(bundle)
    assert counts["implicit rating 0 (not an explicit 1-10 rating)"] == 1
    assert counts["label outside {1..10}"] == 1
    assert bundle.frame("users")["user_id"].to_list() == ["3"]


def test_taobao_duplicates_merge_and_clicked_threshold(tmp_path):
    write_lines(tmp_path / "user_profile.csv", ["user_id,age,gender,city,segment,spend_level",
                                               "u1,30,F,Hangzhou,student,2", "u2,25,M,???,clerk,1", "u3,40,M,Beijing,clerk,3"], "utf-8")
    write_lines(tmp_path / "item_catalogue.csv", ["item_id,category,brand,price_level", "i1,c1,b1,1", "i2,c2,b2,2", "i3,c1,b3,3"], "utf-8")
    t = 1767225600  # 2026-01-01 00:00 UTC
    write_lines(tmp_path / "logs/dt=2026-01-01/impressions.csv", [
        "user_id,item_id,ts,clicked",
        f"u1,i1,{t},1", f"u1,i1,{t},1",  # logging duplicate
        f"u1,i2,{t + 1},0", f"u1,i2,{t + 50},1",  # the same item shown twice: one example, clicked
        f"u1,i3,{t + 2},0", "u1,i3", f"u2,i1,{t + 3},1", f"u2,i2,{t + 4},1",
        f"u3,i1,{t + 5},1", f"u3,i2,{t + 6},0", f"u3,i3,{t + 7},abc", "u3,i3,1767225,1",
    ], "utf-8")
    bundle = clean_logs_from_raw(read_taobao(tmp_path), SPECS["taobao"])
    interactions = bundle.frame("interactions")
    assert interactions.filter(pl.col("user_id") == "u1").select("item_id", "label").rows() == [("i1", 1.0), ("i2", 1.0), ("i3", 0.0)]
    counts = reasons(bundle)
    assert counts["duplicate user_id/item_id/ts/label"] == 1
    assert counts["city missing"] == 1  # '???'
    assert counts["label not a number"] == 1
    assert counts["timestamp outside 2001-09-09..2286-11-20 (10-digit epoch seconds)"] == 1  # a cut-off time
    assert counts["fewer than 2 clicked items"] == 1  # u3 clicked only i1
    merged = bundle.frame("rejected").filter(pl.col("reason").str.starts_with("repeated impression"))
    assert merged.select("line", "value").rows() == [(5, f"{t + 50},1.0")]  # kept: line 4, the first impression
    assert any(r.startswith("malformed line") for r in counts)
    assert bundle.frame("users")["user_id"].to_list() == ["u1"]


def assert_accounted(bundle, lines_per_file: dict[str, int]) -> None:
    """Every data line of every raw file is a kept row or a rejected row, counted from the frames."""
    accounting = bundle.frame("accounting")
    assert dict(accounting.select("source_file", "read").iter_rows()) == lines_per_file
    kept = pl.concat([bundle.frame(n).select("source_file") for n in ("users", "items", "interactions", "item_details")
                      if n in bundle.frames])
    for file, lines in lines_per_file.items():
        n_kept = kept.filter(pl.col("source_file") == file).height
        n_rejected = bundle.frame("rejected").filter(pl.col("source_file") == file).height
        assert n_kept + n_rejected == lines, file
    assert accounting.filter(pl.col("read") != pl.col("kept") + pl.col("rejected")).is_empty()


def test_every_movielens_line_is_kept_or_rejected(tmp_path):
    users = good_ml_users(3) + ["4::F::99::1::12345", "", "1::F::1::1::12345"]
    ratings = ml_ratings_for(range(1, 4)) + ["1::1::5::1", "3::2::9::978300000", "bad line", "4::1::3::978300000"]
    extra = ML_EXTRA + [ML_EXTRA[0], "9::Nine::1999::G::x::Drama::D::w::A::p::u", "short::line"]
    raw = read_movielens(movielens_dir(tmp_path, users, ratings, extra=extra))
    bundle = clean_logs_from_raw(raw, SPECS["movielens"])
    assert_accounted(bundle, {"ml-1m/users.dat": 6, "ml-1m/movies.dat": 3, "ml-1m/ratings.dat": 13,
                              "ml-1m/movies_extrainfos.dat": 5})
    details = bundle.frame("rejected").filter(pl.col("source_file").str.ends_with("movies_extrainfos.dat"))
    assert details.select("line", "reason").rows() == [
        (5, "malformed line: expected 11 fields separated by '::', found 2"),
        (3, "duplicate item_id"), (4, "item_id not in ml-1m/movies.dat"),
    ]
    items = bundle.frame("items").sort("item_id")
    assert items.select("item_id", "rate").rows() == [("1", "G"), ("2", "R"), ("3", None)]
    assert items["genre"].to_list() == [["Animation", "Comedy"], ["Action", "Crime"], []]


def test_every_bookcrossing_line_is_kept_or_rejected(tmp_path):
    users = bx_users(("austin, texas, usa", "30"), ("reno, nevada, usa", None), ("a, b, c", "40")) + ['"4";"x"', ""]
    ratings = [quoted("1", "0001", "7"), quoted("1", "0002", "0"), quoted("1", "0003", "5"), quoted("2", "0001", "3"),
               quoted("9", "0001", "3"), quoted("3", "0001", "11"), quoted("1", "0001", "8"), ""]
    books = [quoted("0001", "A", "Ann", "1999", "P", "", "", ""), quoted("0002", "B", "Bob", "0", "Q", "", "", ""),
             quoted("0003", "C", "Cy", "2001", "R", "", "", ""), quoted("0001", "A again", "Ann", "1999", "P", "", "", "")]
    bundle = clean_logs_from_raw(read_bookcrossing(bookcrossing_dir(tmp_path, users, ratings, books)), SPECS["bookcrossing"])
    assert_accounted(bundle, {"bookcrossing/BX-Users.csv": 5, "bookcrossing/BX-Books.csv": 4,
                              "bookcrossing/BX-Book-Ratings.csv": 8})
    assert reasons(bundle)["malformed line: blank line"] == 2


def test_every_taobao_line_is_kept_or_rejected(tmp_path):
    t = 1767225600
    write_lines(tmp_path / "user_profile.csv", ["user_id,age,gender,city,segment,spend_level",
                                               "u1,30,F,Hangzhou,student,2", "u2,31,X,Beijing,clerk,3", ""], "utf-8")
    write_lines(tmp_path / "item_catalogue.csv", ["item_id,category,brand,price_level", "i1,c1,b1,1", "i2,c2,b2,2",
                                                 "i1,c1,b1,1"], "utf-8")
    write_lines(tmp_path / "logs/dt=2026-01-01/impressions.csv", [
        "user_id,item_id,ts,clicked", f"u1,i1,{t},1", f"u1,i1,{t + 9},0", f"u1,i2,{t},1", f"u2,i1,{t},1", "x", "",
    ], "utf-8")
    write_lines(tmp_path / "logs/dt=2026-01-02/impressions.csv", [
        "user_id,item_id,ts,clicked", f"u1,i1,{t + 86400},1", f"u1,i9,{t + 86400},1",
    ], "utf-8")
    bundle = clean_logs_from_raw(read_taobao(tmp_path), SPECS["taobao"])
    assert_accounted(bundle, {"taobao/user_profile.csv": 3, "taobao/item_catalogue.csv": 3,
                              "taobao/logs/dt=2026-01-01/impressions.csv": 6,
                              "taobao/logs/dt=2026-01-02/impressions.csv": 2})
    assert reasons(bundle)["gender not one of F, M"] == 1
    assert reasons(bundle)["malformed line: blank line"] == 2


@pytest.mark.parametrize("dataset", ["movielens", "bookcrossing"])
def test_missing_raw_files_name_files_directory_and_source(tmp_path, dataset):
    from assets.raw_files import MissingRawFilesError

    reader = read_movielens if dataset == "movielens" else read_bookcrossing
    with pytest.raises(MissingRawFilesError) as error:
        reader(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "To obtain them" in message
    assert ("ratings.dat" in message) if dataset == "movielens" else ("BX-Book-Ratings.csv" in message)


def test_a_directory_in_a_raw_files_place_is_named_not_taken_for_absent(tmp_path):
    from assets.dataset_spec import SpecError
    from assets.raw_files import MissingRawFilesError

    directory = movielens_dir(tmp_path, good_ml_users(2), ml_ratings_for(range(1, 3))) / "ml-1m"
    (directory / "movies_extrainfos.dat").unlink()
    (directory / "movies_extrainfos.dat").mkdir()  # optional, but a directory there is a mistake, not an absent file
    with pytest.raises(SpecError, match=r"items.details.file: a directory, not a file, in .* \(found 'movies_extrainfos.dat'\)"):
        read_movielens(tmp_path)
    (directory / "ratings.dat").unlink()
    (directory / "ratings.dat").mkdir()
    with pytest.raises(MissingRawFilesError, match=r"missing raw file\(s\) ratings.dat .*\(ratings.dat: there, but not a regular file\)"):
        read_movielens(tmp_path)


def test_duplicate_user_keeps_the_first_line_and_names_what_differs(tmp_path):
    users = good_ml_users(2) + ["1::F::25::3::12345", good_ml_users(2)[1]]  # user 1 with another profile; user 2 again
    bundle = clean_ml(tmp_path, users, ml_ratings_for(range(1, 3)))
    rejected = bundle.frame("rejected").sort("line").select("record_id", "line", "reason", "value").rows()
    assert rejected == [
        ("1", 3, "duplicate user_id with other values than its first row",
         "age '25', occupation '3', zip '12345' (line 1: age '18', occupation '1', zip '10001')"),
        ("2", 4, "duplicate user_id", "2"),  # the same profile twice: nothing was chosen
    ]
    assert bundle.frame("users").filter(pl.col("user_id") == "1")["line"].item() == 1


def test_utf8_logs_keep_blank_lines_and_line_numbers(tmp_path):
    write_lines(tmp_path / "user_profile.csv", ["user_id,age,gender,city,segment,spend_level", "u1,30,F,Hangzhou,student,2"], "utf-8")
    write_lines(tmp_path / "item_catalogue.csv", ["item_id,category,brand,price_level", "i1,c1,b1,1", "i2,c2,b2,2"], "utf-8")
    write_lines(tmp_path / "logs/dt=2026-01-02/impressions.csv",
                ["user_id,item_id,ts,clicked", "u1,i1,100,1", "", "u1,i2,101,1"], "utf-8", newline="\r\n")
    raw = read_taobao(tmp_path)
    assert raw.frame("interactions")["line"].to_list() == [2, 4]
    assert raw.frame("malformed").select("line", "reason").rows() == [(3, "blank line")]
    assert raw.frame("interactions")["label"].to_list() == ["1", "1"]  # no stray '\r'


def test_a_builtin_log_cut_off_at_its_end_keeps_its_plain_reason(tmp_path):
    # A dataset you add gets "(a notes or totals row at the end of the file? ...)" for such a last line; taobao is
    # also cleaned in user shards, which do not see a file's end, and the built-ins' outputs are fixed.
    write_lines(tmp_path / "user_profile.csv", ["user_id,age,gender,city,segment,spend_level", "u1,30,F,Hangzhou,student,2"], "utf-8")
    write_lines(tmp_path / "item_catalogue.csv", ["item_id,category,brand,price_level", "i1,c1,b1,1", "i2,c2,b2,2"], "utf-8")
    write_lines(tmp_path / "logs/dt=2026-01-02/impressions.csv",
                ["user_id,item_id,ts,clicked", "u1,i1,1700000000,1", "u1,i2,1700000001,1", "u1,i"], "utf-8")
    rejected = clean_logs_from_raw(read_taobao(tmp_path), SPECS["taobao"]).frame("rejected")
    assert rejected.filter(pl.col("line") == 4)["reason"].to_list() == [
        "malformed line: expected 4 fields separated by ',', found 2"]


def test_cleaning_gives_the_same_bytes_twice(tmp_path):
    from assets.taobao_generator import GeneratorConfig, generate

    generate(tmp_path / "taobao", GeneratorConfig(n_users=300, n_items=100, n_days=3))
    hashes = {clean_logs_from_raw(read_taobao(tmp_path / "taobao"), SPECS["taobao"]).content_hash() for _ in range(3)}
    assert len(hashes) == 1  # joins keep their order, the accounting is rebuilt from values


def test_the_content_hash_depends_on_the_rows_not_on_how_the_frame_was_built():
    from assets.bundle import Bundle

    names = [f"taobao/logs/dt=2026-01-{d:02d}/impressions.csv" for d in range(1, 15)]  # longer than a view's inline 12 bytes
    literal = pl.DataFrame({"source_file": names, "read": [3] * len(names)})
    # the same rows from a group-by: their strings are views into the group-by's own buffers
    # (Arrow IPC wrote those buffers as they were: another hash before the canonical serialization)
    blocks = pl.concat([pl.DataFrame({"source_file": names[::-1] * 1000, "read": [1] * 14000})] * 3)  # a log read in blocks
    grouped = blocks.group_by("source_file").agg(pl.col("read").sum() // 1000).sort("source_file")
    chunked = pl.concat([literal.head(5), literal.tail(9)], rechunk=False)
    assert grouped.equals(literal) and chunked.equals(literal) and chunked.n_chunks() == 2
    hashes = {Bundle(frames={"read": f}).content_hash() for f in (literal, grouped, chunked)}
    assert len(hashes) == 1
    assert Bundle(frames={"read": literal.with_columns(pl.col("read") + 1)}).content_hash() not in hashes


def test_the_content_hash_of_rows_with_nulls_is_the_same_computed_or_read_back_from_their_file(tmp_path):
    # The bytes under a null went into the hash as the step left them (`when(...).then(x)` keeps x there),
    # and so did the bits after a boolean column's last row; a frame read back from its Parquet file has
    # zeros: every evaluation's, champion's and the report's stored files hashed to another value than
    # their artifact row.
    from assets.bundle import Bundle

    base = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "n": [1, 2, 3, 4], "s": ["a", "bb", "c", "d"], "b": [True] * 4,
                         "d": pl.Series([1, 2, 3, 4]).cast(pl.Date)})
    computed = base.select(pl.when(pl.col("x") > 2).then(pl.col(c)).alias(c) for c in base.columns).with_columns(
        empty=pl.lit(None, dtype=pl.String), promoted=pl.lit(True))  # lit(True) sets the bits after the last row too
    computed.write_parquet(tmp_path / "frame.parquet")
    read = pl.read_parquet(tmp_path / "frame.parquet")
    assert read.equals(computed)
    hashes = {Bundle(frames={"f": f}).content_hash() for f in (computed, read, read.slice(0, 4), read.rechunk())}
    assert len(hashes) == 1
    assert Bundle(frames={"f": read.with_columns(pl.col("x").fill_null(0.0))}).content_hash() not in hashes  # a null is no zero
    assert Bundle(frames={"f": read.with_columns(promoted=pl.lit(False))}).content_hash() not in hashes
    assert Bundle(frames={"f": base}).content_hash() == Bundle(frames={"f": pl.read_parquet(
        io_roundtrip(base, tmp_path))}).content_hash()


def test_nested_columns_with_nulls_hash_by_their_values_not_the_bytes_under_the_nulls(tmp_path):
    # Lists and structs were hashed as they were: a null list over elements (Arrow keeps them, polars' when/then
    # too), a null element or a null struct over values, the bits after a list of booleans' last element. The
    # same rows built two ways, or read back from their Parquet file, hashed apart.
    import numpy as np
    import pyarrow as pa

    from assets.bundle import Bundle

    def ints(values: list[int], valid: list[bool]) -> pa.Array:
        """int64 with `values` under the nulls too (pa.array would write zeros there)."""
        bitmap = pa.py_buffer(np.packbits(np.array(valid), bitorder="little").tobytes())
        return pa.Array.from_buffers(pa.int64(), len(values), [bitmap, pa.py_buffer(np.array(values).tobytes())],
                                     null_count=valid.count(False))

    def frame(garbage: int) -> pl.DataFrame:
        mask = pa.array([False, True, False])
        # entry 2 null over `garbage` elements; element 2 of entry 1 null over the value `garbage`
        lists = pa.LargeListArray.from_arrays(pa.array([0, 2, 2 + garbage, 3 + garbage], type=pa.int64()),
                                              ints([1, garbage, *[garbage] * garbage, 3], [True, False, *[True] * garbage, True]),
                                              mask=mask)
        texts = pa.LargeListArray.from_arrays(pa.array([0, 1, 2, 3], type=pa.int64()),
                                              pa.array(["a", f"x{garbage}", "c"], type=pa.large_string()), mask=mask)
        structs = pa.StructArray.from_arrays([ints([1, garbage, 3], [True, True, True]),
                                              pa.array(["a", f"y{garbage}", None], type=pa.large_string())],
                                             names=["n", "s"], mask=mask)
        flags = pa.LargeListArray.from_arrays(pa.array([0, 1, 1, 2], type=pa.int64()),
                                              pa.array([True, True] + [bool(garbage)] * 6)[:2])
        fixed = pa.FixedSizeListArray.from_arrays(ints([1, 2, garbage, garbage, 5, 6], [True] * 6), 2, mask=mask)
        return pl.DataFrame([pl.Series("lists", lists), pl.Series("texts", texts), pl.Series("structs", structs),
                             pl.Series("flags", flags), pl.Series("fixed", fixed)])

    built = [frame(garbage) for garbage in (0, 7)]
    assert built[0].equals(built[1]) and built[0]["lists"].to_list() == [[1, None], None, [3]]
    built[1].write_parquet(tmp_path / "nested.parquet")
    read = pl.read_parquet(tmp_path / "nested.parquet")
    assert read.equals(built[0])
    hashes = {Bundle(frames={"f": f}).content_hash() for f in (*built, read)}
    assert len(hashes) == 1
    changed = built[0].with_columns(pl.Series("lists", [[1, None], [], [3]]))  # an empty list is no null
    assert Bundle(frames={"f": changed}).content_hash() not in hashes


def io_roundtrip(frame: pl.DataFrame, directory) -> str:
    """`frame` written to a Parquet file; its path."""
    path = directory / "base.parquet"
    frame.write_parquet(path)
    return str(path)


def test_the_same_raw_files_hash_the_same_wherever_their_spec_and_files_lie(tmp_path):
    # The raw read's info named the spec file by its absolute path, and the hash took it in: the same files
    # read through two checkouts (or a moved data directory) gave raw_logs two content hashes. The spec's
    # bytes are among the hashed sources, so its place can stay out.
    import shutil

    from assets.custom_reader import read_custom
    from assets.dataset_spec import load_spec
    from tests.fixtures import ml100k_dir

    here = ml100k_dir(tmp_path / "here")
    there = shutil.copytree(here, tmp_path / "elsewhere" / "there")
    read_here, read_there = read_custom(load_spec(here)), read_custom(load_spec(there))
    assert read_here.info["spec_file"] != read_there.info["spec_file"]  # still recorded, as written
    assert read_here.content_hash() == read_there.content_hash()
    (there / "u.data").write_text((there / "u.data").read_text().replace("\t5\t", "\t4\t", 1))
    assert read_custom(load_spec(there)).content_hash() != read_here.content_hash()  # the bytes still count


def test_raw_sources_hash_by_name_and_bytes_in_any_directories():
    # Sorted by full path, a spec in the checkout and the data under PAML_DATA_DIR came in one order or the
    # other depending on where each lay: another hash for the same files.
    from assets.bundle import Bundle, SourceFile

    def bundle(spec_dir: str, data_dir: str) -> Bundle:
        return Bundle(frames={"t": pl.DataFrame({"x": [1]})}, sources=(
            SourceFile(path=f"{spec_dir}/movielens.toml", sha256="a" * 64, bytes=10),
            SourceFile(path=f"{data_dir}/ratings.dat", sha256="b" * 64, bytes=20)))

    assert bundle("/a/repo", "/m/data").content_hash() == bundle("/z/repo", "/m/data").content_hash()
    other = Bundle(frames={"t": pl.DataFrame({"x": [1]})}, sources=(
        SourceFile(path="/a/movielens.toml", sha256="c" * 64, bytes=10), SourceFile(path="/m/ratings.dat", sha256="b" * 64, bytes=20)))
    assert other.content_hash() != bundle("/a/repo", "/m/data").content_hash()  # the bytes still count


def test_the_console_counts_rejections_by_reason_over_every_file():
    from assets.clean_logs import reasons_text

    summary = pl.DataFrame({"source_file": ["a.csv", "b.csv", "a.csv", "b.csv"],
                            "reason": ["age missing", "age missing", "a reason longer than any table column would show", "z"],
                            "rows": [1200, 3, 40, 40]})
    assert reasons_text(summary).splitlines() == [
        "rejected 1,283 rows of 2 files; by reason (per file: the rejected_by_reason metadata):",
        "  1,203  age missing (in 2 files)",
        "     40  a reason longer than any table column would show",  # ties: by reason
        "     40  z"]
    assert reasons_text(summary, most=1).splitlines()[-1] == "     80  (2 other reasons)"
    assert reasons_text(summary.head(0)) == "rejected 0 rows"
