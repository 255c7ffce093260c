"""Benchmark of the data steps: wall time and peak resident memory, per dataset.

Each dataset runs in a fresh subprocess so its peak RSS is its own; on Linux the resident
high-water mark is also reset before each step, so each step's own peak shows (it includes
what earlier steps left in memory). Steps are the pure
functions behind the assets (no Dagster, no DuckDB), in pipeline order. Usage:

    python -m benchmarks.data_steps [--users 1000000] [--only movielens|taobao] [--shards K]

With `--shards K`, taobao's log is read into K user shards and cleaned one shard at a time
(assets/sharded.py); cold-start selection counts the cleaned shards with polars' streaming
engine; the cleaned rows are re-cut into K user-id ranges, and the splits and the task
encoding run one range at a time (assets/sharded_tasks.py), the tensors streamed into one
safetensors file. Only per-user and per-item tables are ever whole in memory. Rows report
the bytes on disk of each step's output; intermediate files are deleted once used.

ML-1M is read from PAML_DATA_DIR (default ../shared/data); it is skipped when absent.
Results print as Markdown and are written to benchmarks/out/data_steps.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

OUT = Path(__file__).resolve().parent / "out"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark (Linux: "5" to /proc/self/clear_refs); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def step_peak_rss_mb() -> float | None:
    """The resident high-water mark since the last reset, in MiB (VmHWM), or None off Linux."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else kib / 1024


