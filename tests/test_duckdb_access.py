"""Querying DuckDB: the snapshot is never locked, live reads wait, readers cannot write or
reach outside the database, and a home can be copied or moved."""

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from assets.bundle import Bundle, file_source
from pipelines.store import ArtifactRow, LineageStore

HOLD_SECONDS = 2.0


def hold_write_lock(db_path, seconds: float) -> subprocess.Popen:
    """Another process that opens the database read-write and keeps it for `seconds`."""
    code = textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(db_path)!r})
        print("locked", flush=True)
        time.sleep({seconds})
        con.close()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def tiny_bundle(value: int) -> Bundle:
    return Bundle(frames={"t": pl.DataFrame({"x": [value]})})


def test_snapshot_follows_every_write(tmp_path):
    store = LineageStore(tmp_path)
    row = store.record(tiny_bundle(1), run_id="r1", job_name="j", asset_key="a", partition="p",
                       code_version="1", inputs=[], mirrors={})
    assert store.query("SELECT artifact_id FROM artifacts", snapshot=True)["artifact_id"].to_list() == [row.artifact_id]


def test_readers_are_never_refused_while_a_writer_holds_the_file(tmp_path):
    store = LineageStore(tmp_path)
    store.record(tiny_bundle(1), run_id="r1", job_name="j", asset_key="a", partition="p",
                 code_version="1", inputs=[], mirrors={})
    holder = hold_write_lock(store.db_path, HOLD_SECONDS)
    try:
        start = time.monotonic()
        assert store.query("SELECT count(*) FROM artifacts", snapshot=True).item() == 1
        assert time.monotonic() - start < HOLD_SECONDS / 2  # the snapshot does not wait for the writer
        # A live read and a second writer wait for the lock instead of failing; no write is lost.
        second = store.record(tiny_bundle(2), run_id="r2", job_name="j", asset_key="a", partition="p",
                              code_version="1", inputs=[], mirrors={})
        assert time.monotonic() - start >= HOLD_SECONDS * 0.5
        assert store.query("SELECT count(*) FROM artifacts").item() == 2
    finally:
        holder.wait(timeout=30)
    assert store.latest("a", "p").artifact_id == second.artifact_id
    assert store.query("SELECT count(*) FROM artifacts", snapshot=True).item() == 2


# -- The sql command and every other reader: read-only, restricted, never blocked --------------

LONG_TEXT = "artifacts/" + "x" * 300 + "|end"


def built_home(tmp_path) -> LineageStore:
    """A home with two artifacts and a wide mirrored table (120 rows, a 300-character text)."""
    store = LineageStore(tmp_path / "home")
    wide = pl.DataFrame({"n": list(range(120)), "text": [LONG_TEXT] * 120, "x": [0.1 + i / 3 for i in range(120)]})
    store.record(tiny_bundle(1), run_id="r1", job_name="j", asset_key="a", partition="p",
                 code_version="1", inputs=[], mirrors={"wide": wide})
    store.record(tiny_bundle(2), run_id="r2", job_name="j", asset_key="b", partition="", code_version="1", inputs=[], mirrors={})
    return store


def run_cli(monkeypatch, home, *argv: str) -> str:
    """`python -m pipelines.cli ...` in this process; returns the one-line error, or '' on success."""
    from pipelines.cli import main

    monkeypatch.setenv("PAML_HOME", str(home))
    try:
        main(list(argv))
    except SystemExit as stop:
        message = str(stop.code)
        assert stop.code not in (0, None) and "\n" not in message and message.startswith("error: ")
        return message
    return ""


