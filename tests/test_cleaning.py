"""Each cleaning rule against its own tiny fixture file."""

from pathlib import Path

import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.raw_files import read_bookcrossing, read_movielens, read_taobao
from assets.specs import SPECS
from tests.fixtures import bookcrossing_dir, good_ml_users, ml_ratings_for, movielens_dir, quoted, write_lines


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
    assert row["reason"] == "age code not one of ML-1M's buckets"
    assert (row["source_file"], row["line"], row["value"]) == ("ml-1m/users.dat", 2, "7")


def test_ml_blank_feature_and_garbled_zip(tmp_path):
    users = ["1::::25::10::48067", "2::M::25::10::4806x7", "3::M::25::10::98107-4914", "4::F::25::10::98107"]
    bundle = clean_ml(tmp_path, users, ml_ratings_for(range(1, 5)))
    assert bundle.frame("users")["user_id"].to_list() == ["3", "4"]
    by_id = dict(bundle.frame("rejected").filter(pl.col("source_file").str.ends_with("users.dat"))
                 .select("record_id", "reason").iter_rows())
    assert by_id == {"1": "blank gender", "2": "garbled zip code"}


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
    )
    ratings = [quoted(str(u), isbn, "7") for u in range(1, 10) for isbn in ("0001", "0002")]
    bundle = clean_logs_from_raw(read_bookcrossing(bookcrossing_dir(tmp_path, users, ratings)), SPECS["bookcrossing"])
    assert bundle.frame("users")["user_id"].to_list() == ["1", "9"]
    by_id = dict(bundle.frame("rejected").filter(pl.col("source_file").str.ends_with("BX-Users.csv"))
                 .select("record_id", "reason").iter_rows())
    assert by_id == {
        "2": "age missing", "3": "age outside [10, 100]", "4": "age outside [10, 100]",
        "5": "garbled location (city)", "6": "garbled location (city)",
        "7": "location not 'city, state, country'", "8": "garbled location (state)",
    }
    assert bundle.frame("users").filter(pl.col("user_id") == "9")["city"].item() == "köln"


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
    write_lines(tmp_path / "logs/dt=2026-01-01/impressions.csv", [
        "user_id,item_id,ts,clicked",
        "u1,i1,100,1", "u1,i1,100,1",  # logging duplicate
        "u1,i2,101,0", "u1,i2,150,1",  # the same item shown twice: one example, clicked
        "u1,i3,102,0", "u1,i3", "u2,i1,103,1", "u2,i2,104,1",
        "u3,i1,105,1", "u3,i2,106,0", "u3,i3,107,abc",
    ], "utf-8")
    bundle = clean_logs_from_raw(read_taobao(tmp_path), SPECS["taobao"])
    interactions = bundle.frame("interactions")
    assert interactions.filter(pl.col("user_id") == "u1").select("item_id", "label").rows() == [("i1", 1.0), ("i2", 1.0), ("i3", 0.0)]
    counts = reasons(bundle)
    assert counts["duplicate user_id/item_id/ts/label"] == 1
    assert counts["garbled city"] == 1
    assert counts["label not a number"] == 1
    assert counts["fewer than 2 clicked items"] == 1  # u3 clicked only i1
    assert any(r.startswith("malformed line") for r in counts)
    assert bundle.frame("users")["user_id"].to_list() == ["u1"]


def test_every_raw_row_is_kept_or_rejected(tmp_path):
    ratings = ml_ratings_for(range(1, 4)) + ["1::1::5::1", "3::2::9::1", "bad line"]
    raw = read_movielens(movielens_dir(tmp_path, good_ml_users(3) + ["4::F::99::1::12345"], ratings))
    bundle = clean_logs_from_raw(raw, SPECS["movielens"])
    rejected = bundle.frame("rejected")
    ratings_in = raw.frame("interactions").height + raw.frame("malformed").filter(pl.col("source_file").str.ends_with("ratings.dat")).height
    ratings_out = bundle.frame("interactions").height + rejected.filter(pl.col("source_file").str.ends_with("ratings.dat")).height
    assert ratings_in == ratings_out == len(ratings)


@pytest.mark.parametrize("dataset", ["movielens", "bookcrossing"])
def test_missing_raw_files_name_files_directory_and_source(tmp_path, dataset):
    from assets.raw_files import MissingRawFilesError

    reader = read_movielens if dataset == "movielens" else read_bookcrossing
    with pytest.raises(MissingRawFilesError) as error:
        reader(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "To obtain them" in message
    assert ("ratings.dat" in message) if dataset == "movielens" else ("BX-Book-Ratings.csv" in message)


def test_duplicate_user_keeps_the_first_line(tmp_path):
    users = good_ml_users(2) + ["1::F::25::3::12345"]
    bundle = clean_ml(tmp_path, users, ml_ratings_for(range(1, 3)))
    row = bundle.frame("rejected").filter(pl.col("reason") == "duplicate user_id").row(0, named=True)
    assert (row["record_id"], row["line"]) == ("1", 3)
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
