"""Command line: `python -m pipelines.cli init|dataset|demo|reproduce|tune|sql|recommend|results|stats`.

Runs go through the persistent Dagster instance in PAML_HOME, so they are listed in
`dagster dev` afterwards. Expected failures (missing raw files, an unbuilt partition, a bad
argument, a bad query) print one line, `error: what, where, how to fix`, and exit non-zero
(1; argument errors 2, as argparse does); only an unexpected error (a bug) shows a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import polars as pl

from assets.specs import DATASETS, all_datasets
from models.bounds import count_argument
from models.runtime import device_argument, seed_argument
from pipelines.instance import dagster_instance, ensure_dagster_home
from pipelines.locations import default_data_dir, default_home

SAMPLE_QUERY = (
    "SELECT dataset, reason, count(*) AS n FROM rejected_rows GROUP BY ALL ORDER BY n DESC"
)
EXIT_BAD_ARGUMENTS = 2  # argparse's status for a usage error
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`


class CliError(Exception):
    """An expected failure, printed by main() as one line: what, where, how to fix."""


def seconds_argument(text: str) -> float:
    """A duration in seconds, refused by argparse unless a finite number above 0."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: not a number") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return seconds


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at --help (sub-commands inherit it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_ARGUMENTS, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Every run the CLI starts names its process, so a later command can tell a run whose process
# was killed (kill -9, a lost terminal, the machine's OOM killer) from one still going.
PROCESS_TAG = "paml/process"


def process_tag() -> str:
    """`host+space:pid:start` of this process (the value of PROCESS_TAG; `pipelines.pid_space.process_place`)."""
    from pipelines.pid_space import process_place, process_start

    start = process_start(os.getpid())
    return f"{process_place()}:{os.getpid()}:{'' if start is None else start}"  # '' where it cannot be told


def mark_dead_runs_failed(instance) -> list[str]:
    """Mark failed every run tagged in this pid space (`process_place`) that Dagster still lists as going
    but whose process is gone. A killed process cannot record its own end: its run stayed STARTED
    for ever, and Dagster took the assets it had planned as in progress, so the automation never
    requested them again (nor anything downstream). A run tagged elsewhere, or by older code (`host`
    alone, which containers sharing one hostname share), or where the space is unknown, is never judged
    from here. Returns the run ids marked."""
    import socket

    import dagster as dg

    from pipelines.pid_space import pid_space, process_place, process_start

    if not pid_space():
        return []  # whose pid a tag names cannot be told: it may be another container's with this hostname
    place, host = process_place(), socket.gethostname()
    going = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
             dg.DagsterRunStatus.CANCELING]
    marked = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=going)):
        tag_place, _, rest = run.tags.get(PROCESS_TAG, "").partition(":")
        pid, _, started = rest.partition(":")
        if tag_place != place or not pid.isdigit():
            continue
        now = process_start(int(pid))
        if now is not None and (str(now) == started or not started):
            continue  # still running (or its start time cannot be told apart)
        instance.report_run_failed(run, f"its process {pid} on {host} is gone (killed?); marked failed by "
                                        "python -m pipelines.cli so that the automation plans its assets again")
        marked.append(run.run_id)
    return marked


def run_job(job: str, dataset: str | None = None, run_config: dict | None = None) -> str:
    """Run one job (for one dataset partition, when partitioned) in the persistent instance."""
    from pipelines.definitions import defs

    # Progress lines (pipelines/progress.py) instead of Dagster's console log: one line per
    # message an asset logs (training progress, evaluations), and Dagster's warnings and errors
    # on one line each; a failed step's traceback is left to main(), which reports it in one line.
    config = {"loggers": {"progress": {"config": {"log_level": "INFO"}}}, **(run_config or {})}
    started = time.perf_counter()
    with dagster_instance() as instance:
        for run_id in mark_dead_runs_failed(instance):
            print(f"marked run {run_id} failed: its process is gone (killed?)", file=sys.stderr, flush=True)
        result = defs.resolve_job_def(job).execute_in_process(
            partition_key=dataset, instance=instance, raise_on_error=True, run_config=config,
            tags={PROCESS_TAG: process_tag()},
        )
    from pipelines.store import LineageStore

    LineageStore(default_home()).set_run_wall_seconds(result.run_id, time.perf_counter() - started)
    return result.run_id


