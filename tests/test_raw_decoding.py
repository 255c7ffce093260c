"""Raw files decoded strictly: BOMs, wrong encodings, NUL bytes, empty and cut-off files.

Each bad file either reads correctly or stops with one line naming the file, the encoding
and the line and byte; nothing turns into rows rejected under a misleading reason.
"""

import codecs

import polars as pl
import pytest

import assets.raw_text as raw_text
from assets.clean_logs import clean_logs_from_raw
from assets.raw_files import read_bookcrossing, read_movielens, read_taobao
from assets.raw_text import (
    EmptyRawFileError, RawEncodingError, RawFileError, RawHeaderError, decode_text, decoding_of, scan_bytes,
)
from assets.specs import SPECS
from tests.fixtures import bookcrossing_dir, good_ml_users, ml_ratings_for, movielens_dir, quoted, write_lines


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_utf8_bom_on_users_dat_is_removed(tmp_path):
    root = movielens_dir(tmp_path, good_ml_users(3), ml_ratings_for(range(1, 4)))
    users = root / "ml-1m" / "users.dat"
    users.write_bytes(codecs.BOM_UTF8 + users.read_bytes())
    bundle = clean_logs_from_raw(read_movielens(root), SPECS["movielens"])
    assert bundle.frame("users")["user_id"].to_list() == ["1", "2", "3"]
    assert bundle.frame("rejected").is_empty()  # user 1 and its ratings are not "unknown user_id"


def test_bookcrossing_users_saved_as_utf8_are_read_as_utf8(tmp_path):
    users = [quoted("1", "köln, nordrhein-westfalen, germany", "30"), quoted("2", "münchen, bayern, germany", "40"),
             quoted("3", "são paulo, são paulo, brazil", "50")]
    ratings = [quoted(str(u), isbn, "7") for u in (1, 2, 3) for isbn in ("0001", "0002")]
    root = bookcrossing_dir(tmp_path, users, ratings)
    path = root / "bookcrossing" / "BX-Users.csv"
    path.write_bytes(path.read_bytes().decode("latin-1").encode("utf-8"))
    raw = read_bookcrossing(root)
    assert raw.info["decoded_as"] == {"bookcrossing/BX-Users.csv": "utf-8 (declared latin-1)"}
    bundle = clean_logs_from_raw(raw, SPECS["bookcrossing"])
    assert bundle.frame("users")["city"].to_list() == ["köln", "münchen", "são paulo"]
    assert bundle.frame("rejected").is_empty()


@pytest.mark.parametrize("codec, found", [("utf-16", "UTF-16-LE byte-order mark"), ("utf-16-le", "NUL byte at line 1, byte 2")])
def test_utf16_files_stop_with_a_named_error(tmp_path, codec, found):
    root = movielens_dir(tmp_path, good_ml_users(2), ml_ratings_for(range(1, 3)))
    path = root / "ml-1m" / "ratings.dat"
    path.write_bytes(path.read_bytes().decode("latin-1").encode(codec))
    with pytest.raises(RawEncodingError) as error:
        read_movielens(root)
    message = one_line(error)
    assert "ml-1m/ratings.dat" in message and found in message and "latin-1" in message


def test_latin1_details_file_names_file_line_and_byte(tmp_path):
    extra = ["1::Toy Story::1995::G::x::Animation::J::w::T::p::u", "2::Amélie::2001::R::x::Comedy::J::w::A::p::u"]
    root = movielens_dir(tmp_path, good_ml_users(2), ml_ratings_for(range(1, 3)), extra=None)
    write_lines(root / "ml-1m" / "movies_extrainfos.dat", extra, encoding="latin-1")
    with pytest.raises(RawEncodingError) as error:
        read_movielens(root)
    # '2::Am' is 5 bytes, so 'é' (0xE9 in ISO-8859-1, invalid in UTF-8) is byte 6 of line 2.
    assert one_line(error).startswith("ml-1m/movies_extrainfos.dat (")
    assert "is not valid UTF-8 at line 2, byte 6 (0xE9 0x6C 0x69 0x65)" in str(error.value)


def test_bom_before_bytes_that_are_not_utf8_is_a_named_error(tmp_path):
    root = movielens_dir(tmp_path, ["1::F::1::10::48067", "2::M::56::16::7007\xe9"], ml_ratings_for(range(1, 3)))
    users = root / "ml-1m" / "users.dat"
    users.write_bytes(codecs.BOM_UTF8 + users.read_bytes())
    with pytest.raises(RawEncodingError, match=r"users.dat .*UTF-8 byte-order mark but is not valid UTF-8 at line 2, byte 19"):
        read_movielens(root)


