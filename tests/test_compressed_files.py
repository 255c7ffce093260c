"""Raw files kept compressed, as public datasets ship them: gzip, bzip2 and xz text (and a zip of one
file) read as the text they hold, named as the compressed file in rejected rows and lineage; a
corrupt or cut-off download is one error naming the file. Fixtures are written by the tests."""

import bz2
import gzip
import lzma
import os
import re
import time
import zipfile
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.compressed import cache_root
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec
from assets.raw_files import read_movielens
from assets.raw_text import RawFileError
from pipelines import cli
from tests.fixtures import good_ml_users, ml25m_dir, ml_ratings_for, movielens_dir

COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A PAML_HOME of the test's own: the decompressed copies are written there."""
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def compress(path: Path, suffix: str) -> Path:
    """Replace `path` by its compressed copy `path + suffix`."""
    packed = path.with_name(path.name + suffix)
    packed.write_bytes(COMPRESSORS[suffix](path.read_bytes()))
    path.unlink()
    return packed


def name_files(spec: Path, suffix: str, names: tuple[str, ...] = ("ratings.csv",)) -> None:
    """Point the spec's `names` at their compressed copies."""
    text = spec.read_text()
    for name in names:
        text = text.replace(f'"{name}"', f'"{name}{suffix}"')
    spec.write_text(text)


