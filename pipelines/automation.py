"""Automation: declarative conditions on the assets, the sensor that evaluates them, and the
raw-file sensor for the real datasets.

- `taobao_daily_logs`: each day at 03:00 UTC, the day that just ended (on_cron).
- everything downstream follows its upstream (`follows_upstream`): a new day of logs
  rebuilds the window, the taobao partition of the data chain, retrains every method on it,
  decides promotions, evaluates the models in service and rewrites the report.
- `raw_files_changed`: MovieLens and Book-Crossing are files a person replaces; when their
  content changes, the dataset is rebuilt up to its models and the rest follows.
- `taobao_files_changed`: provided taobao logs: a day file edited (or arriving late) rebuilds its
  day, changed profiles or catalogue the window; the rest follows.

The automation condition sensor is on by default; it runs while `dagster dev` (or
`dagster-daemon`) runs and can be switched off in the UI.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg

from assets.bundle import file_source
from assets.compressed import present
from assets.dataset_spec import load_registered, registered_names
from assets.raw_files import LAYOUTS
from pipelines.jobs import retraining_job, taobao_logs_job, taobao_window_job
from pipelines.partitions import dataset_partitions
from pipelines.resources import PamlResource

DAILY_LOGS_HOUR = 3  # 03:00 UTC: the day before is complete
DAILY_LOGS_CRON = f"0 {DAILY_LOGS_HOUR} * * *"
RAW_FILES_CHECK_SECONDS = 3600
AUTOMATION_CHECK_SECONDS = 30


def follows_upstream(missing_upstream_allowed: bool = False) -> dg.AutomationCondition:
    """Run when an upstream partition it reads was updated (or is requested in the same tick),
    once none is in progress and every blocking check upstream passed.

    Unlike `eager()`, a partition that was never built is not built just because it is
    missing (raw_logs[movielens] needs files someone has to provide). Assets that read every
    partition of an upstream (evaluation, report, the log window) pass
    `missing_upstream_allowed`: the partitions never built are left out, not waited for.
    """
    condition = (
        dg.AutomationCondition.in_latest_time_window()
        & dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    )
    if not missing_upstream_allowed:
        condition = condition & ~dg.AutomationCondition.any_deps_missing()
    return condition.with_label("follows_upstream" + (" (missing partitions left out)" if missing_upstream_allowed else ""))


# Assets reading all partitions of an upstream: missing partitions are left out, not waited for.
FAN_IN_ASSETS = ("taobao_log_window", "*_eval", "report")


def automation_condition(asset_key: str) -> dg.AutomationCondition:
    """The condition of one asset (see the module docstring)."""
    import fnmatch

    if asset_key == "taobao_daily_logs":
        return dg.AutomationCondition.on_cron(DAILY_LOGS_CRON, "UTC")
    return follows_upstream(any(fnmatch.fnmatchcase(asset_key, p) for p in FAN_IN_ASSETS))


automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor", target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=AUTOMATION_CHECK_SECONDS,
    description="Evaluates every asset's automation condition: new taobao days at 03:00 UTC, everything else follows.",
)


def raw_fingerprints(paml: PamlResource) -> dict[str, str]:
    """Content fingerprint of each real dataset whose required raw files are all present and
    readable, and of each registered dataset whose spec still loads (its spec file and data files)."""
    fingerprints = {}
    for dataset in registered_names():
        try:
            custom = load_registered(dataset)
        except (OSError, ValueError):  # a broken spec is reported by `dataset list` and by raw_logs
            continue
        files = [custom.spec_path, *(f.path for f in (custom.interactions, custom.users, custom.items, custom.details) if f)]
        if (digest := files_digest(list(dict.fromkeys(files)))) is not None:
            fingerprints[dataset] = digest
    for dataset, layout in LAYOUTS.items():
        directory = paml.data_path / layout.subdir
        # A file kept compressed (ratings.dat.gz) is watched as the file read: the compressed one.
        found = {n: present(directory / n) for n in (*layout.required, *layout.optional)}
        files = [path for path in found.values() if path is not None]
        if all(found[n] is not None for n in layout.required):
            if (digest := files_digest(files)) is not None:
                fingerprints[dataset] = digest
    return fingerprints


def files_digest(files: list[Path]) -> str | None:
    """SHA-256 over the files' names and contents, or None when one cannot be read (permission
    denied, removed meanwhile): that dataset is left out of the tick, as a broken spec is, and
    raw_logs names the file when it runs; every other dataset is still watched."""
    try:
        return hashlib.sha256("".join(f"{p.name}:{file_source(p).sha256};" for p in files).encode()).hexdigest()
    except OSError:
        return None


def advance_cursor(context: dg.SensorEvaluationContext, current: dict[str, str]) -> dict[str, str] | None:
    """The fingerprints the previous tick saw, or None on the first tick (which records `current` as
    the baseline); the cursor moves on to `current` either way."""
    previous = None if context.cursor is None else json.loads(context.cursor)
    context.update_cursor(json.dumps(current))
    return previous


@dg.sensor(
    job=retraining_job, minimum_interval_seconds=RAW_FILES_CHECK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrain a real dataset when its raw files under PAML_DATA_DIR, or a registered dataset's spec or files, "
                "change (first tick records a baseline).",
)
def raw_files_changed(context: dg.SensorEvaluationContext, paml: PamlResource):
    # Only the datasets this code location has a partition for: one registered after it was loaded
    # (`dataset add` while `dagster dev` runs) is a partition only after a reload, and a run request
    # for it failed every tick with DagsterUnknownPartitionError. Left out of the cursor until then,
    # it is new to the first tick after the reload, which requests it.
    known = set(dataset_partitions.get_partition_keys())
    current = {dataset: fp for dataset, fp in raw_fingerprints(paml).items() if dataset in known}
    previous = advance_cursor(context, current)
    if previous is None:
        return dg.SkipReason(f"baseline recorded for {', '.join(sorted(current)) or 'no dataset'}")
    changed = sorted(d for d, fp in current.items() if previous.get(d) != fp)
    if not changed:
        return dg.SkipReason("raw files unchanged")
    return [dg.RunRequest(run_key=f"{d}-{current[d][:16]}", partition_key=d, tags={"paml/trigger": "raw-files-changed"})
            for d in changed]


def taobao_fingerprints(paml: PamlResource) -> dict[str, str]:
    """Provided taobao logs (a taobao/ directory under PAML_DATA_DIR): the size and modification
    time of each day's file ('day=YYYY-MM-DD') and of the profiles and catalogue; {} for the
    synthetic logs. Not a hash: real logs run to gigabytes, and the sensor looks every hour."""
    from assets.taobao_logs import day_entries, profile_files

    directory = paml.data_path / "taobao"
    if not directory.is_dir():
        return {}
    files = {f"day={day}": path for day, path in day_entries(directory)[0].items()}
    files |= profile_files(directory)
    return {key: f"{stat.st_size}:{stat.st_mtime_ns}" for key, path in files.items() for stat in [path.stat()]}


def cron_has_run(day_key: str, now: datetime) -> bool:
    """Whether the nightly cron has already tried to build the day of `day_key` ('day=2026-01-15'):
    it does at DAILY_LOGS_HOUR UTC the day after. A key that is no date: False (left to the cron)."""
    try:
        day = datetime.fromisoformat(day_key.removeprefix("day=")).replace(tzinfo=timezone.utc)
    except ValueError:
        return False
    return now >= day + timedelta(days=1, hours=DAILY_LOGS_HOUR)


def taobao_requests(previous: dict[str, str], current: dict[str, str], now: datetime | None = None) -> list[dg.RunRequest]:
    """What changed files of provided taobao logs rebuild: a day file edited, or one arrived late (a
    day before the newest seen, or one whose 03:00 cron run has already passed at `now`), rebuilds
    its day, and the window follows; the profiles or the catalogue changed alone rebuild the window.
    A new newest day whose cron is still to come is the cron's."""
    seen_days = [key for key in previous if key.startswith("day=")]
    newest = max(seen_days, default="")
    changed = sorted(key for key, fp in current.items() if previous.get(key) != fp)
    # A day file that lands after its own cron run (which failed: no file yet) and before the next
    # day's was never built: no later cron builds an earlier day, and it is no day before the newest.
    days = [key for key in changed if key.startswith("day=")
            and (key in previous or key < newest or (now is not None and cron_has_run(key, now)))]
    requests = [dg.RunRequest(run_key=f"taobao-{key}-{current[key]}", partition_key=key.removeprefix("day="),
                              job_name=taobao_logs_job.name, tags={"paml/trigger": "raw-files-changed"})
                for key in days]
    if not requests and any(not key.startswith("day=") for key in changed):
        stamp = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:16]
        requests.append(dg.RunRequest(run_key=f"taobao-window-{stamp}", partition_key="taobao",
                                      job_name=taobao_window_job.name, tags={"paml/trigger": "raw-files-changed"}))
    return requests


@dg.sensor(
    jobs=[taobao_logs_job, taobao_window_job],  # two partitionings: one job each
    minimum_interval_seconds=RAW_FILES_CHECK_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
    description="Provided taobao logs (PAML_DATA_DIR/taobao): rebuild a day whose file was edited or arrived late "
                "(after later days, or after its own 03:00 UTC run), "
                "or the window when the profiles or the catalogue changed; everything downstream follows "
                "(first tick records a baseline).",
)
def taobao_files_changed(context: dg.SensorEvaluationContext, paml: PamlResource):
    current = taobao_fingerprints(paml)
    previous = advance_cursor(context, current)
    if previous is None:
        return dg.SkipReason(f"baseline recorded for {len(current)} taobao file(s)")
    return taobao_requests(previous, current, datetime.now(timezone.utc)) or dg.SkipReason("taobao files unchanged")


SCHEDULES: list[dg.ScheduleDefinition] = []
SENSORS = [automation_sensor, raw_files_changed, taobao_files_changed]