def test_invalid_utf8_in_a_log_day_names_the_day_file(tmp_path):
    write_lines(tmp_path / "user_profile.csv", ["user_id,age,gender,city,segment,spend_level", "u1,30,F,Hangzhou,student,2"], "utf-8")
    write_lines(tmp_path / "item_catalogue.csv", ["item_id,category,brand,price_level", "i1,c1,b1,1"], "utf-8")
    day = write_lines(tmp_path / "logs/dt=2026-01-03/impressions.csv", ["user_id,item_id,ts,clicked", "u1,i1,1767225600,1"], "utf-8")
    day.write_bytes(day.read_bytes() + b"u1,i\xff1,1767225601,1\n")
    with pytest.raises(RawEncodingError) as error:
        read_taobao(tmp_path)
    assert "taobao/logs/dt=2026-01-03/impressions.csv" in one_line(error)
    assert "line 3, byte 5 (0xFF" in str(error.value)


def test_empty_and_header_only_files_are_named_errors(tmp_path):
    root = movielens_dir(tmp_path / "ml", good_ml_users(2), [])
    (root / "ml-1m" / "ratings.dat").write_bytes(b"")
    with pytest.raises(EmptyRawFileError, match=r"ml-1m/ratings.dat .*the file is empty"):
        read_movielens(root)
    (root / "ml-1m" / "ratings.dat").write_bytes(b"\n\n\r\n")
    with pytest.raises(EmptyRawFileError, match=r"ml-1m/ratings.dat .*no data rows"):
        read_movielens(root)
    bx = bookcrossing_dir(tmp_path / "bx", [quoted("1", "a, b, c", "30")], [])
    with pytest.raises(EmptyRawFileError, match=r"bookcrossing/BX-Book-Ratings.csv .*no data rows"):
        read_bookcrossing(bx)


def test_a_file_in_another_layout_is_one_error_not_thousands_of_rows(tmp_path):
    ratings = [line.replace("::", "\t") for line in ml_ratings_for(range(1, 3))]
    root = movielens_dir(tmp_path, good_ml_users(2), ratings)
    with pytest.raises(EmptyRawFileError) as error:
        read_movielens(root)
    assert "ml-1m/ratings.dat" in one_line(error)
    assert "none of its 6 lines has the expected 4 fields; line 1: '1\\t1\\t3\\t978300011'" in str(error.value)


def test_a_wrong_or_missing_header_is_a_named_error(tmp_path):
    write_lines(tmp_path / "user_profile.csv", ["user_id,gender,age,city,segment,spend_level", "u1,F,30,Hangzhou,student,2"], "utf-8")
    write_lines(tmp_path / "item_catalogue.csv", ["item_id,category,brand,price_level", "i1,c1,b1,1"], "utf-8")
    write_lines(tmp_path / "logs/dt=2026-01-01/impressions.csv", ["user_id,item_id,ts,clicked", "u1,i1,1767225600,1"], "utf-8")
    with pytest.raises(RawHeaderError, match=r"taobao/user_profile.csv .* line 1: expected the header user_id, age, gender"):
        read_taobao(tmp_path)
    root = bookcrossing_dir(tmp_path / "bx", [quoted("1", "a, b, c", "30")], [quoted("1", "0001", "5")])
    ratings = root / "bookcrossing" / "BX-Book-Ratings.csv"
    ratings.write_bytes(b"\r\n".join(ratings.read_bytes().split(b"\r\n")[1:]))  # header line dropped
    # The built-in spec names the columns user_id, isbn, book_rating; line 1 must name them ('User-ID' does).
    with pytest.raises(RawHeaderError, match=r"BX-Book-Ratings.csv .* line 1: expected the header user_id, isbn, book_rating; found 1, 0001, 5"):
        read_bookcrossing(root)


