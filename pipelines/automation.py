"""Scheduled retraining: a new day of synthetic logs each day, and real datasets whose raw
files changed, rebuilt up to their models; evaluation and the report follow each success."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import dagster as dg

from assets.bundle import file_source
from assets.raw_files import LAYOUTS
from pipelines.jobs import evaluation_job, retraining_job
from pipelines.resources import PamlResource

# The first day the schedule delivers a new day of synthetic logs (extra day 1).
TAOBAO_DELIVERY_START = dt.date(2026, 11, 26)
RETRAINING_CRON = "0 3 * * *"  # daily, 03:00 UTC
RAW_FILES_CHECK_SECONDS = 3600


def extra_days_on(day: dt.date, start: dt.date = TAOBAO_DELIVERY_START) -> int:
    """New days of logs delivered by `day`: one per day since `start` (inclusive), never negative."""
    return max(0, (day - start).days + 1)


def taobao_retraining_request(day: dt.date) -> dg.RunRequest:
    """The run a tick on `day` asks for: the taobao partition with that day's logs delivered."""
    extra = extra_days_on(day)
    return dg.RunRequest(
        run_key=f"taobao-{day.isoformat()}",
        partition_key="taobao",
        run_config={"ops": {"raw_logs": {"config": {"taobao_extra_days": extra}}}},
        tags={"paml/trigger": "daily-schedule", "paml/extra_days": str(extra)},
    )


@dg.schedule(
    job=retraining_job, cron_schedule=RETRAINING_CRON, execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: deliver a new day of synthetic taobao logs and retrain the taobao partition.",
)
def taobao_daily_retraining(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return taobao_retraining_request(context.scheduled_execution_time.date())


def raw_fingerprints(paml: PamlResource) -> dict[str, str]:
    """Content fingerprint of each real dataset whose required raw files are all present."""
    fingerprints = {}
    for dataset, layout in LAYOUTS.items():
        directory = paml.data_path / layout.subdir
        files = [directory / n for n in (*layout.required, *layout.optional) if (directory / n).is_file()]
        if all((directory / n).is_file() for n in layout.required):
            digest = hashlib.sha256("".join(f"{p.name}:{file_source(p).sha256};" for p in files).encode())
            fingerprints[dataset] = digest.hexdigest()
    return fingerprints


@dg.sensor(
    job=retraining_job, minimum_interval_seconds=RAW_FILES_CHECK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrain a real dataset when its raw files under PAML_DATA_DIR change (first tick records a baseline).",
)
def raw_files_changed(context: dg.SensorEvaluationContext, paml: PamlResource):
    current = raw_fingerprints(paml)
    if context.cursor is None:
        context.update_cursor(json.dumps(current))
        return dg.SkipReason(f"baseline recorded for {', '.join(sorted(current)) or 'no dataset'}")
    previous = json.loads(context.cursor)
    changed = sorted(d for d, fp in current.items() if previous.get(d) != fp)
    context.update_cursor(json.dumps(current))
    if not changed:
        return dg.SkipReason("raw files unchanged")
    return [dg.RunRequest(run_key=f"{d}-{current[d][:16]}", partition_key=d, tags={"paml/trigger": "raw-files-changed"})
            for d in changed]


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[retraining_job], request_job=evaluation_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful retraining, evaluate every method and rebuild the report.",
)
def evaluate_after_retraining(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"evaluate-after-{context.dagster_run.run_id}")


SCHEDULES = [taobao_daily_retraining]
SENSORS = [raw_files_changed, evaluate_after_retraining]
