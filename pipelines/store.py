"""The DuckDB lineage store: artifacts, lineage edges, runs, rejected rows, checks.

DuckDB allows one writer process and then no other reader, so every operation opens a
short connection (the pipeline's: the file attached to one in-memory instance per process,
`_Host`), retries lock errors with backoff (the pipeline's as long as the lock is held,
saying who holds it), and closes at once. An artifact's
files are written (content-addressed, atomically renamed) before its rows are
committed; rows are the source of truth, so a killed run leaves at worst an unused
directory and never a row that points at missing data. Its info.json lists its files
with their sizes, so a file deleted or cut off later is named when read and written
again by the rerun. A write the file system refuses (disk full, read-only) and a damaged
database file are one-line errors (pipelines/storage_errors.py, StoreDamagedError); a
damaged file is never written over. A refused copy of the snapshot is a warning: the write
itself is committed (`_refresh_snapshot`).

Artifact locations are stored relative to the home, so a home can be copied or moved; so are the raw
files inside the home (generated taobao logs) that an artifact's info.json names as its sources.
Readers (the `sql` command, stats, recommend, summaries) open a read-only store: the
snapshot, read-only, with external access disabled and the configuration locked; they never
take the write lock and never create a database.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import polars as pl

from assets.bundle import Bundle, SourceFile, StoredParts, publish_directory
from pipelines.provenance import RUN_COLUMNS, run_facts
from pipelines.staging import remove_stale_staging, staging_path
from pipelines.storage_errors import (
    StorageError, ensure_directory, error_code, named_path, refused_errno, refused_path, refused_reads, refused_writes,
)

# How long a reader outside the pipeline (`sql --live`) waits for the live file before it says who holds it.
# The pipeline's own connections wait as long as the lock is held: a session left open on the live file
# (a notebook, a BI tool, even read-only) used to fail every run that wrote after two minutes.
LOCK_RETRY_SECONDS = 120.0
# A writer holds the lock for seconds; waiting longer means a session holds the file: say which, and again
# every minute, in the step's log.
LOCK_WARN_AFTER_SECONDS = 20.0
LOCK_WARN_EVERY_SECONDS = 60.0
LOCK_BACKOFF_START = 0.05
# Beside the snapshot while it is behind the live file because its last refresh failed: the cause, for readers.
STALE_NOTE = "paml-snapshot.stale"
SNAPSHOT_KEPT = "the write is committed in {live}; the snapshot stays as it was until the next write refreshes it"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, job_name VARCHAR, first_write_at TIMESTAMP,
    last_write_at TIMESTAMP, n_artifacts BIGINT);
CREATE TABLE IF NOT EXISTS artifacts (
    artifact_id VARCHAR PRIMARY KEY, seq BIGINT, run_id VARCHAR, asset_key VARCHAR,
    partition VARCHAR, kind VARCHAR, code_version VARCHAR, content_hash VARCHAR,
    location VARCHAR, n_rows BIGINT, n_bytes BIGINT, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS lineage_edges (
    artifact_id VARCHAR, input_artifact_id VARCHAR, PRIMARY KEY (artifact_id, input_artifact_id));
ALTER TABLE lineage_edges ADD COLUMN IF NOT EXISTS input_event_id BIGINT;
CREATE TABLE IF NOT EXISTS checks (
    run_id VARCHAR, asset_key VARCHAR, partition VARCHAR, check_name VARCHAR,
    expectation VARCHAR, column_name VARCHAR, success BOOLEAN, unexpected_count BIGINT,
    details VARCHAR, checked_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS model_registry (
    dataset VARCHAR, method VARCHAR, seed BIGINT, model_artifact VARCHAR, champion_artifact VARCHAR,
    tasks_artifact VARCHAR, groups_artifact VARCHAR, trained_on VARCHAR[], last_day VARCHAR,
    n_users BIGINT, val_loss DOUBLE, champion_val_loss DOUBLE, mean_val_loss DOUBLE,
    champion_mean_val_loss DOUBLE, p_value DOUBLE, promoted BOOLEAN, reason VARCHAR,
    asset_key VARCHAR, partition VARCHAR, artifact_id VARCHAR, recorded_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS metrics_history (
    dataset VARCHAR, method VARCHAR, seed BIGINT, population VARCHAR, metric VARCHAR, value DOUBLE,
    n_users BIGINT, model_artifact VARCHAR, last_day VARCHAR,
    asset_key VARCHAR, partition VARCHAR, artifact_id VARCHAR, recorded_at TIMESTAMP);
ALTER TABLE metrics_history ADD COLUMN IF NOT EXISTS protocol VARCHAR;
""" + "".join(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {name} {dtype};\n" for name, dtype in RUN_COLUMNS.items())


# Views for SQL users, over the tables the `report` asset writes (same numbers as the report).
VIEWS = {
    "table1": "SELECT dataset, item, ours, paper FROM report_table1",
    "table2": "SELECT dataset, protocol, method, metric, mean, sd, n_seeds, best, significant, paper_mean, paper_sd FROM report_table2",
    "table3": "SELECT dataset, protocol, method, mean_major, sd_major, mean_minor, sd_minor, p_value FROM report_table3",
    "table4": "SELECT dataset, protocol, variant, mean_major, sd_major, mean_minor, sd_minor, p_value FROM report_table4",
    # Personalization diagnostics (assets/diagnostics.py), one view per question, over test users
    # by dataset, protocol, method and group (all/major/minor); per seed, then the mean over seeds.
    "diagnostic_step_size": (
        'SELECT dataset, protocol, method, "group", n_seeds, n_users, lr_mean, lr_sd, lr_cv, lr_q10, lr_q50, lr_q90 '
        "FROM report_diagnostics"
    ),
    "diagnostic_adaptation": (
        'SELECT dataset, protocol, method, "group", n_seeds, n_users, loss_unadapted, loss_adapted, gain_mean, '
        "gain_positive_share FROM report_diagnostics"
    ),
    "diagnostic_memory": (
        'SELECT dataset, protocol, method, "group", n_seeds, n_users, memory_k, nearest_weight, nearest_ratio, '
        "attention_entropy, entropy_ratio FROM report_diagnostics WHERE memory_k IS NOT NULL"
    ),
    "diagnostic_inputs": 'SELECT dataset, protocol, method, "group", n_seeds, n_users, unknown_share FROM report_diagnostics',
    # The model in service per dataset and method: the newest promoted decision (one row per seed).
    "champions": (
        "SELECT dataset, method, seed, model_artifact, tasks_artifact, groups_artifact, trained_on, last_day, "
        "recorded_at AS promoted_at, reason FROM model_registry WHERE promoted "
        "QUALIFY artifact_id = first_value(artifact_id) OVER (PARTITION BY dataset, method ORDER BY recorded_at DESC)"
    ),
    # Test metrics (all users, mean over seeds) of each evaluated model by the newest day it was
    # trained on; a model evaluated again counts once (its newest evaluation).
    "test_metrics_over_days": (
        "SELECT dataset, protocol, method, last_day, model_artifact, metric, avg(value) AS mean, count(*) AS n_seeds "
        "FROM (SELECT * FROM metrics_history WHERE population = 'all' AND last_day IS NOT NULL "
        "QUALIFY recorded_at = max(recorded_at) OVER (PARTITION BY dataset, method, model_artifact)) "
        "GROUP BY ALL ORDER BY ALL"
    ),
}


# Every writing connection: DuckDB's buffers (default: 80% of the machine's memory) bounded, so
# mirroring millions of rows (taobao's rejected rows) and the snapshot's copy spill to disk
# instead of growing the step's memory.
WRITER_CONFIG = {"memory_limit": "512MB"}

# Every read-only connection: no file, network or extension access beyond the database itself
# (no COPY TO, read_csv('/etc/passwd'), INSTALL or ATTACH), no Python objects as tables, and
# settings that the query cannot change back.
READ_ONLY_CONFIG = {
    "enable_external_access": "false",
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
    "allow_community_extensions": "false",
    "python_enable_replacements": "false",
    "lock_configuration": "true",
}


def adopt(source: Path, target: Path) -> None:
    """Put `source`'s bytes at `target`: a hard link where the two share a file system, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class PartitionNotBuiltError(LookupError):
    """Raised when an asset partition is loaded that no run has materialized."""


class NoDatabaseError(FileNotFoundError):
    """Raised when a reader opens a home that holds no database (a mistyped PAML_HOME)."""


class StoreDamagedError(OSError):
    """A database file DuckDB cannot read (cut off, overwritten): one line naming it and what to do.
    Nothing is ever written over it, and nothing deletes it."""

    def __str__(self) -> str:
        return str(self.args[0])


class ArtifactDamagedError(OSError):
    """An artifact whose files are missing or not as they were written: one line naming it, its
    directory, what is wrong and the command that writes it again."""

    def __str__(self) -> str:
        return str(self.args[0])


# DuckDB's words for a file that is not (or no longer) a whole database.
DAMAGE_SIGNS = ("not a valid DuckDB database file", "Could not read enough bytes", "Corrupt database file")


def damage_message(path: Path, cause: str) -> str:
    """What to do about a damaged `path`: the snapshot is rebuilt by the next write; the live file is
    the user's data, restored from the snapshot (the copy taken after each write) by hand."""
    if path.name == "paml-snapshot.duckdb":
        return (f"the snapshot {path} is damaged ({cause}); the next pipeline write replaces it (e.g. python -m "
                f"pipelines.cli demo --data-only), and meanwhile `sql --live` reads the live file")
    snapshot = path.with_name("paml-snapshot.duckdb")
    return (f"{path} is damaged ({cause}); nothing was written to it. Keep it aside and restore the snapshot, "
            f"the copy taken after each write: mv {path} {path}.damaged && cp {snapshot} {path}")


def artifact_damage(directory: Path) -> str | None:
    """What is wrong with a stored artifact directory, or None when it is whole as far as its
    manifest (`files` in info.json: each file and its size as written) tells. Directories written
    before the manifest are checked for info.json only.

    A read the file system refuses (an I/O error, no permission) is no damage of the artifact: it is raised
    as a StorageError naming the file."""
    try:
        with refused_reads(directory / "info.json"):
            manifest = json.loads((directory / "info.json").read_text()).get("files", {})
    except FileNotFoundError:
        if (directory / DAMAGED_INFO).is_file():
            return f"a file of it could not be read ({DAMAGED_INFO}: an earlier read found it damaged)"
        return "info.json is missing" if directory.is_dir() else "its directory is missing"
    except StorageError:
        raise
    except (OSError, ValueError) as error:
        return f"info.json cannot be read ({error})"
    for name, size in manifest.items():
        try:
            with refused_reads(directory / name):
                actual = (directory / name).stat().st_size
        except FileNotFoundError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} is {actual} bytes, written as {size}"
    return None


