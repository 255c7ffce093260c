"""Scheduled retraining and raw-file sensors, evaluated without a daemon."""

import datetime as dt
from pathlib import Path

import dagster as dg

from assets.raw_logs import RawLogsConfig, generator_config, read_raw
from pipelines.automation import (
    TAOBAO_DELIVERY_START, evaluate_after_retraining, extra_days_on, raw_files_changed, taobao_daily_retraining,
)
from pipelines.definitions import defs
from pipelines.resources import paml_resource
from tests.fixtures import good_ml_users, ml_ratings_for, movielens_dir, write_lines

TINY = RawLogsConfig(taobao_users=200, taobao_items=100, taobao_days=3)


def test_daily_schedule_delivers_one_more_day_per_day():
    first = dt.datetime.combine(TAOBAO_DELIVERY_START, dt.time(3), tzinfo=dt.timezone.utc)
    for offset, expected in ((0, 1), (1, 2), (9, 10)):
        context = dg.build_schedule_context(scheduled_execution_time=first + dt.timedelta(days=offset))
        request = taobao_daily_retraining(context)
        assert request.partition_key == "taobao"
        assert request.run_config["ops"]["raw_logs"]["config"]["taobao_extra_days"] == expected
    assert extra_days_on(TAOBAO_DELIVERY_START - dt.timedelta(days=5)) == 0
    assert defs.resolve_schedule_def("taobao_daily_retraining").job_name == "retraining_job"


def test_delivered_days_are_read_and_deterministic(tmp_path):
    config = generator_config(TINY)
    base = read_raw("taobao", tmp_path / "data", tmp_path / "home", config, extra_days=0)
    grown = read_raw("taobao", tmp_path / "data", tmp_path / "home", config, extra_days=2)
    days = lambda b: sorted({Path(f).parent.name for f in b.frame("interactions")["source_file"].unique()})  # noqa: E731
    assert len(days(base)) == 3 and len(days(grown)) == 5
    assert days(grown)[:3] == days(base)
    again = read_raw("taobao", tmp_path / "data", tmp_path / "home", config, extra_days=2)
    assert again.content_hash() == grown.content_hash()
    # Delivered in one go elsewhere: the same bytes as delivered one day at a time.
    other = read_raw("taobao", tmp_path / "data", tmp_path / "other", config, extra_days=2)
    assert other.frame("interactions").equals(grown.frame("interactions"))
    # Asking for fewer days reads fewer, even though more are on disk.
    assert read_raw("taobao", tmp_path / "data", tmp_path / "home", config, extra_days=1).frame("interactions").height \
        < grown.frame("interactions").height


def test_raw_files_sensor_baselines_then_reacts_to_changes(tmp_path):
    data = movielens_dir(tmp_path / "data", good_ml_users(3), ml_ratings_for(range(1, 4)))
    paml = paml_resource(tmp_path / "home", data)

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor, resources={"paml": paml})
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


def test_evaluation_follows_successful_retraining():
    sensor = defs.resolve_sensor_def("evaluate_after_retraining")
    assert sensor is not None and evaluate_after_retraining.job_name == "evaluation_job"
    job = defs.resolve_job_def("retraining_job")
    assert {"raw_logs", "meta_tasks", "reg_paml_model", "reg_paml_gamma_ablation"} <= {
        k.to_user_string() for k in job.asset_layer.selected_asset_keys}
