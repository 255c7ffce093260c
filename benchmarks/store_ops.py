"""What one store operation costs: the pipeline's short reads and writes of the DuckDB lineage store.

    python -m benchmarks.store_ops [--rounds 3] [--ops 40] [--rows 0 2000000] [--baseline REF]

A chain of runs makes hundreds of short connections to `paml.duckdb` (a read per artifact loaded, a
write per artifact stored, each write followed by a copy of the snapshot). Each measurement is a fresh
process on the code of this checkout or of commit `--baseline` (exported as benchmarks/startup.py does,
run with the same virtual environment), alternated within each round so that both see the same machine.
The process makes a store whose mirrored table holds `--rows` extra rows (0: a store the size of the
demo's; 2,000,000: about the size of a `make reproduce` store), then times `--ops` of each operation:
`row` (the io manager's read of one artifact's row), `record` (a write of one artifact with a small
mirrored table, the snapshot included) and `query` (a reader's restricted connection). Medians of the
per-operation milliseconds; Markdown to stdout and benchmarks/out/store_ops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.startup import tree_of
from benchmarks.training import OUT, REPO, machine

# Run in the measured tree's process: only the API both versions share.
CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
import polars as pl
from assets.bundle import Bundle
from pipelines.store import LineageStore

home, rows, ops = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
store = LineageStore(home)
rng = np.random.default_rng(0)
big = pl.DataFrame({"user": rng.integers(0, 10**6, rows), "metric": rng.random(rows), "value": rng.random(rows)})
first = store.record(Bundle(frames={"t": pl.DataFrame({"x": [0]})}), run_id="r0", job_name="j", asset_key="big",
                     partition="p", code_version="1", inputs=[], mirrors={"user_rows": big})
times = {}
started = time.perf_counter()
written = [store.record(Bundle(frames={"t": pl.DataFrame({"x": [i]})}), run_id=f"r{i}", job_name="j", asset_key="a",
                        partition=f"p{i}", code_version="1", inputs=[first.artifact_id],
                        mirrors={"small": pl.DataFrame({"x": [i] * 10})}) for i in range(1, ops + 1)]
times["record"] = (time.perf_counter() - started) / ops
started = time.perf_counter()
for row in written:
    store.row(row.artifact_id)
times["row"] = (time.perf_counter() - started) / ops
started = time.perf_counter()
for i in range(ops):
    store.query("SELECT count(*) FROM artifacts")
times["query"] = (time.perf_counter() - started) / ops
sizes = {p.name: p.stat().st_size for p in home.glob("paml*.duckdb")}
print(json.dumps({"ms": {k: v * 1000 for k, v in times.items()}, "bytes": sizes}))
"""


def measure(tree: Path, rows: int, ops: int) -> dict:
    """One fresh process on `tree`'s code: per-operation milliseconds and the store's file sizes."""
    with tempfile.TemporaryDirectory(prefix="paml-store-ops-") as home:
        env = {**os.environ, "PYTHONPATH": str(tree), "PAML_HOME": home}
        env.pop("DAGSTER_HOME", None)
        done = subprocess.run([sys.executable, "-c", CHILD, home, str(rows), str(ops)], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"the measurement on {tree} failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=40)
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 2_000_000])
    parser.add_argument("--baseline", default=None, help="a commit to time side by side")
    args = parser.parse_args(argv)
    trees = {"this checkout": REPO, **({f"`{args.baseline}`": tree_of(args.baseline)} if args.baseline else {})}
    runs: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.rounds):
        for rows in args.rows:
            for name, tree in trees.items():
                runs.setdefault((rows, name), []).append(measure(tree, rows, args.ops))
    print(f"{machine()}, {args.rounds} rounds of {args.ops} operations each\n")
    print("| extra rows | code | store MB | `record` ms | `row` ms | `query` ms |")
    print("|---|---|---|---|---|---|")
    results = []
    for (rows, name), measured in runs.items():
        median = {op: statistics.median(m["ms"][op] for m in measured) for op in ("record", "row", "query")}
        size = measured[-1]["bytes"].get("paml.duckdb", 0) / 2**20
        print(f"| {rows:,} | {name} | {size:.0f} | {median['record']:.1f} | {median['row']:.1f} | {median['query']:.1f} |")
        results.append({"rows": rows, "code": name, "ms_median": median, "runs": measured})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "store_ops.json").write_text(json.dumps({"machine": machine(), "rounds": args.rounds, "ops": args.ops,
                                                    "results": results}, indent=1))


if __name__ == "__main__":
    main()
