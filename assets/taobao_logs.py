"""Assets `taobao_daily_logs` (one day of click logs per daily partition) and `taobao_log_window`
(the taobao dataset: profiles, catalogue and a rolling window of days).

A day of logs is an asset partition of its own: it can be inspected, backfilled and re-run
from the UI, and the window that feeds the `taobao` partition of `raw_logs` records, as
lineage, which days (and which materialization of each) a model saw.

The logs come from `<PAML_DATA_DIR>/taobao/` when the user provides real ones in the
generator's layout (`logs/dt=YYYY-MM-DD/impressions.csv`; each file may be kept compressed,
`impressions.csv.gz`, `.bz2`, `.xz` or `.zip`, and is then read as the text it holds, as any raw
file is: assets/compressed.py), else from the deterministic
generator (`assets/taobao_generator.py`) under `<PAML_HOME>/raw/taobao/`: day i after the
generator's start date is the same bytes whenever and however often it is generated.
"""

import datetime as dt
import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import polars as pl

from assets.bundle import Bundle, SourceFile, StoredParts, file_source, publish_directory, remove_staged
from assets.compressed import READABLE_SUFFIXES, present
from assets.custom_reader import read_custom, read_log_file
from assets.dataset_spec import CustomDataset, load_builtin, table_files
from assets.raw_files import MissingRawFilesError, split_lines
from assets.raw_text import RawFileError
from assets.taobao_generator import DirtRates, GeneratorConfig, day_path, generate, generate_day
from models.locks import file_lock

TAOBAO_WINDOW_DAYS = 14  # days of logs the taobao dataset is built from (the generator's first horizon)
TAOBAO_FIRST_DAY = GeneratorConfig().start_date  # day 0 of the generator: the first daily partition


class WindowError(ValueError):
    """A log window that cannot be built: no days, or days from different sources."""


def ensure_generated(root: Path, config: GeneratorConfig) -> Path:
    """The generator's directory for `config` under `root`, generated once (profiles, catalogue,
    truth and the first `config.n_days` days, staged and renamed so a killed run leaves none).

    Generated under a lock per directory: two runs side by side generate it once, and a staged
    copy found under the lock is a killed run's (as large as the logs), removed before staging anew.
    """
    key = f"seed{config.seed}-users{config.n_users}-items{config.n_items}-days{config.n_days}"
    target = root / key
    if not (target / "_manifest.json").is_file():
        with file_lock(root / f".{key}.lock"):
            if not (target / "_manifest.json").is_file():
                remove_staged(root, key)
                staging = root / f".{key}.{uuid.uuid4().hex}"
                try:
                    generate(staging, config)
                    publish_directory(staging, target, complete="_manifest.json")
                finally:  # a failed generation (a full disk) leaves nothing behind; after the rename there is nothing here
                    shutil.rmtree(staging, ignore_errors=True)
    return target


def day_index(day: str, start: str = TAOBAO_FIRST_DAY) -> int:
    """Days since the generator's start date (day 0), or an error for a day before it."""
    index = (dt.date.fromisoformat(day) - dt.date.fromisoformat(start)).days
    if index < 0:
        raise ValueError(f"taobao day {day} is before the first day of logs {start}")
    return index


def log_directory(data_dir: Path, home: Path, config: GeneratorConfig, day: str) -> tuple[Path, str]:
    """Where day `day`'s logs are, generating them if synthetic; and 'provided' or 'synthetic'.

    A `taobao/` directory under `data_dir` means real logs, complete or not: one missing its
    profiles (misnamed, not copied yet) is a MissingRawFilesError, never a quiet switch to the generator.
    """
    provided = data_dir / "taobao"
    if provided.is_dir():
        taobao_dataset(provided)  # the missing files, named, before any day is read
        return provided, "provided"
    directory = ensure_generated(home / "raw" / "taobao", config)
    index = day_index(day, config.start_date)
    if not day_path(directory, config, index).is_file():
        generate_day(directory, config, index)  # a day past the first ones: writes to a temporary name, then renames
    return directory, "synthetic"


