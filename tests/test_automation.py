"""Daily taobao log partitions, their window, and the automation around them (no daemon)."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.raw_files import MissingRawFilesError, read_taobao
from assets.taobao_logs import (
    WindowError, assemble_window, ensure_generated, log_directory, read_day, source_of, taobao_dataset, window_days,
)
from assets.raw_text import RawFileError
from assets.taobao_generator import GeneratorConfig
from pipelines.automation import DAILY_LOGS_CRON, raw_files_changed, taobao_files_changed
from pipelines.definitions import ASSETS, CHECKS, build_resources, defs
from pipelines.resources import paml_resource
from tests.fixtures import good_ml_users, ml_ratings_for, movielens_dir, write_lines

TINY = GeneratorConfig(n_users=200, n_items=100, n_days=3)
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]  # the 4th is past the generator's first 3


def days_of(tmp_path: Path, days: list[str], config: GeneratorConfig = TINY) -> dict:
    bundles = {}
    for day in days:
        directory, source = log_directory(tmp_path / "data", tmp_path / "home", config, day)
        bundles[day] = read_day(directory, day, source, config)
    return bundles


def test_a_window_of_days_is_the_dataset_read_directly(tmp_path):
    days = days_of(tmp_path, DAYS[:3])
    directory = ensure_generated(tmp_path / "home" / "raw" / "taobao", TINY)
    window = assemble_window(directory, days)
    direct = read_taobao(directory, max_days=3)
    for name in ("users", "items", "interactions", "malformed", "truth"):
        assert window.frame(name).equals(direct.frame(name)), name
    assert window.info["day_list"] == DAYS[:3]
    # Each day holds its own rows and the true groups of exactly the users active that day.
    first = days[DAYS[0]]
    assert set(first.frame("interactions")["source_file"]) == {"taobao/logs/dt=2026-01-01/impressions.csv"}
    assert set(first.frame("truth")["user_id"]) == set(first.frame("interactions")["user_id"])


def test_a_day_is_the_same_bytes_whenever_and_wherever_it_is_made(tmp_path):
    late = days_of(tmp_path / "a", DAYS)[DAYS[3]]  # made after the first three
    alone = days_of(tmp_path / "b", DAYS[3:])[DAYS[3]]  # made on its own
    assert late.content_hash() == alone.content_hash()
    assert late.frame("interactions").height > 0
    with pytest.raises(ValueError, match="before the first day"):
        log_directory(tmp_path / "data", tmp_path / "home", TINY, "2025-12-31")


def test_window_days_roll_and_name_what_is_missing():
    available = ["2026-01-01", "2026-01-02", "2026-01-04", "2026-01-05"]
    assert window_days(available, 3) == (["2026-01-04", "2026-01-05"], ["2026-01-03"])
    assert window_days(available, 2, end_day="2026-01-02") == (["2026-01-01", "2026-01-02"], [])
    # Days before the first day of logs are outside the calendar, not missing.
    assert window_days(available, 14, end_day="2026-01-02") == (["2026-01-01", "2026-01-02"], [])
    with pytest.raises(WindowError, match="backfill taobao_daily_logs"):
        window_days([], 3)
    with pytest.raises(WindowError, match="none of the days 2026-02-01..2026-02-03"):
        window_days(available, 3, end_day="2026-02-03")


def test_a_window_refuses_days_from_different_generators(tmp_path):
    mixed = days_of(tmp_path / "a", DAYS[:1]) | days_of(tmp_path / "b", DAYS[1:2], GeneratorConfig(n_users=150, n_items=100, n_days=3))
    with pytest.raises(WindowError, match="2026-01-02.*n_users.*150"):
        source_of(mixed)


def test_daily_partitions_feed_only_the_taobao_partition(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    resources = build_resources(tmp_path / "home", tmp_path / "data")
    tiny = {"ops": {"taobao_daily_logs": {"config": {"users": 200, "items": 100, "history_days": 3}}}}
    for day in DAYS[:3]:
        assert dg.materialize(ASSETS + CHECKS, selection="taobao_daily_logs", partition_key=day, run_config=tiny,
                              resources=resources, instance=instance).success
    window = dg.materialize(ASSETS + CHECKS, selection="taobao_log_window", partition_key="taobao", resources=resources,
                            instance=instance, run_config={"ops": {"taobao_log_window": {"config": {"days": 2}}}})
    metadata = window.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["first_day"].value, metadata["last_day"].value) == ("2026-01-02", "2026-01-03")
    assert metadata["dagster/row_count"].value > 0
    assert {c.name for c in metadata["dagster/column_schema"].value.columns} >= {"user_id", "item_id", "label"}
    graph = defs.resolve_asset_graph()
    raw, log_window = dg.AssetKey("raw_logs"), dg.AssetKey("taobao_log_window")
    mapping = graph.get_partition_mapping(raw, log_window)
    datasets = graph.get(raw).partitions_def
    for dataset, upstream in (("taobao", {"taobao"}), ("movielens", set()), ("bookcrossing", set())):
        result = mapping.get_upstream_mapped_partitions_result_for_partitions(
            datasets.subset_with_partition_keys([dataset]), datasets, graph.get(log_window).partitions_def)
        assert set(result.partitions_subset.get_partition_keys()) == upstream


def test_raw_files_sensor_baselines_then_reacts_to_changes(tmp_path):
    data = movielens_dir(tmp_path / "data", good_ml_users(3), ml_ratings_for(range(1, 4)))
    paml = paml_resource(tmp_path / "home", data)

    def tick(cursor):
        # `with`: the paml resource has a setup step (models/factors.py's fits directory)
        with dg.build_sensor_context(cursor=cursor, resources={"paml": paml}) as context:
            result = raw_files_changed(context)
            return result, context.cursor

    first, cursor = tick(None)
    assert isinstance(first, dg.SkipReason) and "movielens" in first.skip_message
    second, cursor = tick(cursor)
    assert isinstance(second, dg.SkipReason) and "unchanged" in second.skip_message
    write_lines(data / "ml-1m" / "ratings.dat", ml_ratings_for(range(1, 4), items=(1, 2)))
    third, cursor = tick(cursor)
    assert [r.partition_key for r in third] == ["movielens"]
    fourth, _ = tick(cursor)
    assert isinstance(fourth, dg.SkipReason)


def test_an_unreadable_raw_file_leaves_its_dataset_out_of_the_tick_not_the_sensor(tmp_path, monkeypatch):
    import assets.bundle

    data = movielens_dir(tmp_path / "data", good_ml_users(3), ml_ratings_for(range(1, 4)))
    paml = paml_resource(tmp_path / "home", data)
    with dg.build_sensor_context(resources={"paml": paml}) as context:
        assert "movielens" in raw_files_changed(context).skip_message
    real_digest = assets.bundle.file_digest

    def denied(path, digest):
        if Path(path).name == "ratings.dat":
            raise PermissionError(13, "Permission denied", str(path))  # root ignores chmod: deny it here
        return real_digest(path, digest)

    monkeypatch.setattr(assets.bundle, "file_digest", denied)
    with dg.build_sensor_context(resources={"paml": paml}) as context:
        result = raw_files_changed(context)  # no exception: the tick goes on without movielens
    assert isinstance(result, dg.SkipReason) and "movielens" not in result.skip_message


def test_every_asset_has_a_condition_owner_and_tags():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.automation_condition is not None, key
        assert node.owners == ["team:paml"], key
        assert {"layer", "partitioned_by"} <= set(node.tags), key
    daily = graph.get(dg.AssetKey("taobao_daily_logs")).automation_condition
    assert DAILY_LOGS_CRON in daily.get_label() or DAILY_LOGS_CRON in str(daily)
    sensor = defs.resolve_sensor_def("default_automation_condition_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_evaluation_follows_a_new_model_in_service(tmp_path):
    """An eval asset is requested once its upstream champion updates, and not again after."""
    instance = dg.DagsterInstance.ephemeral()
    selection = dg.AssetSelection.assets("melu_eval")
    result = dg.evaluate_automation_conditions(defs, instance, asset_selection=selection)
    assert result.total_requested == 0
    instance.report_runless_asset_event(dg.AssetMaterialization("melu_champion", partition="taobao"))
    result = dg.evaluate_automation_conditions(defs, instance, asset_selection=selection, cursor=result.cursor)
    assert result.get_requested_partitions(dg.AssetKey("melu_eval")) == {None}
    result = dg.evaluate_automation_conditions(defs, instance, asset_selection=selection, cursor=result.cursor)
    assert result.total_requested == 0


def test_an_incomplete_taobao_directory_is_an_error_not_synthetic_logs(tmp_path):
    # Real logs whose profile file is misnamed: the day must fail naming the file, not quietly
    # read the generator's synthetic users instead.
    from assets.raw_files import MissingRawFilesError
    from assets.taobao_generator import generate

    generate(tmp_path / "data" / "taobao", GeneratorConfig(n_users=30, n_items=20, n_days=1))
    (tmp_path / "data" / "taobao" / "user_profile.csv").rename(tmp_path / "data" / "taobao" / "users.csv")
    with pytest.raises(MissingRawFilesError, match=r"user_profile\.csv in .*data/taobao"):
        log_directory(tmp_path / "data", tmp_path / "home", TINY, DAYS[0])
    assert not (tmp_path / "home" / "raw").exists()  # nothing was generated


@pytest.mark.parametrize(("text", "message"), [
    ("uid,grp\nu1,major\n", r"line 1: expected the header user_id, true_group; found uid, grp"),
    ("user_id,true_group\nu1,major\nu2,major,extra\n", r"line 3: 'u2,major,extra' \(expected 2 fields"),
    ("user_id,true_group\nu1,major\nu2,minor_1\nu1,minor_2\n", r"line 4: a user_id listed before: 'u1','minor_2'"),
    ("user_id,true_group\nu1,\n", r"line 2: a blank user_id or true_group"),
])
def test_a_broken_ground_truth_names_its_file_line_and_value(tmp_path, text, message):
    from assets.raw_text import RawFileError
    from assets.taobao_logs import read_truth

    (tmp_path / "_truth").mkdir()
    (tmp_path / "_truth" / "user_groups.csv").write_text(text)
    with pytest.raises(RawFileError, match=r"taobao/_truth/user_groups\.csv .*" + message):
        read_truth(tmp_path)


def tiny_log_dir(root: Path) -> Path:
    """Two days of a hand-written taobao layout (profiles, catalogue, impressions)."""
    (root / "logs").mkdir(parents=True)
    (root / "user_profile.csv").write_text("user_id,age,gender,city,segment,spend_level\nu1,30,F,Wuhan,student,2\n")
    (root / "item_catalogue.csv").write_text("item_id,category,brand,price_level\ni1,toys,b1,1\ni2,toys,b1,2\n")
    for day, ts in (("2026-01-01", 1767225600), ("2026-01-02", 1767312000)):
        (root / "logs" / f"dt={day}").mkdir()
        (root / "logs" / f"dt={day}" / "impressions.csv").write_text(f"user_id,item_id,ts,clicked\nu1,i1,{ts},1\nu1,i2,{ts},1\n")
    return root


@pytest.mark.parametrize(("entry", "message"), [
    ("dt=yesterday/impressions.csv", r"logs/dt=yesterday .*'yesterday' is not a day"),
    ("dt=2026-13-01/impressions.csv", r"logs/dt=2026-13-01 .*'2026-13-01' is not a day"),
    ("dt=2026-1-2/impressions.csv", r"logs/dt=2026-1-2 .*'2026-1-2' is not a day"),  # day 2 again, spelled otherwise
    ("dt=2026-01-03/impressions.csv.zst", r"logs/dt=2026-01-03 .*no impressions.csv file, found impressions.csv.zst; a day's "
                                          r"logs are one impressions.csv \(or impressions.csv.gz, impressions.csv.bz2, "
                                          r"impressions.csv.xz, impressions.csv.zip\)"),
])
def test_a_day_directory_outside_the_layout_is_named_not_left_out(tmp_path, entry, message):
    from assets.raw_text import RawFileError

    directory = tiny_log_dir(tmp_path / "taobao")
    (directory / "logs" / entry).parent.mkdir()
    (directory / "logs" / entry).write_text("user_id,item_id,ts,clicked\nu1,i1,1767312000,0\n")
    with pytest.raises(RawFileError, match=message):
        read_taobao(directory)
    # A daily partition reads its own day: a stray entry elsewhere does not stall every night ...
    day = "2026-01-03" if entry.endswith(".zst") else "2026-01-02"
    if day == "2026-01-02":
        assert read_day(directory, day, "provided", TINY).frame("interactions").height == 2
    else:  # ... but its own directory, outside the layout, is named
        with pytest.raises(RawFileError, match=message):
            read_day(directory, day, "provided", TINY)
    # A day without logs names the entries that may be it.
    with pytest.raises(MissingRawFilesError, match=r"no logs for 2026-01-09 .*entries that are not days: " + entry.split("/")[0]):
        read_day(directory, "2026-01-09", "provided", TINY)


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zip"])
def test_a_day_or_profile_kept_compressed_is_read_as_the_text_it_holds(tmp_path, kind):
    # A day stored as impressions.csv.gz read as "missing raw file" (every day so) or broke the layout.
    import bz2
    import gzip
    import lzma
    import zipfile

    from assets.sharded import shard_taobao
    from assets.taobao_logs import window_sources

    def compress(path: Path) -> Path:
        packed = path.with_name(f"{path.name}.{kind}")
        data = path.read_bytes()
        if kind == "zip":
            with zipfile.ZipFile(packed, "w") as archive:
                archive.writestr(path.name, data)
        else:
            packed.write_bytes({"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](data))
        path.unlink()
        return packed

    plain = read_taobao(tiny_log_dir(tmp_path / "plain"))
    directory = tiny_log_dir(tmp_path / "taobao")
    for day in ("2026-01-01", "2026-01-02"):
        compress(directory / "logs" / f"dt={day}" / "impressions.csv")
    compress(directory / "user_profile.csv")
    packed = read_taobao(directory)
    assert packed.info["days"] == 2
    named = lambda frame: frame.with_columns(pl.col("source_file").str.replace(f"\\.{kind}$", ""))  # noqa: E731
    for name in ("interactions", "users", "items", "malformed"):
        assert named(packed.frame(name)).equals(plain.frame(name)), name
    assert packed.frame("interactions")["source_file"].unique().sort().to_list() == [
        f"taobao/logs/dt=2026-01-0{d}/impressions.csv.{kind}" for d in (1, 2)]  # rows name the file read
    assert read_day(directory, "2026-01-02", "provided", TINY).frame("interactions").height == 2
    sharded = shard_taobao(directory, tmp_path / "shards", 2)
    assert sorted(sharded.read["source_file"].to_list()) == sorted(
        [f"taobao/logs/dt=2026-01-0{d}/impressions.csv.{kind}" for d in (1, 2)] + [f"taobao/user_profile.csv.{kind}",
                                                                                  "taobao/item_catalogue.csv"])
    assert {Path(s.path).name for s in window_sources(taobao_dataset(directory), directory, ["2026-01-02"])} == {
        "taobao.toml", f"user_profile.csv.{kind}", "item_catalogue.csv", f"impressions.csv.{kind}"}
    # The text beside its compressed copy: which holds the day's rows is not sure, so it is named.
    (directory / "logs" / "dt=2026-01-02" / "impressions.csv").write_text("user_id,item_id,ts,clicked\n")
    with pytest.raises(RawFileError, match=rf"dt=2026-01-02 .*holds impressions.csv.{kind} beside impressions.csv"):
        read_taobao(directory)


def test_more_rows_beside_a_days_file_are_named_not_left_out(tmp_path):
    from assets.raw_text import RawFileError

    directory = tiny_log_dir(tmp_path / "taobao")
    day = directory / "logs" / "dt=2026-01-02"
    (day / "_SUCCESS").write_text("")  # a job's marker, not rows
    (day / "README").write_text("exported by the nightly job")
    assert read_taobao(directory).info["days"] == 2
    (day / "impressions_part2.csv").write_text("user_id,item_id,ts,clicked\nu1,i1,1767312000,0\n")
    with pytest.raises(RawFileError, match=r"dt=2026-01-02 .*holds impressions_part2.csv beside impressions.csv"):
        read_taobao(directory)
    with pytest.raises(RawFileError, match="holds impressions_part2.csv"):  # that day's own partition too
        read_day(directory, "2026-01-02", "provided", TINY)
    assert read_day(directory, "2026-01-01", "provided", TINY).frame("interactions").height == 2  # not the others


def test_a_day_still_being_written_is_not_a_day_yet(tmp_path):
    directory = tiny_log_dir(tmp_path / "taobao")
    (directory / "logs" / "dt=2026-01-03").mkdir()
    (directory / "logs" / "dt=2026-01-03" / ".impressions.csv.inprogress").write_text("user_id,item_id,ts,clicked\n")
    assert read_taobao(directory).info["days"] == 2


def test_a_window_in_a_new_home_says_to_build_the_days_first(tmp_path):
    from assets.taobao_logs import WindowError

    resources = build_resources(tmp_path / "home", tmp_path / "data")  # nothing stored yet: no database file
    with dg.instance_for_test() as instance, pytest.raises(WindowError, match="backfill taobao_daily_logs first"):
        dg.materialize(ASSETS + CHECKS, selection="taobao_log_window", partition_key="taobao", resources=resources,
                       instance=instance)
    assert not (tmp_path / "home" / "paml.duckdb").exists()


def test_the_taobao_sensor_rebuilds_edited_or_late_days_and_leaves_new_ones_to_the_cron(tmp_path):
    import os

    data = tmp_path / "data"
    directory = tiny_log_dir(data / "taobao")
    paml = paml_resource(tmp_path / "home", data)

    def tick(cursor):
        with dg.build_sensor_context(cursor=cursor, resources={"paml": paml}) as context:
            return taobao_files_changed(context), context.cursor

    def write_day(day: str, text: str, mtime: int) -> None:
        path = directory / "logs" / f"dt={day}" / "impressions.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        os.utime(path, ns=(mtime, mtime))  # the sensor compares size and mtime

    first, cursor = tick(None)
    assert isinstance(first, dg.SkipReason) and "4 taobao file(s)" in first.skip_message  # 2 days, profiles, catalogue
    assert isinstance(tick(cursor)[0], dg.SkipReason)
    write_day("2026-01-01", "user_id,item_id,ts,clicked\nu1,i1,1767225600,0\n", 1_800_000_000_000_000_000)  # edited
    write_day("2099-01-03", "user_id,item_id,ts,clicked\nu1,i1,4070908800,1\n", 1_800_000_000_000_000_000)  # newest, its cron to come: cron's
    requests, cursor = tick(cursor)
    assert [(r.job_name, r.partition_key) for r in requests] == [("taobao_logs_job", "2026-01-01")]
    (directory / "logs" / "dt=2026-01-02" / "impressions.csv").unlink()  # gone, then back late
    assert isinstance((gone := tick(cursor))[0], dg.SkipReason)
    write_day("2026-01-02", "user_id,item_id,ts,clicked\nu1,i2,1767312000,1\n", 1_800_000_000_000_000_000)
    requests, cursor = tick(gone[1])
    assert [(r.job_name, r.partition_key) for r in requests] == [("taobao_logs_job", "2026-01-02")]
    (directory / "item_catalogue.csv").write_text("item_id,category,brand,price_level\ni1,toys,b1,1\n")
    requests, cursor = tick(cursor)
    assert [(r.job_name, r.partition_key) for r in requests] == [("taobao_window_job", "taobao")]
    # Synthetic logs (no taobao/ directory): nothing to watch.
    with dg.build_sensor_context(resources={"paml": paml_resource(tmp_path / "h2", tmp_path / "none")}) as context:
        assert taobao_files_changed(context).skip_message.startswith("baseline recorded for 0")


def test_a_newest_day_that_lands_after_its_own_cron_run_is_rebuilt_not_left_to_a_cron_that_passed():
    from datetime import datetime, timezone

    from pipelines.automation import cron_has_run, taobao_requests

    previous = {"day=2026-01-01": "10:1", "day=2026-01-02": "10:1", "item_catalogue.csv": "5:1"}
    current = previous | {"day=2026-01-03": "12:7"}
    # The cron builds 2026-01-03 at 03:00 UTC on the 4th: before then the new day is its job ...
    assert taobao_requests(previous, current, datetime(2026, 1, 4, 2, 59, tzinfo=timezone.utc)) == []
    assert taobao_requests(previous, current) == []  # no clock: as before
    # ... after it, that run has failed for want of the file, and no later cron builds an earlier day.
    late = taobao_requests(previous, current, datetime(2026, 1, 4, 5, 0, tzinfo=timezone.utc))
    assert [(r.job_name, r.partition_key) for r in late] == [("taobao_logs_job", "2026-01-03")]
    assert cron_has_run("day=2026-01-03", datetime(2026, 1, 4, 3, 0, tzinfo=timezone.utc))
    assert not cron_has_run("day=not-a-date", datetime(2026, 1, 4, 3, 0, tzinfo=timezone.utc))