def expected_failure(error: BaseException) -> str | None:
    """The one-line message for an expected failure, or None for a bug (which keeps its traceback)."""
    import duckdb

    from assets.dataset_spec import SpecError
    from assets.raw_files import MissingRawFilesError
    from assets.raw_text import RawFileError
    from models.bounds import SettingError
    from models.runtime import ThreadsSettingError
    from pipelines.storage_errors import StorageError, storage_failure
    from pipelines.store import ArtifactDamagedError, NoDatabaseError, PartitionNotBuiltError, StoreDamagedError

    # Bad input data (an undecodable or empty raw file, a log the cleaning cannot read) is the
    # user's to fix: the message names the file, line and value; a traceback would bury it.
    # These classes' modules load neither torch nor Dagster: a quick command's error (no database yet)
    # is said in a second, not after the 5 s the imports below take on a 2 GHz core.
    if isinstance(error, (CliError, MissingRawFilesError, PartitionNotBuiltError, NoDatabaseError, ThreadsSettingError,
                          RawFileError, SpecError, SettingError, StorageError, StoreDamagedError, ArtifactDamagedError)):
        return one_line(error)
    from assets.clean_logs import CleaningError
    from assets.taobao_logs import WindowError
    from models.learners import ModelFormError
    from models.search import JournalError, SearchRunningError, SearchWorkerError

    if isinstance(error, (CleaningError, WindowError, JournalError, ModelFormError, SearchWorkerError, SearchRunningError)):
        return one_line(error)
    # A full disk, a read-only or unwritable home: the machine's to fix. Often Dagster then fails to record
    # the failure in its own storage on the same disk, and that error (SQLite's) is the one raised here.
    refused = storage_failure(error, default_home(), Path(os.environ.get("DAGSTER_HOME") or default_home() / "dagster"))
    if refused is not None:
        return refused
    import dagster as dg

    if isinstance(error, dg.Failure):  # a step that refused on purpose (a setting it cannot train with): its own line
        return one_line(error)
    if isinstance(error, duckdb.Error):
        if "lock" in one_line(error).lower():
            return (f"{one_line(error)} -- another process holds {default_home() / 'paml.duckdb'}; wait for it, or read "
                    "the snapshot (`sql` without --live)")
        return f"DuckDB: {one_line(error)} (tables and views: docs/duckdb.md)"
    import pydantic

    if isinstance(error, pydantic.ValidationError):  # a run config value a Config class refused when its step started
        return validation_line(error)
    from assets.cold_start import ColdStartInputError

    if isinstance(error, ColdStartInputError):
        return f"{one_line(error)} (see `python -m pipelines.cli recommend --help` and docs/operations.md)"
    from dagster._core.errors import DagsterAssetCheckFailedError  # not exported by `dagster` itself

    if isinstance(error, DagsterAssetCheckFailedError):
        return (f"{one_line(error)} -- the failed expectations: .venv/bin/python -m pipelines.cli sql "
                "\"SELECT asset_key, partition, expectation, column_name, details FROM checks WHERE NOT success\"")
    return None


def validation_line(error) -> str:
    """One line for a pydantic ValidationError of a run config: the class, and each key with its value and why."""
    problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}={item.get('input')!r}: {item['msg']}"
                         for item in error.errors())
    return f"bad run config ({error.title}): {problems}"


def taobao_days(history_days: int | None = None) -> list[str]:
    """The first days of taobao logs: the window the demo and `reproduce` train on, the same whatever the date."""
    import datetime as dt

    from assets.taobao_logs import TAOBAO_FIRST_DAY, TAOBAO_WINDOW_DAYS

    first = dt.date.fromisoformat(TAOBAO_FIRST_DAY)
    return [(first + dt.timedelta(days=k)).isoformat() for k in range(history_days or TAOBAO_WINDOW_DAYS)]


def prepare_taobao(days: list[str]) -> None:
    """Materialize the taobao logs of `days` (those not yet in the instance) and the window ending on the last."""
    import dagster as dg

    with dagster_instance() as instance:
        done = instance.get_materialized_partitions(dg.AssetKey("taobao_daily_logs"))
    for day in days:
        if day not in done:
            run_job("taobao_logs_job", day)
    run_job("taobao_window_job", "taobao", {"ops": {"taobao_log_window": {"config": {"days": len(days), "end_day": days[-1]}}}})


# `demo` trains every method with a small step budget so the whole chain (30 training runs)
# finishes in about two minutes on two cores; the models' own budget is max_steps=3000 with
# early stopping (models/training.py). `--max-steps 0` gives the demo the full budget.
DEMO_MAX_STEPS = 60
DEMO_EVAL_EVERY = 30


def training_config(epochs: int | None, seeds: list[int] | None, max_steps: int | None = None,
                    eval_every: int | None = None) -> dict:
    """Run config overriding epochs/seeds/step budget of every model asset and the ablation (None = defaults)."""
    from models.configs import METHOD_NAMES

    values = {k: v for k, v in {"epochs": epochs, "seeds": seeds, "max_steps": max_steps, "eval_every": eval_every}.items()
              if v is not None}
    if not values:
        return {}
    ops = {f"{m}_model": {"config": dict(values)} for m in METHOD_NAMES} | {"reg_paml_gamma_ablation": {"config": dict(values)}}
    return {"ops": ops}