def files_of(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_sql_refuses_to_write_read_files_install_or_attach(tmp_path, monkeypatch):
    store = built_home(tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("a,b\n1,2\n")
    before = files_of(tmp_path)
    statements = [
        f"COPY (SELECT 'x') TO '{store.db_path}' (FORMAT csv)",
        f"COPY (SELECT 'x') TO '{store.snapshot_path}' (FORMAT csv)",
        f"COPY artifacts TO '{tmp_path / 'out.csv'}'",
        f"SELECT * FROM read_csv('{outside}')",
        f"SELECT * FROM '{outside}'",
        "INSTALL httpfs", "LOAD httpfs",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        "SET enable_external_access = true", "RESET lock_configuration",
        "CREATE TABLE t AS SELECT 1", "DELETE FROM artifacts", "DROP TABLE runs",
        f"EXPORT DATABASE '{tmp_path / 'export'}'",
    ]
    for statement in statements:
        for live in ([], ["--live"]):
            assert run_cli(monkeypatch, store.home, "sql", statement, *live), statement
    assert files_of(tmp_path) == before  # nothing written, nothing created
    assert run_cli(monkeypatch, store.home, "sql", "SELECT count(*) FROM artifacts") == ""


def test_refusals_and_errors_are_one_line(tmp_path, monkeypatch):
    store = built_home(tmp_path)
    message = run_cli(monkeypatch, store.home, "sql", f"SELECT * FROM read_csv('{tmp_path}/x.csv')")
    assert message.startswith("error: refused, the sql command only reads the PAML database: Permission Error")
    assert run_cli(monkeypatch, store.home, "sql", "SELEC 1").startswith("error: Parser Error")
    assert "no_such_table" in run_cli(monkeypatch, store.home, "sql", "SELECT * FROM no_such_table")
    # nothing to run (an empty text, only a comment) was an AttributeError with its traceback
    for empty in ("", "-- a comment"):
        assert run_cli(monkeypatch, store.home, "sql", empty).startswith("error: nothing to show:")


def test_a_home_without_database_is_refused_and_left_untouched(tmp_path, monkeypatch):
    empty, missing = tmp_path / "empty", tmp_path / "typo"
    empty.mkdir()
    for home in (empty, missing):
        for argv in (["sql", "SELECT 1"], ["sql", "SELECT 1", "--live"], ["stats", "movielens"],
                     ["recommend", "--dataset", "taobao", "--profile", "age=1", "--ratings", "i1=1"]):
            assert f"no PAML database in {home}" in run_cli(monkeypatch, home, *argv)
    assert list(empty.iterdir()) == [] and not missing.exists()


def test_quick_commands_load_neither_dagster_nor_torch(tmp_path):
    # Loading them took most of a `sql`'s time (1.7 of 2.6 s on a 2 GHz core) and 5 s of a missing database's error.
    store = built_home(tmp_path / "built")
    code = textwrap.dedent("""
        import sys
        from pipelines import cli
        for argv in (["--help"], ["sql", "SELECT count(*) AS n FROM wide"], ["sql", "SELECT 1", "--live"]):
            try:
                cli.main(argv)
            except SystemExit as exit:
                print(exit.code, file=sys.stderr)
        print(sorted(m for m in ("dagster", "torch") if m in sys.modules))
    """)
    for home in (store.home, tmp_path / "nothing-here"):
        done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PAML_HOME": str(home)},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip().endswith("[]"), (home, done.stdout[-500:], done.stderr[-2000:])
    assert "error: no PAML database in" in done.stderr


def test_sql_formats_print_every_row_and_character(tmp_path, monkeypatch, capsys):
    import json

    store = built_home(tmp_path)
    query = "SELECT n, text, x FROM wide ORDER BY n"
    expected = store.query(query, snapshot=True)
    outputs = {}
    for fmt in ("table", "csv", "markdown", "json"):
        assert run_cli(monkeypatch, store.home, "sql", query, "--format", fmt) == ""
        outputs[fmt] = capsys.readouterr().out
    table = outputs["table"].splitlines()
    assert len(table) == 2 + 120 + 1 and table[-1] == "(120 rows)"
    assert all(LONG_TEXT in line for line in table[2:-1]) and "…" not in outputs["table"]
    assert table[2 + 119].split()[2] == repr(expected["x"][119])  # full precision
    assert pl.read_csv(outputs["csv"].encode()).equals(expected)
    assert pl.DataFrame(json.loads(outputs["json"])).equals(expected)
    markdown = outputs["markdown"].splitlines()
    assert len(markdown) == 2 + 120 and markdown[2] == f"| 0 | {LONG_TEXT.replace('|', chr(92) + '|')} | 0.1 |"


def test_sql_prints_one_result_per_statement(tmp_path, monkeypatch, capsys):
    # DuckDB runs `a; b` and returns b's rows only: docs/data.md's `SELECT * FROM table1_stats;
    # SELECT * FROM group_shares;` printed the second table alone.
    store = built_home(tmp_path)
    assert run_cli(monkeypatch, store.home, "sql", "SELECT count(*) AS n_wide FROM wide; SELECT 7 AS seven;") == ""
    first, second = capsys.readouterr().out.strip().split("\n\n")
    assert first.splitlines()[0] == "n_wide" and first.splitlines()[2] == "120"
    assert second.splitlines()[0] == "seven" and second.splitlines()[2] == "7"
    # csv and json hold one result; several are refused rather than glued into an unreadable file
    message = run_cli(monkeypatch, store.home, "sql", "SELECT 1; SELECT 2", "--format", "csv")
    assert message.startswith("error: --format csv prints one result, and the query holds 2 statements")
    # every statement stays read-only, the first included
    assert run_cli(monkeypatch, store.home, "sql", f"SELECT 1; COPY wide TO '{tmp_path / 'w.csv'}'").startswith("error: refused")
    assert not (tmp_path / "w.csv").exists()


def test_sql_piped_into_head_ends_without_a_traceback(tmp_path):
    # `sql ... | head` closes the pipe while the CLI still prints: that was a BrokenPipeError traceback.
    store = built_home(tmp_path)
    env = {**os.environ, "PAML_HOME": str(store.home)}
    reader = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "sql", "SELECT * FROM range(300000)"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert reader.stdout.readline().strip() == b"range"
    reader.stdout.close()  # what head does once it has its lines
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 141, stderr  # as a shell reports a command ended by SIGPIPE
    assert stderr == ""


def test_sql_answers_while_another_process_holds_the_write_lock(tmp_path):
    store = built_home(tmp_path)
    holder = hold_write_lock(store.db_path, 120)
    try:
        env = {**os.environ, "PAML_HOME": str(store.home)}
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", "SELECT count(*) AS n FROM artifacts"],
                              capture_output=True, text=True, env=env, timeout=100)
        assert holder.poll() is None  # the writer still holds the live file
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[2].strip() == "2"
        # The other readers (stats, recommend, summaries) use the same read-only store.
        reader = LineageStore(store.home, read_only=True)
        assert reader.load(reader.latest("a", "p")).frame("t")["x"].to_list() == [1]
    finally:
        holder.kill()
        holder.wait(timeout=30)


# -- Relocatable homes --------------------------------------------------------------------------

def test_a_copied_home_reads_its_own_files_after_the_original_is_deleted(tmp_path):
    store = built_home(tmp_path)
    locations = store.query("SELECT location FROM artifacts")["location"].to_list()
    assert locations and not any(loc.startswith("/") for loc in locations)
    copy = tmp_path / "copy"
    shutil.copytree(store.home, copy)
    shutil.rmtree(store.home)
    for reader in (LineageStore(copy, read_only=True), LineageStore(copy)):
        assert reader.load(reader.latest("a", "p")).frame("t")["x"].to_list() == [1]
        assert reader.load(reader.latest("b", "")).frame("t")["x"].to_list() == [2]
    assert not store.home.exists()


def test_absolute_locations_of_older_homes_are_migrated_once(tmp_path):
    import duckdb

    old = built_home(tmp_path)
    inside = old.home / "raw" / "day.csv"
    inside.parent.mkdir(parents=True)
    inside.write_text("x\n")
    old.record(Bundle(frames={"t": pl.DataFrame({"x": [3]})}, sources=(file_source(inside),)), run_id="r3",
               job_name="j", asset_key="c", partition="p", code_version="1", inputs=[], mirrors={})
    # Rewrite the rows as a home written before locations were relative would hold them.
    with duckdb.connect(str(old.db_path)) as con:
        con.execute("UPDATE artifacts SET location = ? || '/' || location WHERE NOT starts_with(location, '/')",
                     [str(old.home.resolve())])
    shutil.copyfile(old.db_path, old.snapshot_path)
    moved = tmp_path / "moved"
    shutil.move(old.home, moved)
    reader = LineageStore(moved, read_only=True)
    assert reader.query("SELECT count(*) FROM artifacts WHERE starts_with(location, '/')").item() == 4
    assert reader.load(reader.latest("c", "p")).frame("t")["x"].to_list() == [3]  # resolved in the new home
    writer = LineageStore(moved)
    writer.record(tiny_bundle(4), run_id="r4", job_name="j", asset_key="d", partition="p", code_version="1", inputs=[], mirrors={})
    rows = dict(writer.query("SELECT asset_key, location FROM artifacts").iter_rows())
    assert rows["a"] == f"artifacts/a/p/{Path(rows['a']).name}" and rows["b"].startswith("artifacts/b/_/")
    # The raw file was inside the old home: its row keeps the old path (only the current home's
    # prefix is known); bundles are all relative.
    assert [k for k, v in rows.items() if v.startswith("/")] == ["raw_file"]
    again = LineageStore(moved)
    again.record(tiny_bundle(5), run_id="r5", job_name="j", asset_key="e", partition="p", code_version="1", inputs=[], mirrors={})
    assert {k: v for k, v in again.query("SELECT asset_key, location FROM artifacts").iter_rows() if k in rows} == rows


def recorded_with_sources(tmp_path: Path) -> tuple[LineageStore, ArtifactRow, Path, Path]:
    """A home holding one artifact read from two raw files: one inside the home (as generated taobao logs are),
    one outside it (PAML_DATA_DIR); the store, the artifact's row and the two files."""
    store = LineageStore(tmp_path / "home")
    inside = store.home / "raw" / "taobao" / "day.csv"
    inside.parent.mkdir(parents=True)
    inside.write_text("x\n")
    outside = tmp_path / "data.csv"
    outside.write_text("y\n")
    row = store.record(Bundle(frames={"t": pl.DataFrame({"x": [1]})}, sources=(file_source(inside), file_source(outside))),
                       run_id="r", job_name="j", asset_key="a", partition="p", code_version="1", inputs=[], mirrors={})
    return store, row, inside, outside


def test_raw_files_inside_the_home_are_stored_relative(tmp_path):
    store, _, _, outside = recorded_with_sources(tmp_path)
    raw = sorted(store.query("SELECT location FROM artifacts WHERE kind = 'raw_file'")["location"])
    assert raw == sorted(["raw/taobao/day.csv", str(outside.resolve())])


def test_sources_inside_the_home_are_kept_relative_in_info_json_and_read_in_the_current_home(tmp_path):
    import json

    store, row, inside, outside = recorded_with_sources(tmp_path)
    info = store.path_of(row) / "info.json"
    assert [s["path"] for s in json.loads(info.read_text())["sources"]] == ["raw/taobao/day.csv", str(outside)]
    moved = LineageStore(tmp_path / "moved")
    shutil.move(store.home, moved.home)
    loaded = moved.load(moved.latest("a", "p"))
    assert [s.path for s in loaded.sources] == [str(moved.home / "raw" / "taobao" / "day.csv"), str(outside)]
    assert loaded.content_hash() == row.content_hash  # sources count by name and bytes, not where they lie
    # An info.json written before these paths were relative names the old home: read as written.
    meta = json.loads((moved.path_of(row) / "info.json").read_text())
    meta["sources"][0]["path"] = str(inside)
    (moved.path_of(row) / "info.json").write_text(json.dumps(meta))
    assert [s.path for s in moved.load(moved.latest("a", "p")).sources] == [str(inside), str(outside)]


def materialized_in(home: Path, selection: str, partition: str, run_config: dict | None = None) -> None:
    """Materialize `selection` for `partition` in `home`'s own Dagster instance (synthetic taobao logs)."""
    import dagster as dg

    from pipelines.definitions import ASSETS, CHECKS, build_resources
    from pipelines.instance import ensure_dagster_home

    with dg.DagsterInstance.from_config(str(ensure_dagster_home(home))) as instance:
        assert dg.materialize(ASSETS + CHECKS, selection=[selection], partition_key=partition, instance=instance,
                              resources=build_resources(home, home.parent / "no-data"), run_config=run_config or {}).success


def test_a_copied_homes_taobao_days_name_the_raw_files_in_the_copy(tmp_path, monkeypatch):
    # Copied (docs/operations.md), a home's taobao days named the generated logs of the original home as their
    # sources: every window, raw_logs and cleaned table built in the copy listed them, gone with the original.
    original, copy = tmp_path / "original", tmp_path / "copy"
    monkeypatch.setenv("DAGSTER_HOME", str(original / "dagster"))
    day_config = {"ops": {"taobao_daily_logs": {"config": {"users": 200, "items": 100, "history_days": 2}}}}
    for day in ("2026-01-01", "2026-01-02"):
        materialized_in(original, "taobao_daily_logs", day, day_config)
    materialized_in(original, "taobao_log_window", "taobao")
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    monkeypatch.setenv("DAGSTER_HOME", str(copy / "dagster"))
    materialized_in(copy, "taobao_log_window", "taobao", {"ops": {"taobao_log_window": {"config": {"days": 1}}}})
    materialized_in(copy, "raw_logs", "taobao")
    store = LineageStore(copy, read_only=True)
    days = store.query("SELECT location FROM artifacts WHERE kind = 'raw_file' AND partition LIKE '2026-%'")["location"]
    assert len(days) == 2 and all((copy / location).is_file() for location in days)
    for asset, partition in (("taobao_daily_logs", "2026-01-01"), ("taobao_log_window", "taobao"), ("raw_logs", "taobao")):
        sources = [Path(s.path) for s in store.load(store.latest(asset, partition)).sources if s.path.endswith(".csv")]
        assert sources and all(path.is_relative_to(copy) and path.is_file() for path in sources), (asset, sources)


def test_parts_are_linked_in_loaded_as_files_mirrored_and_their_scratch_removed(tmp_path):
    from assets.bundle import StoredParts

    store = LineageStore(tmp_path / "home")
    scratch = tmp_path / "home" / "scratch" / "run" / "step"
    (scratch / "rejected").mkdir(parents=True)
    pl.DataFrame({"reason": ["a", "b"], "line": [1, 2]}).write_parquet(scratch / "rejected" / "00000.parquet")
    pl.DataFrame({"reason": ["a"], "line": [7]}).write_parquet(scratch / "rejected" / "00001.parquet")
    parts = StoredParts.under(scratch / "rejected")
    bundle = Bundle(frames={"users": pl.DataFrame({"user_id": ["u"]})}, parts={"rejected": parts}, scratch=(scratch,))
    assert parts.names == ("00000.parquet", "00001.parquet") and parts.height() == 3
    row = store.record(bundle, run_id="r", job_name="j", asset_key="clean_logs", partition="taobao", code_version=None,
                       inputs=[], mirrors={"rejected_rows": parts})
    assert not scratch.exists()  # adopted, then the step's copies removed
    loaded = store.load(row)
    assert set(loaded.frames) == {"users"} and loaded.parts["rejected"].names == parts.names
    assert loaded.frame("rejected")["line"].to_list() == [1, 2, 7]  # the files in order
    assert loaded.content_hash() == row.content_hash  # the files' bytes, wherever they lie
    mirrored = store.query("SELECT reason, line, dataset, asset_key, partition FROM rejected_rows ORDER BY line")
    assert mirrored.rows() == [("a", 1, "taobao", "clean_logs", "taobao"), ("b", 2, "taobao", "clean_logs", "taobao"),
                               ("a", 7, "taobao", "clean_logs", "taobao")]
    # one byte more in one shard is another content
    changed = tmp_path / "changed"
    shutil.copytree(store.path_of(row) / "frames" / "rejected", changed)
    pl.DataFrame({"reason": ["a"], "line": [8]}).write_parquet(changed / "00001.parquet")
    assert Bundle(frames=loaded.frames, parts={"rejected": StoredParts.under(changed)}).content_hash() != row.content_hash
    with pytest.raises(ValueError, match="either a frame or parts"):
        Bundle(frames={"rejected": pl.DataFrame()}, parts={"rejected": parts})


def test_a_run_waits_for_a_read_only_session_on_the_live_file_and_names_it(tmp_path, monkeypatch):
    # A notebook with duckdb.connect("paml.duckdb", read_only=True) left open blocks every writer.
    # Runs used to give up after two minutes with DuckDB's lock error (the step failed); now the
    # pipeline waits as long as the session holds the file and says which process it is.
    import dagster as dg

    from pipelines import store as store_module
    from pipelines.definitions import ASSETS, CHECKS, build_resources

    monkeypatch.setattr(store_module, "LOCK_RETRY_SECONDS", 0.5)  # a reader's bound; the pipeline's has none
    monkeypatch.setattr(store_module, "LOCK_WARN_AFTER_SECONDS", 0.5)
    home = tmp_path / "home"
    LineageStore(home).record(tiny_bundle(1), run_id="r0", job_name="j", asset_key="a", partition="p",
                              code_version="1", inputs=[], mirrors={})
    code = textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(home / 'paml.duckdb')!r}, read_only=True)
        print("locked", flush=True)
        time.sleep(6)
        con.close()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    tiny = {"ops": {"taobao_daily_logs": {"config": {"users": 200, "items": 100, "history_days": 3}}}}
    instance = dg.DagsterInstance.ephemeral()
    try:
        result = dg.materialize(ASSETS + CHECKS, selection=["taobao_daily_logs"], partition_key="2026-01-01", run_config=tiny,
                                resources=build_resources(home, tmp_path / "data"), instance=instance)
        assert holder.poll() is not None  # the write went through once the session had closed, not before
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert result.success
    waits = [entry.user_message for entry in instance.all_logs(result.run_id)
             if entry.level >= logging.WARNING and "waiting" in entry.user_message]
    assert waits and f"(PID {holder.pid})" in waits[0] and "paml-snapshot.duckdb" in waits[0]
    assert LineageStore(home).query("SELECT count(*) FROM artifacts WHERE asset_key = 'taobao_daily_logs'").item() == 1


