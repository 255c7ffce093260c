"""How users operate the pipeline, beyond the happy path: commands on a home with nothing built,
killed processes, runs side by side. Real DuckDB, real Dagster runs."""

import logging

import dagster as dg
import polars as pl
import pytest

from assets.bundle import Bundle
from pipelines.definitions import ASSETS, CHECKS, build_resources
from pipelines.store import LineageStore


pytestmark = pytest.mark.heavy  # long: handed out first when the tests run in parallel (tests/conftest.py)


def test_an_evaluation_with_no_model_in_service_succeeds_and_names_none(tmp_path):
    # docs/operations.md: "any evaluation materializes on its own ... names the datasets without
    # one". On a home where nothing was trained it used to fail in DuckDB with a traceback
    # ("Provided table/dataframe must have at least one column").
    home = tmp_path / "home"
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS + CHECKS, selection=["reg_paml_eval"], instance=instance,
                                resources=build_resources(home, tmp_path / "no-data"))
        # `dagster asset materialize --select reg_paml_eval` on a fresh home: a green run whose only
        # word was an INFO line among Dagster's DEBUG events; now a warning that says what to build.
        [warning] = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level >= logging.WARNING]
    assert result.success
    assert "nothing to evaluate" in warning and "dg launch --job training_job --partition" in warning
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS + CHECKS, selection=["reference_eval"], instance=instance,
                                resources=build_resources(home, tmp_path / "no-data"))
        [warning] = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level >= logging.WARNING]
    assert result.success and "dg launch --job data_job --partition" in warning
    store = LineageStore(home)
    assert store.query("SELECT asset_key FROM artifacts ORDER BY seq")["asset_key"].to_list() == ["reg_paml_eval", "reference_eval"]


def test_a_mirror_with_no_rows_leaves_none_of_the_assets_older_rows(tmp_path):
    store = LineageStore(tmp_path)
    rows = pl.DataFrame({"dataset": ["taobao"], "metric": ["nel"], "value": [0.9]})
    for run, frame in (("r1", rows), ("r2", pl.DataFrame())):
        store.record(Bundle(frames={"metrics": frame}), run_id=run, job_name="j", asset_key="melu_eval", partition="",
                     code_version="1", inputs=[], mirrors={"metrics": frame}, appends={"metrics_history": frame})
    assert store.query("SELECT count(*) FROM metrics").item() == 0
    assert store.query("SELECT count(*) FROM metrics_history").item() == 1  # a history keeps what was recorded


def test_a_run_whose_process_was_killed_is_marked_failed_by_the_next_command(tmp_path, monkeypatch, capsys):
    # A killed CLI run stayed STARTED for ever; Dagster then counted the assets it had planned as
    # in progress, and the automation (`~in_progress()`) never requested them, or anything after them.
    import os
    import subprocess
    import sys
    import textwrap

    from dagster._core.test_utils import create_run_for_test

    from pipelines import cli

    home = tmp_path / "home"
    env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    code = textwrap.dedent("""
        import os, signal
        import assets.taobao_logs as logs
        # killed once the run has started, at its first step's work (kill -9 from outside, made repeatable)
        logs.ensure_generated = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
        from pipelines.cli import run_job
        run_job("taobao_logs_job", "2026-01-01")
    """)
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    monkeypatch.setenv("PAML_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        [dead] = instance.get_runs()
        assert dead.status == dg.DagsterRunStatus.STARTED
        alive = create_run_for_test(instance, job_name="data_job", status=dg.DagsterRunStatus.STARTED,
                                    tags={cli.PROCESS_TAG: cli.process_tag()})
        elsewhere = create_run_for_test(instance, job_name="data_job", status=dg.DagsterRunStatus.STARTED)
    assert cli.main(["init"]) == 0
    assert f"marked run {dead.run_id} failed" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED  # this process lives
        assert instance.get_run_by_id(elsewhere.run_id).status == dg.DagsterRunStatus.STARTED  # not the CLI's


def test_a_dataset_added_while_the_ui_runs_is_requested_after_the_reload_not_an_error_before(tmp_path, monkeypatch):
    # `dataset add` while `dagster dev` runs: the code location has no partition for the new
    # dataset until it is reloaded. The raw-file sensor asked for it anyway, and every tick
    # failed with DagsterUnknownPartitionError.
    import json
    import subprocess
    import sys
    import textwrap

    from pipelines import cli
    from pipelines.automation import raw_files_changed
    from pipelines.definitions import defs
    from pipelines.resources import paml_resource
    from tests.fixtures import ml100k_dir

    home = tmp_path / "home"
    monkeypatch.setenv("PAML_HOME", str(home))
    paml = paml_resource(home, tmp_path / "data")
    with dg.instance_for_test() as instance:
        def tick(cursor):
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"paml": paml}, definitions=defs) as context:
                return raw_files_changed.evaluate_tick(context)

        first = tick(None)
        assert cli.main(["dataset", "add", str(ml100k_dir(tmp_path, n_users=40, n_items=30))]) == 0
        second = tick(first.cursor)
    assert second.run_requests == [] and "unchanged" in second.skip_message
    assert "ml100k" not in json.loads(second.cursor)
    # after the reload (a new process loads the partitions), the first tick requests the new dataset
    code = textwrap.dedent(f"""
        import dagster as dg
        from pipelines.automation import raw_files_changed
        from pipelines.definitions import defs
        from pipelines.resources import paml_resource
        paml = paml_resource()
        with dg.instance_for_test() as instance:
            with dg.build_sensor_context(instance=instance, cursor={second.cursor!r}, resources={{"paml": paml}},
                                         definitions=defs) as context:
                print([r.partition_key for r in raw_files_changed.evaluate_tick(context).run_requests])
    """)
    env = {**__import__("os").environ, "PAML_HOME": str(home), "PAML_DATA_DIR": str(tmp_path / "data")}
    after = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert after.returncode == 0, after.stderr[-2000:]
    assert after.stdout.strip().splitlines()[-1] == "['ml100k']"


