"""How long a process takes before it does any work: the CLI's quick commands, and loading the pipeline.

    python -m benchmarks.startup [--rounds 5] [--baseline REF]

Every Dagster run the CLI starts, every `dagster dev` code server and every test that starts the CLI
loads `pipelines.definitions` (Dagster, polars, the assets; torch only once a step computes); `--help` and `sql` should load none
of the heavy ones. Each command runs in a fresh process, `--rounds` times, alternated with the same
command on the code of commit `--baseline` (its tree exported under benchmarks/out/, run from there with
the same virtual environment), so that both see the same machine. `sql` reads a tiny store made here;
"sql, no store" is the error a new user meets first. Medians of wall and CPU seconds (the child's user
and system time); Markdown to stdout and benchmarks/out/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.training import OUT, REPO, machine

COMMANDS = {  # label: (arguments after the interpreter, whether PAML_HOME holds a store)
    "--help": (["-m", "pipelines.cli", "--help"], False),
    "sql on a store": (["-m", "pipelines.cli", "sql", "SELECT count(*) FROM artifacts"], True),
    "sql, no store": (["-m", "pipelines.cli", "sql", "SELECT 1"], False),
    "import pipelines.definitions": (["-c", "import pipelines.definitions"], False),
}


def tree_of(ref: str) -> Path:
    """Commit `ref`'s files (git archive), under benchmarks/out/tree-<ref>/."""
    target = OUT / f"tree-{ref}"
    if not (target / "pipelines" / "cli.py").is_file():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def tiny_store(home: Path) -> Path:
    """A store with one artifact: what `sql` opens."""
    import polars as pl

    from assets.bundle import Bundle
    from pipelines.store import LineageStore

    LineageStore(home).record(Bundle(frames={"t": pl.DataFrame({"x": [1, 2]})}), run_id="r1", job_name="j",
                              asset_key="a", partition="", code_version="1", inputs=[], mirrors={})
    return home


def timed(arguments: list[str], cwd: Path, home: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process; `cwd` first on its path, so it runs that tree's packages."""
    env = {**os.environ, "PAML_HOME": str(home), "PYTHONPATH": str(cwd)}
    env.pop("DAGSTER_HOME", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, check=False, timeout=300)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default=None, help="a commit to time side by side (e.g. 8fe3ef0)")
    args = parser.parse_args(argv)
    trees = {"this checkout": REPO, **({f"`{args.baseline}`": tree_of(args.baseline)} if args.baseline else {})}
    with tempfile.TemporaryDirectory(prefix="paml-startup-") as scratch:
        stored, empty = tiny_store(Path(scratch) / "store"), Path(scratch) / "empty"
        empty.mkdir()
        runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for label, (arguments, with_store) in COMMANDS.items():
                for name, tree in trees.items():
                    runs.setdefault((label, name), []).append(timed(arguments, tree, stored if with_store else empty))
    print(f"{machine()}, {args.rounds} rounds\n")
    print("| command | code | wall s (median) | CPU s (median) | wall s, every round |")
    print("|---|---|---|---|---|")
    results = []
    for (label, name), times in runs.items():
        wall, cpu = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
        print(f"| {label} | {name} | {wall:.2f} | {cpu:.2f} | {', '.join(f'{t[0]:.2f}' for t in times)} |")
        results.append({"command": label, "code": name, "wall_median": wall, "cpu_median": cpu, "walls": [t[0] for t in times]})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "startup.json").write_text(json.dumps({"machine": machine(), "rounds": args.rounds, "results": results}, indent=1))


if __name__ == "__main__":
    main()