def production_config(epochs: int | None, seeds: list[int] | None) -> dict:
    """Run config of `production_job`: the same epochs and seeds as the models (None = defaults)."""
    values = {k: v for k, v in {"epochs": epochs, "seeds": seeds}.items() if v is not None}
    return {"ops": {"production_protocol": {"config": values}}} if values else {}


def summary(run_id: str) -> str:
    """What a run made and where: artifacts, rejected rows by reason, checks."""
    from pipelines.store import LineageStore

    pl.Config.set_tbl_width_chars(160)
    pl.Config.set_fmt_str_lengths(70)
    pl.Config.set_tbl_hide_dataframe_shape(True)
    store = LineageStore(default_home(), read_only=True)
    artifacts = store.query(
        "SELECT asset_key, partition, n_rows, n_bytes, left(content_hash, 12) AS hash, location "
        "FROM artifacts WHERE run_id = ? ORDER BY seq", [run_id])
    dataset = artifacts["partition"][0] if artifacts.height else ""
    rejected = store.query(
        "SELECT reason, count(*) AS n_rows FROM rejected_rows WHERE dataset = ? GROUP BY ALL ORDER BY n_rows DESC, reason",
        [dataset])
    with pl.Config(tbl_rows=40, fmt_str_lengths=120):  # every reason, in full (a dataset has a few dozen at most)
        rejected_text = str(rejected)
    checks = store.query(
        "SELECT check_name, count(*) AS expectations, count(*) FILTER (WHERE success) AS passed "
        "FROM checks WHERE run_id = ? GROUP BY ALL ORDER BY ALL", [run_id])
    return "\n".join([
        f"run {run_id} (dataset {dataset})",
        f"DuckDB lineage store: {store.db_path}",
        "artifacts made:", str(artifacts),
        "rejected rows by reason:", rejected_text,
        "Great Expectations checks:", str(checks),
        "Try some SQL (reads paml-snapshot.duckdb, so it works while runs write):",
        f"  .venv/bin/python -m pipelines.cli sql \"{SAMPLE_QUERY}\"",
    ])


def report_summary() -> str:
    """Where the report is, Table 2 from DuckDB, and a query to try."""
    from pipelines.store import LineageStore

    home = default_home()
    table = LineageStore(home, read_only=True).query(
        "SELECT dataset, protocol, method, metric, mean, sd FROM table2 WHERE metric IN ('mse', 'nel') "
        "ORDER BY dataset, protocol, mean")
    return "\n".join([
        f"report: {home / 'reports' / 'report.md'} (plots beside it)",
        "Table 2, primary error (from the DuckDB view table2):", render(four_digits(table), "table"),
        "Try: .venv/bin/python -m pipelines.cli sql \"SELECT method, \\\"group\\\", avg(lr) FROM user_metrics "
        "WHERE lr IS NOT NULL GROUP BY ALL ORDER BY ALL\"",
    ])


