"""Benchmark of the Dagster data assets on a synthetic taobao log: wall time and peak resident
memory of each materialization, as a user runs them (`dagster asset materialize`), with the
log whole in memory (`--shards 0`) or in user shards (`--shards K`, PAML_SHARDS).

Each materialization is a fresh process (`dg.materialize` on a persistent instance under a
temporary DAGSTER_HOME, the lineage store under a temporary PAML_HOME), so each peak is that
step's own, read from the kernel's accounting of the child (`os.wait4`). Steps, in order: the
14 daily log partitions (generating the synthetic log on the first), the log window, raw_logs,
clean_logs with its Great Expectations check, cold_start_users, user_splits, user_groups,
meta_tasks. Usage:

    python -m benchmarks.pipeline_steps [--users 1000000] [--shards 64]

Results print as Markdown and go to benchmarks/out/pipeline_steps_taobao_<users>_shards<K>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
DATA_ASSETS = ["raw_logs", "clean_logs", "cold_start_users", "user_splits", "user_groups", "meta_tasks"]


def day_list(n_days: int) -> list[str]:
    import datetime as dt

    from assets.taobao_logs import TAOBAO_FIRST_DAY

    first = dt.date.fromisoformat(TAOBAO_FIRST_DAY)
    return [(first + dt.timedelta(days=k)).isoformat() for k in range(n_days)]


def run_config(users: int, days: int) -> dict:
    return {"ops": {"taobao_daily_logs": {"config": {"users": users, "items": max(2000, users // 50), "history_days": days}},
                    "taobao_log_window": {"config": {"days": days}}}}


def child(asset: str, partition: str, config: dict) -> int:
    """Materialize one asset partition (and its checks) on the instance of DAGSTER_HOME."""
    import dagster as dg

    from pipelines.definitions import ASSETS, CHECKS, build_resources

    ops = {k: v for k, v in config["ops"].items() if k == asset}
    result = dg.materialize(ASSETS + CHECKS, selection=[asset], partition_key=partition, instance=dg.DagsterInstance.get(),
                            resources=build_resources(), run_config={"ops": ops}, raise_on_error=False)
    return 0 if result.success else 1


def timed_child(asset: str, partition: str, config: dict, env: dict[str, str]) -> dict:
    """Run `child` in a fresh process; its wall seconds and peak RSS (MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.pipeline_steps", "--child", asset, "--partition", partition,
                                "--config", json.dumps(config)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{asset}[{partition}] failed:\n{stderr.decode(errors='replace')[-4000:]}")
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def artifact_facts(home: Path, asset: str, partition: str) -> dict:
    from pipelines.store import LineageStore

    rows = LineageStore(home, read_only=True).query(
        "SELECT n_rows, n_bytes FROM artifacts WHERE asset_key = ? AND partition = ? ORDER BY seq DESC LIMIT 1",
        [asset, partition], snapshot=False)
    return {"rows": int(rows["n_rows"][0]), "bytes": int(rows["n_bytes"][0])}


def run(users: int, shards: int, days: int = 14, until: str | None = None, keep: Path | None = None) -> list[dict]:
    """Every step in order (up to `until`, included); the home is deleted afterwards unless `keep`
    names a new directory for it."""
    work = Path(tempfile.mkdtemp(prefix="pipeline_steps_")) if keep is None else keep
    home = work / "home"
    (home / "dagster").mkdir(parents=True)
    env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "PAML_DATA_DIR": str(work / "no-real-data"), "PAML_SHARDS": str(shards)}
    config = run_config(users, days)
    rows = []
    try:
        for k, day in enumerate(day_list(days)):
            rows.append({"step": f"taobao_daily_logs[{day}]" + (" (generates the log)" if k == 0 else ""),
                         **timed_child("taobao_daily_logs", day, config, env), **artifact_facts(home, "taobao_daily_logs", day)})
            print(rows[-1], flush=True)
        for asset in ["taobao_log_window", *DATA_ASSETS]:
            step = "clean_logs + its GE check" if asset == "clean_logs" else asset
            rows.append({"step": step, **timed_child(asset, "taobao", config, env), **artifact_facts(home, asset, "taobao")})
            print(rows[-1], flush=True)
            if asset == until:
                break
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| step | seconds | peak RSS (MiB) | stored rows | stored MB |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['seconds']} | {r['peak_rss_mb']:,} | {r['rows']:,} | {r['bytes'] / 1e6:,.0f} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000, help="synthetic taobao users")
    parser.add_argument("--shards", type=int, default=64, help="PAML_SHARDS: user shards (0: the log whole in memory)")
    parser.add_argument("--until", help="stop after this asset")
    parser.add_argument("--keep", type=Path, help="keep the home (DAGSTER_HOME, PAML_HOME) in this new directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--partition", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.partition, json.loads(args.config))
    if args.keep is not None:
        args.keep.mkdir(parents=True)
    rows = run(args.users, args.shards, until=args.until, keep=args.keep)
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    OUT.mkdir(exist_ok=True)
    (OUT / f"pipeline_steps_taobao_{args.users}_shards{args.shards}.json").write_text(
        json.dumps({"machine": machine, "users": args.users, "shards": args.shards, "rows": rows}, indent=1))
    print(f"machine: {machine}\n\n{markdown(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