def test_cut_off_last_lines_are_quarantined_as_cut_off(tmp_path):
    root = movielens_dir(tmp_path / "ml", good_ml_users(2), ml_ratings_for(range(1, 3)))
    ratings = root / "ml-1m" / "ratings.dat"
    ratings.write_bytes(ratings.read_bytes() + b"2::3::4")  # a writer died mid-line
    raw = read_movielens(root)
    assert raw.frame("malformed").select("line", "reason").rows() == [
        (7, "expected 4 fields separated by '::', found 3 (last line has no line ending: file cut off?)")]
    root = bookcrossing_dir(tmp_path / "bx", [quoted("1", "a, b, c", "30")], [quoted("1", "0001", "5"), quoted("1", "0002", "7")])
    ratings = root / "bookcrossing" / "BX-Book-Ratings.csv"
    ratings.write_bytes(ratings.read_bytes()[:-4])  # '"7"\r\n' cut to '"'
    raw = read_bookcrossing(root)
    bad = raw.frame("malformed")
    assert bad.select("line", "text").rows() == [(3, '"1";"0002";"')]
    assert bad["reason"].item().startswith("the file ends inside a quoted field")
    assert raw.frame("interactions")["label"].to_list() == ["5"]


def test_utf8_sequences_split_across_scan_chunks_are_not_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(raw_text, "CHUNK_BYTES", 3)  # every multi-byte letter straddles a chunk edge
    path = tmp_path / "names.csv"
    path.write_bytes("id,name\n1,Zürich\n2,São Paulo 東京 🙂\n".encode())
    assert decoding_of(path, "names.csv", "utf-8").encoding == "utf-8"
    path.write_bytes("id,name\n1,Zürich\n2,S".encode() + b"\xe3o\n")  # ISO-8859-1 'ã' in a UTF-8 file
    scan = scan_bytes(path, 0)
    assert scan.utf8_error_at == len("id,name\n1,Zürich\n2,S".encode())
    with pytest.raises(RawEncodingError, match=r"line 3, byte 4 \(0xE3 0x6F"):
        decoding_of(path, "names.csv", "utf-8")


def test_every_reader_gives_one_blank_line_reason(tmp_path):
    ml = read_movielens(movielens_dir(tmp_path / "ml", good_ml_users(2) + ["  "], ml_ratings_for(range(1, 3)) + [""]))
    bx = read_bookcrossing(bookcrossing_dir(tmp_path / "bx", [quoted("1", "a, b, c", "30"), " "], [quoted("1", "0001", "5"), ""]))
    tb = tmp_path / "tb"
    write_lines(tb / "user_profile.csv", ["user_id,age,gender,city,segment,spend_level", "u1,30,F,Hangzhou,student,2", "\t"], "utf-8")
    write_lines(tb / "item_catalogue.csv", ["item_id,category,brand,price_level", "i1,c1,b1,1"], "utf-8")
    write_lines(tb / "logs/dt=2026-01-01/impressions.csv", ["user_id,item_id,ts,clicked", "u1,i1,1767225600,1", ""], "utf-8")
    for raw in (ml, bx, read_taobao(tb)):
        assert set(raw.frame("malformed")["reason"]) == {"blank line"}
        assert raw.frame("malformed").height == 2
    assert pl.concat([ml.frame("malformed"), bx.frame("malformed")])["line"].to_list() == [3, 7, 3, 3]


def test_a_quote_never_closed_is_a_named_error_not_a_csv_traceback(tmp_path):
    # A quote opened on line 3 and never closed runs the rest of the file (unquoted fields) into
    # one field, past Python's csv limit of 131,072 characters.
    ratings = [quoted("1", "0001", "5"), '"1";"0002;7'] + ["2;0001;5"] * 20000
    root = bookcrossing_dir(tmp_path, [quoted("1", "a, b, c", "30"), quoted("2", "a, b, c", "30")], ratings)
    with pytest.raises(RawFileError) as error:
        read_bookcrossing(root)
    message = one_line(error)
    assert message.startswith("bookcrossing/BX-Book-Ratings.csv (")
    assert "line 3: field larger than field limit" in message and "a quote that is never closed? '\"1\";\"0002;7'" in message


def test_bytes_undefined_in_a_declared_encoding_name_line_and_byte(tmp_path, monkeypatch):
    path = tmp_path / "names.csv"
    path.write_bytes(b"id,name\n1,caf\xe9\n2,\x81x\n")  # 0x81 is not a cp1252 character
    with pytest.raises(RawEncodingError, match=r"names.csv .*is not valid cp1252 at line 3, byte 3 \(0x81 0x78"):
        decoding_of(path, "names.csv", "cp1252")
    monkeypatch.setattr(raw_text, "CHUNK_BYTES", 3)  # two-byte characters straddle the chunk edges
    path.write_bytes("id,name\n1,東京都\n".encode("shift_jis") + b"2,\x81\x20x\n")  # a lead byte without its trail byte
    with pytest.raises(RawEncodingError, match=r"is not valid shift_jis at line 3, byte 3 \(0x81 0x20"):
        decoding_of(path, "names.csv", "shift_jis")
    path.write_bytes("id,name\n1,東京都\n".encode("shift_jis"))
    assert decode_text(decoding_of(path, "names.csv", "shift_jis")) == "id,name\n1,東京都\n"