DAMAGED_INFO = "info.json.damaged"  # an artifact's info.json, renamed by a read that found a file of it unreadable


def mark_damaged(directory: Path) -> None:
    """Rename the artifact's info.json aside: a file overwritten in place at its own size passes `artifact_damage`,
    so without this the rebuild that the error asks for took the directory as whole and wrote nothing. A reader
    that may not rename it leaves it (the error still names the artifact)."""
    with contextlib.suppress(OSError):
        os.replace(directory / "info.json", directory / DAMAGED_INFO)


def rebuild_hint(asset_key: str, partition: str) -> str:
    """The command that writes an artifact of (asset, partition) again."""
    return f"dg launch --assets {asset_key}{' --partition ' + partition if partition else ''}"


@dataclass(frozen=True)
class ArtifactRow:
    """One stored materialization."""

    artifact_id: str
    asset_key: str
    partition: str
    content_hash: str
    location: str


def is_lock_error(error: Exception) -> bool:
    """True for DuckDB's 'another process holds the file' errors."""
    text = str(error)
    return "lock" in text.lower() and ("Could not set lock" in text or "Conflicting lock" in text)


def lock_holder(error: Exception) -> str:
    """'<program> (PID n)' from DuckDB's lock error, or 'another process' when it names none."""
    match = re.search(r"Conflicting lock is held in (.+?) \(PID (\d+)\)", str(error))
    return f"{match[1]} (PID {match[2]})" if match else "another process"