def four_digits(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its float columns as text: four decimals, or four significant digits below 0.001 (a tiny
    rating scale's MSE rounded to four decimals printed 0.0 for every method)."""
    def text(value: float | None) -> str | None:
        if value is None:
            return None
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 or not math.isfinite(value) else f"{value:.4g}"

    return frame.with_columns(pl.col(c).map_elements(text, return_dtype=pl.String, skip_nulls=True)
                              for c, dtype in frame.schema.items() if dtype.is_float())


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    """['a=1', 'b=2'] -> {'a': '1', 'b': '2'}, or an error naming the bad or repeated pair."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"{what}: expected KEY=VALUE, got {pair!r}")
        if key in parsed:
            raise CliError(f"{what}: {key!r} is given twice ({key}={parsed[key]} and {key}={value})")
        parsed[key] = value
    return parsed


def model_and_tasks(store, dataset: str, method: str, which: str):
    """The model in service (`which='promoted'`, from model_registry) or the newest trained one,
    with the tasks it was trained on (its vocabulary and items)."""
    from assets.promotion import registry_champion
    from pipelines.lineage import TRAINED_WITH_SQL
    from pipelines.store import PartitionNotBuiltError

    if which == "promoted":
        champion = registry_champion(store, dataset, method)
        if champion is None:
            raise PartitionNotBuiltError(
                f"no {method} model in service for {dataset} (no promotion in model_registry): train and promote one "
                f"with `dg launch --job training_job --partition {dataset}`, or use the newest trained model: --model latest")
        return store.load(store.row(champion["model"])), store.load(store.row(champion["tasks"]))
    model = store.load(store.latest(f"{method}_model", dataset))
    tasks = store.query(TRAINED_WITH_SQL, [model.artifact_id, "meta_tasks"])
    return model, store.load(store.row(tasks["artifact_id"][0]) if tasks.height else store.latest("meta_tasks", dataset))


def recommend_command(args: argparse.Namespace) -> str:
    """Load a dataset's model in service (or, with --model latest, its newest model), the tasks it
    was trained on and the items, adapt to the given user, rank items; print the user's own items
    and the recommendations beside the items' attributes.

    Every input is checked (labels, --top, seed, repeated items) before anything is loaded
    where possible; a bad one is a ColdStartInputError with a one-line message.
    """
    from assets.cold_start import (
        catalogue_ratings, check_top, item_attributes, known_values_hint, parse_label, profile_in_buckets, recommend,
        unknown_profile_fields,
    )
    from assets.specs import spec_for
    from models.kept_fits import fits_kept_in
    from pipelines.store import LineageStore

    check_top(args.top)
    spec = spec_for(args.dataset)
    ratings = {item: parse_label(item, text, spec) for item, text in parse_pairs(args.ratings, "--ratings").items()}
    profile = profile_in_buckets(parse_pairs(args.profile, "--profile"), spec)
    store = LineageStore(default_home(), read_only=True)
    model, tasks = model_and_tasks(store, args.dataset, args.method, args.model)
    ratings = catalogue_ratings(ratings, set(tasks.frame("items")["item_id"]))  # '7.0' is item 7, as the readers take it
    items = store.load(store.latest("clean_logs", args.dataset)).frame("items")
    with fits_kept_in(default_home() / "fits"):  # the model's fold-in tables, as the training stored them
        ranked, lr = recommend(model, tasks, profile, ratings, args.top, args.seed)
    given = pl.DataFrame({"item_id": list(ratings), "label": list(ratings.values())})
    unknown = unknown_profile_fields(profile, tasks)
    with pl.Config(tbl_rows=max(args.top, len(ratings)), fmt_str_lengths=48, tbl_width_chars=160,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        return "\n".join([
            f"The new user's {'clicks' if spec.task == 'ctr' else 'ratings'} (what {args.method} adapts on):",
            str(item_attributes(given, items, spec.display_fields)),
            f"{args.method} adapted to them (inner learning rate {lr:.4g}); top {args.top} of the other items:",
            *(["profile values never seen in training, so they use the unknown embedding: "
               + ", ".join(f"{field}={value}" + (f" ({hint})" if (hint := known_values_hint(field, value, tasks)) else "")
                           for field, value in unknown.items())] if unknown else []),
            str(item_attributes(ranked, items, spec.display_fields)),
        ])


SQL_FORMATS = ("table", "csv", "markdown", "json")


def cell_text(value: object) -> str:
    """One value as table text: NULL, full-precision floats, nested values as JSON."""
    import json

    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def render(frame: pl.DataFrame, fmt: str) -> str:
    """A query result as `fmt` (table, csv, markdown, json); nothing is cut or elided."""
    import json

    if fmt == "json":
        return frame.write_json()
    if fmt == "csv":
        nested = [c for c, t in frame.schema.items() if t.is_nested()]
        flat = frame.with_columns(
            pl.col(c).map_elements(lambda v: json.dumps(v, default=str), return_dtype=pl.String) for c in nested)
        return flat.write_csv().rstrip("\n")
    header = list(frame.columns)
    rows = [[cell_text(v) for v in row] for row in frame.iter_rows()]
    if fmt == "markdown":
        escape = lambda text: text.replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
        lines = ["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(map(escape, row)) + " |" for row in rows])
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows),
                      f"({frame.height} row{'s' if frame.height != 1 else ''})"])


def one_line(error: BaseException) -> str:
    """The first line of an error message (DuckDB's carry the query under a caret)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def statements(sql: str) -> list[str]:
    """The statements of `sql` (parsed, not run), or [sql] when it holds none (only comments), so that
    the store's own error says so."""
    import duckdb

    with duckdb.connect() as parser:
        return [statement.query for statement in parser.extract_statements(sql)] or [sql]


def sql_command(args: argparse.Namespace) -> str:
    """Run a query on the snapshot (or the live file) read-only; render it in full. Several statements
    (`SELECT ...; SELECT ...`) print one result each: DuckDB alone would show only the last."""
    import duckdb

    from pipelines.store import LineageStore

    store = None
    try:
        queries = statements(args.query)
        if len(queries) > 1 and args.format in ("csv", "json"):
            raise CliError(f"--format {args.format} prints one result, and the query holds {len(queries)} statements: "
                           "run them one per call")
        store = LineageStore(default_home(), read_only=True)
        frames = [store.query(query, snapshot=not args.live) for query in queries]
        if not args.live and (note := store.stale_note()) is not None and store.snapshot_path.is_file():
            print(f"note: {note}", file=sys.stderr)
    except duckdb.PermissionException as error:
        raise CliError(f"refused, the sql command only reads the PAML database: {one_line(error)}") from None
    except duckdb.Error as error:
        raise CliError(f"{one_line(error)} (tables and views: docs/duckdb.md){older_store_hint(error, store)}") from None
    return "\n\n".join(render(frame, args.format) for frame in frames)


def older_store_hint(error: Exception, store: object) -> str:
    """For a query naming a column the store's tables of older code lack: which, and the command that adds them."""
    import duckdb

    if not isinstance(error, duckdb.BinderException) or store is None:
        return ""
    outdated = store.outdated()
    return (f"; this store was written by older code, {', '.join(outdated[:3])}{' ...' if len(outdated) > 3 else ''}: "
            "bring it up to date with `python -m pipelines.cli init`") if outdated else ""


def meta_tasks_of(dataset: str) -> tuple[dict, dict, str]:
    """The newest meta_tasks of `dataset` (built first when missing): tensors, info, content hash."""
    from pipelines.store import LineageStore, PartitionNotBuiltError

    store = LineageStore(default_home())
    try:
        row = store.latest("meta_tasks", dataset)
    except PartitionNotBuiltError:
        print(f"data_job on {dataset} (meta_tasks not built yet) ...", flush=True)
        if dataset == "taobao":
            prepare_taobao(taobao_days())
        run_job("data_job", dataset)
        row = store.latest("meta_tasks", dataset)
    bundle = store.load(row)
    return bundle.tensors, {**bundle.info, "dataset": dataset}, row.content_hash


def tune_command(args: argparse.Namespace) -> None:
    """Export, search (or import journals), mirror to tuning_trials, write settings and docs/tuning.md."""
    from models.configs import METHOD_NAMES
    from models.search import SearchConfig
    from pipelines.tune import export_tasks, tune, tuning_doc_written

    if args.export:
        for dataset in args.datasets:
            tensors, info, content_hash = meta_tasks_of(dataset)
            try:
                directory = export_tasks(tensors, info, Path(args.export) / dataset, content_hash, args.protocol)
            except OSError as error:  # --export naming a file, or a directory it may not write
                raise CliError(f"--export {args.export}: cannot write {Path(args.export) / dataset}: {error.strerror}") from None
            print(f"exported {directory} for the {args.protocol} protocol (no test users)")
        return
    config = SearchConfig(trials=args.trials, seed=args.seed, protocol=args.protocol, device=args.device, threads=args.threads,
                          max_steps=args.max_steps, eval_every=args.eval_every, patience=args.patience)
    tune(args.datasets, default_home(), meta_tasks_of, methods=args.methods or list(METHOD_NAMES), config=config,
         workers=args.workers, stop_after=args.stop_after, import_dir=args.import_dir,
         log=lambda line: print(line, flush=True))
    print(tuning_doc_written(default_home()))


def init_command() -> str:
    """Prepare PAML_HOME and DAGSTER_HOME (telemetry off); say which raw files PAML_DATA_DIR holds."""
    from assets.compressed import present
    from assets.raw_files import LAYOUTS
    from pipelines.storage_errors import ensure_directory

    home, data_dir = default_home(), default_data_dir()
    ensure_directory(home)
    lines = [f"PAML_HOME={home}", f"DAGSTER_HOME={ensure_dagster_home()} (dagster.yaml: persistent instance, telemetry off)",
             f"PAML_DATA_DIR={data_dir}" + ("" if os.environ.get("PAML_DATA_DIR") else
                                            " (not set: the default, PAML_HOME/data; export it to use MovieLens or Book-Crossing)")]
    for dataset, layout in LAYOUTS.items():
        missing = [n for n in layout.required if present(data_dir / layout.subdir / n) is None]  # ratings.dat.gz is read
        lines.append(f"  {dataset}: " + (f"ready ({data_dir / layout.subdir})" if not missing else
                                         f"missing {', '.join(missing)} in {data_dir / layout.subdir}; {layout.obtain}"))
    taobao = data_dir / "taobao"
    # The same rule as the reader (assets/taobao_logs.py `log_directory`): a taobao/ directory means real logs.
    lines.append(f"  taobao: {taobao_logs_state(taobao)}" if taobao.is_dir()
                 else f"  taobao: synthetic logs, generated under {home / 'raw' / 'taobao'} on first use")
    from assets.dataset_spec import registered_names, registered_spec_path

    lines += [f"  {name}: your own data, spec {registered_spec_path(name)} (`dataset list` checks it)"
              for name in registered_names()]
    with dagster_instance() as instance:
        lines += [f"marked run {run_id} failed: its process is gone (killed?)" for run_id in mark_dead_runs_failed(instance)]
    if (home / "paml.duckdb").is_file():  # a home kept across an upgrade: its tables of older code brought up to date
        from pipelines.store import LineageStore

        migrated = LineageStore(home).bring_up_to_date()
        lines.append(f"store {home / 'paml.duckdb'}: " + (f"brought up to date: {'; '.join(migrated)}" if migrated else "up to date"))
    return "\n".join(lines)


def taobao_logs_state(directory: Path) -> str:
    """'real logs in <directory>', or what they lack (the reader's own error)."""
    from assets.raw_files import MissingRawFilesError
    from assets.taobao_logs import taobao_dataset

    try:
        taobao_dataset(directory)
    except MissingRawFilesError as error:
        return f"real logs in {directory}, incomplete: {error}"
    return f"real logs in {directory}"


def dataset_command(args: argparse.Namespace) -> str:
    """`dataset add DIR` validates and registers a spec; `dataset list` shows every dataset; `dataset remove NAME`."""
    from assets.dataset_spec import load_registered, register, registered_names, registered_spec_path, unregister
    from assets.specs import MAJOR_MIN_TOP_FEATURES, SPECS

    if args.action == "add":
        dataset, previous = register(Path(args.location))
        spec = dataset.spec
        kind = f"ratings {spec.label_min:g}..{spec.label_max:g}" if spec.task == "rating" else "clicks (0/1)"
        if spec.negatives_per_positive:
            kind += f", {spec.negatives_per_positive} sampled negatives per positive (seed {spec.negatives_seed})"
        return "\n".join([
            ("registered" if previous is None else "updated" if previous == dataset.spec_path
             else f"re-pointed (was {previous})") + f" dataset {spec.name!r} from {dataset.spec_path}: {kind}; "
            f"user features {', '.join(spec.user_fields)}; item features "
            f"{', '.join((*spec.item_fields, *spec.item_multi_fields))}; " + (
                f"groups by {', '.join(spec.tagging_fields)}" if spec.tagging_fields else
                f"no [groups]: no user is major (the paper's rule needs {MAJOR_MIN_TOP_FEATURES} user features), "
                "so every user is minor and the major/minor comparisons are left out"),
            f"next: python -m pipelines.cli demo --dataset {spec.name}   (or in the UI, after a code reload: "
            f"partition {spec.name})",
        ])
    if args.action == "remove":
        return f"removed dataset {args.name!r} (its spec {unregister(args.name)} and data are untouched)"
    lines = [f"{name}\tbuilt-in\t{spec.task}" for name, spec in SPECS.items()]
    for name in registered_names():
        try:
            spec = load_registered(name).spec
            lines.append(f"{name}\t{spec.spec_file}\t{spec.task}")
        except (OSError, ValueError) as error:  # a spec or data file changed since `add`: say so, list the rest
            lines.append(f"{name}\t{registered_spec_path(name)}\tbroken: {one_line(error)}")
    return "\n".join(["name\tspec\ttask", *lines])


def build_parser() -> Parser:
    """Every command and its arguments."""
    parser = Parser(prog="python -m pipelines.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="create PAML_HOME and DAGSTER_HOME (telemetry off), list the raw files found and "
                                     "bring a store of older code up to date")
    datasets = all_datasets()
    dataset = commands.add_parser("dataset", help="your own data: register a dataset spec (docs/data.md), list datasets")
    actions = dataset.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="validate DIR's dataset.toml (or .yaml) against its files and register it")
    add.add_argument("location", help="the directory holding dataset.toml / dataset.yaml, or the spec file itself")
    actions.add_parser("list", help="the built-in and registered datasets")
    remove = actions.add_parser("remove", help="unregister a dataset (its files stay)")
    remove.add_argument("name", help="the registered dataset's name (see `dataset list`)")
    demo = commands.add_parser("demo", help="build, train, evaluate and report on one dataset")
    demo.add_argument("--dataset", default="taobao", choices=datasets,
                      help="a built-in or registered dataset (default taobao: synthetic, needs no files)")
    demo.add_argument("--data-only", action="store_true", help="stop after the data assets")
    demo.add_argument("--epochs", type=count_argument("epochs"), help="override every method's epochs")
    demo.add_argument("--seeds", type=seed_argument, nargs="+", help="override every method's seeds")
    demo.add_argument("--max-steps", type=count_argument("max_steps", zero="the models' own budget"), default=DEMO_MAX_STEPS,
                      help=f"outer steps per training run (default {DEMO_MAX_STEPS}; 0 = the models' own budget)")
    repro = commands.add_parser("reproduce", help="every dataset: data, all methods x seeds, ablation; then evaluation and the report")
    repro.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=datasets)
    repro.add_argument("--epochs", type=count_argument("epochs"), help="override every method's epochs")
    repro.add_argument("--seeds", type=seed_argument, nargs="+", default=[0, 1, 2, 3, 4], help="every method's seeds (default 0-4)")
    repro.add_argument("--threads", type=count_argument("threads"), help="threads per process (sets PAML_THREADS; default: PAML_THREADS, else the available cores); recorded in runs")
    repro.add_argument("--protocols", nargs="+", default=["paper", "production"], choices=["paper", "production"],
                       help="'production' also trains every meta-learner with the warm users' tasks (production_job); "
                            "the paper's protocol always runs")
    tune = commands.add_parser("tune", help="hyper-parameter search on validation users, same budget per method")
    tune.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=datasets)
    tune.add_argument("--methods", nargs="+", help="default: every method")
    tune.add_argument("--trials", type=count_argument("trials"), default=20, help="finished trials per method (the first: code defaults)")
    tune.add_argument("--workers", type=count_argument("workers"), default=1, help="worker processes sharing each dataset's journal")
    tune.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda or cuda:N")
    tune.add_argument("--threads", type=count_argument("threads"), default=1, help="torch threads per worker")
    tune.add_argument("--seed", type=seed_argument, default=0, help="sampler seed and every trial's training seed")
    tune.add_argument("--protocol", default="paper", choices=["paper", "production"])
    tune.add_argument("--max-steps", type=count_argument("max_steps"), help="outer-step budget per trial (default: TrainConfig.max_steps)")
    tune.add_argument("--eval-every", type=count_argument("eval_every"), help="outer steps between evaluations (default: TrainConfig.eval_every)")
    tune.add_argument("--patience", type=count_argument("patience"), help="evaluations without improvement (default: TrainConfig.patience)")
    tune.add_argument("--stop-after", type=seconds_argument, help="seconds; then running trials are handed back for the next run")
    tune.add_argument("--export", metavar="DIR", help="only write DIR/<dataset>/ (tasks without test users) for another machine")
    tune.add_argument("--import", dest="import_dir", metavar="DIR",
                      help="instead of searching here, ingest DIR/<dataset>.journal made elsewhere from the same export")
    sql = commands.add_parser("sql", help="run a read-only SQL query on the DuckDB store")
    sql.add_argument("query", help="SQL on the tables and views of docs/duckdb.md; several statements print one result each")
    sql.add_argument("--live", action="store_true",
                     help="query the live database (waits while a run writes) instead of the snapshot (never blocked)")
    sql.add_argument("--format", choices=SQL_FORMATS, default="table", help="output format (never truncated)")
    rec = commands.add_parser("recommend", help="adapt a trained model to a new user and print scored items")
    rec.add_argument("--dataset", required=True, choices=datasets)
    rec.add_argument("--method", default="reg_paml", help="melu, meta_sgd, transfer, paml, at_paml or reg_paml (default)")
    rec.add_argument("--seed", type=seed_argument, help="which trained seed (default: the first)")
    rec.add_argument("--model", choices=["promoted", "latest"], default="promoted",
                     help="the model in service (default) or the newest trained one")
    rec.add_argument("--profile", nargs="+", required=True, metavar="FIELD=VALUE", help="the user's features")
    rec.add_argument("--ratings", nargs="+", required=True, metavar="ITEM=LABEL", help="a few ratings (or 0/1 clicks)")
    rec.add_argument("--top", type=int, default=10, help="how many items to print (default 10)")
    results = commands.add_parser("results", help="render docs/results.md's tables from the DuckDB store")
    results.add_argument("--out", type=Path, help="the Markdown file to update (default: docs/results.md when the store "
                         "holds meta-learner metrics of MovieLens and Book-Crossing, else PAML_HOME/results.md)")
    stats = commands.add_parser("stats", help="Markdown: what is built, counts per step, rejections and Table 1 per dataset")
    stats.add_argument("datasets", nargs="+", choices=datasets)
    return parser


