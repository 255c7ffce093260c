"""When the file system misbehaves: a full disk, a file size limit, a read-only or unwritable home, a
damaged database or artifact. Real failures, no patched writes: a small tmpfs (CI runs as root, which
may mount one; without the right to mount, those tests skip and say so), RLIMIT_FSIZE (any user), a
read-only mount, and the rights of the user nobody (seteuid). The rule under test: a failed run leaves every
store consistent, its error is one line naming the path and the cause, and a rerun gives the same result.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from assets.bundle import Bundle
from pipelines.definitions import ASSETS, CHECKS, DATA_ASSETS, build_resources
from pipelines.lineage import LATEST_SQL
from pipelines.storage_errors import StorageError
from pipelines.store import ArtifactDamagedError, ArtifactRow, LineageStore, StoreDamagedError, artifact_damage
from tests.fixtures import tiny_real_data

pytestmark = pytest.mark.heavy  # long: handed out first when the tests run in parallel (tests/conftest.py)

MIB = 1024 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str):
    """A tmpfs of `size` mounted at `path` for the block (unmounted after, even on failure)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, *options: str) -> None:
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(path)], check=True)


def noise(n_bytes: int, seed: int = 0) -> pl.DataFrame:
    """Random floats: neither Parquet nor DuckDB compresses them, so they take about `n_bytes`."""
    return pl.DataFrame({"x": np.random.default_rng(seed).random(n_bytes // 8)})


def record(store: LineageStore, bundle: Bundle, run: str, mirrors: dict | None = None) -> ArtifactRow:
    return store.record(bundle, run_id=run, job_name="j", asset_key="a", partition="p", code_version="1",
                        inputs=[], mirrors=mirrors or {})


def artifact_ids(path: Path) -> list[str]:
    """The artifact ids a database file holds, opened as any DuckDB client would (so: a valid database)."""
    with duckdb.connect(str(path), read_only=True) as con:
        return [r[0] for r in con.execute("SELECT artifact_id FROM artifacts ORDER BY seq").fetchall()]


def staged(home: Path) -> list[Path]:
    """Staging files and directories a failed write left behind (`.name.hex`)."""
    return [p for p in home.rglob(".*") if "dagster" not in p.parts]


def fill(directory: Path, leave: int) -> Path:
    """A file that takes all but about `leave` bytes of `directory`'s file system."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        with contextlib.suppress(OSError):
            handle.write(b"\0" * max(shutil.disk_usage(directory).free - leave, 0))
    return filler


def test_disk_full_while_writing_an_artifact_records_nothing_and_a_rerun_completes(tmp_path):
    with tmpfs(tmp_path / "home", "8m") as home:
        store = LineageStore(home)
        first = record(store, Bundle(frames={"t": pl.DataFrame({"x": [1, 2]})}), "r1")
        big = Bundle(frames={"t": noise(10 * MIB)})
        with pytest.raises(StorageError) as refused:
            record(store, big, "r2")
        # one line: the cause, the file under artifacts/ it was writing, what to do
        line = str(refused.value)
        assert "\n" not in line and line.startswith("disk full: ") and f"{home}/artifacts/a/p/" in line
        assert "No space left on device" in line and "free space" in line
        assert artifact_ids(store.db_path) == artifact_ids(store.snapshot_path) == [first.artifact_id]
        assert staged(home) == []  # the half-written staging directory is gone, its space free again
        remount(home, "size=64m")
        again = record(store, big, "r2")
        clean = LineageStore(tmp_path / "clean")
        assert store.load(again).content_hash() == clean.load(record(clean, big, "r2")).content_hash()


def test_disk_full_while_committing_to_duckdb_keeps_the_error_and_the_store(tmp_path):
    # DuckDB ends a transaction whose commit failed; our ROLLBACK then raised "cannot rollback - no
    # transaction is active", which hid the full disk from the user.
    with tmpfs(tmp_path / "home", "8m") as home:
        store = LineageStore(home)
        first = record(store, Bundle(frames={"t": pl.DataFrame({"x": [1]})}), "r1")
        small = Bundle(frames={"t": pl.DataFrame({"x": [2]})})
        # rows that DuckDB keeps for its write-ahead log at the commit (large row groups would go to the file earlier)
        wide = pl.DataFrame({"text": [os.urandom(75).hex() for _ in range(60_000)]})
        with pytest.raises(StorageError) as refused:
            record(store, small, "r2", mirrors={"wide": wide})
        line = str(refused.value)
        assert line.startswith(f"disk full: {store.db_path}") and "\n" not in line, line
        assert artifact_ids(store.db_path) == artifact_ids(store.snapshot_path) == [first.artifact_id]
        assert staged(home) == []
        remount(home, "size=64m")
        record(store, small, "r2", mirrors={"wide": wide})
        assert store.query("SELECT count(*) FROM wide").item() == wide.height


def test_disk_full_while_copying_the_snapshot_keeps_the_old_one_frees_the_copy_and_does_not_fail_the_write(
        tmp_path, monkeypatch, caplog, capsys):
    # The write is committed in the live file, whole: the step failed all the same ("disk full: ...snapshot..."),
    # and a rerun wrote it again.
    with tmpfs(tmp_path / "home", "16m") as home:
        store = LineageStore(home)
        first = record(store, Bundle(frames={"t": pl.DataFrame({"x": [1]})}), "r1", mirrors={"wide": noise(2 * MIB)})
        filler = fill(home, leave=MIB)  # room for a small commit, not for a copy of the whole store
        second = Bundle(frames={"t": pl.DataFrame({"x": [2]})})
        with caplog.at_level(logging.WARNING):
            written = record(store, second, "r2")
        [warning] = [r.getMessage() for r in caplog.records if "snapshot not refreshed" in r.getMessage()]
        assert warning.startswith(f"snapshot not refreshed: disk full: {store.snapshot_path} ") and "\n" not in warning
        assert f"the write is committed in {store.db_path}; the snapshot stays as it was" in warning
        assert artifact_ids(store.snapshot_path) == [first.artifact_id]  # still a whole database, one write behind
        assert artifact_ids(store.db_path) == [first.artifact_id, written.artifact_id]  # the write itself is committed
        assert staged(home) == []  # no half copy (as large as the store) left
        # `sql` (the snapshot) answers, one write behind, and says so on stderr
        assert sql_error(monkeypatch, home, "SELECT count(*) AS n FROM artifacts") is None
        note = capsys.readouterr().err
        assert note.startswith(f"note: the snapshot {store.snapshot_path} is behind the live file: its refresh after "
                               "the last write failed (disk full: ") and "`sql --live` reads the live file" in note
        filler.unlink()
        record(store, second, "r3")
        assert len(artifact_ids(store.snapshot_path)) == 3 and store.stale_note() is None
        assert sql_error(monkeypatch, home, "SELECT 1") is None and capsys.readouterr().err == ""


def test_a_snapshot_refresh_past_the_file_size_limit_warns_and_the_next_write_refreshes_it(tmp_path, caplog):
    # RLIMIT_FSIZE (any user): the live file grows by a small write's log; the copy of the whole store is refused.
    store = LineageStore(tmp_path)
    first = record(store, Bundle(frames={"t": pl.DataFrame({"x": [1]})}), "r1", mirrors={"wide": noise(3 * MIB)})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = store.db_path.stat().st_size // 2
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with caplog.at_level(logging.WARNING):
            second = record(store, Bundle(frames={"t": pl.DataFrame({"x": [2]})}), "r2")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    [warning] = [r.getMessage() for r in caplog.records if "snapshot not refreshed" in r.getMessage()]
    assert warning.startswith("snapshot not refreshed: file too large: ") and "ulimit -f" in warning, warning
    assert artifact_ids(store.snapshot_path) == [first.artifact_id]
    assert artifact_ids(store.db_path) == [first.artifact_id, second.artifact_id]
    assert staged(tmp_path) == [] and store.stale_note() is not None
    record(store, Bundle(frames={"t": pl.DataFrame({"x": [3]})}), "r3")
    assert len(artifact_ids(store.snapshot_path)) == 3 and store.stale_note() is None


def test_a_file_size_limit_is_one_line_and_leaves_nothing_half_written(tmp_path):
    # RLIMIT_FSIZE (`ulimit -f`): the kernel refuses the write past the limit (EFBIG; Python ignores SIGXFSZ).
    store = LineageStore(tmp_path)
    record(store, Bundle(frames={"t": pl.DataFrame({"x": [1]})}), "r1")
    big = Bundle(frames={"t": noise(4 * MIB)})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MIB, hard))
    try:
        with pytest.raises(StorageError) as refused:
            record(store, big, "r2")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    line = str(refused.value)
    assert line.startswith(f"file too large: {tmp_path}/artifacts/a/p/") and "ulimit -f" in line
    assert len(artifact_ids(store.db_path)) == 1 and staged(tmp_path) == []
    record(store, big, "r2")
    assert len(artifact_ids(store.snapshot_path)) == 2


def sql_error(monkeypatch, home: Path, *argv: str) -> str | None:
    """`python -m pipelines.cli sql ARGV` in this process on `home`: its error line, or None when it succeeded."""
    from pipelines import cli

    monkeypatch.setenv("PAML_HOME", str(home))
    try:
        assert cli.main(["sql", *argv]) == 0
    except SystemExit as stop:
        return str(stop.code)
    return None


def demo_error(home: Path, data: Path) -> str | None:
    """`python -m pipelines.cli demo --data-only --dataset movielens` on `home` (a process of its own: the
    definitions read PAML_DATA_DIR when imported): its last line on stderr when it failed, else None."""
    env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "PAML_DATA_DIR": str(data)}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--data-only", "--dataset", "movielens"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode == 0:
        return None
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr.strip().splitlines()[-1]


def latest_hashes(home: Path) -> dict[tuple[str, str], str]:
    store = LineageStore(home, read_only=True)
    rows = store.query("SELECT asset_key, partition, content_hash FROM artifacts WHERE kind = 'bundle' "
                       "QUALIFY seq = max(seq) OVER (PARTITION BY asset_key, partition)")
    return {(a, p): h for a, p, h in rows.iter_rows()}


def test_a_run_that_fills_the_disk_says_so_in_one_line_and_its_rerun_gives_a_clean_runs_result(tmp_path):
    data = tiny_real_data(tmp_path / "data")
    assert demo_error(tmp_path / "clean", data) is None
    # 3 MiB fills up in Dagster's own storage (SQLite, which names no file); 6 MiB used to fail in our snapshot
    # copy first, which now only warns (the write is committed): the run goes on to fill the disk elsewhere
    for size, where in (("3m", "Dagster's storage in "), ("6m", None)):
        with tmpfs(tmp_path / f"full-{size}", size) as home:
            line = demo_error(home, data)  # was a traceback (DuckDB's, or SQLite's from Dagster recording the failure)
            assert line is not None and line.startswith("error: disk full: ") and "\n" not in line, line
            assert line.startswith(f"error: disk full: {where}{home}") if where is not None else str(home) in line, line
            store = LineageStore(home)
            if store.db_path.is_file():  # every artifact recorded is whole, both databases open
                for row in store.query("SELECT artifact_id, asset_key, partition, content_hash, location FROM artifacts "
                                       "WHERE kind = 'bundle'").iter_rows():
                    assert artifact_damage(store.path_of(ArtifactRow(*row))) is None
                    store.load(ArtifactRow(*row))
                if store.snapshot_path.is_file():
                    artifact_ids(store.snapshot_path)
            remount(home, "size=64m")
            assert demo_error(home, data) is None
            assert latest_hashes(home) == latest_hashes(tmp_path / "clean")
            assert LineageStore(home).stale_note() is None  # the rerun's writes refreshed the snapshot


def test_a_home_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    data = tiny_real_data(tmp_path / "data")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for home in (a_file, a_file / "home"):
        line = demo_error(home, data)
        assert line is not None and line.startswith(f"error: not a directory: {a_file} ") and "PAML_HOME" in line, line
    assert a_file.read_text() == "not a directory"
    with tmpfs(tmp_path / "read-only", "1m", "ro") as home:
        line = demo_error(home, data)
        assert line is not None and line.startswith(f"error: read-only file system: {home}/dagster "), line
    # built, then remounted read-only: the next write says so (before: a traceback)
    with tmpfs(tmp_path / "built", "32m") as home:
        store = LineageStore(home)
        record(store, Bundle(frames={"t": pl.DataFrame({"x": [1]})}), "r1")
        remount(home, "ro")
        with pytest.raises(StorageError, match=f"^read-only file system: {home}/"):
            record(store, Bundle(frames={"t": pl.DataFrame({"x": [2]})}), "r2")
        assert len(artifact_ids(store.db_path)) == 1


@contextlib.contextmanager
def as_nobody():
    """File access as the user nobody for the block (root ignores permissions): the effective uid only, so
    that root takes it back after. Modules the block needs must be imported before (nobody may not read them)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_home_or_data_dir_this_user_may_not_use_is_one_line_naming_it(monkeypatch):
    from assets.raw_files import require_files
    from pipelines import cli

    # Not under tmp_path: pytest's directories are root's alone, and nobody must pass through to find
    # what it may not use.
    root = Path(tempfile.mkdtemp(prefix="paml-permissions-"))
    root.chmod(0o755)
    locked, data = root / "locked", tiny_real_data(root / "data")
    locked.mkdir(mode=0o555)
    monkeypatch.setenv("PAML_HOME", str(locked))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (data / "ml-1m").chmod(0o000)
    try:
        with as_nobody():
            with pytest.raises(SystemExit) as stop:
                cli.main(["init"])
            with pytest.raises(PermissionError) as unreadable:
                require_files("movielens", data)  # what raw_logs does first
    finally:
        (data / "ml-1m").chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
    assert str(stop.value.code) == (
        f"error: permission denied: {locked}/dagster (Permission denied); give this user access to it, or point "
        f"PAML_HOME (PAML_DATA_DIR for raw files) at a place it may use; creating {locked}/dagster")
    # was a traceback (Path.is_file raises on a directory it may not enter)
    line = cli.expected_failure(unreadable.value)
    assert line is not None and line.startswith(f"permission denied: {data}/ml-1m/") and "PAML_DATA_DIR" in line, line


def test_a_damaged_snapshot_is_one_line_in_sql_and_the_next_write_replaces_it(tmp_path, monkeypatch):
    store = LineageStore(tmp_path)
    first = record(store, Bundle(frames={"t": pl.DataFrame({"x": [1]})}), "r1")
    whole = store.snapshot_path.read_bytes()
    for damage in (os.urandom(10_000), whole[:20_000], b""):
        store.snapshot_path.write_bytes(damage)
        line = sql_error(monkeypatch, tmp_path, "SELECT count(*) FROM artifacts")
        assert line is not None and line.startswith(f"error: the snapshot {store.snapshot_path} is damaged ("), line
        assert "the next pipeline write replaces it" in line and "sql --live" in line and "\n" not in line
    second = record(store, Bundle(frames={"t": pl.DataFrame({"x": [2]})}), "r2")
    assert artifact_ids(store.snapshot_path) == [first.artifact_id, second.artifact_id]


def test_a_damaged_live_database_is_never_written_over_and_the_line_says_how_to_restore_it(tmp_path, monkeypatch):
    store = LineageStore(tmp_path)
    first = record(store, Bundle(frames={"t": pl.DataFrame({"x": [1]})}), "r1", mirrors={"wide": noise(MIB)})
    whole = store.db_path.read_bytes()
    for damage in (os.urandom(10_000), whole[:100], whole[:len(whole) // 2], b""):
        store.db_path.write_bytes(damage)
        with pytest.raises(StoreDamagedError) as refused:
            record(store, Bundle(frames={"t": pl.DataFrame({"x": [2]})}), "r2")
        line = str(refused.value)
        assert line.startswith(f"{store.db_path} is damaged (") and "\n" not in line
        assert f"mv {store.db_path} {store.db_path}.damaged && cp {store.snapshot_path} {store.db_path}" in line
        assert hashlib.sha256(store.db_path.read_bytes()).digest() == hashlib.sha256(damage).digest()  # untouched
        line = sql_error(monkeypatch, tmp_path, "--live", "SELECT count(*) FROM artifacts")
        assert line is not None and line.startswith(f"error: {store.db_path} is damaged ("), line
    store.db_path.rename(f"{store.db_path}.damaged")  # what the line says to do
    shutil.copyfile(store.snapshot_path, store.db_path)
    second = record(store, Bundle(frames={"t": pl.DataFrame({"x": [2]})}), "r2")
    assert artifact_ids(store.db_path) == [first.artifact_id, second.artifact_id]
    assert Path(f"{store.db_path}.damaged").is_file()


def build(home: Path, data: Path, instance: dg.DagsterInstance, selection) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS + CHECKS, selection=selection, partition_key="movielens", instance=instance,
                          resources=build_resources(home, data), raise_on_error=False)


def step_error(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else \
        failure.step_failure_data.error.message


def test_a_damaged_artifact_is_named_by_the_step_that_reads_it_and_its_rerun_repairs_it(tmp_path):
    data = tiny_real_data(tmp_path / "data")
    home = tmp_path / "home"
    store = LineageStore(home)
    with dg.instance_for_test() as instance:
        assert build(home, data, instance, DATA_ASSETS + CHECKS).success
        before = {k: store.latest(k, "movielens").content_hash for k in ("clean_logs", "cold_start_users", "user_splits")}
        for damage in ("deleted", "truncated"):
            cleaned = store.latest("clean_logs", "movielens")
            frame = store.path_of(cleaned) / "frames" / "interactions.parquet"
            if damage == "deleted":
                frame.unlink()
            else:
                os.truncate(frame, frame.stat().st_size // 2)
            result = build(home, data, instance, ["cold_start_users"])
            message = step_error(result)
            assert not result.success and "\n" not in message.strip()
            assert message.startswith(f"pipelines.store.ArtifactDamagedError: artifact {cleaned.artifact_id} (clean_logs "
                                      f"partition 'movielens') at {store.path_of(cleaned)} cannot be read: "
                                      "frames/interactions.parquet is "), message
            assert "dg launch --assets clean_logs --partition movielens" in message
            with pytest.raises(ArtifactDamagedError):
                store.load(cleaned)
            # Rebuilding the upstream writes the same files again (before, a damaged directory with its
            # info.json was taken as written, and every rerun read the damage again).
            assert build(home, data, instance, ["clean_logs", "cold_start_users", "user_splits"]).success
            rebuilt = store.latest("clean_logs", "movielens")
            assert rebuilt.artifact_id != cleaned.artifact_id and artifact_damage(store.path_of(rebuilt)) is None
            assert artifact_damage(store.path_of(cleaned)) is None  # the old row's directory is the repaired one
            assert {k: store.latest(k, "movielens").content_hash for k in before} == before
            users = store.query(LATEST_SQL, ["cold_start_users", "movielens"]).item()
            inputs = store.query("SELECT input_artifact_id FROM lineage_edges WHERE artifact_id = ?", [users])
            assert rebuilt.artifact_id in inputs["input_artifact_id"].to_list()  # lineage: the rebuilt one, not the damaged


def test_an_artifact_file_overwritten_at_its_own_size_is_written_again_by_the_rebuild(tmp_path):
    # The manifest's sizes match, so the rebuild that the error asks for took the directory as whole, wrote nothing,
    # and every later read failed on the same bytes.
    store = LineageStore(tmp_path / "home")
    frame = pl.DataFrame({"a": list(range(1000))})
    row = record(store, Bundle(frames={"x": frame}), "r1")
    damaged = store.path_of(row) / "frames" / "x.parquet"
    damaged.write_bytes(b"\0" * damaged.stat().st_size)
    assert artifact_damage(store.path_of(row)) is None  # nothing the sizes show
    with pytest.raises(ArtifactDamagedError, match=r"cannot be read: parquet: .*build it again"):
        store.load(row)
    with pytest.raises(ArtifactDamagedError, match=r"an earlier read found it damaged"):
        store.load(row)
    rebuilt = record(store, Bundle(frames={"x": frame}), "r2")
    assert store.path_of(rebuilt) == store.path_of(row)
    assert store.load(rebuilt).frame("x").equals(frame) and store.load(row).frame("x").equals(frame)


def test_synthetic_logs_cut_off_by_a_full_disk_leave_no_staging_and_generate_again(tmp_path):
    # The generator stages its directory and renames it; a failed generation left the staging for good
    # (the size of the logs, on the disk that had just filled up).
    from assets.taobao_generator import GeneratorConfig
    from assets.taobao_logs import ensure_generated

    config = GeneratorConfig(n_users=300, n_items=100, n_days=3)

    def left() -> list[str]:  # what the generation left but its lock file (empty; its flock died with it)
        return sorted(p.name for p in (tmp_path / "raw").iterdir() if not p.name.endswith(".lock"))

    with tmpfs(tmp_path / "raw", "64k") as root:
        with pytest.raises(OSError) as refused:
            ensure_generated(root, config)
        assert refused.value.errno == 28 and left() == []
        remount(root, "size=16m")
        made = ensure_generated(root, config)
        assert (made / "_manifest.json").is_file() and left() == [made.name]
        assert [p.name for p in root.iterdir() if p.name.endswith(".lock")] == [f".{made.name}.lock"]


def test_an_error_raised_from_none_over_a_refusal_is_not_read_as_the_refusal(tmp_path):
    # `causes` followed __context__ even past `raise ... from None`: a bug raised on purpose inside an
    # `except OSError` over a full disk printed as "disk full" instead of its own traceback.
    import errno

    from pipelines.storage_errors import storage_failure

    def raised(suppress: bool) -> BaseException:
        try:
            try:
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
            except OSError:
                if suppress:
                    raise ValueError("a bug of ours") from None
                raise ValueError("a bug of ours")
        except ValueError as error:
            return error

    assert storage_failure(raised(suppress=True), tmp_path) is None
    line = storage_failure(raised(suppress=False), tmp_path)  # raised while handling it: the refusal is behind it
    assert line is not None and line.startswith(f"disk full: {tmp_path}/x"), line


def test_an_io_error_reading_an_artifact_is_told_as_an_io_error_not_as_damage(tmp_path):
    # Every read error but a permission error was "damaged ... build it again", which rewrites nothing on a
    # disk that fails to read. /proc/self/mem read at its start is a real EIO (no mapping at address 0).
    store = LineageStore(tmp_path)
    row = record(store, Bundle(frames={"t": pl.DataFrame({"x": [1]})}), "r1")
    info = store.path_of(row) / "info.json"
    info.unlink()
    info.symlink_to("/proc/self/mem")
    with pytest.raises(StorageError) as refused:
        store.load(row)
    assert str(refused.value) == (f"I/O error: {info} (Input/output error); check the disk and the space left on it, "
                                  "then run again")
    assert not isinstance(refused.value, ArtifactDamagedError)


class RebuiltWhileRead(LineageStore):
    """A store whose first read of an artifact meets another run writing it again: the directory is set aside
    (as `write_files` does to a damaged one) just before the read, and the same files published again
    (`rebuild`) before `load` looks again: the interleaving of two runs, made at a fixed point."""

    rebuild: bool = True
    reads: int = 0

    def _read_bundle(self, row, location):
        self.reads += 1
        if self.reads == 1:
            aside = location.with_name(f".{location.name}.broken.test")
            os.replace(location, aside)
            try:
                return super()._read_bundle(row, location)
            finally:
                if self.rebuild:
                    os.replace(aside, location)
        return super()._read_bundle(row, location)


@pytest.mark.parametrize("rebuild", [True, False])
def test_an_artifact_that_vanishes_while_read_is_read_again_once_whole_else_named_as_vanished(tmp_path, rebuild):
    frame = pl.DataFrame({"x": [1, 2]})
    store = RebuiltWhileRead(tmp_path)
    store.rebuild = rebuild
    row = record(store, Bundle(frames={"t": frame}), "r1")
    if rebuild:  # was "cannot be read: [Errno 2] No such file or directory ... build it again"
        assert store.load(row).frame("t").equals(frame) and store.reads == 2
        return
    with pytest.raises(ArtifactDamagedError) as damaged:
        store.load(row)
    assert f"cannot be read: {store.path_of(row)}/info.json vanished while it was read (deleted, or the damaged " \
           "artifact set aside by a run writing it again)" in str(damaged.value)