def test_only_single_byte_encodings_give_way_to_valid_utf8(tmp_path):
    assert all(raw_text.is_single_byte(e) for e in ("latin-1", "cp1252", "koi8-r", "iso-8859-8", "cp437"))
    assert not any(raw_text.is_single_byte(e) for e in ("utf-8", "shift_jis", "gbk", "big5", "euc-kr", "ascii"))
    path = tmp_path / "names.csv"
    path.write_bytes(b"id,name\n1,\xc3\xa9\n")  # valid UTF-8 ('\xe9'), and two half-width katakana in Shift-JIS
    assert decoding_of(path, "names.csv", "cp1252").encoding == "utf-8"  # cp1252 would read mojibake
    assert decode_text(decoding_of(path, "names.csv", "shift_jis")) == "id,name\n1,\uff83\uff69\n"


def test_a_stray_quote_loses_its_own_line_only(tmp_path):
    town = "austin, texas, usa"
    users = [quoted("8", town, "30"), f'"9";"{town};30', quoted("10", town, "20"),
             quoted("11", town, "20"), '"12";"a quoted', 'line break";"40";"extra"', quoted("13", town, "20")]
    ratings = [quoted(u, isbn, "5") for u in ("8", "9", "10", "11", "13") for isbn in ("0001", "0002")]
    raw = read_bookcrossing(bookcrossing_dir(tmp_path, users, ratings))
    # Line 4 was run into line 3's open quote; it is a whole record and is kept as one.
    assert raw.frame("users").select("line", "user_id").rows() == [(2, "8"), (4, "10"), (5, "11"), (8, "13")]
    bad = raw.frame("malformed").sort("line")
    assert bad.select("line", "text").rows() == [(3, f'"9";"{town};30'),
                                                 (6, '"12";"a quoted\nline break";"40";"extra"')]
    assert bad["reason"][0].startswith("a quote on this line is not closed (the csv reader ran lines 4..4 into it")
    assert bad["reason"][1] == "expected 3 fields separated by ';', found 4"  # a real quoted line break: never split
    clean = clean_logs_from_raw(raw, SPECS["bookcrossing"])  # the accounting adds up (it raises otherwise)
    assert clean.frame("rejected").filter(pl.col("reason") == "unknown user_id")["record_id"].to_list() == ["9|0001", "9|0002"]
    assert sorted(clean.frame("users")["user_id"].to_list()) == ["10", "11", "13", "8"]