TRUTH_FILE = "_truth/user_groups.csv"  # evaluation only: each synthetic user's true group, never read by cleaning


def read_truth(directory: Path) -> pl.DataFrame | None:
    """The true group of every synthetic user, or None (real logs have none).

    Read as strictly as the logs (a RawFileError naming the file, line and value): evaluation
    compares groups by user, so a broken line or a user listed twice would skew it unseen.
    """
    path = directory / TRUTH_FILE
    if not path.is_file():
        return None
    label = f"taobao/{TRUTH_FILE}"
    rows, malformed = split_lines(path, label, ",", ("user_id", "true_group"), encoding="utf-8", header=True)
    for bad in malformed.head(1).iter_rows(named=True):
        raise RawFileError(f"{label} ({path}) line {bad['line']}: {bad['text'][:120]!r} ({bad['reason']}); "
                           "the ground truth is one user_id,true_group per line")
    blank = rows.filter((pl.col("user_id").str.strip_chars() == "") | (pl.col("true_group").str.strip_chars() == ""))
    repeated = rows.filter(pl.col("user_id").is_duplicated() & ~pl.col("user_id").is_first_distinct())
    for what, bad in (("a blank user_id or true_group", blank), ("a user_id listed before", repeated)):
        for row in bad.head(1).iter_rows(named=True):
            raise RawFileError(f"{label} ({path}) line {row['line']}: {what}: {row['user_id']!r},{row['true_group']!r}")
    return rows.select("user_id", "true_group")


PROFILE_FILES = ("user_profile.csv", "item_catalogue.csv")  # beside logs/; each may be kept compressed
DAY_FILE = "impressions.csv"  # a day's logs, in logs/dt=YYYY-MM-DD/; or a compressed copy of it
DAY_FILE_NAMES = f"{DAY_FILE} (or {', '.join(DAY_FILE + s for s in READABLE_SUFFIXES)})"  # for messages


def profile_files(directory: Path) -> dict[str, Path]:
    """{name: the file read} of the profiles and the catalogue that are there, each itself or its compressed copy."""
    return {name: path for name in PROFILE_FILES if (path := present(directory / name)) is not None}


def taobao_dataset(directory: Path) -> CustomDataset:
    """The log directory as the built-in spec (assets/builtin_specs/taobao.toml) describes it, or a
    MissingRawFilesError naming the missing files (a file kept compressed is there: `present`)."""
    missing = [n for n in PROFILE_FILES if present(directory / n) is None]
    if missing or not any(present(day / DAY_FILE) for day in directory.glob("logs/dt=*")):
        raise MissingRawFilesError(
            f"taobao: missing raw file(s) {', '.join(missing or ['logs/dt=*/impressions.csv'])} in {directory}; "
            "generate them with assets.taobao_generator.generate (the raw_logs asset does this "
            "when PAML_DATA_DIR has no taobao/ directory)."
        )
    return load_builtin("taobao", directory)


def is_day_name(name: str) -> bool:
    """Whether `name` is a day as the layout writes it: YYYY-MM-DD and a real date (not 2026-1-2 nor 20260102)."""
    try:
        return dt.date.fromisoformat(name).isoformat() == name
    except ValueError:
        return False


def is_data_file(name: str) -> bool:
    """Whether a file beside a day's impressions.csv looks like more of its rows (not a _SUCCESS marker
    or a hidden file being written)."""
    return not name.startswith((".", "_")) and name.lower().endswith(
        (".csv", ".tsv", ".txt", ".gz", ".zip", ".bz2", ".xz", ".zst", ".parquet"))


