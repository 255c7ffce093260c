"""A writer's pid is judged dead only in its own pid space (boot and pid namespace), not on its hostname alone.

Containers of one image started with the same `--hostname` (or pods with `hostNetwork`) that share one
PAML_HOME each took the other's live writer for dead, whose pid is not one of theirs: they removed its staged
artifacts and marked its runs failed."""

import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from pipelines import cli
from pipelines.pid_space import SPACE_DIGITS, pid_space
from pipelines.staging import remove_stale_staging

pytestmark = pytest.mark.skipif(not Path("/proc/self/ns/pid").exists(), reason="no /proc: no pid space is known")

DIGEST = "0123456789abcdef01234567"


def dead_pid() -> int:
    """A process id that no process holds here now (one that has just ended)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=60)
    return ended.pid


def other_space() -> str:
    """A pid space that is not this one, as another container with this hostname writes it."""
    return "0" * SPACE_DIGITS if pid_space() != "0" * SPACE_DIGITS else "1" * SPACE_DIGITS


def test_this_process_has_a_pid_space_that_stays_the_same():
    space = pid_space()
    assert len(space) == SPACE_DIGITS and int(space, 16) >= 0
    child = subprocess.run([sys.executable, "-c", "from pipelines.pid_space import pid_space; print(pid_space())"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert child.stdout.strip() == space  # another process in this container: the same space


def test_a_dead_pids_staging_goes_at_once_only_when_its_name_carries_this_pid_space(tmp_path):
    pid, host = dead_pid(), socket.gethostname()
    here = tmp_path / f".{DIGEST}.{pid}-1@{host}+{pid_space()}.00ff"
    other = tmp_path / f".{DIGEST}.{pid}-1@{host}+{other_space()}.11ee"  # the same hostname, another container
    older_code = tmp_path / f".{DIGEST}.{pid}-1@{host}.22dd"  # named before names carried a space
    for staging in (here, other, older_code):
        staging.mkdir()
    assert remove_stale_staging(tmp_path) == [here]
    assert other.is_dir() and older_code.is_dir()  # left to the age rule: a day untouched
    assert sorted(remove_stale_staging(tmp_path, older_than=-1)) == sorted([other, older_code])


def test_a_dead_pids_run_is_marked_failed_only_when_its_tag_carries_this_pid_space():
    pid, host = dead_pid(), socket.gethostname()
    tags = {"here": f"{host}+{pid_space()}:{pid}:1", "other": f"{host}+{other_space()}:{pid}:1",
            "older_code": f"{host}:{pid}:1", "alive": cli.process_tag()}
    with dg.instance_for_test() as instance:
        runs = {name: create_run_for_test(instance, job_name="data_job", status=dg.DagsterRunStatus.STARTED,
                                          tags={cli.PROCESS_TAG: tag}).run_id for name, tag in tags.items()}
        assert cli.mark_dead_runs_failed(instance) == [runs["here"]]
        assert [name for name, run_id in runs.items()
                if instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED] == ["other", "older_code", "alive"]


UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]


def unshare_works() -> bool:
    """Whether this machine lets an unprivileged process start one in a pid namespace of its own."""
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not unshare_works(), reason="no unprivileged pid namespaces here (unshare)")
def test_a_live_writer_in_another_pid_namespace_with_this_hostname_keeps_its_staging(tmp_path):
    # The real case: a container with this hostname, whose writer is pid 1 in its namespace. Here pid 1 is
    # another process, started at another time, so the writer was taken for dead (its pid reused).
    writer = ("import sys; from pathlib import Path; from pipelines.staging import staging_path\n"
              f"staging = staging_path(Path({str(tmp_path)!r}) / {DIGEST!r}); staging.mkdir()\n"
              "print(staging.name, flush=True); sys.stdin.read()")
    process = subprocess.Popen([*UNSHARE, sys.executable, "-c", writer], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=Path(__file__).parents[1])
    try:
        name = process.stdout.readline().strip()
        assert remove_stale_staging(tmp_path) == [] and (tmp_path / name).is_dir()
        assert name.startswith(f".{DIGEST}.1-") and f"@{socket.gethostname()}+" in name  # pid 1 there
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def test_without_a_pid_space_no_pid_is_judged(tmp_path, monkeypatch):
    # Where /proc is missing (macOS) whose pid a name or tag records cannot be told: everything is left to the
    # age rule, rather than trusting the hostname.
    import pipelines.pid_space

    monkeypatch.setattr(pipelines.pid_space, "BOOT_ID", tmp_path / "no-proc" / "boot_id")
    assert pid_space() == ""
    pid, host = dead_pid(), socket.gethostname()
    staging = tmp_path / f".{DIGEST}.{pid}-1@{host}.00ff"
    staging.mkdir()
    assert remove_stale_staging(tmp_path) == [] and staging.is_dir()
    assert "+" not in cli.process_tag().split(":")[0]
    with dg.instance_for_test() as instance:
        create_run_for_test(instance, job_name="data_job", status=dg.DagsterRunStatus.STARTED,
                            tags={cli.PROCESS_TAG: f"{host}:{pid}:1"})
        assert cli.mark_dead_runs_failed(instance) == []
