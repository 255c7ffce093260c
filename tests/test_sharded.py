"""Cleaning one user shard at a time keeps and rejects exactly what cleaning the whole log does."""

import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.cold_start_users import select_cold_start
from assets.raw_files import read_taobao
from assets.sharded import clean_sharded, shard_of, shard_taobao
from assets.specs import SPECS
from assets.taobao_generator import GeneratorConfig, generate

SPEC = SPECS["taobao"]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("taobao")
    generate(root, GeneratorConfig(seed=3, n_users=400, n_items=150, n_days=3))  # with the generator's dirt
    return root


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


@pytest.mark.parametrize(("shards", "block_bytes"), [(1, 1 << 26), (3, 4096)])
def test_sharded_cleaning_equals_whole_cleaning(log_dir, tmp_path, shards, block_bytes):
    # 4 KiB blocks: every file is read in many pieces, so line numbers must be carried across them.
    whole = clean_logs_from_raw(read_taobao(log_dir), SPEC)
    log = shard_taobao(log_dir, tmp_path / "raw", shards, block_bytes)
    sharded = clean_sharded(log, SPEC, tmp_path / "clean")
    assert sharded.users().equals(whole.frame("users"))
    assert sharded.items.equals(whole.frame("items"))
    interactions = sharded.interactions().collect()
    assert canonical(interactions).equals(canonical(whole.frame("interactions")))
    rejected = pl.concat([sharded.rejected, sharded.rejected_in_shards().collect()])
    assert rejected.height > 0 and canonical(rejected).equals(canonical(whole.frame("rejected")))
    assert sharded.accounting.equals(whole.frame("accounting"))
    assert sharded.truth.equals(whole.frame("truth"))
    # The cold-start ranking from a lazy scan of the shards is the eager one.
    assert select_cold_start(sharded.interactions()).equals(select_cold_start(whole.frame("interactions")))


def test_a_user_lives_in_one_shard(log_dir, tmp_path):
    log = shard_taobao(log_dir, tmp_path / "raw", 4)
    owners = pl.concat([log.part("interactions", k).select("user_id").unique().collect().with_columns(shard=pl.lit(k))
                        for k in range(4)])
    assert owners["user_id"].is_unique().all() and owners["shard"].n_unique() == 4
    padded = pl.DataFrame({"user_id": ["17", " 17 "]}).select(shard_of(pl.col("user_id"), 4))
    assert padded.to_series().n_unique() == 1  # a padded id is the same user, as cleaning trims it
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shard_taobao(log_dir, tmp_path / "none", 0)


def test_blocks_keep_line_numbers_and_a_cut_off_last_line(tmp_path):
    from assets.dataset_spec import load_builtin
    from assets.sharded import split_in_blocks

    path = tmp_path / "impressions.csv"
    lines = ["user_id,item_id,ts,clicked"] + [f"u{i},i{i},{i},0" for i in range(1, 40)]
    lines[17] = "broken line"
    path.write_text("\n".join(lines) + "\nu99,i99,99")  # the last line has no line end
    parts = list(split_in_blocks(path, "taobao/x.csv", load_builtin("taobao").interactions.columns, block_bytes=64))
    rows = pl.concat([r for r, _ in parts])
    malformed = pl.concat([m for _, m in parts])
    assert len(parts) > 5
    assert rows["line"].to_list() == [n for n in range(2, 41) if n != 18]  # header is line 1
    assert rows.filter(pl.col("line") == 40)["user_id"].item() == "u39"
    assert malformed["line"].to_list() == [18, 41]
    assert "cut off" in malformed.filter(pl.col("line") == 41)["reason"].item()


def test_a_day_read_in_blocks_equals_the_day_read_whole(log_dir, tmp_path):
    import pyarrow.parquet as pq

    from assets.taobao_logs import day_summary, read_day, read_day_in_blocks

    config = GeneratorConfig(seed=3, n_users=400, n_items=150, n_days=3)  # log_dir's generator settings
    whole = read_day(log_dir, "2026-01-02", "synthetic", config)
    blocks = read_day_in_blocks(log_dir, "2026-01-02", "synthetic", config, tmp_path / "scratch", block_bytes=20_000)
    assert set(blocks.parts) == {"interactions"} and "interactions" not in blocks.frames
    assert pq.ParquetFile(blocks.parts["interactions"].files[0]).num_row_groups > 3  # a row group per block
    for name in ("interactions", "malformed", "truth"):
        assert blocks.frame(name).equals(whole.frame(name)), name
    assert blocks.frame("malformed").height > 0  # the generator's dirt made it through the blocks
    assert (blocks.sources, blocks.info) == (whole.sources, whole.info)
    assert day_summary({"d": blocks}).equals(day_summary({"d": whole}))