def check_methods(parser: Parser, args: argparse.Namespace) -> None:
    """Refuse an unknown method name after parsing, in one line naming the known ones and the command's help."""
    given = [args.method] if args.command == "recommend" else (args.methods or []) if args.command == "tune" else []
    if not given:
        return
    from models.configs import METHOD_NAMES

    unknown = [m for m in given if m not in METHOD_NAMES]
    if unknown:
        prog = f"{parser.prog} {args.command}"
        parser.exit(EXIT_BAD_ARGUMENTS, f"{prog}: error: unknown method {', '.join(map(repr, unknown))}; "
                                           f"known: {', '.join(METHOD_NAMES)} (see {prog} --help)\n")


def run_command(args: argparse.Namespace) -> None:
    """Do what `args` asks."""
    if args.command == "init":
        print(init_command())
    elif args.command == "dataset":
        print(dataset_command(args))
    elif args.command == "demo":
        print(f"PAML_HOME={default_home()}  PAML_DATA_DIR={default_data_dir()}")
        started = time.perf_counter()
        if args.dataset == "taobao":
            print(f"[0/3] taobao logs: {len(taobao_days())} days and their window ...", flush=True)
            prepare_taobao(taobao_days())
        print(f"[1/3] data_job on {args.dataset} ...", flush=True)
        print(summary(run_job("data_job", args.dataset)))
        if not args.data_only:
            from models.runtime import thread_count

            budget = (args.max_steps, min(DEMO_EVAL_EVERY, args.max_steps)) if args.max_steps else (None, None)
            steps = f"{args.max_steps} outer steps per run" if args.max_steps else "the models' step budget"
            print(f"[2/3] training_job on {args.dataset} (6 methods + gamma ablation, {steps}, {thread_count()} threads) "
                  f"... ({time.perf_counter() - started:.0f} s in)", flush=True)
            run_job("training_job", args.dataset, training_config(args.epochs, args.seeds, *budget))
            print(f"[3/3] evaluation_job (the models of every dataset that has them, the reference rows of every dataset "
                  f"with tasks) and the report ... ({time.perf_counter() - started:.0f} s in)",
                  flush=True)
            run_job("evaluation_job")
            print(report_summary())
        print(f"done in {time.perf_counter() - started:.0f} s")
    elif args.command == "reproduce":
        from models.runtime import pin_threads

        print(f"PAML_HOME={default_home()}  PAML_DATA_DIR={default_data_dir()}  torch threads={pin_threads(args.threads)}")
        started = time.perf_counter()
        for dataset in args.datasets:
            if dataset == "taobao":
                prepare_taobao(taobao_days())
            jobs = {"data_job": None, "training_job": training_config(args.epochs, args.seeds)}
            if "production" in args.protocols:
                jobs["production_job"] = production_config(args.epochs, args.seeds)
            for job, run_config in jobs.items():
                print(f"{job} on {dataset} ... ({time.perf_counter() - started:.0f} s in)", flush=True)
                run_job(job, dataset, run_config)
        print(f"evaluation_job and the report ... ({time.perf_counter() - started:.0f} s in)", flush=True)
        run_job("evaluation_job")
        print(report_summary())
        print(f"done in {time.perf_counter() - started:.0f} s")
    elif args.command == "tune":
        tune_command(args)
    elif args.command == "results":
        from pipelines.results import RESULTS_DOC, results_target, write_results
        from pipelines.store import LineageStore, NoDatabaseError

        try:
            store = LineageStore(default_home(), read_only=True)
            out, note = results_target(store, args.out, RESULTS_DOC, default_home())
            print(f"wrote {write_results(store, out)}{note}")
        except NoDatabaseError as error:
            raise SystemExit(f"error: {one_line(error)}") from None
    elif args.command == "sql":
        print(sql_command(args))
    elif args.command == "recommend":
        print(recommend_command(args))
    elif args.command == "stats":
        from models.configs import METHOD_NAMES
        from pipelines.stats import data_report
        from pipelines.store import LineageStore

        print(data_report(LineageStore(default_home(), read_only=True), args.datasets, METHOD_NAMES))


