"""One timed (or profiled) training run, against any checkout of the code: the training benchmark's child.

    python benchmarks/train_speed.py --code DIR --tasks DIR --method reg_paml [--batching bucketed]
        [--steps 30] [--inner-steps N] [--profile]

`--code` is the directory whose `models/` package is imported (this checkout, or an older
commit exported by benchmarks/training.py), so two versions run the same script on the same
tasks, side by side in one benchmark run. The script uses only what both versions have:
`train`, `TrainConfig`, the tuned ML-1M settings (models/settings/ here; an older checkout
without models/settings.py uses its own table, models/tuned.py), the learners'
`run`/`objective`; `--inner-steps` sets the same inner steps for any checkout. Threads come
from the environment the parent sets (PAML_THREADS, and
the OpenMP wait: GOMP_SPINCOUNT, KMP_BLOCKTIME) and are applied explicitly, since older code does
not read PAML_THREADS.
With WORLD_SIZE > 1 in the environment (and RANK, MASTER_ADDR, MASTER_PORT) the process is one
rank of a data-parallel run (models/distributed.py, gloo): every rank prints its line.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

# Self-time categories of a torch.profiler table: what is the model's arithmetic and what is not.
MATMUL_OPS = {"aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm", "aten::addbmm", "aten::matmul", "aten::linear",
              "aten::dot", "aten::mv"}
MEMORY_OPS = {"aten::fill_", "aten::zero_", "aten::copy_", "aten::_to_copy", "aten::empty", "aten::empty_strided",
              "aten::empty_like", "aten::zeros", "aten::zeros_like", "aten::ones_like", "aten::clone", "aten::cat",
              "aten::stack", "aten::index", "aten::index_select", "aten::_index_put_impl_", "aten::index_put_",
              "aten::gather", "aten::scatter_add_", "aten::embedding", "aten::embedding_dense_backward",
              "aten::embedding_backward", "aten::_unique2", "aten::sort", "aten::constant_pad_nd", "aten::contiguous",
              "aten::new_zeros", "aten::index_add_", "aten::masked_fill_"}


WARM_UP_STEPS = 10


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, required=True, help="directory holding the models/ package to time")
    parser.add_argument("--tasks", type=Path, required=True, help="exported tasks (benchmarks/export_tasks.py)")
    parser.add_argument("--dataset", default="movielens", help="whose tuned settings to use")
    parser.add_argument("--method", default="reg_paml")
    parser.add_argument("--batching", default="random", help="'random' (full padding) or 'bucketed' (new code only)")
    parser.add_argument("--steps", type=int, default=30, help="outer steps per timed window (after one warm-up window)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="profile `steps` outer steps instead of timing")
    parser.add_argument("--vectorize", default=None, choices=("vmap", "broadcast"),
                        help="the inner loop's vectorization (new code only; default: the code's own)")
    parser.add_argument("--no-fold", action="store_true",
                        help="the first layer's user columns as per-user copies, not one vector per user (new code only)")
    parser.add_argument("--inner-steps", type=int, default=None,
                        help="inner steps instead of the tuned settings' (the same work for every checkout)")
    parser.add_argument("--no-foldins", action="store_true",
                        help="switch the MF and kNN fold-ins off (new code only; on by default there)")
    parser.add_argument("--plain-network", action="store_true",
                        help="the network of the baseline commit: no fold-ins and no dot-product head (new code only)")
    return parser.parse_args()


def with_steps(settings: dict, steps: int | None) -> dict:
    """`settings` with `steps` inner steps (unchanged when None or for a method without an inner loop)."""
    return settings if steps is None or "inner_steps" not in settings else {**settings, "inner_steps": steps}


def configs(args: argparse.Namespace):
    """The tuned learner settings and a TrainConfig of two windows of `steps` (no early stop)."""
    from models.learners import LearnerConfig
    from models.training import TrainConfig

    extra = {}
    if "batching" in {f.name for f in fields(TrainConfig)}:
        extra["batching"] = args.batching
    elif args.batching != "random":
        raise SystemExit(f"the code in {args.code} has no batching option (only 'random')")
    base = TrainConfig(max_steps=2 * args.steps, eval_every=args.steps, patience=10**6, device=args.device, **extra)
    try:
        from models.settings import apply_params, chosen_settings
    except ImportError:  # older code (e.g. the baseline commit): its own table of tuned settings
        from models.tuned import tuned_settings
        from models.tuning import apply_settings

        return apply_settings(with_steps(tuned_settings(args.dataset, args.method), args.inner_steps), LearnerConfig(),
                              base)
    learner, train = apply_params(with_steps(chosen_settings(args.dataset, args.method).params, args.inner_steps),
                                  LearnerConfig(), base)
    from dataclasses import replace

    if args.no_foldins or args.plain_network:
        learner = replace(learner, network=replace(learner.network, mf_foldin=False, knn_foldin=False))
    if args.plain_network:  # ecf0ab0's network: MeLU's with the rating statistics, as benchmarks.training `plain_network`
        learner = replace(learner, network=replace(learner.network, factor_dim=0))
    if args.vectorize:
        learner = replace(learner, inner_vectorize=args.vectorize)
    if args.no_fold:
        learner = replace(learner, inner_fold=False)
    return learner, train


def load(directory: Path):
    from safetensors.torch import load_file

    from models.tasks import task_data_from_tensors

    return task_data_from_tensors(load_file(str(directory / "tensors.safetensors")),
                                  json.loads((directory / "info.json").read_text()))


def timed(args: argparse.Namespace, data, collective=None) -> dict:
    """users/s of the second window (the first pays for warm-up), and users per CPU-second.

    On a machine shared with other work the wall clock measures the neighbours as much as
    the code; the process's CPU time (all its threads) does not. The CPU window runs from
    one validation scoring to the next, so it also holds one scoring of the validation users.
    """
    from models.training import train

    learner_config, train_config = configs(args)
    marks: list[float] = []
    start = time.perf_counter()
    more = {} if collective is None else {"collective": collective}  # an older checkout's train() has no such argument
    result = train(args.method, data, learner_config, train_config, on_epoch=lambda log: marks.append(time.process_time()),
                   **more)
    window = result.history[-1]
    users = window.users_per_second * window.seconds
    return {"users_per_second": window.users_per_second, "users_per_cpu_second": users / (marks[-1] - marks[-2]),
            "window_seconds": window.seconds, "run_seconds": time.perf_counter() - start, "val_loss": window.val_loss}


def profiled(args: argparse.Namespace, data) -> dict:
    """Self CPU time by category over `steps` outer steps (after WARM_UP_STEPS)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from models.learners import build_learner
    from models.tasks import training_view
    from models.training import outer_optimizer, seed_everything

    learner_config, train_config = configs(args)
    generator = seed_everything(0)
    data = training_view(data) if "warm" in data.splits else data
    learner = build_learner(args.method, data, learner_config)
    optimizer = outer_optimizer(learner, train_config)
    tasks = data.splits["train"]
    if hasattr(learner.net, "with_knn_foldins"):  # as train() does; older code has no such step
        tasks = learner.net.with_knn_foldins(tasks, training=True)
    try:
        from models.batching import epoch_batches

        batches = epoch_batches(tasks.support_mask.sum(1), tasks.query_mask.sum(1), train_config.meta_batch, generator,
                                args.batching)
    except ImportError:
        batches = list(torch.randperm(len(tasks), generator=generator).split(train_config.meta_batch))

    def step(index: int) -> None:
        outcome = learner.run(tasks.select(batches[index % len(batches)]), data.items)
        loss = learner.objective(outcome)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learner.parameters(), train_config.max_grad_norm or float("inf"))
        optimizer.step()
        learner.after_outer_step(outcome)

    for index in range(WARM_UP_STEPS):
        step(index)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start, cpu_start = time.perf_counter(), time.process_time()
        for index in range(WARM_UP_STEPS, WARM_UP_STEPS + args.steps):
            step(index)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    share = {"matrix products": 0.0, "copies, fills, indexing": 0.0, "optimizer": 0.0, "elementwise and other": 0.0}
    for event in events:
        if event.key.startswith(("Optimizer.", "aten::_foreach")):
            share["optimizer"] += event.self_cpu_time_total
        elif event.key in MATMUL_OPS:
            share["matrix products"] += event.self_cpu_time_total
        elif event.key in MEMORY_OPS:
            share["copies, fills, indexing"] += event.self_cpu_time_total
        else:
            share["elementwise and other"] += event.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"ms_per_step": 1000 * seconds / args.steps, "cpu_ms_per_step": 1000 * cpu_seconds / args.steps, "share": {k: v / total for k, v in share.items()},
            "top": [{"op": e.key, "calls_per_step": e.count / args.steps, "share": e.self_cpu_time_total / total}
                    for e in top]}


def main() -> int:
    args = parse()
    sys.path.insert(0, str(args.code.resolve()))
    import torch

    torch.set_num_threads(int(os.environ.get("PAML_THREADS", "1")))
    collective = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one run, data-parallel: the parent set RANK, MASTER_PORT, ...
        from models.distributed import init_from_env

        collective = init_from_env(args.device)
    data = load(args.tasks)
    row = profiled(args, data) if args.profile else timed(args, data, collective)
    print(json.dumps({"method": args.method, "batching": args.batching, "threads": torch.get_num_threads(),
                      "rank": 0 if collective is None else collective.rank, **row}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