def lock_wait_message(path: Path, waited: float, error: Exception) -> str:
    """What a connection waiting on `path`'s lock logs: who holds it and how to let the run go on."""
    return (f"waiting {waited:.0f} s for DuckDB's lock on {path}, held by {lock_holder(error)}: a session open on "
            f"the live file blocks the pipeline's writes, even one opened read-only; the run goes on once it is "
            f"closed. Query {path.with_name('paml-snapshot.duckdb')} instead (never locked; docs/duckdb.md)")


@contextlib.contextmanager
def connect(
    path: Path, *, read_only: bool = False, retry_seconds: float | None = None, restricted: bool = False,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open `path`, retrying while another process holds the lock; always close.

    `retry_seconds`: how long to wait for the lock before raising DuckDB's error; None (the pipeline's
    connections) waits as long as it is held, logging who holds it after LOCK_WARN_AFTER_SECONDS and every
    LOCK_WARN_EVERY_SECONDS after. A read-only connection never creates anything. The pipeline's own
    connections (fixed SQL) attach the file to the process's host instance (`_Host`); a `restricted` one
    (a reader's SQL: `query`) is a read-only instance of its own with READ_ONLY_CONFIG.
    """
    if restricted and not read_only:
        raise ValueError("a restricted connection is read-only")
    if not read_only:
        ensure_directory(path.parent)
    elif not path.is_file():
        raise NoDatabaseError(f"no database at {path}")
    started, delay = time.monotonic(), LOCK_BACKOFF_START
    next_warning = started + LOCK_WARN_AFTER_SECONDS
    with _Host.lock:  # one thread at a time on the store: DuckDB refuses a file open twice in one process
        while True:
            try:
                with file_errors(path):
                    if restricted:
                        con = duckdb.connect(str(path), read_only=True, config=READ_ONLY_CONFIG)
                    else:
                        con = _Host.attach(path, read_only)
                break
            except duckdb.Error as error:
                now = time.monotonic()
                if not is_lock_error(error) or (retry_seconds is not None and now - started > retry_seconds):
                    raise
                if now >= next_warning:
                    import dagster as dg  # its logger reaches the step's log inside a run, stderr outside

                    dg.get_dagster_logger("paml.store").warning(lock_wait_message(path, now - started, error))
                    next_warning = now + LOCK_WARN_EVERY_SECONDS
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            with file_errors(path):
                yield con
        finally:
            with contextlib.suppress(duckdb.Error):  # a close after a failed write fails again: the first error is the one
                con.close()
            if not restricted:
                _Host.release()


class _Host:
    """The process's in-memory DuckDB instance, to which the pipeline's short connections attach the store's file.

    Starting an instance (its catalogue of built-in functions) takes 40-55 ms on the 2-core machine, attaching a
    file to a running one 5-15 ms, and a chain of runs opens hundreds of short connections (docs/benchmarks.md).
    The file's lock is a connection's: taken by ATTACH (shared when read-only), given back by DETACH, which
    also checkpoints as closing a connection did. Nested connections to the attached file share it; the
    callers hold `lock`.
    """

    lock = threading.RLock()
    _con: duckdb.DuckDBPyConnection | None = None
    _pid: int | None = None
    _attached: tuple[str, bool] | None = None  # (file, read-only) while attached
    _depth = 0
    ALIAS = "paml_store"

    @classmethod
    def attach(cls, path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A new cursor whose default database is `path`, attached now or by an enclosing connection."""
        if cls._con is None or cls._pid != os.getpid():  # a forked child never uses its parent's instance
            cls._con, cls._pid, cls._attached, cls._depth = duckdb.connect(":memory:", config=WRITER_CONFIG), os.getpid(), None, 0
        name = str(path.resolve())
        if cls._attached is None:
            # spills (mirroring millions of rows, the snapshot's copy) go beside the file, as a connection's did
            cls._con.execute(f"SET temp_directory = {quote(name + '.tmp')}")
            cls._con.execute(f"ATTACH {quote(name)} AS {cls.ALIAS}{' (READ_ONLY)' if read_only else ''}")
            cls._attached = (name, read_only)
        elif cls._attached[0] != name or (cls._attached[1] and not read_only):
            raise RuntimeError(f"{path} opened while this process holds {cls._attached[0]}"
                               f"{' read-only' if cls._attached[1] else ''}: close that connection first")
        cls._depth += 1
        try:
            cursor = cls._con.cursor()
            cursor.execute(f"USE {cls.ALIAS}")
        except BaseException:
            cls.release()
            raise
        return cursor

    @classmethod
    def release(cls) -> None:
        """End a connection; the outermost detaches the file. An instance whose DETACH fails (a full disk at the
        checkpoint: the commits are in the WAL) is closed and replaced at the next connection."""
        cls._depth -= 1
        if cls._depth > 0 or cls._con is None:
            return
        try:
            cls._con.execute(f"DETACH {cls.ALIAS}")
        except duckdb.Error:
            with contextlib.suppress(duckdb.Error):
                cls._con.close()
            cls._con = None
        cls._attached = None

    @classmethod
    def close_idle(cls) -> None:
        """Close the instance between connections, so that a child of fork() can start DuckDB: while an instance
        lives, DuckDB's thread pool is its parent's, and a new instance in the child waits for those threads forever."""
        if not cls.lock.acquire(blocking=False):  # a connection is open in another thread: leave it be
            return
        try:
            if cls._con is not None and cls._attached is None:
                with contextlib.suppress(duckdb.Error):
                    cls._con.close()
                cls._con = None
        finally:
            cls.lock.release()


os.register_at_fork(before=_Host.close_idle)


def quote(value: str) -> str:
    """A SQL string literal (ids, names and paths of our own)."""
    return "'" + value.replace("'", "''") + "'"


@contextlib.contextmanager
def file_errors(path: Path) -> Iterator[None]:
    """DuckDB's errors about the file itself as one line: a damaged database (StoreDamagedError) or a
    write the file system refused (StorageError); SQL errors pass unchanged."""
    try:
        yield
    except duckdb.Error as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if any(sign in text for sign in DAMAGE_SIGNS):
            damaged = re.search(r'file "([^"]+)"', text)
            raise StoreDamagedError(damage_message(Path(damaged[1]) if damaged else path, text)) from error
        if refused_errno(error) is not None:
            with refused_writes(path):
                raise
        raise


def relative_bundle_location(location: str, asset_key: str, partition: str) -> str:
    """An artifact directory relative to its home, also for rows written with absolute paths.

    Bundle directories are always `artifacts/<asset>/<partition or _>/<digest>`, so the part
    after the old home is known whatever the old home was.
    """
    if not Path(location).is_absolute():
        return location
    return f"artifacts/{asset_key}/{partition or '_'}/{Path(location).name}"


# Rewrite rows written with absolute locations (before homes were relocatable); idempotent.
MIGRATE_BUNDLE_LOCATIONS = """
UPDATE artifacts SET location = 'artifacts/' || asset_key || '/'
    || CASE WHEN coalesce(partition, '') = '' THEN '_' ELSE partition END || '/' || regexp_extract(location, '[^/]+$')
WHERE kind = 'bundle' AND location LIKE '/%'
"""
# Raw files generated inside the home (synthetic taobao logs) become relative too.
MIGRATE_RAW_LOCATIONS = """
UPDATE artifacts SET location = substr(location, length($home) + 1)
WHERE kind = 'raw_file' AND starts_with(location, $home)
"""


# Tables of results mirrored before their rows named a protocol (f6f80ec's store): every row then was the
# paper's protocol, as a model's info without one is read (models/tasks.py DEFAULT_PROTOCOL).
PROTOCOL_TABLES = ("metrics", "user_metrics", "significance", "ablation_metrics", "ablation_significance",
                   "report_table2", "report_table3", "report_table4", "metrics_history")
OLDER_PROTOCOL = "paper"


def table_columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """{table: its columns} of the database's base tables (views left out)."""
    rows = con.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c JOIN information_schema.tables t "
        "USING (table_catalog, table_schema, table_name) WHERE t.table_type = 'BASE TABLE' "
        "AND t.table_catalog = current_database()").fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    return columns