def main(argv: list[str] | None = None) -> int:
    """Parse and run; every expected failure becomes SystemExit('error: ...'): one line on stderr, status 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_methods(parser, args)
    try:
        run_command(args)
        sys.stdout.flush()  # here, so that a reader gone by now is handled below, not at the interpreter's exit
    except BaseException as error:  # noqa: BLE001 - Ctrl-C inside a Dagster run arrives as Dagster's own BaseException
        if interrupted(error):
            print("interrupted (a Dagster run it had started is marked failed); stores stay consistent (each "
                  "artifact is committed whole or not at all)", file=sys.stderr)
            return 130
        if isinstance(error, BrokenPipeError) and stdout_closed():
            # `sql ... | head`: the reader has what it wanted. The rest goes nowhere, so that the exit's
            # own flush does not fail again; the status is a shell's for a command ended by SIGPIPE.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OUTPUT_CLOSED
        message = expected_failure(error) if isinstance(error, Exception) else None
        if message is None:
            raise
        raise SystemExit(f"error: {message}") from None
    return 0


def stdout_closed() -> bool:
    """Whether nobody reads stdout any more (`sql ... | head` after head has exited): the write end of a
    pipe without a reader polls as an error. A BrokenPipeError from anything else keeps its traceback."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is not a file descriptor
        return False


def interrupted(error: BaseException) -> bool:
    """Ctrl-C: a KeyboardInterrupt, or inside a Dagster run the DagsterExecutionInterruptedError
    Dagster raises instead (a BaseException too), which used to end the CLI with its traceback."""
    if isinstance(error, KeyboardInterrupt):
        return True
    errors = sys.modules.get("dagster._core.errors")  # loaded by any run; not imported just to check
    return errors is not None and isinstance(error, errors.DagsterExecutionInterruptedError)


if __name__ == "__main__":
    sys.exit(main())
