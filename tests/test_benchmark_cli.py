"""Every benchmark's command line answers `--help` with its usage, not a traceback.

The benchmarks are run by hand and by `make bench`, rarely enough that a broken argument parser
goes unseen (benchmarks/long_lists.py read sys.argv by position: `--help` was an IndexError).
One process runs each module as `python -m benchmarks.<name> --help` would (runpy), so the
imports they share are paid once.
"""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import benchmarks

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import contextlib, io, json, runpy, sys
for name in sys.argv[1:]:
    sys.argv = [f"benchmarks/{name}.py", "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module(f"benchmarks.{name}", run_name="__main__", alter_sys=True)
        code = "returned without exiting"
    except SystemExit as stop:
        code = stop.code
    except Exception as error:  # noqa: BLE001 - reported per module below
        code = f"{type(error).__name__}: {error}"
    print(json.dumps({"name": name, "code": code, "usage": out.getvalue()[:200]}))
"""


def benchmark_modules() -> list[str]:
    """The runnable modules of the benchmarks package (all but the package itself)."""
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.ispkg)


def test_the_benchmark_modules_are_found():
    names = benchmark_modules()
    assert {"training", "long_lists", "gpu_check", "data_steps"} <= set(names), names


def test_every_benchmark_answers_help_with_its_usage():
    names = benchmark_modules()
    done = subprocess.run([sys.executable, "-c", PROBE, *names], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert sorted(answers) == names
    for name, row in answers.items():
        assert row["code"] in (0, None), (name, row["code"])
        assert row["usage"].startswith("usage: "), (name, row["usage"])