def lock_free_in_another_process(db_path) -> bool:
    """Whether another process can open the database read-write right now."""
    code = f"import duckdb; duckdb.connect({str(db_path)!r}).close()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_the_pipelines_connections_hold_the_lock_only_while_open_and_nest(tmp_path):
    # The pipeline's connections attach the file to one DuckDB instance per process (pipelines/store.py `_Host`):
    # the lock is another process's again as soon as a connection ends, also after a failed statement.
    from pipelines.store import connect

    db = tmp_path / "x.duckdb"
    with connect(db) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
        assert not lock_free_in_another_process(db)
        with connect(db, read_only=True) as inner:  # a read inside a write shares the attached file
            assert inner.execute("SELECT a FROM t").fetchall() == [(1,)]
        # spills go beside the file, as a connection of its own put them, not into the working directory
        assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == f"{db.resolve()}.tmp"
        con.execute("INSERT INTO t VALUES (2)")  # the enclosing connection still works
    assert lock_free_in_another_process(db)
    with pytest.raises(Exception, match="does not exist"):
        with connect(db, read_only=True) as con:
            con.execute("SELECT * FROM missing")
    assert lock_free_in_another_process(db)
    with connect(db, read_only=True) as con:
        with pytest.raises(RuntimeError, match="read-only: close that connection first"):
            with connect(db):
                pass
        assert con.execute("SELECT sum(a) FROM t").fetchone()[0] == 3
    assert lock_free_in_another_process(db)


