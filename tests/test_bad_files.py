"""Raw files a user might really have, each broken one way: every one reads right or stops with
one line naming the file, the line or row, and the value; rows it rejects keep their reason.

Fixtures are written by the tests (tests/fixtures.py); nothing here is real data.
"""

import pathlib

import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec
from assets.raw_files import HEADER_AGAIN, MissingRawFilesError, read_movielens
from assets.raw_text import RawFileError
from assets.specs import SPECS
from pipelines import cli
from tests.fixtures import clicks_dir, good_ml_users, ml25m_dir, ml_ratings_for, movielens_dir


def deny_reading(monkeypatch, denied: pathlib.Path) -> None:
    """Make opening `denied` fail as a file without read permission does (the tests run as root)."""
    real_open = pathlib.Path.open

    def guarded(self, *args, **kwargs):
        if self.resolve() == denied.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", guarded)


@pytest.mark.parametrize(("encode", "found"), [
    (lambda data: b"(\xb5/\xfd" + data, "a zstd-compressed file, not utf-8 text; decompress it (unzstd)"),  # gzip is read
    (lambda data: data.decode().encode("utf-16"), "starts with a UTF-16-LE byte-order mark"),
    (lambda data: data.decode().encode("utf-16-le"), "NUL byte on line 1: not utf-8 text"),
    (lambda data: b"", "interactions.file: the file is empty; expected the header line"),
])
def test_dataset_add_names_a_log_that_is_not_text_instead_of_garbage_columns(tmp_path, monkeypatch, encode, found):
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    shop = clicks_dir(tmp_path, n_users=3, n_items=4)
    (shop / "clicks.csv").write_bytes(encode((shop / "clicks.csv").read_bytes()))
    with pytest.raises(SystemExit) as error:
        cli.main(["dataset", "add", str(shop)])
    message = str(error.value)
    assert message.startswith("error: ") and "\n" not in message
    assert "interactions.file" in message and "clicks.csv" in message and found in message
    assert "\\x" not in message and "\x00" not in message  # no bytes of the file in the message


def test_a_raw_file_that_cannot_be_opened_is_one_named_error(tmp_path, monkeypatch):
    root = movielens_dir(tmp_path, good_ml_users(3), ml_ratings_for(range(1, 4)))
    deny_reading(monkeypatch, root / "ml-1m" / "users.dat")
    with pytest.raises(RawFileError, match=r"^ml-1m/users.dat \(.*users.dat\): cannot be read: Permission denied\.$"):
        read_movielens(root)


def test_a_spec_or_log_that_cannot_be_opened_is_a_spec_error(tmp_path, monkeypatch):
    shop = clicks_dir(tmp_path, n_users=3, n_items=4)
    deny_reading(monkeypatch, shop / "clicks.csv")
    with pytest.raises(SpecError, match=r"interactions.file: .*clicks.csv: cannot be read: Permission denied"):
        load_spec(shop)
    deny_reading(monkeypatch, shop / "dataset.yaml")
    with pytest.raises(SpecError, match=r"dataset.yaml: cannot be read: Permission denied"):
        load_spec(shop)


def test_a_header_line_among_the_data_is_rejected_as_such_not_read_as_a_row(tmp_path):
    ml25m = ml25m_dir(tmp_path, n_users=6, n_items=8)
    for name in ("movies.csv", "ratings.csv"):  # two downloads joined with cat: the second header is line 10 / 20
        path = ml25m / name
        lines = path.read_text().splitlines()
        path.write_text("\n".join([*lines[:9], lines[0], *lines[9:]]) + "\n")
    dataset = load_spec(ml25m)
    clean = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert "movieId" not in clean.frame("items")["item_id"].to_list()
    assert clean.frame("items").height == 8  # the header is no item of its own
    headers = clean.frame("rejected").filter(reason=f"malformed line: {HEADER_AGAIN}")
    assert sorted(zip(headers["source_file"], headers["line"], headers["value"])) == [
        ("ml25m/movies.csv", 10, "movieId,title,genres"), ("ml25m/ratings.csv", 10, "userId,movieId,rating,timestamp")]
    root = movielens_dir(tmp_path / "ml", good_ml_users(3), ml_ratings_for(range(1, 4)))  # '::' lines, no header
    ratings = root / "ml-1m" / "ratings.dat"
    ratings.write_text("User_ID::Movie_ID::Rating::Timestamp\n" + ratings.read_text(), encoding="latin-1")
    rejected = clean_logs_from_raw(read_movielens(root), SPECS["movielens"]).frame("rejected")
    assert rejected.select("line", "reason").rows() == [(1, f"malformed line: {HEADER_AGAIN}")]