def outdated_tables(columns: dict[str, set[str]]) -> list[str]:
    """'table (lacks column, ...)' for each table written by older code that the next write brings up to
    date (`migrate_older_tables`, SCHEMA): a result table without `protocol`, runs without the run facts."""
    lacking = {table: ["protocol"] for table in PROTOCOL_TABLES if table in columns and "protocol" not in columns[table]}
    if "runs" in columns and (facts := sorted(set(RUN_COLUMNS) - columns["runs"])):
        lacking["runs"] = facts
    if "lineage_edges" in columns and "input_event_id" not in columns["lineage_edges"]:
        lacking["lineage_edges"] = ["input_event_id"]
    return [f"{table} (lacks {', '.join(names)})" for table, names in lacking.items()]


def migrate_older_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Give result tables of older code their `protocol` column, filled with the paper's protocol for
    the rows they hold, and say which tables it changed. Runs before SCHEMA, whose ADD COLUMN IF NOT
    EXISTS would leave metrics_history's older rows without a protocol."""
    columns = table_columns(con)
    changed = outdated_tables(columns)
    for table in PROTOCOL_TABLES:
        if table in columns and "protocol" not in columns[table]:
            con.execute(f'ALTER TABLE "{table}" ADD COLUMN protocol VARCHAR')
            con.execute(f'UPDATE "{table}" SET protocol = ?', [OLDER_PROTOCOL])
    return changed


def refresh_older_views(con: duckdb.DuckDBPyConnection) -> None:
    """Recreate the views over tables that exist; one whose table still lacks a column it selects keeps
    its older definition until that table is written again (`_refresh_views`)."""
    tables = table_columns(con)
    for view, select in VIEWS.items():
        if select.rsplit("FROM ", 1)[1].split()[0] in tables:
            with contextlib.suppress(duckdb.BinderException):
                con.execute(f'CREATE OR REPLACE VIEW "{view}" AS {select}')


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failed statement. DuckDB may have ended the transaction itself (a commit that
    failed on a full disk); ROLLBACK's own error then would hide the one that matters."""
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def set_aside(directory: Path) -> None:
    """Remove a damaged artifact directory, renamed first so that no reader finds it half removed."""
    aside = directory.with_name(f".{directory.name}.broken.{uuid.uuid4().hex}")
    with contextlib.suppress(FileNotFoundError):
        os.replace(directory, aside)
    shutil.rmtree(aside, ignore_errors=True)