def without_labels(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("source_file", strict=False)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_a_compressed_spec_dataset_cleans_as_its_text_and_names_the_compressed_file(tmp_path, suffix):
    directory = ml25m_dir(tmp_path, n_users=12, n_items=10)
    ratings = directory / "ratings.csv"
    with ratings.open("a") as handle:
        handle.write("3,oops\n")  # a malformed line: rejected with its line number
    n_lines = len(ratings.read_text().splitlines())
    expected = clean_logs_from_raw(read_custom(load_spec(directory)), load_spec(directory).spec)
    for name in ("ratings.csv", "movies.csv"):
        compress(directory / name, suffix)
    name_files(directory / "dataset.toml", suffix, ("ratings.csv", "movies.csv"))
    dataset = load_spec(directory)
    raw = read_custom(dataset)
    bundle = clean_logs_from_raw(raw, dataset.spec)
    for frame in ("interactions", "users", "items", "rejected"):
        assert without_labels(bundle.frame(frame)).equals(without_labels(expected.frame(frame))), frame
    rejected = bundle.frame("rejected").filter(pl.col("reason").str.starts_with("malformed"))
    # Named as the compressed file, at the line of its decompressed text.
    assert rejected.select("source_file", "line").rows() == [(f"ml25m/ratings.csv{suffix}", n_lines)]
    assert set(bundle.frame("interactions")["source_file"]) == {f"ml25m/ratings.csv{suffix}"}
    # Lineage records the compressed files themselves (what a person replaces), not the copies.
    sources = {Path(s.path).name: s for s in raw.sources}
    assert set(sources) == {"dataset.toml", f"ratings.csv{suffix}", f"movies.csv{suffix}"}
    assert sources[f"ratings.csv{suffix}"].bytes == (directory / f"ratings.csv{suffix}").stat().st_size


def test_a_compressed_file_is_decompressed_once_and_again_only_when_it_changes(tmp_path, home):
    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    compress(directory / "ratings.csv", ".gz")
    name_files(directory / "dataset.toml", ".gz")
    from assets.compressed import copies_written

    written = copies_written()["files"]
    read_custom(load_spec(directory))
    assert copies_written()["files"] == written + 1  # what the raw_logs step logs
    copies = sorted(cache_root().glob("*/ratings.csv"))
    assert len(copies) == 1 and cache_root() == (home / "decompressed").resolve()
    inode = copies[0].stat().st_ino  # a copy written again is a new file (renamed into place)
    read_custom(load_spec(directory))
    assert copies_written()["files"] == written + 1  # read from the copy: nothing written
    assert sorted(cache_root().glob("*/ratings.csv")) == copies and copies[0].stat().st_ino == inode
    # A changed download gets a copy of its own (the copies are named by the compressed bytes' SHA-256).
    (directory / "ratings.csv.gz").write_bytes(gzip.compress(b"userId,movieId,rating,timestamp\n1,1,4.0,1147880045\n"))
    raw = read_custom(load_spec(directory))
    # ... which replaces the old bytes' copy, once that is unused for an hour (a reader of the old bytes may
    # still hold it): a log downloaded again every day keeps one copy, not one a day.
    assert raw.frame("interactions").height == 1 and len(list(cache_root().glob("*/ratings.csv"))) == 2
    old_hour = time.time() - 2 * 3600
    os.utime(copies[0], (old_hour, old_hour))
    (directory / "ratings.csv.gz").write_bytes(gzip.compress(b"userId,movieId,rating,timestamp\n2,1,4.0,1147880045\n"))
    read_custom(load_spec(directory))
    now = sorted(cache_root().glob("*/ratings.csv"))
    assert len(now) == 2 and copies[0] not in now  # the hour-old copy went; the last hour's stays
    assert not list(cache_root().rglob("*.partial"))
    # The cache may be deleted at any time: the next read decompresses again.
    for copy in cache_root().glob("*/ratings.csv"):
        copy.unlink()
    assert read_custom(load_spec(directory)).frame("interactions").height == 1


def test_a_killed_decompressions_partial_copy_is_removed_by_the_next_once_an_hour_old(tmp_path):
    # A run killed while decompressing left its `.partial` copy (as large as the text) for good.
    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    compress(directory / "ratings.csv", ".gz")
    name_files(directory / "dataset.toml", ".gz")
    read_custom(load_spec(directory))
    [copy] = cache_root().glob("*/ratings.csv")
    killed, live = copy.with_name("ratings.csv.0123.partial"), copy.with_name("ratings.csv.4567.partial")
    killed.write_bytes(b"user"), live.write_bytes(b"user")
    old_hour = time.time() - 2 * 3600
    os.utime(killed, (old_hour, old_hour))
    copy.unlink()  # the cache deleted: the next read decompresses again
    assert read_custom(load_spec(directory)).frame("interactions").height > 0
    assert not killed.exists() and live.exists()  # a writer of the last hour may still be going


@pytest.mark.parametrize(("damage", "message"), [
    (lambda data: data[: len(data) // 2], r"a gzip-compressed file that cannot be decompressed: Compressed file ended "
                                          r"before the end-of-stream marker was reached: a corrupt or cut-off download\? "
                                          r"Fetch it again"),
    (lambda data: data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:],
     r"a gzip-compressed file that cannot be decompressed: .*a corrupt or cut-off download\?"),
])
def test_a_corrupt_or_cut_off_gzip_is_one_error_naming_the_file_and_leaves_no_copy(tmp_path, damage, message):
    directory = ml25m_dir(tmp_path, n_users=30, n_items=20)
    packed = compress(directory / "ratings.csv", ".gz")
    packed.write_bytes(damage(packed.read_bytes()))
    name_files(directory / "dataset.toml", ".gz")
    with pytest.raises(SpecError, match=rf"interactions.file: {packed}: {message}"):  # at `dataset add`: the header is read
        load_spec(directory)
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('file = "ratings.csv.gz"', 'file = "ratings.csv.gz"\nheader = false\n'
                                             'columns = ["userId", "movieId", "rating", "timestamp"]'))
    with pytest.raises(RawFileError, match=rf"^ml25m/ratings.csv.gz \({packed}\): {message}"):
        read_custom(load_spec(directory))  # the columns listed: the read itself names it
    assert not [p for p in cache_root().rglob("*") if p.is_file()]  # nothing half-written is left for a later read