PARQUET_SPEC = """
name = "pq_bytes"
label = { kind = "rating", min = 1, max = 5 }
interactions = { file = "log.parquet", user_id = "uid", item_id = "iid", label = "stars" }
[users.features]
country = { type = "categorical" }
[items.features]
kind = { type = "categorical" }
"""


def test_parquet_bytes_columns_read_as_text_or_name_the_row_and_others_are_not_read(tmp_path):
    log = {"uid": [b"u1", b"u1", b"u2", b"u2"], "iid": ["a", "b", "a", "b"], "stars": [4, 2, 5, 3],
           "country": ["fr", "fr", "de", "de"], "kind": ["x", "y", "x", "y"],
           "thumbnail": [b"\x89PNG\xff", b"\xff\xd8", b"\x00", b"\xfe"]}  # not text, and no column the spec reads
    pl.DataFrame(log).write_parquet(tmp_path / "log.parquet")
    (tmp_path / "dataset.toml").write_text(PARQUET_SPEC)
    dataset = load_spec(tmp_path)
    clean = clean_logs_from_raw(read_custom(dataset), dataset.spec)
    assert clean.frame("users")["user_id"].to_list() == ["u1", "u2"] and clean.frame("interactions").height == 4
    pl.DataFrame({**log, "uid": [b"u1", b"u1", b"u\xe92", b"u2"]}).write_parquet(tmp_path / "log.parquet")
    with pytest.raises(RawFileError) as error:
        read_custom(load_spec(tmp_path))
    assert str(error.value).endswith("column 'uid' holds bytes that are not UTF-8 text (1 rows); row 3: b'u\\xe92'")
    assert str(error.value).startswith("pq_bytes/log.parquet (")


def test_a_spec_saved_by_a_windows_editor_reads_or_says_how_to_save_it(tmp_path):
    ml25m = ml25m_dir(tmp_path, n_users=3, n_items=4)
    spec = ml25m / "dataset.toml"
    text = spec.read_text()
    spec.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))  # Notepad: UTF-8 with a BOM, CRLF
    assert load_spec(ml25m).spec.name == "ml25m"
    spec.write_bytes(text.encode("utf-16"))  # PowerShell's `>`
    with pytest.raises(SpecError, match=r"dataset.toml: the spec file is UTF-16-LE text .*; save it as UTF-8$"):
        load_spec(ml25m)
    spec.write_bytes(text.replace("[items]", "# caf\xe9\n[items]").encode("latin-1"))
    with pytest.raises(SpecError, match=r"dataset.toml: not UTF-8 text at line \d+, byte 6 \(0xE9 0x0A"):
        load_spec(ml25m)


def test_a_symbolic_link_that_loops_or_points_nowhere_is_named(tmp_path):
    ml25m = ml25m_dir(tmp_path, n_users=3, n_items=4)
    (ml25m / "ratings.csv").unlink()
    (ml25m / "ratings.csv").symlink_to(ml25m / "ratings.csv")
    with pytest.raises(SpecError, match=r"interactions.file: a symbolic link that loops, in .* \(found 'ratings.csv'\)"):
        load_spec(ml25m)
    (tmp_path / "spec.toml").symlink_to(tmp_path / "gone" / "dataset.toml")
    with pytest.raises(SpecError, match=r"spec.toml: a symbolic link to nothing \(it points at .*gone/dataset.toml\)"):
        load_spec(tmp_path / "spec.toml")


def test_a_raw_file_compressed_in_a_form_not_read_beside_its_place_is_named(tmp_path):
    root = movielens_dir(tmp_path, good_ml_users(3), ml_ratings_for(range(1, 4)))
    users = root / "ml-1m" / "users.dat"
    (root / "ml-1m" / "users.dat.zst").write_bytes(b"(\xb5/\xfd" + users.read_bytes())  # a .gz is read (test_compressed_files)
    users.unlink()
    with pytest.raises(MissingRawFilesError, match=r"missing raw file\(s\) users.dat in .* \(users.dat.zst: there, "
                                                   r"compressed in a form not read \(.gz, .bz2, .xz, .zip are\); decompress it there\)"):
        read_movielens(root)


def test_a_last_line_cut_short_that_still_parses_is_named_in_the_raw_info(tmp_path):
    ml25m = ml25m_dir(tmp_path, n_users=3, n_items=4)
    ratings = ml25m / "ratings.csv"
    data = ratings.read_bytes()
    ratings.write_bytes(data[:-6])  # cut mid-time: '...,11478' is still a time within the default range
    dataset = load_spec(ml25m)
    raw = read_custom(dataset)
    last = data[:-6].decode().splitlines()[-1]
    assert raw.info["unterminated"] == {"ml25m/ratings.csv": f"line {len(data.splitlines())}: {last!r}"}
    assert "unterminated" not in read_custom(load_spec(ml25m_dir(tmp_path / "whole", n_users=3, n_items=4))).info