class LineageStore:
    """Artifacts on disk under `home`, their rows in `home/paml.duckdb`.

    `read_only=True` is the store of readers: it needs an existing database (else
    NoDatabaseError, one line naming the home), reads the snapshot by default and cannot write.
    """

    def __init__(self, home: Path, *, read_only: bool = False):
        self.home = Path(home)
        self.read_only = read_only
        self.db_path = self.home / "paml.duckdb"
        self.snapshot_path = self.home / "paml-snapshot.duckdb"
        self.artifact_root = self.home / "artifacts"
        self._schema_ready = False
        self.migrated: list[str] = []  # tables of older code the first write brought up to date
        if read_only and not (self.snapshot_path.is_file() or self.db_path.is_file()):
            raise NoDatabaseError(
                f"no PAML database in {self.home} (neither paml-snapshot.duckdb nor paml.duckdb): "
                "check PAML_HOME, or build something first (python -m pipelines.cli demo)"
            )

    @contextlib.contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection on the live file, with the schema made and old rows migrated."""
        if self.read_only:
            raise PermissionError(f"the store of {self.home} was opened read-only")
        with connect(self.db_path) as con:
            if not self._schema_ready:
                self.migrated = migrate_older_tables(con)
                con.execute(SCHEMA)
                con.execute(MIGRATE_BUNDLE_LOCATIONS)
                con.execute(MIGRATE_RAW_LOCATIONS, {"home": f"{self.home.resolve()}/"})
                if self.migrated:  # views of older code select what their tables had then (no protocol)
                    refresh_older_views(con)
                self._schema_ready = True
            yield con

    def outdated(self) -> list[str]:
        """The tables of older code in the database a read uses, each with the columns it lacks
        (`outdated_tables`); empty when it is this code's."""
        with connect(self._read_path(None), read_only=True, retry_seconds=self.lock_wait_seconds) as con:
            return outdated_tables(table_columns(con))

    def bring_up_to_date(self) -> list[str]:
        """Migrate the live database's older tables (the first write does it too) and copy the snapshot;
        the tables it changed."""
        with self._writer() as con:
            self._refresh_snapshot(con)
        return self.migrated

    def location_of(self, path: Path) -> str:
        """How a path is stored: relative to the home when inside it, else absolute."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.home.resolve()).as_posix()
        except ValueError:
            return str(path)

    def stored_source(self, source: SourceFile) -> dict:
        """`source` as an info.json keeps it: a file inside the home by its path relative to the home (read back
        in whatever home the artifact is, `loaded_source`), any other by its absolute path."""
        location = self.location_of(Path(source.path))
        path = location if not Path(location).is_absolute() else str(Path(source.path).absolute())
        return {**source.__dict__, "path": path}

    def loaded_source(self, stored: dict) -> SourceFile:
        """A source as `stored_source` kept it, in this home. An absolute path (any file outside the home; one
        inside the home where info.json was written before these paths were relative) is read as written."""
        path = Path(stored["path"])
        return SourceFile(**{**stored, "path": str(path if path.is_absolute() else self.home / path)})

    def path_of(self, row: "ArtifactRow") -> Path:
        """The artifact directory of `row` in this home (wherever the home was written)."""
        return self.home / relative_bundle_location(row.location, row.asset_key, row.partition)

    # -- writing -----------------------------------------------------------------
    def write_files(self, bundle: Bundle, asset_key: str, partition: str) -> tuple[Path, int]:
        """Write the bundle's files to a content-addressed directory; return (dir, bytes)."""
        digest = bundle.content_hash()
        target = self.artifact_root / asset_key / (partition or "_") / digest[:24]
        damage = artifact_damage(target)
        if damage is not None:  # never written, or damaged since (a file deleted or cut off by hand)
            ensure_directory(target.parent)
            remove_stale_staging(target.parent)
            # publish_directory keeps a target that has info.json, so a damaged one goes first (the same bytes
            # are written again). Checked again: another writer may have published it whole meanwhile.
            if (target / "info.json").is_file() and artifact_damage(target) is not None:
                set_aside(target)
            staging = staging_path(target)  # named by its owner: a killed one's is removed by the next writer
            try:
                with refused_writes(staging):
                    self._stage(bundle, staging)
                publish_directory(staging, target, complete="info.json")
            finally:  # a failed write (disk full) leaves nothing behind; after the rename there is nothing here
                shutil.rmtree(staging, ignore_errors=True)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        return target, size

    def _stage(self, bundle: Bundle, staging: Path) -> None:
        """Write the bundle's files into `staging`, info.json last with the manifest of the others."""
        (staging / "frames").mkdir(parents=True)
        for name, frame in bundle.frames.items():
            frame.write_parquet(staging / "frames" / f"{name}.parquet")
        for name, parts in bundle.parts.items():
            for relative, path in zip(parts.names, parts.files):
                adopt(path, staging / "frames" / name / relative)
        if bundle.tensors:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in bundle.tensors.items()}, str(staging / "tensors.safetensors"))
        elif bundle.tensor_file is not None:
            adopt(bundle.tensor_file, staging / "tensors.safetensors")
        files = {p.relative_to(staging).as_posix(): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()}
        sources = [self.stored_source(s) for s in bundle.sources]
        (staging / "info.json").write_text(
            json.dumps({"info": bundle.info, "sources": sources, "files": files}, indent=1, default=str))

    def record(
        self, bundle: Bundle, *, run_id: str, job_name: str, asset_key: str, partition: str,
        code_version: str | None, inputs: dict[str, int | None] | list[str], mirrors: dict[str, pl.DataFrame | StoredParts],
        appends: dict[str, pl.DataFrame | StoredParts] | None = None,
    ) -> ArtifactRow:
        """Write files, then in one transaction: the run, the artifact, its edges, mirrored tables.

        `inputs` maps each loaded artifact to the Dagster event (storage id) it was resolved
        from (a plain list: no events known); `bundle.inputs` adds artifacts read by id. `appends`
        are history tables: rows are added, never replaced (the model registry).
        """
        target, size = self.write_files(bundle, asset_key, partition)
        location = self.location_of(target)
        digest = bundle.content_hash()
        artifact_id = hashlib.sha256(f"{run_id}|{asset_key}|{partition}".encode()).hexdigest()[:20]
        with self._writer() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    "INSERT INTO runs (run_id, job_name, first_write_at, last_write_at, n_artifacts) "
                    "VALUES (?, ?, now(), now(), 0) ON CONFLICT (run_id) DO NOTHING",
                    [run_id, job_name],
                )
                self._record_run_facts(con, run_id, run_facts(bundle.info))
                con.execute("DELETE FROM lineage_edges WHERE artifact_id = ?", [artifact_id])
                con.execute("DELETE FROM artifacts WHERE artifact_id = ?", [artifact_id])
                con.execute(
                    "INSERT INTO artifacts SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, 'bundle', ?, ?, ?, ?, ?, now() FROM artifacts",
                    [artifact_id, run_id, asset_key, partition, code_version, digest, location, bundle.row_count(), size],
                )
                for source in bundle.sources:
                    source_id = self._record_source(con, source, partition, self.location_of(Path(source.path)))
                    con.execute("INSERT INTO lineage_edges (artifact_id, input_artifact_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                [artifact_id, source_id])
                edges = {**dict.fromkeys(bundle.inputs), **(inputs if isinstance(inputs, dict) else dict.fromkeys(inputs))}
                for input_id in sorted(edges):
                    con.execute(
                        "INSERT INTO lineage_edges (artifact_id, input_artifact_id, input_event_id) VALUES (?, ?, ?) "
                        "ON CONFLICT DO NOTHING", [artifact_id, input_id, edges[input_id]])
                for table, frame in mirrors.items():
                    self._mirror(con, table, frame, asset_key, partition, artifact_id)
                for table, frame in (appends or {}).items():
                    self._mirror(con, table, frame, asset_key, partition, artifact_id, append=True)
                self._refresh_views(con, set(mirrors) | set(appends or {}))
                con.execute(
                    "UPDATE runs SET last_write_at = now(), n_artifacts = n_artifacts + 1 WHERE run_id = ?", [run_id]
                )
                con.execute("COMMIT")
            except BaseException:
                rollback(con)
                raise
            self._refresh_snapshot(con)
        for directory in bundle.scratch:  # its files are in the artifact now
            shutil.rmtree(directory, ignore_errors=True)
        return ArtifactRow(artifact_id, asset_key, partition, digest, location)

    @staticmethod
    def _record_run_facts(con: duckdb.DuckDBPyConnection, run_id: str, facts: dict) -> None:
        """Threads, device(s), kernels, versions, commit, machine and settings of a run (pipelines/provenance.py).

        A run's devices and settings accumulate over its writes; the other facts are the latest write's.
        """
        devices, settings = con.execute("SELECT device, settings FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if facts.get("device"):
            facts["device"] = ", ".join(sorted(set(filter(None, (devices or "").split(", "))) | {facts["device"]}))
        if facts.get("settings"):
            facts["settings"] = json.dumps({**json.loads(settings or "{}"), **facts["settings"]}, sort_keys=True, default=str)
        known = {k: v for k, v in facts.items() if k in RUN_COLUMNS and v is not None}
        if known:
            assignments = ", ".join(f"{name} = ?" for name in known)
            con.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*known.values(), run_id])

    def set_run_wall_seconds(self, run_id: str, seconds: float) -> None:
        """The wall time of a whole run, as its launcher measured it (the CLI's jobs)."""
        with self._writer() as con:
            con.execute("UPDATE runs SET wall_seconds = ? WHERE run_id = ?", [seconds, run_id])
            self._refresh_snapshot(con)

    def record_table(self, table: str, frame: pl.DataFrame, *, source: str, partition: str, artifact_id: str) -> None:
        """Replace `table`'s rows of (source, partition) with `frame`, outside any asset (e.g. the tuning CLI)."""
        with self._writer() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                self._mirror(con, table, frame, source, partition, artifact_id)
                con.execute("COMMIT")
            except BaseException:
                rollback(con)
                raise
            self._refresh_snapshot(con)

    @staticmethod
    def _record_source(con: duckdb.DuckDBPyConnection, source: SourceFile, partition: str, location: str) -> str:
        """Register a raw input file as an artifact of kind 'raw_file' (once per content)."""
        source_id = f"raw:{source.sha256[:24]}"
        con.execute(
            "INSERT INTO artifacts SELECT ?, coalesce(max(seq), 0) + 1, NULL, 'raw_file', ?, 'raw_file', NULL, ?, ?, NULL, ?, now() "
            "FROM artifacts ON CONFLICT (artifact_id) DO NOTHING",
            [source_id, partition, source.sha256, location, source.bytes],
        )
        return source_id

    @staticmethod
    def _mirror(
        con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame | StoredParts, asset_key: str, partition: str,
        artifact_id: str, append: bool = False,
    ) -> None:
        """Replace `table`'s rows written by this (asset, partition) with `frame`.

        Every mirrored row carries the asset key, partition and artifact id it came from, so
        a table fed by several assets (e.g. `metrics` by every `<method>_eval`) stays exact.
        With `append`, rows of earlier artifacts stay (a history) and each row gets the time
        it was recorded; recording the same artifact again replaces only its own rows.
        Parts (files on disk) are read by DuckDB as a dataset, never whole into memory here.
        """
        if isinstance(frame, pl.DataFrame) and not frame.columns:
            # Nothing to mirror (an evaluation with no model in service anywhere): the newest
            # materialization has no rows, so a mirror keeps none of the asset's older rows.
            exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0]
            if exists and not append:
                con.execute(f'DELETE FROM "{table}" WHERE asset_key = ? AND partition = ?', [asset_key, partition])
            return
        if isinstance(frame, StoredParts):
            # DuckDB's own Parquet reader: a third of the memory of scanning an Arrow dataset (1.2 GB
            # for taobao's 6 M rejected rows at 1,000,000 users)
            source, columns = f"read_parquet([{', '.join(quote(str(f)) for f in frame.files)}])", frame.schema().names()
        else:
            con.register("mirror_source", frame.to_arrow())
            source, columns = "mirror_source", frame.columns
        added = [f"{quote(partition)} AS dataset"] if "dataset" not in columns and partition else []
        added += [f"{quote(asset_key)} AS asset_key", f"{quote(partition)} AS partition", f"{quote(artifact_id)} AS artifact_id"]
        try:
            kept = ", ".join(f'"{c}"' for c in columns if c not in ("asset_key", "partition", "artifact_id"))
            con.execute(f"CREATE OR REPLACE TEMP VIEW mirror_rows AS SELECT {kept + ', ' if kept else ''}"
                        f"{', '.join(added)} FROM {source}")
            con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM mirror_rows LIMIT 0')
            existing = {r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
            for name, dtype in con.execute("SELECT column_name, column_type FROM (DESCRIBE mirror_rows)").fetchall():
                if name not in existing:  # a new metric column, e.g. the first CTR dataset
                    con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {dtype}')
            if append:
                con.execute(f'DELETE FROM "{table}" WHERE artifact_id = ?', [artifact_id])
                if "recorded_at" not in existing:
                    con.execute(f'ALTER TABLE "{table}" ADD COLUMN recorded_at TIMESTAMP')
                con.execute(f'INSERT INTO "{table}" BY NAME SELECT *, now()::TIMESTAMP AS recorded_at FROM mirror_rows')
            else:
                con.execute(f'DELETE FROM "{table}" WHERE asset_key = ? AND partition = ?', [asset_key, partition])
                con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM mirror_rows')
        finally:
            with contextlib.suppress(duckdb.Error):  # after a failed statement the error above is the one to see
                con.execute("DROP VIEW IF EXISTS mirror_rows")
                if source == "mirror_source":
                    con.unregister("mirror_source")

    @staticmethod
    def _refresh_views(con: duckdb.DuckDBPyConnection, written: set[str]) -> None:
        """(Re)create the views whose source table was just written."""
        for view, select in VIEWS.items():
            source = select.rsplit("FROM ", 1)[1].split()[0]
            if source in written:
                con.execute(f'CREATE OR REPLACE VIEW "{view}" AS {select}')

    def record_checks(self, rows: list[dict]) -> None:
        """Append check outcomes (one row per expectation)."""
        if not rows:
            return
        with self._writer() as con:
            con.executemany(
                "INSERT INTO checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
                [[r["run_id"], r["asset_key"], r["partition"], r["check_name"], r["expectation"],
                  r.get("column_name"), r["success"], r.get("unexpected_count"), r.get("details")] for r in rows],
            )
            self._refresh_snapshot(con)

    def _refresh_snapshot(self, con: duckdb.DuckDBPyConnection) -> None:
        """Copy the committed database to `paml-snapshot.duckdb` (staged, then renamed).

        Readers open the snapshot at any time, with any DuckDB client, without ever meeting
        the writer's lock; it is at most one write behind the live file. The copy is made while the
        writer's own connection holds the lock, so no other writer can interleave.

        A copy the file system refuses (disk full, a file size limit, a read-only snapshot) does not fail
        the write: it is committed in the live file, whole. The step's log gets a warning naming the
        snapshot and the cause, the half copy is removed (readers never see it: only a whole copy is
        renamed into place), the old snapshot stays, and `STALE_NOTE` beside it tells readers (`stale_note`)
        until a later write copies it again.
        """
        # Only the writer (holding the database's lock, as here) stages snapshots, so any staged copy
        # beside it is a killed writer's leftover: never read, and a full copy of the store in size.
        for leftover in self.snapshot_path.parent.glob(f".{self.snapshot_path.name}.*"):
            leftover.unlink(missing_ok=True)
        staging = self.snapshot_path.with_name(f".{self.snapshot_path.name}.{uuid.uuid4().hex}")
        try:
            # After a checkpoint the file alone holds every commit (its write-ahead log is empty) and nobody
            # else writes while this connection holds the lock: its bytes are a whole database. Copying them
            # is several times faster than DuckDB's logical COPY FROM DATABASE (130 against 15-25 ms for a
            # 9 MB store, more as the store grows), and closing the connection checkpointed anyway.
            database = con.execute("SELECT current_database()").fetchone()[0]
            if shutil.disk_usage(self.snapshot_path.parent).free < self.db_path.stat().st_size:
                # a copy that cannot fit: not tried, so the checkpoint does not take the last free bytes either
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(staging))
            con.execute(f'CHECKPOINT "{database}"')
            shutil.copyfile(self.db_path, staging)
            descriptor = os.open(staging, os.O_RDONLY)
            try:
                os.fsync(descriptor)  # a whole copy on disk before it replaces the old one
            finally:
                os.close(descriptor)
            os.replace(staging, self.snapshot_path)
        except Exception as error:
            staging.unlink(missing_ok=True)  # as large as the store: free it now
            code = refused_errno(error)
            if code is None:  # not the file system's refusal: a bug, with its traceback
                raise
            self._snapshot_failed(str(StorageError(code, str(self.snapshot_path), SNAPSHOT_KEPT.format(
                live=self.db_path))))
            return
        self.stale_path.unlink(missing_ok=True)

    @property
    def stale_path(self) -> Path:
        """The note that the snapshot is behind the live file (its last refresh failed); absent when it is not."""
        return self.snapshot_path.with_name(STALE_NOTE)

    def _snapshot_failed(self, line: str) -> None:
        """Warn that the snapshot could not be refreshed (`line`: the cause, the path, what to do) and leave the note
        for readers; on a full disk even that note may not fit, then it is left empty (its presence says enough)."""
        import dagster as dg  # its logger reaches the step's log inside a run, stderr outside

        dg.get_dagster_logger("paml.store").warning(f"snapshot not refreshed: {line}")
        try:
            self.stale_path.write_text(line + "\n")
        except OSError:
            with contextlib.suppress(OSError):
                self.stale_path.touch()

    def stale_note(self) -> str | None:
        """What a reader of the snapshot is told when it is behind the live file (a refresh failed), else None."""
        try:
            cause = self.stale_path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError:
            cause = ""
        return (f"the snapshot {self.snapshot_path} is behind the live file: its refresh after the last write failed"
                f"{' (' + cause + ')' if cause else ''}; the next write refreshes it, and `sql --live` reads the live file")

    # -- reading -----------------------------------------------------------------
    @property
    def lock_wait_seconds(self) -> float | None:
        """How long a read waits for the live file's lock: a reader's store (`sql --live`) gives up after
        LOCK_RETRY_SECONDS and says who holds it; the pipeline's waits as long as it is held (connect)."""
        return LOCK_RETRY_SECONDS if self.read_only else None

    def _read_path(self, snapshot: bool | None) -> Path:
        """The file a read uses: the snapshot (readers' default, never locked) or the live file."""
        use_snapshot = self.read_only if snapshot is None else snapshot
        if use_snapshot and self.snapshot_path.is_file():
            return self.snapshot_path
        if not self.db_path.is_file() and self.read_only:
            raise NoDatabaseError(f"no live database {self.db_path} (the home holds only its snapshot)")
        return self.db_path

    def latest(self, asset_key: str, partition: str) -> ArtifactRow:
        """The newest artifact of (asset, partition), or PartitionNotBuiltError saying how to build it."""
        row = None
        path = self._read_path(None)
        if path.is_file():
            with connect(path, read_only=True, retry_seconds=self.lock_wait_seconds) as con:
                row = con.execute(
                    "SELECT artifact_id, content_hash, location FROM artifacts "
                    "WHERE asset_key = ? AND partition = ? ORDER BY seq DESC LIMIT 1",
                    [asset_key, partition],
                ).fetchone()
        if row is None:
            where = f" --partition {partition}" if partition else ""
            raise PartitionNotBuiltError(
                f"asset {asset_key!r}{' partition ' + repr(partition) if partition else ''} has never been built "
                f"in {self.db_path}; build it first: dagster asset materialize -m pipelines "
                f"--select '{asset_key}'{where} (or run its job with upstream assets)."
            )
        return ArtifactRow(row[0], asset_key, partition, row[1], row[2])

    def row(self, artifact_id: str) -> ArtifactRow:
        """The stored artifact `artifact_id`, or LookupError naming it."""
        with connect(self._read_path(None), read_only=True, retry_seconds=self.lock_wait_seconds) as con:
            row = con.execute(
                "SELECT artifact_id, asset_key, partition, content_hash, location FROM artifacts WHERE artifact_id = ?",
                [artifact_id]).fetchone()
        if row is None:
            raise LookupError(f"artifact {artifact_id!r} is not in {self.db_path}")
        return ArtifactRow(*row)

    def load(self, row: ArtifactRow) -> Bundle:
        """Read an artifact's files back into a Bundle (tensors with safetensors, no pickles).

        What goes wrong is told as what it is: a file missing or not as written is damage (ArtifactDamagedError,
        with the command that writes it again); a read the file system refuses (an I/O error, no permission, a
        full disk for a temporary file) is a StorageError naming the file; a file that vanished while it was read
        (a run writing the damaged artifact again set its directory aside) is read again once whole."""
        location = self.path_of(row)
        for attempt in range(2):
            damage = artifact_damage(location)  # deleted or cut off by hand since it was written
            if damage is not None:
                raise self._damaged(row, location, damage)
            try:
                return self._read_bundle(row, location)
            except FileNotFoundError as error:  # passed the check just before: taken away while read
                if attempt == 0 and artifact_damage(location) is None:
                    continue  # written again whole meanwhile: the same files, read them
                what = named_path(error) or str(location)
                raise self._damaged(row, location, f"{what} vanished while it was read (deleted, or the damaged "
                                                   "artifact set aside by a run writing it again)") from error
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _damaged(row: ArtifactRow, location: Path, what: object) -> ArtifactDamagedError:
        where = f"{row.asset_key}{' partition ' + repr(row.partition) if row.partition else ''}"
        return ArtifactDamagedError(
            f"artifact {row.artifact_id} ({where}) at {location} cannot be read: {what}; build it again (the "
            f"same files are written): {rebuild_hint(row.asset_key, row.partition)}, then run this step again")

    def _read_bundle(self, row: ArtifactRow, location: Path) -> Bundle:
        """The files of `location` as a Bundle; FileNotFoundError passes unchanged (`load` decides), a refused read
        is a StorageError, anything else the readers refuse (bytes not as written) an ArtifactDamagedError."""
        from safetensors import SafetensorError  # the Rust binding alone: torch is imported only for tensors

        try:
            meta = json.loads((location / "info.json").read_text())
            frames = {p.stem: pl.read_parquet(p) for p in sorted((location / "frames").glob("*.parquet"))}
            parts = {p.name: StoredParts.under(p) for p in sorted((location / "frames").iterdir()) if p.is_dir()}
            tensors = {}
            if (location / "tensors.safetensors").is_file():
                from safetensors.torch import load_file

                tensors = load_file(str(location / "tensors.safetensors"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, pl.exceptions.PolarsError, SafetensorError) as error:  # overwritten in place
            if error_code(error) == errno.ENOENT:  # polars' and safetensors' words for a missing file
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), named_path(error) or str(location)) from error
            code = refused_errno(error)
            if code is not None:  # not damaged: an I/O error, or this user may not read it (a home copied with other owners)
                raise StorageError(code, refused_path(error, code, location)) from error
            if not isinstance(error, OSError):  # its bytes are bad, at their written size: `write` must not keep them
                mark_damaged(location)
            raise self._damaged(row, location, str(error).strip().splitlines()[0] if str(error).strip()
                                else type(error).__name__) from error
        sources = tuple(self.loaded_source(s) for s in meta.get("sources", []))
        return Bundle(frames=frames, tensors=tensors, info=meta["info"], sources=sources, parts=parts,
                      artifact_id=row.artifact_id)

    def query(self, sql: str, params: list | None = None, *, snapshot: bool | None = None) -> pl.DataFrame:
        """Run a read query on a short, restricted, read-only connection; return a polars frame.

        `snapshot=True` reads the last committed snapshot, which no writer ever locks;
        `False` the live file (waits while a writer holds it); None: the snapshot for a
        read-only store, the live file otherwise. Anything but reading the database
        (COPY TO, read_csv of a file, INSTALL, ATTACH, SET) fails with a duckdb.Error.
        """
        with connect(self._read_path(snapshot), read_only=True, retry_seconds=self.lock_wait_seconds, restricted=True) as con:
            relation = con.sql(sql, params=params) if params else con.sql(sql)
            if relation is None:  # an empty text, only comments, or a statement with no result
                raise duckdb.InvalidInputException(f"nothing to show: {sql.strip()[:60]!r} returns no rows; give a query (SELECT ...)")
            return relation.pl()