def test_a_header_only_day_is_one_named_error_without_a_polars_warning(tmp_path):
    import warnings

    from assets.raw_files import split_lines

    day = tmp_path / "impressions.csv"
    day.write_text("user_id,item_id,ts,clicked\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # polars' "Comparisons with None" warning leaked into the user's output
        with pytest.raises(EmptyRawFileError, match=r"taobao/logs/dt=2026-01-01/impressions.csv .*no data rows"):
            split_lines(day, "taobao/logs/dt=2026-01-01/impressions.csv", ",", ("user_id", "item_id", "ts", "clicked"),
                        encoding="utf-8", header=True)


def test_a_compressed_download_not_read_says_to_unpack_it(tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    path = tmp_path / "ratings.dat"
    with zipfile.ZipFile(path, "w") as archive:  # ml-1m.zip saved under the file's name: several files
        archive.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n")
        archive.writestr("ml-1m/users.dat", "1::F::1::10::48067\n")
    with pytest.raises(RawEncodingError, match=r"ratings.dat \(.*\): a zip archive of 2 files \(ml-1m/ratings.dat, "
                                               r"ml-1m/users.dat\), not one text file; unzip it"):
        decoding_of(path, "ratings.dat", "latin-1")
    path.write_bytes(b"(\xb5/\xfd" + b"\x00" * 20)  # zstd: no module for it in Python's standard library
    with pytest.raises(RawEncodingError, match=r"a zstd-compressed file, not utf-8 text; decompress it \(unzstd\)"):
        decoding_of(path, "ratings.dat", "utf-8")
    path.write_bytes(b"PK,1\nBZh9,2\n")  # text that merely starts like an archive's name
    assert decoding_of(path, "ratings.dat", "utf-8").encoding == "utf-8"
    assert not (tmp_path / "home").exists()  # nothing was decompressed


def test_a_utf8_file_with_a_stray_latin1_byte_is_a_named_error_not_mojibake(tmp_path):
    cities = ("köln, nrw, germany", "münchen, bayern, germany", "são paulo, são paulo, brazil", "zürich, zürich, schweiz")
    users = [quoted(str(u), cities[u % 4], "30") for u in range(1, 9)]
    ratings = [quoted(str(u), isbn, "7") for u in range(1, 9) for isbn in ("0001", "0002")]
    root = bookcrossing_dir(tmp_path, users, ratings)
    path = root / "bookcrossing" / "BX-Users.csv"
    text = path.read_bytes().decode("latin-1").encode("utf-8")  # saved as UTF-8 by an editor ...
    path.write_bytes(text.replace(b'"30"', b'"3\xe90"', 1))  # ... then one byte typed in ISO-8859-1 (line 2)
    with pytest.raises(RawEncodingError) as error:
        read_bookcrossing(root)
    message = one_line(error)
    assert "bookcrossing/BX-Users.csv" in message and "mixes encodings" in message
    assert "line 2, byte 35 (0xE9 0x30" in message and "1 byte(s) are not" in message


def test_latin1_text_holding_some_mojibake_is_still_read_as_latin1(tmp_path):
    path = tmp_path / "users.csv"  # ISO-8859-1 accents (not UTF-8) outnumber UTF-8-looking pairs, as in BX-Users.csv
    path.write_bytes(b"id,city\n1,k\xf6ln\n2,m\xfcnchen\n3,z\xfcrich\n4,m\xc3\xbcnchen\n")
    assert decoding_of(path, "users.csv", "latin-1").encoding == "latin-1"


def test_utf8_counts_equal_a_character_by_character_count():
    # count_utf8 counts in C; against the definition, character by character, on text that mixes
    # ASCII, valid 2-4 byte sequences and stray bytes (lone continuation bytes, cut-short leads, 0xff).
    import random

    from assets.raw_text import count_utf8

    def by_hand(piece: bytes) -> tuple[int, int]:
        text = piece.decode("utf-8", errors="surrogateescape")
        return (sum(1 for c in text if ord(c) > 0x7F and not 0xDC80 <= ord(c) <= 0xDCFF),
                sum(1 for c in text if 0xDC80 <= ord(c) <= 0xDCFF))

    valid = [b"a", b";", b"\n", "é".encode(), "€".encode(), "😀".encode(), "\uffff".encode(), "\U0010ffff".encode()]
    # Stray bytes, and sequences that are not UTF-8 although shaped like it: a surrogate, an overlong '/',
    # a code point past U+10FFFF.
    parts = valid + [b"\xe9", b"\x80", b"\xc3", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]
    rng = random.Random(0)
    for k in range(600):
        piece = b"".join(rng.choice(valid if k % 2 else parts) for _ in range(rng.randrange(0, 40)))
        assert count_utf8(piece) == by_hand(piece), piece
    assert count_utf8(b"S\xc3\xa3o Paulo, \xe9") == (1, 1)  # a UTF-8 'ã', an ISO-8859-1 'é'


def test_latin1_text_with_as_much_mojibake_as_book_crossings_books_is_still_read_as_latin1(tmp_path):
    # BX-Books.csv as published (ISO-8859-1) holds titles double-encoded long ago: 'QuerschÃ?Â¼sse' is the bytes
    # C3 3F C2 BC (one stray byte, one valid UTF-8 pair), 'Saint-ExupÃ©ry' C3 A9 (a valid pair, no stray byte).
    # The shared 27,109-book subset written back in ISO-8859-1 has 630 such pairs and 522 stray bytes; main's
    # rule (more pairs than stray bytes) refused it as 'mixes encodings', which eaaf475 read as it always had.
    path = tmp_path / "BX-Books.csv"
    path.write_bytes(b'"isbn";"title"\r\n"1";"Quersch\xc3?\xc2\xbcsse"\r\n"2";"Die S\xc3?\xc2\xa4ule"\r\n'
                     b'"3";"N\xc3?\xc2\xa4he"\r\n"4";"Saint-Exup\xc3\xa9ry"\r\n"5";"C\xc3\xb3mo ser"\r\n')
    decoding = decoding_of(path, "bookcrossing/BX-Books.csv", "latin-1")  # 5 UTF-8 pairs, 3 stray bytes
    assert decoding.encoding == "latin-1"
    # A UTF-8 copy with a stray byte or two is still stopped (one per 4 UTF-8 characters or fewer).
    path.write_bytes("\n".join(f"{i};Querschüsse Säule Nähe Exupéry" for i in range(2)).encode() + b"\n9;L\xf6we\n")
    with pytest.raises(RawEncodingError, match=r"mixes encodings: 8 characters are UTF-8, but 1 byte\(s\) are not"):
        decoding_of(path, "bookcrossing/BX-Books.csv", "latin-1")



def ml_with_accents(root):
    movies = ["1::Amélie (2001)::Comedy", "2::Heat (1995)::Action", "3::Up (2009)::Comedy"]  # latin-1: the Python path
    return movielens_dir(root, good_ml_users(3), ml_ratings_for(range(1, 4)), movies=movies)


def test_files_of_cr_line_ends_read_as_the_same_rows(tmp_path):
    # Old Mac line ends (CR alone, no LF anywhere): MovieLens' '::' files are read line by line, and each CR ends one.
    root = ml_with_accents(tmp_path)
    expected = clean_logs_from_raw(read_movielens(root), SPECS["movielens"])
    directory = root / "ml-1m"
    for name in ("users.dat", "movies.dat", "ratings.dat", "movies_extrainfos.dat"):  # the last one is CRLF, UTF-8
        path = directory / name
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r"))
    cr = clean_logs_from_raw(read_movielens(root), SPECS["movielens"])
    for frame in ("users", "items", "item_details", "interactions", "rejected", "accounting"):
        assert cr.frame(frame).equals(expected.frame(frame)), frame
    ratings = directory / "ratings.dat"
    ratings.write_bytes(ratings.read_bytes()[:-1])  # no line end after the last line
    assert read_movielens(root).info["unterminated"] == {"ml-1m/ratings.dat": "line 9: '3::3::2::978300033'"}
    details = directory / "movies_extrainfos.dat"
    details.write_bytes(details.read_bytes().replace(b"Heat", b"H\xe9at"))  # not UTF-8, on line 2 of CR line ends
    with pytest.raises(RawEncodingError, match=r"is not valid UTF-8 at line 2, byte 5 \(0xE9"):
        read_movielens(root)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_a_lone_cr_that_joins_two_records_is_named_on_its_line(tmp_path, line_end):
    root = ml_with_accents(tmp_path)
    expected = clean_logs_from_raw(read_movielens(root), SPECS["movielens"])
    ratings = root / "ml-1m" / "ratings.dat"
    text = ratings.read_bytes().replace(b"\n", line_end)
    ratings.write_bytes(text)  # CRLF reads exactly as LF
    assert clean_logs_from_raw(read_movielens(root), SPECS["movielens"]).frame("interactions").equals(
        expected.frame("interactions"))
    ratings.write_bytes(text.replace(line_end, b"\r", 1))  # line 1's end is a CR alone
    bundle = clean_logs_from_raw(read_movielens(root), SPECS["movielens"])
    rejected = bundle.frame("rejected").filter(pl.col("source_file") == "ml-1m/ratings.dat").row(0, named=True)
    assert (rejected["line"], rejected["value"]) == (1, "1::1::3::978300011\r1::2::4::978300012")
    assert rejected["reason"] == ("malformed line: expected 4 fields separated by '::', found 7 (the line holds a "
                                  "carriage return (CR) alone: two records joined by an old Mac line end, or a "
                                  "stray CR in a field?)")
    # User 1 is left with one rating; the others' lines are counted by their line feeds, as an editor shows them.
    others = pl.col("user_id") != "1"
    assert bundle.frame("interactions").filter(others).equals(
        expected.frame("interactions").filter(others).with_columns(pl.col("line") - 1))


def test_the_read_files_line_names_a_long_list_by_its_ends():
    from assets.raw_logs import some_paths

    assert some_paths(["a", "b"]) == "a, b"
    days = [f"logs/dt=2026-01-{d:02d}/impressions.csv" for d in range(1, 15)] + ["users.csv"]
    line = some_paths(days)  # 15 files: the first 5, a count of the 8 left out, the last 2
    assert line.startswith("logs/dt=2026-01-01/impressions.csv, ") and ", ... (8 more), logs/dt=2026-01-14" in line
    assert line.endswith("users.csv (all of them: the raw_files metadata)") and "dt=2026-01-06" not in line