def test_threads_writing_the_store_together_all_commit(tmp_path):
    import concurrent.futures

    store = LineageStore(tmp_path)

    def write(value: int) -> ArtifactRow:
        return store.record(tiny_bundle(value), run_id=f"r{value}", job_name="j", asset_key="a", partition="p",
                            code_version="1", inputs=[], mirrors={"t": pl.DataFrame({"x": [value]})})

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(write, range(8)))
    stored = store.query("SELECT artifact_id FROM artifacts ORDER BY artifact_id")["artifact_id"].to_list()
    assert stored == sorted(r.artifact_id for r in rows)
    assert store.query("SELECT count(*) FROM t", snapshot=True).item() == 1  # each write replaced (a, p)'s rows
    assert lock_free_in_another_process(store.db_path)


def insert(db, value: int) -> None:
    from pipelines.store import connect

    with connect(db) as con:
        con.execute("CREATE TABLE IF NOT EXISTS t (a INTEGER)")
        con.execute("INSERT INTO t VALUES (?)", [value])


def test_a_forked_child_connects_with_an_instance_of_its_own(tmp_path):
    # The parent closes its idle instance before fork() (os.register_at_fork): a child cannot start DuckDB while
    # an instance of its parent's, with its thread pool, lives (it waited forever). Polars is not used here: its
    # thread pool does not survive a fork either.
    import multiprocessing

    from pipelines.store import connect

    db = tmp_path / "x.duckdb"
    insert(db, 1)
    child = multiprocessing.get_context("fork").Process(target=insert, args=(db, 2), daemon=True)
    child.start()
    child.join(60)
    if child.is_alive():  # hung: end it, so that the test fails instead of the worker waiting at exit
        child.kill()
        child.join()
    assert child.exitcode == 0
    insert(db, 3)
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT list(a ORDER BY a) FROM t").fetchone()[0] == [1, 2, 3]