def test_a_zip_of_one_file_is_read_and_of_several_is_named(tmp_path):
    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    expected = read_custom(load_spec(directory)).frame("interactions")
    ratings = directory / "ratings.csv"
    with zipfile.ZipFile(directory / "ratings.csv.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(ratings, "ratings.csv")
    with zipfile.ZipFile(directory / "both.zip", "w") as archive:
        archive.write(ratings, "ratings.csv")
        archive.write(directory / "movies.csv", "movies.csv")
    ratings.unlink()
    spec = directory / "dataset.toml"
    spec.write_text(spec.read_text().replace('file = "ratings.csv"', 'file = "ratings.csv.zip"'))
    assert without_labels(read_custom(load_spec(directory)).frame("interactions")).equals(without_labels(expected))
    spec.write_text(spec.read_text().replace('file = "ratings.csv.zip"', 'file = "both.zip"'))
    with pytest.raises(SpecError, match=r"both.zip: a zip archive of 2 files \(ratings.csv, movies.csv\), not one "
                                        r"text file; unzip it and point the reader at the text file"):
        load_spec(directory)


@pytest.mark.parametrize(("outer", "inner", "said"), [
    (".zip", gzip.compress, "a zip archive holding a gzip-compressed file (compressed twice)"),  # was 'a gzip-compressed file'
    (".gz", gzip.compress, "a gzip-compressed file holding a gzip-compressed file (compressed twice)"),
    (".gz", bz2.compress, "a gzip-compressed file holding a bzip2-compressed file (compressed twice)"),
])
def test_a_file_compressed_twice_is_named_as_such(tmp_path, outer, inner, said):
    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    ratings = directory / "ratings.csv"
    packed = directory / f"ratings.csv{outer}"
    if outer == ".zip":
        with zipfile.ZipFile(packed, "w") as archive:
            archive.writestr("ratings.csv.gz", inner(ratings.read_bytes()))
    else:
        packed.write_bytes(gzip.compress(inner(ratings.read_bytes())))
    ratings.unlink()
    name_files(directory / "dataset.toml", outer)
    with pytest.raises(SpecError, match=rf"{packed}: {re.escape(said)}; decompress the outer layer, then the inner one"):
        load_spec(directory)


def ml_files(root: Path) -> Path:
    return movielens_dir(root, good_ml_users(12), ml_ratings_for(range(1, 13)))


def test_a_builtin_dataset_kept_compressed_reads_as_its_text(tmp_path):
    plain = read_movielens(ml_files(tmp_path / "plain"))
    root = ml_files(tmp_path / "packed")
    compress(root / "ml-1m" / "ratings.dat", ".gz")
    compress(root / "ml-1m" / "users.dat", ".xz")
    compress(root / "ml-1m" / "movies_extrainfos.dat", ".bz2")  # the optional file, too
    packed = read_movielens(root)
    for frame in ("interactions", "users", "items", "item_details", "malformed"):
        assert without_labels(packed.frame(frame)).equals(without_labels(plain.frame(frame))), frame
    assert set(packed.frame("interactions")["source_file"]) == {"ml-1m/ratings.dat.gz"}
    assert {Path(s.path).name for s in packed.sources} >= {"ratings.dat.gz", "users.dat.xz", "movies_extrainfos.dat.bz2"}


def test_the_raw_files_sensor_watches_a_builtin_file_kept_compressed(tmp_path):
    from pipelines.automation import raw_files_changed
    from pipelines.resources import paml_resource

    data = ml_files(tmp_path / "data")
    packed = compress(data / "ml-1m" / "ratings.dat", ".gz")
    paml = paml_resource(tmp_path / "home", data)

    def tick(cursor):
        with dg.build_sensor_context(cursor=cursor, resources={"paml": paml}) as context:
            return raw_files_changed(context), context.cursor

    first, cursor = tick(None)
    assert isinstance(first, dg.SkipReason) and "movielens" in first.skip_message  # all its files are there
    second, cursor = tick(cursor)
    assert isinstance(second, dg.SkipReason)
    packed.write_bytes(gzip.compress("\n".join(ml_ratings_for(range(1, 13), items=(1, 2))).encode() + b"\n"))
    os.utime(packed, ns=(1, 1))  # a new download: another content, whatever its times
    third, _ = tick(cursor)
    assert [r.partition_key for r in third] == ["movielens"]


def test_dataset_add_and_the_data_steps_read_a_gzipped_click_log(tmp_path, capsys):
    from assets.cold_start_users import select_cold_start
    from assets.expectations import validate_clean_logs
    from assets.raw_logs import read_raw
    from assets.user_groups import user_groups_for
    from tests.fixtures import clicks_dir

    shop = clicks_dir(tmp_path, n_users=30, n_items=16)
    plain = read_custom(load_spec(shop))
    compress(shop / "clicks.csv", ".gz")
    compress(shop / "customers.csv", ".gz")
    spec = shop / "dataset.yaml"
    spec.write_text(spec.read_text().replace("clicks.csv", "clicks.csv.gz").replace("customers.csv", "customers.csv.gz"))
    assert cli.main(["dataset", "add", str(shop)]) == 0  # reads the labels of the gzipped log (0 and 1 both there)
    assert "registered dataset 'shop_clicks'" in capsys.readouterr().out
    raw = read_raw("shop_clicks", tmp_path / "none")
    assert without_labels(raw.frame("interactions")).equals(without_labels(plain.frame("interactions")))
    dataset = load_spec(shop)
    bundle = clean_logs_from_raw(raw, dataset.spec)
    assert bundle.frame("rejected").height == 0 and bundle.frame("users").height == 30
    assert [o for o in validate_clean_logs(bundle.frame("users"), bundle.frame("interactions"), dataset.spec) if not o.success] == []
    groups = user_groups_for(bundle.frame("users"), select_cold_start(bundle.frame("interactions")), dataset.spec.tagging_fields)
    assert set(groups["groups"]["group"]) <= {"major", "minor"} and groups["groups"].height == 24  # the 80% cold-start users


def test_a_compressed_file_of_cr_line_ends_is_split_at_its_crs_and_names_its_cut_off_line(tmp_path):
    from assets.raw_files import CUT_OFF, split_lines

    packed = tmp_path / "ratings.dat.gz"  # old Mac line ends inside a gzip: both readers' rules at once
    packed.write_bytes(gzip.compress(b"1::10::5::978300760\r2::11::4::978300761\r3::12::3::97830"))
    rows, bad = split_lines(packed, "ratings.dat.gz", "::", ("user_id", "item_id", "rating", "timestamp"),
                            encoding="latin-1", header=False)
    assert rows["user_id"].to_list() == ["1", "2", "3"] and rows["line"].to_list() == [1, 2, 3]
    assert rows["source_file"].unique().to_list() == ["ratings.dat.gz"] and bad.height == 0
    cut = (tmp_path / "cut.dat.gz")
    cut.write_bytes(gzip.compress(b"1::10::5::978300760\r2::11::4"))
    _, bad = split_lines(cut, "cut.dat.gz", "::", ("user_id", "item_id", "rating", "timestamp"), encoding="latin-1", header=False)
    assert bad["line"].to_list() == [2] and CUT_OFF in bad["reason"][0]


def test_a_dagster_step_writes_the_copies_under_its_resources_home_not_the_environments(tmp_path, home):
    from pipelines.resources import PamlResource

    directory = ml25m_dir(tmp_path, n_users=6, n_items=8)
    compress(directory / "ratings.csv", ".gz")
    name_files(directory / "dataset.toml", ".gz")
    configured = tmp_path / "configured-home"  # the resource's home (definitions, tests), not PAML_HOME
    with dg.build_init_resource_context() as context:
        resource = PamlResource(home=str(configured), data_dir=str(tmp_path))
        resource.setup_for_execution(context)
        try:
            read_custom(load_spec(directory))
        finally:
            resource.teardown_after_execution(context)
    assert len(list((configured / "decompressed").glob("*/ratings.csv"))) == 1
    assert not (home / "decompressed").exists()
    assert cache_root() == (home / "decompressed").resolve()  # outside a step: PAML_HOME again