RACE_WRITERS, RACE_ROUNDS = 4, 25


def race(target, directory: str) -> list[str]:
    """Run `target(directory, rounds, barrier, results)` in RACE_WRITERS processes that meet at the
    barrier before every round; each round's outcome of each writer ('ok' or the error)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(RACE_WRITERS), context.Queue()
    processes = [context.Process(target=target, args=(directory, RACE_ROUNDS, barrier, results)) for _ in range(RACE_WRITERS)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in range(RACE_WRITERS * RACE_ROUNDS)]
    for process in processes:
        process.join(timeout=60)
    return outcomes


def write_same_artifacts(home: str, rounds: int, barrier, results) -> None:
    """One of several processes writing the same content-addressed artifacts at the same moments."""
    from pathlib import Path

    store = LineageStore(Path(home))
    for k in range(rounds):
        bundle = Bundle(frames={"t": pl.DataFrame({"x": list(range(20_000))})}, info={"round": k})
        barrier.wait()
        try:
            target, size = store.write_files(bundle, "a", "p")
            results.put("ok" if (target / "info.json").is_file() and size > 0 else "incomplete")
        except Exception as error:  # noqa: BLE001 - counted, the test names it
            results.put(repr(error))


def test_runs_side_by_side_writing_the_same_artifact_both_succeed(tmp_path):
    # Two runs on one home (two CLI commands, the automation beside a CLI run) build the same
    # deterministic artifacts. The second writer removed the first one's complete directory to
    # put its own copy in its place: the other run then failed (FileNotFoundError, directory not empty).
    assert [o for o in race(write_same_artifacts, str(tmp_path)) if o != "ok"] == []
    assert not list((tmp_path / "artifacts" / "a" / "p").glob(".*"))  # no staging left behind


def test_two_commands_started_together_on_a_new_home_both_work(tmp_path):
    # Both opened the new home's Dagster instance at once, both created its SQLite tables, and
    # (3 times in 4) one or both died with a traceback: "table runs already exists".
    import os
    import subprocess
    import sys

    for attempt in range(3):
        home = tmp_path / f"home{attempt}"
        env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
        commands = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", "init"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for command in commands:
            out, err = command.communicate(timeout=300)
            assert command.returncode == 0, err[-2000:]


def write_reports(directory: str, rounds: int, barrier, results) -> None:
    """One of several processes writing the report at the same moments."""
    from pathlib import Path

    from assets.report import write_report

    for k in range(rounds):
        barrier.wait()
        try:
            write_report(Path(directory), f"report {k}\n", {"plot.png": b"png" * 30_000})
            results.put("ok")
        except Exception as error:  # noqa: BLE001 - counted, the test names it
            results.put(repr(error))


def test_reports_written_side_by_side_both_succeed_and_one_stays_whole(tmp_path):
    # The report directory was removed, then the new one renamed in: a report written between the
    # two made the rename fail ("Directory not empty"), and a kill between them left no report.
    assert [o for o in race(write_reports, str(tmp_path / "reports")) if o != "ok"] == []
    # nothing staged or set aside is left (the lock writers take turns on stays, empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".reports.lock", "reports"]
    assert (tmp_path / "reports" / "report.md").read_text() == f"report {RACE_ROUNDS - 1}\n"
    assert (tmp_path / "reports" / "plot.png").stat().st_size == 90_000


def test_ctrl_c_during_a_run_is_one_line_and_status_130(tmp_path):
    # Inside a Dagster run Ctrl-C arrives as Dagster's DagsterExecutionInterruptedError (a
    # BaseException), which main() did not catch: the CLI ended with a traceback and status 1.
    import os
    import subprocess
    import sys
    import textwrap

    home = tmp_path / "home"
    env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    code = textwrap.dedent("""
        import os, signal, sys, time
        import assets.taobao_logs as logs

        def interrupt(*args, **kwargs):  # Ctrl-C once the first step works (made repeatable)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)

        logs.ensure_generated = interrupt
        from pipelines.cli import main
        sys.exit(main(["demo", "--data-only"]))
    """)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("interrupted (a Dagster run it had started is marked failed)")
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.FAILURE]


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path):
    # A writer killed mid-write leaves its staged artifact directory and, while copying the snapshot, a
    # staged copy of the whole store: never read, never removed, as large as what they copy.
    import os
    import time

    store = LineageStore(tmp_path)
    first = Bundle(frames={"t": pl.DataFrame({"x": [1, 2]})})
    store.record(first, run_id="r1", job_name="j", asset_key="a", partition="p", code_version="1", inputs=[], mirrors={})
    partition_dir = tmp_path / "artifacts" / "a" / "p"
    old, fresh = partition_dir / ".deadbeef.0123abcd", partition_dir / ".cafe.4567ef01"
    for staging in (old, fresh):
        (staging / "frames").mkdir(parents=True)
        (staging / "frames" / "t.parquet").write_bytes(b"half")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    snapshot_leftover = store.snapshot_path.with_name(f".{store.snapshot_path.name}.0123abcd")
    snapshot_leftover.write_bytes(b"half a copy")

    second = Bundle(frames={"t": pl.DataFrame({"x": [3]})})
    store.record(second, run_id="r2", job_name="j", asset_key="a", partition="p", code_version="1", inputs=[], mirrors={})
    assert not old.exists() and not snapshot_leftover.exists()
    assert fresh.is_dir()  # it may be a live writer's, side by side: only old staging is taken
    assert store.query("SELECT count(*) FROM artifacts").item() == 2


def test_a_dead_writers_staging_goes_at_once_a_live_or_unknown_ones_stays(tmp_path):
    # A killed writer's staged artifact waited a day for the next writer (as large as the artifact); its
    # name now carries its owner (pid, start time, host, pid space), so the next writer takes it at once when
    # that process is provably gone in this pid space, and never a live writer's.
    import os
    import signal
    import socket
    import subprocess
    import sys
    import textwrap
    import time
    from pathlib import Path

    from pipelines.pid_space import pid_space

    store = LineageStore(tmp_path)
    record = lambda frame, run: store.record(Bundle(frames={"t": frame}), run_id=run, job_name="j", asset_key="a",  # noqa: E731
                                             partition="p", code_version="1", inputs=[], mirrors={})
    record(pl.DataFrame({"x": [1]}), "r1")
    partition_dir = tmp_path / "artifacts" / "a" / "p"
    writer = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pipelines.staging import staging_path
        staging = staging_path(Path({str(partition_dir)!r}) / "0123456789abcdef01234567")
        (staging / "frames").mkdir(parents=True)
        (staging / "frames" / "t.parquet").write_bytes(b"half")
        print(staging, flush=True)
        time.sleep(600)
    """)
    writers = [subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    killed, live = [Path(w.stdout.readline().strip()) for w in writers]
    try:
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait(timeout=30)
        host = socket.gethostname()
        reused = partition_dir / f".0123456789abcdef01234567.{os.getpid()}-1@{host}+{pid_space()}.00ff"  # this pid, another start
        elsewhere = partition_dir / f".0123456789abcdef01234567.{writers[0].pid}-1@not-{host}.00ff"
        old_elsewhere = partition_dir / f".0123456789abcdef01234567.{writers[0].pid}-1@not-{host}.11ee"
        for staging in (reused, elsewhere, old_elsewhere):
            staging.mkdir()
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(old_elsewhere, (two_days_ago, two_days_ago))
        assert killed.is_dir() and live.is_dir()

        record(pl.DataFrame({"x": [2]}), "r2")  # the next writer of this asset and partition
        assert not killed.exists() and not reused.exists() and not old_elsewhere.exists()
        assert live.is_dir() and elsewhere.is_dir()  # a live writer's; another host's, younger than a day
    finally:
        writers[1].kill()
        writers[1].wait(timeout=30)
    assert store.query("SELECT count(*) FROM artifacts").item() == 2


def test_a_killed_run_started_outside_the_cli_is_marked_failed_by_the_next_command(tmp_path, monkeypatch, capsys):
    # `dagster asset materialize` (or `dg launch`) killed with kill -9 left its run STARTED for ever: only
    # runs the CLI created carried the process tag, so the automation never planned those assets again.
    import os
    import subprocess
    import sys
    import textwrap

    from pipelines import cli

    home = tmp_path / "home"
    env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    code = textwrap.dedent("""
        import os, signal
        import dagster as dg
        import assets.taobao_logs as logs
        from pipelines.definitions import ASSETS, CHECKS, build_resources
        from pipelines.instance import ensure_dagster_home
        # killed at its first step's work, as `dagster asset materialize` killed from outside
        logs.ensure_generated = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
        ensure_dagster_home()
        with dg.DagsterInstance.get() as instance:
            dg.materialize(ASSETS + CHECKS, selection=["taobao_log_window"], partition_key="taobao",
                           resources=build_resources(), instance=instance)
    """)
    seed_day = textwrap.dedent("""
        import dagster as dg
        from pipelines.definitions import ASSETS, CHECKS, build_resources
        from pipelines.instance import ensure_dagster_home
        ensure_dagster_home()
        with dg.DagsterInstance.get() as instance:
            assert dg.materialize(ASSETS + CHECKS, selection=["taobao_daily_logs"], partition_key="2026-01-01",
                                  resources=build_resources(), instance=instance,
                                  run_config={"ops": {"taobao_daily_logs": {"config": {"users": 200, "items": 100,
                                                                                         "history_days": 3}}}}).success
    """)
    assert subprocess.run([sys.executable, "-c", seed_day], env=env, timeout=300).returncode == 0
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    monkeypatch.setenv("PAML_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    with dg.DagsterInstance.get() as instance:
        [dead] = [run for run in instance.get_runs() if run.status == dg.DagsterRunStatus.STARTED]
        assert cli.PROCESS_TAG in dead.tags
    assert cli.main(["init"]) == 0
    assert f"marked run {dead.run_id} failed" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE


def test_a_run_killed_while_generating_taobao_logs_leaves_no_staged_copy_after_the_next(tmp_path):
    # A kill while the synthetic logs were generated left their staged directory (`.seed0-...<hex>`, as
    # large as the logs: gigabytes at a million users) for ever: nothing removed it.
    import os
    import subprocess
    import sys
    import textwrap

    from assets.taobao_generator import GeneratorConfig
    from assets.taobao_logs import ensure_generated

    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import assets.taobao_logs as logs
        from assets.taobao_generator import GeneratorConfig

        def generate(staging, config):  # killed half-way through writing (kill -9 from outside, made repeatable)
            (Path(staging) / "logs").mkdir(parents=True)
            (Path(staging) / "user_profile.csv").write_text("user_id,age")
            os.kill(os.getpid(), signal.SIGKILL)

        logs.generate = generate
        logs.ensure_generated(Path({str(tmp_path)!r}), GeneratorConfig(n_users=200, n_items=100, n_days=2))
    """)
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()][0].startswith(".seed0-users200-items100-days2.")
    target = ensure_generated(tmp_path, GeneratorConfig(n_users=200, n_items=100, n_days=2))
    assert (target / "_manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [target.name]  # the killed run's copy is gone
    assert os.listdir(target / "logs")


def test_a_report_writer_killed_before_its_swap_leaves_a_staged_copy_that_the_next_writer_removes(tmp_path):
    # A kill after the new report was staged (`.reports.<hex>`, the report and its PNGs) left that
    # copy for ever: every later write staged under a new name and nothing removed the old ones.
    import subprocess
    import sys
    import textwrap

    from assets.report import write_report

    directory = tmp_path / "reports"
    write_report(directory, "report 1\n", {"plot.png": b"png"})
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import assets.report as report
        report.os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # killed at the swap
        report.write_report(Path({str(directory)!r}), "report 2\\n", {{"plot.png": b"png"}})
    """)
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert (directory / "report.md").read_text() == "report 1\n"  # the old report stays readable
    [staged] = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(".reports.")]
    assert (staged / "report.md").read_text() == "report 2\n"
    write_report(directory, "report 3\n", {"plot.png": b"png"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".reports.lock", "reports"]
    assert (directory / "report.md").read_text() == "report 3\n"
