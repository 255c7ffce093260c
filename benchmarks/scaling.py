"""How cost grows with users: synthetic taobao at 100,000 and 1,000,000 users.

    python -m benchmarks.scaling [--users 100000 1000000] [--batches 100]

For each size, in a fresh process: generate the logs, run every data step (time and peak
RSS), then time `--batches` outer steps of REG-PAML and of AT-PAML (users per second) and
check that AT-PAML's memory stays within its capacity. Results print as Markdown and go to
benchmarks/out/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure(users: int, batches: int) -> dict:
    """Data steps, then REG-PAML and AT-PAML throughput, for one size."""
    import torch

    from assets.clean_logs import clean_logs_from_raw
    from assets.cold_start_users import select_cold_start
    from assets.meta_tasks import encode_tasks
    from assets.raw_files import read_taobao
    from assets.specs import SPECS
    from assets.taobao_generator import GeneratorConfig, generate
    from assets.user_splits import user_splits_for
    from models.learners import LearnerConfig, build_learner
    from models.tasks import task_data_from_tensors
    from models.training import seed_everything

    spec = SPECS["taobao"]
    row: dict = {"users": users}
    start = time.perf_counter()
    directory = Path(tempfile.mkdtemp()) / "taobao"
    generate(directory, GeneratorConfig(seed=0, n_users=users, n_items=max(2000, users // 50)))
    row["generate_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    raw = read_taobao(directory)
    row["impressions"] = raw.frame("interactions").height
    clean = clean_logs_from_raw(raw, spec)
    del raw
    cold = select_cold_start(clean.frame("interactions"))
    splits = user_splits_for(cold, clean.frame("interactions"), 0)
    _, tensors, info = encode_tasks(clean.frame("users"), clean.frame("items"), splits, spec)
    row["data_steps_s"] = round(time.perf_counter() - start, 1)
    row["data_peak_rss_mb"] = peak_rss_mb()
    del clean, splits, cold
    data = task_data_from_tensors(tensors, info)
    row["train_users"] = len(data.splits["train"])
    for method in ("reg_paml", "at_paml"):
        generator = seed_everything(0)
        learner = build_learner(method, data, LearnerConfig())
        optimizer = torch.optim.Adam(learner.parameters(), lr=5e-4)
        order = torch.randperm(len(data.splits["train"]), generator=generator)
        start = time.perf_counter()
        tasks = learner.net.with_knn_foldins(data.splits["train"], training=True)  # as train() does, timed
        for b in range(batches):
            outcome = learner.run(tasks.select(order[32 * b: 32 * (b + 1)]), data.items)
            loss = learner.objective(outcome)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            learner.after_outer_step(outcome)
        row[f"{method}_users_per_s"] = round(32 * batches / (time.perf_counter() - start))
        if method == "at_paml":
            row["at_paml_stored"] = len(learner.memory)
            row["at_paml_capacity"] = learner.memory.config.capacity
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batches", type=int, default=200, help="outer steps timed per method (32 users each)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batches)))
        return 0
    rows = []
    for users in args.users:
        out = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--child", str(users), "--batches", str(args.batches)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    OUT.mkdir(exist_ok=True)
    (OUT / "scaling.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"machine: {machine}\n")
    print("| users | impressions | generate s | data steps s | data peak RSS MiB | training users | REG-PAML users/s | AT-PAML users/s | AT-PAML stored / capacity | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['users']:,} | {r['impressions']:,} | {r['generate_s']} | {r['data_steps_s']} | {r['data_peak_rss_mb']} | "
              f"{r['train_users']:,} | {r['reg_paml_users_per_s']} | {r['at_paml_users_per_s']} | "
              f"{r['at_paml_stored']:,} / {r['at_paml_capacity']:,} | {r['peak_rss_mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