def test_the_sharded_read_checks_the_layout_as_the_whole_read_does(tmp_path):
    import shutil

    from assets.raw_files import MissingRawFilesError
    from assets.raw_text import RawFileError

    directory = tmp_path / "taobao"
    shutil.copytree(log_dir_of(tmp_path), directory)
    with pytest.raises(MissingRawFilesError, match="no logs for 2026-01-09"):  # a window day without its file
        shard_taobao(directory, tmp_path / "a", 2, days=["2026-01-02", "2026-01-09"])
    (directory / "logs" / "dt=2026-01-02").rename(directory / "logs" / "dt=2026-1-2")
    with pytest.raises(RawFileError, match="'2026-1-2' is not a day"):
        shard_taobao(directory, tmp_path / "b", 2)
    # A window reads its own days: the stray entry is only named when a window day is missing.
    read = shard_taobao(directory, tmp_path / "b1", 2, days=["2026-01-01"]).read["source_file"].to_list()
    assert [f for f in read if "logs/" in f] == ["taobao/logs/dt=2026-01-01/impressions.csv"]
    with pytest.raises(MissingRawFilesError, match="no logs for 2026-01-02 .*entries that are not days: dt=2026-1-2"):
        shard_taobao(directory, tmp_path / "b2", 2, days=["2026-01-01", "2026-01-02"])
    shutil.rmtree(directory / "logs")
    with pytest.raises(MissingRawFilesError, match=r"logs/dt=\*/impressions.csv"):  # not an empty log that succeeds
        shard_taobao(directory, tmp_path / "c", 2)


def log_dir_of(tmp_path):
    root = tmp_path / "generated"
    generate(root, GeneratorConfig(seed=3, n_users=40, n_items=20, n_days=2))
    return root


def test_blocks_read_as_the_whole_file_and_errors_name_the_file(tmp_path):
    from assets.dataset_spec import load_builtin
    from assets.raw_files import split_lines
    from assets.raw_text import EmptyRawFileError, RawHeaderError
    from assets.sharded import split_in_blocks

    names = load_builtin("taobao").interactions.columns
    path = tmp_path / "impressions.csv"
    # Good lines, then more than a block of broken ones, then good lines again: a block holds no good line.
    lines = ["user_id,item_id,ts,clicked", *[f"u{i},i{i},{i},0" for i in range(5)], *["broken"] * 40,
             *[f"u{i},i{i},{i},1" for i in range(5)]]
    path.write_text("\n".join(lines) + "\n")
    parts = list(split_in_blocks(path, "taobao/x.csv", names, block_bytes=64))
    whole_rows, whole_bad = split_lines(path, "taobao/x.csv", ",", names, encoding="utf-8", header=True)
    assert pl.concat([r for r, _ in parts]).equals(whole_rows)
    assert pl.concat([m for _, m in parts]).equals(whole_bad)
    path.write_text("user_id,item_id,ts,clicked\n" + "broken\n" * 40)
    with pytest.raises(EmptyRawFileError, match=rf"\({path}\): none of its 40 lines .* line 2: 'broken'"):
        list(split_in_blocks(path, "taobao/x.csv", names, block_bytes=64))
    path.write_text("user_id,item_id,ts,clicked\n")
    with pytest.raises(EmptyRawFileError, match=rf"taobao/x.csv \({path}\): no data rows"):
        list(split_in_blocks(path, "taobao/x.csv", names, block_bytes=64))
    path.write_text("item_id,user_id,ts,clicked\ni1,u1,1,0\n")
    with pytest.raises(RawHeaderError, match=rf"taobao/x.csv \({path}\) line 1: expected the header"):
        list(split_in_blocks(path, "taobao/x.csv", names, block_bytes=64))


def test_a_day_that_fails_to_read_in_blocks_leaves_no_scratch(tmp_path):
    from assets.raw_text import RawFileError
    from assets.taobao_logs import read_day_in_blocks

    directory = tmp_path / "taobao"
    generate(directory, GeneratorConfig(seed=3, n_users=40, n_items=20, n_days=1))
    day = directory / "logs" / "dt=2026-01-01" / "impressions.csv"
    day.write_text("user_id,item_id,ts,clicked\n" + "broken\n" * 200)  # fails after its first blocks were written
    scratch = tmp_path / "scratch" / "taobao_daily_logs-2026-01-01-run"
    scratch.mkdir(parents=True)
    with pytest.raises(RawFileError, match="none of its 200 lines"):
        read_day_in_blocks(directory, "2026-01-01", "provided", GeneratorConfig(), scratch, block_bytes=256)
    assert not scratch.exists()  # a failed nightly run must not leave its partial shards behind
