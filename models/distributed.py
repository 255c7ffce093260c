"""Data-parallel meta-training with torch.distributed (gloo on CPU, NCCL on GPU).

Every process holds the whole model and the same data, draws the same meta-batches (same
seed), computes the inner loops of its contiguous shard of each batch, and the gradients
are summed (each shard's loss weighted by its share of the batch), so each update equals
one process's update on the whole batch. AT-PAML's memory receives the summed gradients and
every shard's users, so it stays identical in every process.

    torchrun --nproc_per_node 2 -m models.distributed --tasks DIR --method reg_paml --out DIR [--fits DIR]

The fold-ins' fitted item sides are kept in `--fits` (default: `fits/` beside the tasks), so one
rank fits each table while the others wait and read it, and a later run reads them all.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from models.learners import MetaLearner
from models.user_memory import UserMemory


@dataclass(frozen=True)
class Collective:
    """The process group seen by one rank."""

    rank: int
    world_size: int

    def all_reduce_grads(self, learner: MetaLearner, *scalars: float) -> list[float]:
        """Sum every parameter's gradient, and `scalars`, over processes; return the summed scalars.

        The gradients, a has-gradient flag per parameter and the scalars travel in one flat
        buffer: one collective call per step. A parameter no process has a gradient for keeps
        `grad = None`, as in one process: Adam skips it there, and a zero gradient would still
        advance its step count.
        """
        parameters = [p for p in learner.parameters() if p.requires_grad]
        if not parameters:
            return list(scalars)
        like = parameters[0]
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in parameters]
        flags = torch.tensor([float(p.grad is not None) for p in parameters] + list(scalars), dtype=like.dtype,
                             device=like.device)
        flat = torch.cat(parts + [flags])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        *grads, present, sums = flat.split([p.numel() for p in parameters] + [len(parameters), len(scalars)])
        for parameter, grad, anywhere in zip(parameters, grads, present.tolist()):
            parameter.grad = grad.view_as(parameter) if anywhere > 0 else None
        return sums.tolist()

    def all_reduce_memory(self, memory: UserMemory) -> None:
        """Sum the stored values' gradients; merge the least-recently-used stamps.

        Each rank searched for its own shard at the same clock tick, so the newest stamp of
        a slot over ranks is the stamp one process searching the whole batch would give.
        """
        for leaf in (memory.embeddings, memory.lrs):
            if leaf.grad is None:
                leaf.grad = torch.zeros_like(leaf)
            dist.all_reduce(leaf.grad, op=dist.ReduceOp.SUM)
        dist.all_reduce(memory.last_used, op=dist.ReduceOp.MAX)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows in rank order (shards may differ in length)."""
        length = torch.tensor([tensor.shape[0]], device=tensor.device)
        lengths = [torch.zeros_like(length) for _ in range(self.world_size)]
        dist.all_gather(lengths, length)
        longest = int(max(lengths).item())
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]] = tensor
        parts = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([part[: int(n.item())] for part, n in zip(parts, lengths)])


def init_from_env(device: str) -> Collective:
    """Join the process group torchrun describes in the environment."""
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return Collective(rank=dist.get_rank(), world_size=dist.get_world_size())


def main() -> int:
    from safetensors.torch import load_file, save_file

    from models.checkpoint import flatten_state
    from models.factors import fit_counts, keep_fits_in
    from models.references import validation_settings
    from models.runtime import seed_argument, thread_count
    from models.settings import tuned_configs
    from models.tasks import task_data_from_tensors, training_user_count
    from models.training import train
    from models.user_memory import default_memory_k

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", required=True, help="exported tasks: tensors.safetensors and info.json (benchmarks/export_tasks.py)")
    parser.add_argument("--method", default="reg_paml")
    parser.add_argument("--epochs", type=int, default=None, help="default: the settings' (TrainConfig's) epochs")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="rank 0 writes model.safetensors and history.json here")
    parser.add_argument("--fits", default=None,
                        help="where the fold-ins' fitted item sides are kept, shared by the ranks (default: TASKS/fits; '' keeps none)")
    args = parser.parse_args()
    fits = Path(args.tasks) / "fits" if args.fits is None else (Path(args.fits) if args.fits else None)
    keep_fits_in(fits)
    device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if args.device == "cuda" else args.device
    collective = init_from_env(device)
    tasks = Path(args.tasks)
    info = json.loads((tasks / "info.json").read_text())
    data = task_data_from_tensors(load_file(str(tasks / "tensors.safetensors")), info)
    # PAML_THREADS is the machine's budget: the processes on this node share it.
    threads = max(1, thread_count() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    # The settings the model assets use for this dataset (models/settings/<dataset>.json), the
    # fold-ins' at the reference rows' validation choices; every rank computes the same ones.
    learner_config, config = tuned_configs(info.get("dataset"), args.method)
    if learner_config.network.uses_mf_foldin or learner_config.network.knn_foldin:
        learner_config, config = tuned_configs(info.get("dataset"), args.method, references=validation_settings(data, config.protocol))
    config = replace(config, seed=args.seed, device=device, threads=threads,
                     **({} if args.epochs is None else {"epochs": args.epochs}))
    # AT-PAML's K fitted to the training users, as the model assets and the search fit it.
    learner_config = replace(learner_config, memory=replace(
        learner_config.memory, k=default_memory_k(training_user_count(data, config.protocol))))
    result = train(args.method, data, learner_config, config,
                   on_epoch=lambda log: collective.rank == 0 and print(log, flush=True), collective=collective)
    counts = fit_counts()
    print(f"rank {collective.rank}: fold-in item sides: {counts['fitted']} fitted, {counts['loaded']} read from {fits}, "
          f"{counts['reused']} reused in memory", flush=True)
    if collective.rank == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_file(flatten_state(result.learner.state_dict()), str(out / "model.safetensors"))
        (out / "history.json").write_text(json.dumps([log.__dict__ for log in result.history]))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