def day_entries(directory: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Every day of logs under `directory`, {YYYY-MM-DD: its impressions.csv, or the compressed copy kept in its
    place (impressions.csv.gz: `present`)} in date order, and the `logs/dt=*` entries the layout does not allow,
    {entry name: why}.

    Not allowed: a name that is not a date (dt=yesterday, dt=2026-13-01) or another spelling of one
    (dt=2026-1-2: read twice, or never, depending on the reader), a day directory whose rows are
    not in impressions.csv or a compressed copy read (impressions.csv.zst, a renamed file), and one with
    more data files beside it (impressions_part2.csv, or impressions.csv and impressions.csv.gz): each
    would be rows left out unseen. A day directory holding only hidden files is a day still being written (the
    generator's `.inprogress` name), not a problem.
    """
    days, problems = {}, {}
    for entry in sorted((directory / "logs").glob("dt=*")):
        name = entry.name.removeprefix("dt=")
        path = present(entry / DAY_FILE) if entry.is_dir() else None
        if not is_day_name(name):
            problems[entry.name] = f"{name!r} is not a day; a day's logs are logs/dt=YYYY-MM-DD/impressions.csv"
        elif path is not None:
            days[name] = path
            if others := sorted(p.name for p in entry.iterdir() if p.name != path.name and is_data_file(p.name)):
                problems[entry.name] = (f"holds {', '.join(others)} beside {path.name}; a day's logs are that one "
                                        "file, and the others would be left out")
        elif not entry.is_dir():
            problems[entry.name] = f"a file where a day's directory belongs; expected {entry.name}/impressions.csv"
        elif visible := sorted(p.name + ("/" if p.is_dir() else "") for p in entry.iterdir() if not p.name.startswith(".")):
            problems[entry.name] = (f"no impressions.csv file, found {', '.join(visible)}; a day's logs are one "
                                    f"{DAY_FILE_NAMES}")
    return days, problems


def layout_error(directory: Path, entry: str, why: str) -> RawFileError:
    """The error naming one `logs/dt=*` entry that breaks the layout."""
    return RawFileError(f"taobao/logs/{entry} ({directory / 'logs' / entry}): {why}")


def day_files(directory: Path) -> dict[str, Path]:
    """Every day of logs under `directory` (`day_entries`); an entry that breaks the layout stops the
    read of the whole log with a RawFileError naming it, rather than being left out."""
    days, problems = day_entries(directory)
    for entry, why in problems.items():
        raise layout_error(directory, entry, why)
    return days


def day_files_of(directory: Path, wanted: list[str]) -> dict[str, Path]:
    """The impressions.csv of each day in `wanted`, or an error: a day whose directory breaks the layout
    (RawFileError), or days without logs (MissingRawFilesError, naming the misnamed entries that may
    be them). An entry outside `wanted` does not stop these days: a stray dt=yesterday must not stall
    every nightly partition."""
    days, problems = day_entries(directory)
    for day in wanted:
        if f"dt={day}" in problems:
            raise layout_error(directory, f"dt={day}", problems[f"dt={day}"])
    absent = [day for day in wanted if day not in days]
    if absent:
        hint = f"; entries that are not days: {', '.join(sorted(problems))}" if problems else ""
        raise MissingRawFilesError(f"taobao: no logs for {', '.join(absent)} in {directory / 'logs'} "
                                   f"(expected dt=YYYY-MM-DD/impressions.csv){hint}")
    return {day: days[day] for day in wanted}


def read_taobao_directory(directory: Path, max_days: int | None = None) -> Bundle:
    """Read a Taobao-like click-log directory as its spec describes it: user_profile.csv,
    item_catalogue.csv and logs/dt=*/impressions.csv, plus the evaluation-only ground truth
    (its own frame). With `max_days`, only the first `max_days` day files (by date) are read.
    """
    dataset = taobao_dataset(directory)
    day_files(directory)  # a misnamed day directory, or a day without its file, stops the read (not left out)
    days = table_files(dataset.interactions)[:max_days]
    bundle = read_custom(dataset, [read_log_file(day) for day in days])
    if (truth := read_truth(directory)) is not None:
        bundle.frames["truth"] = truth
    return Bundle(frames=bundle.frames, info={**bundle.info, "days": len(days)}, sources=bundle.sources)


def read_day(directory: Path, day: str, source: str, config: GeneratorConfig) -> Bundle:
    """One day's impressions as text rows (no cleaning; read as the taobao spec's interactions file),
    its malformed lines, and the true group of every user active that day (synthetic logs only)."""
    path = day_files_of(directory, [day])[day]
    log = load_builtin("taobao").interactions  # how each day's file is written (a pattern: one file per day)
    read = read_log_file(replace(log, path=path, label=f"taobao/{path.relative_to(directory).as_posix()}", root=None))
    frames = dict(read.frames)
    if (truth := read_truth(directory)) is not None:
        frames["truth"] = truth.join(frames["interactions"].select("user_id").unique(), on="user_id", how="semi").sort("user_id")
    return Bundle(frames=frames, info=day_info(day, source, config), sources=read.sources)


def day_info(day: str, source: str, config: GeneratorConfig) -> dict:
    """What a day's bundle records of where its rows come from (the window checks all days agree)."""
    return {"dataset": "taobao", "day": day, "source": source, "generator": asdict(config) if source == "synthetic" else None}


@contextmanager
def removed_on_failure(scratch: Path) -> Iterator[Path]:
    """`scratch`, deleted when the block raises: a day or window that fails to read leaves no
    partial shards behind (a stored bundle's scratch is deleted by the store; a failed one had none)."""
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def read_day_in_blocks(directory: Path, day: str, source: str, config: GeneratorConfig, scratch: Path,
                       block_bytes: int | None = None) -> Bundle:
    """read_day with the day's file read one block at a time (assets/sharded.py; `block_bytes`, default
    BLOCK_BYTES): its rows go to one Parquet file, a row group per block, and travel as parts; the
    malformed lines and the truth as frames. The same rows as read_day's (tested)."""
    from assets.sharded import BLOCK_BYTES, AppendedParts, detached, split_in_blocks, taobao_columns

    path = day_files_of(directory, [day])[day]
    label = f"taobao/{path.relative_to(directory).as_posix()}"
    malformed = []
    with removed_on_failure(scratch), AppendedParts(scratch / "interactions", prefix="day=") as parts:
        for rows, bad in split_in_blocks(path, label, taobao_columns().interactions.columns,
                                           block_bytes or BLOCK_BYTES):
            parts.append(0, rows)
            malformed.append(detached(bad))
    interactions = StoredParts.under(scratch / "interactions")
    frames = {"malformed": pl.concat(malformed)}
    if (truth := read_truth(directory)) is not None:
        users = interactions.scan().select("user_id").unique().collect()
        frames["truth"] = truth.join(users, on="user_id", how="semi").sort("user_id")
    return Bundle(frames=frames, parts={"interactions": interactions}, info=day_info(day, source, config),
                  sources=(file_source(path),), scratch=(scratch,))


def window_days(available: list[str], n_days: int, end_day: str = "", first_day: str = TAOBAO_FIRST_DAY) -> tuple[list[str], list[str]]:
    """The calendar days of a window of `n_days` ending on `end_day` (default: the newest
    available day) and not before `first_day`, split into (present, missing)."""
    if n_days < 1:
        raise WindowError(f"a log window needs at least one day, got {n_days}")
    if not available:
        raise WindowError("no day of taobao logs has been materialized yet; backfill taobao_daily_logs first")
    end = dt.date.fromisoformat(end_day or max(available))
    days = [(end - dt.timedelta(days=k)).isoformat() for k in range(n_days - 1, -1, -1)]
    days = [d for d in days if d >= first_day]
    present = [d for d in days if d in set(available)]
    if not present:
        raise WindowError(f"none of the days {days[0]}..{days[-1]} has taobao logs; materialized: "
                          f"{min(available)}..{max(available)}")
    return present, [d for d in days if d not in set(available)]


def generator_from_info(settings: dict) -> GeneratorConfig:
    """The GeneratorConfig a day's `info["generator"]` records."""
    return GeneratorConfig(**{**settings, "dirt": DirtRates(**settings["dirt"])})


def source_of(days: dict[str, Bundle]) -> tuple[str, dict | None]:
    """The one (source, generator settings) all days share, or WindowError naming the days that differ."""
    kinds = {}
    for day, bundle in days.items():
        kinds.setdefault(json.dumps([bundle.info["source"], bundle.info["generator"]], sort_keys=True), []).append(day)
    if len(kinds) > 1:
        groups = "; ".join(f"{', '.join(v)}: {k}" for k, v in kinds.items())
        raise WindowError(f"the window's days come from different log sources or generator settings ({groups}); "
                          "re-run those days with the same taobao_daily_logs config")
    source, generator = json.loads(next(iter(kinds)))
    return source, generator


def assemble_window(directory: Path, days: dict[str, Bundle]) -> Bundle:
    """The taobao dataset as `raw_logs` reads it: profiles, catalogue and the days' interactions
    (time order) as the spec describes them, every malformed line, the ground truth (synthetic logs)."""
    ordered = [days[d] for d in sorted(days)]
    bundle = read_custom(taobao_dataset(directory), ordered)
    if (truth := read_truth(directory)) is not None:
        bundle.frames["truth"] = truth
    info = {**bundle.info, "days": len(ordered), "day_list": sorted(days), "generator": ordered[0].info["generator"]}
    return Bundle(frames=bundle.frames, info=info, sources=bundle.sources)


def window_sources(dataset: CustomDataset, directory: Path, days: list[str]) -> tuple[SourceFile, ...]:
    """The files a sharded window reads, hashed: the spec, profiles, catalogue and the days'
    impressions (what the whole window's read records)."""
    paths = [dataset.spec_path, *profile_files(directory).values(), *day_files_of(directory, days).values()]
    return tuple(file_source(path) for path in paths)


def sharded_window(directory: Path, days: list[str], generator: dict | None, shards: int, scratch: Path) -> Bundle:
    """The window as `assemble_window` builds it, read into `shards` user shards on disk
    (assets/sharded.py) instead of into memory: one block of one day file at a time."""
    from assets.sharded import log_bundle, shard_taobao

    dataset = taobao_dataset(directory)  # the missing-files error, before anything is read
    with removed_on_failure(scratch):
        log = shard_taobao(directory, scratch / "log", shards, days=days)
    info = {"dataset": "taobao", "spec_file": str(dataset.spec_path), "days": len(days), "day_list": days,
            "generator": generator}
    return log_bundle(log, info, window_sources(dataset, directory, days), scratch)


def day_summary(days: dict[str, Bundle]) -> pl.DataFrame:
    """Per day: impression rows, clicks, click rate, malformed lines, active users."""
    rows = []
    for day, bundle in sorted(days.items()):
        n, clicks, users = (bundle.scan("interactions")  # a day kept as parts is scanned, not read whole
                            .select(pl.len(), (pl.col("clicked") == "1").sum(), pl.col("user_id").n_unique())
                            .collect(engine="streaming").row(0))
        rows.append({"day": day, "rows": n, "clicks": clicks, "ctr": clicks / n if n else None,
                     "malformed": bundle.frame("malformed").height, "users": users})
    return pl.DataFrame(rows, schema={"day": pl.String, "rows": pl.Int64, "clicks": pl.Int64, "ctr": pl.Float64,
                                      "malformed": pl.Int64, "users": pl.Int64})


# -- Dagster assets --------------------------------------------------------------------
import dagster as dg  # noqa: E402
from pydantic import Field, field_validator  # noqa: E402

from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.partitions import taobao_days, taobao_only  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402


class TaobaoDayConfig(dg.Config):
    """How synthetic taobao logs are generated when PAML_DATA_DIR has no taobao/ directory."""

    seed: int = Field(default=0, ge=0, description="Seed of the synthetic click-log generator.")
    users: int = Field(default=3000, ge=1, description="Number of synthetic users.")
    items: int = Field(default=2000, ge=1, description="Number of synthetic items.")
    history_days: int = Field(
        default=TAOBAO_WINDOW_DAYS, ge=1,
        description="Days the generator spreads each user's activity over; later days continue each user's daily average.")

    def generator(self) -> GeneratorConfig:
        return GeneratorConfig(seed=self.seed, n_users=self.users, n_items=self.items, n_days=self.history_days)


class LogWindowConfig(dg.Config):
    """Which days of logs make the taobao dataset."""

    days: int = Field(default=TAOBAO_WINDOW_DAYS, ge=1, description="Length of the rolling window in days.")
    end_day: str = Field(default="", description="Last day of the window (YYYY-MM-DD); empty = the newest day with logs.")

    @field_validator("end_day")
    @classmethod
    def _end_day(cls, end_day: str) -> str:
        # Not a date failed in the step with Python's "Invalid isoformat string", naming no key.
        try:
            return dt.date.fromisoformat(end_day).isoformat() if end_day else end_day
        except ValueError:
            raise ValueError(f"end_day: {end_day!r} is not a day YYYY-MM-DD (empty = the newest day with logs)") from None


@dg.asset(
    partitions_def=taobao_days, group_name="taobao_logs", kinds={"csv", "polars"}, code_version="1",
    description="One day of taobao impression logs: text rows with their injected dirt, malformed lines, "
                "the true group of that day's users (synthetic logs unless PAML_DATA_DIR has taobao/).",
)
def taobao_daily_logs(context: dg.AssetExecutionContext, config: TaobaoDayConfig, paml: PamlResource) -> dg.MaterializeResult:
    day = context.partition_key
    directory, source = log_directory(paml.data_path, paml.home_path, config.generator(), day)
    if paml.shards:  # a log larger than memory: the day read one block at a time
        bundle = read_day_in_blocks(directory, day, source, config.generator(), paml.scratch(context.run.run_id, f"taobao_daily_logs-{day}"))
    else:
        bundle = read_day(directory, day, source, config.generator())
    summary = day_summary({day: bundle})
    # One line a day: the demo prints the log, and a table per day was 9 lines of it.
    counts = summary.row(0, named=True)
    context.log.info(f"taobao logs of {day} from {directory}: {counts['rows']} impressions, {counts['clicks']} clicks "
                     f"(rate {counts['ctr'] or 0:.3f}), {counts['malformed']} malformed lines, {counts['users']} users")
    return bundle_output(bundle, source=source, summary=table(summary))


@dg.asset(
    partitions_def=taobao_only, group_name="taobao_logs", kinds={"polars"}, code_version="2",
    ins={"taobao_daily_logs": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
    description=f"The taobao dataset: profiles, catalogue and a rolling window of daily logs (default the last "
                f"{TAOBAO_WINDOW_DAYS} days, ending on the newest day); which days, and which materialization of each.",
)
def taobao_log_window(context: dg.AssetExecutionContext, config: LogWindowConfig, paml: PamlResource,
                      taobao_daily_logs) -> dg.MaterializeResult:
    present, missing = window_days(list(taobao_daily_logs), config.days, config.end_day)
    if paml.shards:
        # One day at a time for its summary and source (scanned when it was read in blocks), then
        # the day files read again into user shards: the window is never whole in memory.
        days, summaries = {}, []
        for day in present:
            days[day] = Bundle(info=taobao_daily_logs[day].info)
            summaries.append(day_summary({day: taobao_daily_logs[day]}))
            taobao_daily_logs.release(day)
        summary = pl.concat(summaries)
    else:
        days = {day: taobao_daily_logs[day] for day in present}
        summary = day_summary(days)
    source, generator = source_of(days)
    directory = paml.data_path / "taobao" if source == "provided" else \
        ensure_generated(paml.home_path / "raw" / "taobao", generator_from_info(generator))
    if missing:
        context.log.warning(f"window {present[0]}..{present[-1]}: no logs for {', '.join(missing)}; built from the other days")
    if paml.shards:
        bundle = sharded_window(directory, present, generator, paml.shards, paml.scratch(context.run.run_id, "taobao_log_window"))
        context.log.info(f"read the window into {paml.shards} user shards (PAML_SHARDS)")
    else:
        bundle = assemble_window(directory, days)
    return bundle_output(bundle, first_day=present[0], last_day=present[-1], n_days=len(present),
                         missing_days=", ".join(missing) or "none", days=table(summary), shards=paml.shards)