def disk_bytes(path: Path) -> int:
    """Bytes of the files under `path` (or of the file)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_steps(dataset: str, data_dir: Path, users: int, shards: int = 0) -> list[dict]:
    """Run every data step once; return one row per step with seconds and peak RSS so far."""
    from assets.clean_logs import clean_logs_from_raw
    from assets.cold_start_users import select_cold_start
    from assets.meta_tasks import encode_tasks
    from assets.raw_files import read_movielens, read_taobao
    from assets.specs import SPECS
    from assets.taobao_generator import GeneratorConfig, generate
    from assets.user_groups import user_groups_for
    from assets.user_splits import user_splits_for

    rows: list[dict] = []

    def timed(step: str, fn):
        # Resetting the high-water mark resets ru_maxrss too: the process's peak is the steps' maximum.
        so_far = max([peak_rss_mb(), *(r["peak_rss_mb"] for r in rows)])
        resettable = reset_peak_rss()
        start = time.perf_counter()
        value = fn()
        step_peak = step_peak_rss_mb() if resettable else None
        rows.append({"dataset": dataset, "step": step, "seconds": round(time.perf_counter() - start, 2),
                     "peak_rss_mb": round(max(so_far, peak_rss_mb(), step_peak or 0)),
                     "step_peak_rss_mb": None if step_peak is None else round(step_peak)})
        return value

    spec = SPECS[dataset]
    if dataset == "taobao":
        config = GeneratorConfig(seed=0, n_users=users, n_items=max(2000, users // 50))
        work = Path(tempfile.mkdtemp())
        directory = work / "taobao"
        if shards:
            try:
                timed(f"generate ({users:,} users)", lambda: generate(directory, config))
                sharded_steps(directory, work, shards, timed, rows)
                return rows
            finally:
                shutil.rmtree(work, ignore_errors=True)
        timed(f"generate ({users:,} users)", lambda: generate(directory, config))
        raw = timed("read raw files", lambda: read_taobao(directory))
    else:
        raw = timed("read raw files", lambda: read_movielens(data_dir))
    rows[-1]["rows"] = raw.frame("interactions").height
    clean = timed("clean (validated cleaning)", lambda raw=raw: clean_logs_from_raw(raw, spec))
    rows[-1]["rows"] = clean.frame("interactions").height
    del raw
    cold = timed("Pareto cold-start selection", lambda: select_cold_start(clean.frame("interactions")))
    splits = timed("user and support/query splits", lambda: user_splits_for(cold, clean.frame("interactions"), 0))
    timed("major/minor tagging", lambda: user_groups_for(clean.frame("users"), cold, spec.tagging_fields, clean.frames.get("truth")))
    timed("encode task tensors", lambda: encode_tasks(clean.frame("users"), clean.frame("items"), splits, spec))
    if dataset == "taobao":
        shutil.rmtree(work, ignore_errors=True)
    return rows


def sharded_steps(directory: Path, work: Path, shards: int, timed, rows: list[dict]) -> None:
    """Taobao's steps with the log in user shards, every one bounded by a shard's rows."""
    from assets.cold_start_users import select_cold_start
    from assets.sharded import clean_sharded, shard_taobao
    from assets.sharded_tasks import cut_by_range, encode_sharded, split_sharded
    from assets.specs import SPECS
    from assets.user_groups import user_groups_for

    spec = SPECS["taobao"]
    rows[-1]["bytes"] = disk_bytes(directory)
    log = timed(f"read raw files into {shards} user shards", lambda: shard_taobao(directory, work / "shards", shards))
    rows[-1]["rows"] = int(log.read.filter(pl.col("source_file").str.contains("impressions"))["read"].sum())
    rows[-1]["bytes"] = disk_bytes(work / "shards")
    clean = timed("clean, one shard at a time", lambda: clean_sharded(log, spec, work / "clean"))
    rows[-1]["rows"] = clean.interactions().select(pl.len()).collect().item()
    rows[-1]["bytes"] = disk_bytes(work / "clean")
    shutil.rmtree(work / "shards")  # the raw shards are spent; the day files stay for the generator's truth
    cold = timed("Pareto cold-start selection (streaming count)", lambda: select_cold_start(clean.interactions()))
    ranges = timed(f"re-cut cleaned interactions into {shards} user-id ranges",
                   lambda: cut_by_range(clean.interaction_files(), cold, shards, work / "ranges"))
    rows[-1]["bytes"] = disk_bytes(work / "ranges")
    splits = timed("user and support/query splits, one range at a time", lambda: split_sharded(ranges, cold, 0, work / "splits"))
    rows[-1]["rows"] = splits.scan_items().select(pl.len()).collect().item()
    rows[-1]["bytes"] = disk_bytes(work / "splits")
    shutil.rmtree(work / "ranges")
    users = timed("load the cleaned user table", clean.users)
    rows[-1]["rows"] = users.height
    timed("major/minor tagging", lambda: user_groups_for(users, cold, spec.tagging_fields, clean.truth))
    tasks = timed("encode task tensors, one range at a time", lambda: encode_sharded(users, clean.items, splits, spec, work / "tasks"))
    rows[-1]["rows"] = sum(tasks.info["n_users"].values())
    rows[-1]["bytes"] = disk_bytes(work / "tasks")
    rows[-1]["tensor_bytes"] = disk_bytes(work / "tasks" / "tensors.safetensors")
    rows[-1]["tasks_per_split"] = tasks.info["n_users"]
    rows[-1]["tensor_shapes"] = tensor_shapes(work / "tasks" / "tensors.safetensors")


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Each tensor's shape from a safetensors header (nothing else is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}


def markdown(rows: list[dict]) -> str:
    lines = ["| dataset | step | seconds | peak RSS of the step (MiB) | peak RSS so far (MiB) | rows | output on disk (MB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['bytes'] / 1e6:,.0f}" if "bytes" in r else ""
        lines.append(f"| {r['dataset']} | {r['step']} | {r['seconds']} | {r.get('step_peak_rss_mb') or ''} | {r['peak_rss_mb']} "
                     f"| {r.get('rows', '')} | {size} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000, help="synthetic taobao users")
    parser.add_argument("--only", choices=["movielens", "taobao"])
    parser.add_argument("--shards", type=int, default=0, help="taobao: read and clean the log in this many user shards")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("PAML_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if args.child:
        print(json.dumps(run_steps(args.only, data_dir, args.users, args.shards)))
        return 0
    datasets = [args.only] if args.only else ["movielens", "taobao"]
    rows = []
    for dataset in datasets:
        if dataset == "movielens" and not (data_dir / "ml-1m" / "ratings.dat").is_file():
            print(f"skipping movielens: no ml-1m/ratings.dat under {data_dir} (set PAML_DATA_DIR)")
            continue
        extra = ["--shards", str(args.shards)] if args.shards else []
        out = subprocess.run([sys.executable, "-m", "benchmarks.data_steps", "--child", "--only", dataset,
                              "--users", str(args.users), *extra], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{dataset} failed:\n{out.stderr[-3000:]}")
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    OUT.mkdir(exist_ok=True)
    name = f"data_steps_taobao_{args.users}_shards{args.shards}.json" if args.shards else "data_steps.json"
    (OUT / name).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"machine: {machine}\n\n{markdown(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
