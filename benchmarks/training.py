"""Benchmark of training on ML-1M: throughput and peak memory per method, vectorized vs loop.

    python -m benchmarks.training [--epochs 20] [--methods reg_paml at_paml ...] [--device cpu]

ML-1M is read from PAML_DATA_DIR (default ../shared/data) and turned into tasks with the
pipeline's own pure functions (no Dagster). Each method trains one seed in a fresh
subprocess, so its peak RSS is its own. Results print as Markdown and are written to
benchmarks/out/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
METHODS = ("melu", "meta_sgd", "transfer", "paml", "at_paml", "reg_paml")


def movielens_tasks(data_dir: Path):
    """ML-1M through cleaning, Pareto selection, splits and encoding (seed 0).

    With PAML_TASKS_DIR set, reads tensors saved by `--save-tasks` instead (for a machine
    that has torch but not the data stack, e.g. a GPU box).
    """
    tasks_dir = os.environ.get("PAML_TASKS_DIR")
    if tasks_dir:
        from safetensors.torch import load_file

        from models.tasks import task_data_from_tensors

        info = json.loads((Path(tasks_dir) / "info.json").read_text())
        return task_data_from_tensors(load_file(str(Path(tasks_dir) / "tensors.safetensors")), info)
    from assets.clean_logs import clean_logs_from_raw
    from assets.cold_start_users import select_cold_start
    from assets.meta_tasks import encode_tasks
    from assets.raw_files import read_movielens
    from assets.specs import SPECS
    from assets.user_splits import user_splits_for
    from models.tasks import task_data_from_tensors

    spec = SPECS["movielens"]
    clean = clean_logs_from_raw(read_movielens(data_dir), spec)
    cold = select_cold_start(clean.frame("interactions"))
    splits = user_splits_for(cold, clean.frame("interactions"), 0)
    _, tensors, info = encode_tasks(clean.frame("users"), clean.frame("items"), splits, spec)
    if os.environ.get("PAML_SAVE_TASKS"):
        from safetensors.torch import save_file

        target = Path(os.environ["PAML_SAVE_TASKS"])
        target.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(target / "tensors.safetensors"))
        (target / "info.json").write_text(json.dumps(info))
    return task_data_from_tensors(tensors, info)


def train_one(method: str, epochs: int, device: str, data_dir: Path) -> dict:
    """Train `method` for one seed; wall time, users per second, peak RSS, test error."""
    import numpy as np

    from models.learners import LearnerConfig
    from models.metrics import rating_metrics
    from models.training import TrainConfig, predict_split, train

    data = movielens_tasks(data_dir)
    start = time.perf_counter()
    result = train(method, data, LearnerConfig(), TrainConfig(epochs=epochs, device=device))
    seconds = time.perf_counter() - start
    preds = predict_split(result.learner, data, "test")
    speed = float(np.mean([log.users_per_second for log in result.history]))
    return {"method": method, "epochs": epochs, "device": device, "train_seconds": round(seconds, 1),
            "users_per_second": round(speed), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "test_mse": round(rating_metrics(preds.pred, preds.target, preds.mask)["mse"], 4), "best_epoch": result.best_epoch}


def inner_step_speed(data_dir: Path, batches: int = 8, repeats: int = 5) -> dict:
    """Seconds per meta-gradient of the inner loop on 32-user ML-1M batches: vmap vs Python loop.

    Both paths take the same precomputed embeddings (so only the inner update, the query
    loss and the backward pass through them are timed), the same REG-PAML step sizes, and
    one second-order inner step. Averaged over `batches` random training batches.
    """
    import torch

    from dataclasses import replace

    from models.inner import InnerConfig, adapt_batch, adapt_loop, predict_batch, total_sq_norm
    from models.learners import LearnerConfig, build_learner

    data = movielens_tasks(data_dir)
    torch.manual_seed(0)
    learner = build_learner("reg_paml", data, LearnerConfig())
    net, config = learner.net, InnerConfig(steps=1)
    order = torch.randperm(len(data.splits["train"]), generator=torch.Generator().manual_seed(0))
    totals: dict[str, float] = {}
    for b in range(batches):
        batch = data.splits["train"].select(order[32 * b: 32 * (b + 1)])
        with torch.no_grad():
            items = net.embedder.items(data.items)
            h0 = net.embedder.user_of(batch)
            support0 = net.inputs(h0, batch.support_items, items)
            query0 = net.inputs(h0, batch.query_items, items)
            _, _, users0 = learner.prepare(batch, data.items)

        def meta_gradient(vectorized: bool, backward: bool = True) -> None:
            xs = tuple(t.clone().requires_grad_(True) for t in support0)
            xq = tuple(t.clone().requires_grad_(True) for t in query0)
            alpha = learner.step_size(replace(users0, h=xs[0]))
            args = (net.adapted_params(), xs, batch.support_labels, batch.support_mask, alpha, net.predict, learner.loss, config,
                    learner.per_user_step)
            if vectorized:
                adapted, norms = adapt_batch(*args)
                loss = learner.loss(predict_batch(net.predict, adapted, xq), batch.query_labels, batch.query_mask).sum()
            else:
                adapted, norms = adapt_loop(*args)
                loss = sum(learner.loss(net.predict(p, (xq[0][u], xq[1][u])), batch.query_labels[u], batch.query_mask[u])
                           for u, p in enumerate(adapted))
            if backward:
                (loss + total_sq_norm(norms).sum()).backward()

        for name, vectorized, backward in (("vectorized", True, True), ("loop", False, True),
                                           ("vectorized_inner", True, False), ("loop_inner", False, False)):
            meta_gradient(vectorized, backward)  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                meta_gradient(vectorized, backward)
            totals[name] = totals.get(name, 0.0) + (time.perf_counter() - start) / repeats / batches
    return {"batch_users": 32, "batches": batches, "vectorized_s": round(totals["vectorized"], 4),
            "loop_s": round(totals["loop"], 4), "speedup": round(totals["loop"] / totals["vectorized"], 2),
            "inner_vectorized_s": round(totals["vectorized_inner"], 4), "inner_loop_s": round(totals["loop_inner"], 4),
            "inner_speedup": round(totals["loop_inner"] / totals["vectorized_inner"], 2),
            "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("PAML_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (data_dir / "ml-1m" / "ratings.dat").is_file() and not os.environ.get("PAML_TASKS_DIR"):
        print(f"no ml-1m/ratings.dat under {data_dir}: set PAML_DATA_DIR")
        return 1
    if args.child == "inner":
        print(json.dumps(inner_step_speed(data_dir)))
        return 0
    if args.child:
        print(json.dumps(train_one(args.child, args.epochs, args.device, data_dir)))
        return 0

    def child(name: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "benchmarks.training", "--child", name, "--epochs", str(args.epochs),
                              "--device", args.device], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    inner = child("inner")
    rows = [child(m) for m in args.methods]
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    OUT.mkdir(exist_ok=True)
    (OUT / "training.json").write_text(json.dumps({"machine": machine, "inner_step": inner, "methods": rows}, indent=1))
    print(f"machine: {machine}\n")
    print(f"inner step (adapt + query predictions, second-order graph built), 32 users: vectorized "
          f"{inner['inner_vectorized_s']} s, loop {inner['inner_loop_s']} s, speed-up {inner['inner_speedup']}x")
    print(f"whole meta-gradient (inner step + backward), 32 users: vectorized {inner['vectorized_s']} s, "
          f"loop {inner['loop_s']} s, speed-up {inner['speedup']}x\n")
    print("| method | epochs | train seconds | users/s | peak RSS (MiB) | test MSE | best epoch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['epochs']} | {r['train_seconds']} | {r['users_per_second']} | {r['peak_rss_mb']} | {r['test_mse']} | {r['best_epoch']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
