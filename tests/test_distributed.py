"""Data-parallel training with 2 CPU processes (gloo) gives the model of 1 process."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.distributed import Collective
from models.training import TrainConfig, predict_split, train
from tests.model_fixtures import tiny_task_data
from tests.test_learners import CONFIG

pytestmark = pytest.mark.heavy  # long: handed out first when the tests run in parallel (tests/conftest.py)

WORLD = 2
TRAIN = TrainConfig(epochs=2, meta_batch=5, seed=1)  # 5 users: shards of 3 and 2 test the weighting


def worker(rank: int, method: str, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    data = tiny_task_data(users=12)
    result = train(method, data, CONFIG, TRAIN, collective=Collective(rank, WORLD))
    if rank == 0:
        np.save(out, predict_split(result.learner, data, "test").pred)
    dist.destroy_process_group()


@pytest.mark.parametrize("method", ["reg_paml", "at_paml", "meta_sgd"])
def test_two_processes_match_one(method, tmp_path):
    out = str(tmp_path / "pred.npy")
    mp.spawn(worker, args=(method, str(tmp_path / "init"), out), nprocs=WORLD, join=True)
    parallel = np.load(out)
    data = tiny_task_data(users=12)
    single = predict_split(train(method, data, CONFIG, TRAIN).learner, data, "test").pred
    assert parallel.shape == single.shape
    np.testing.assert_allclose(parallel, single, atol=1e-4, rtol=1e-4)


def reduce_worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    module = torch.nn.ParameterDict({name: torch.nn.Parameter(torch.zeros(2)) for name in ("both", "first", "none")})
    module["both"].grad = torch.tensor([1.0, 2.0]) * (rank + 1)  # rank 0: [1, 2], rank 1: [2, 4]
    if rank == 0:
        module["first"].grad = torch.tensor([5.0, -1.0])
    sums = Collective(rank, WORLD).all_reduce_grads(module, 0.5 + rank, 10.0)
    torch.save({"sums": sums, "grads": {n: p.grad for n, p in module.items()}}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_one_call_sums_gradients_flags_and_scalars(tmp_path):
    out = str(tmp_path / "reduced")
    mp.spawn(reduce_worker, args=(str(tmp_path / "init"), out), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = torch.load(f"{out}.{rank}")
        assert got["sums"] == [2.0, 20.0]  # 0.5 + 1.5, 10 + 10
        assert torch.equal(got["grads"]["both"], torch.tensor([3.0, 6.0]))
        assert torch.equal(got["grads"]["first"], torch.tensor([5.0, -1.0]))  # rank 1 had none: zeros added
        assert got["grads"]["none"] is None  # no process had one: stays None, as Adam needs


def run_torchrun(tasks, out, fits) -> dict[int, tuple[int, int]]:
    """`torchrun -m models.distributed` with 2 CPU ranks for one epoch: {rank: (fitted, read from disk)}."""
    command = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(WORLD), "-m", "models.distributed",
               "--tasks", str(tasks), "--method", "reg_paml", "--out", str(out), "--epochs", "1", "--fits", str(fits)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "PAML_THREADS": "2"},
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    # The ranks share one stdout: their lines may run together, so they are found, not split.
    found = re.findall(r"rank (\d+): fold-in item sides: (\d+) fitted, (\d+) read from", done.stdout)
    return {int(rank): (int(fitted), int(read)) for rank, fitted, read in found}


def test_torchrun_ranks_fit_each_fold_in_table_once_and_a_rerun_reads_them(tmp_path):
    from benchmarks.export_tasks import save_tasks, tasks_from_raw
    from tests.fixtures import tiny_real_data

    tasks = save_tasks(*tasks_from_raw("movielens", tiny_real_data(tmp_path / "raw", n_users=60)), tmp_path / "tasks")
    fits = tmp_path / "fits"
    first = run_torchrun(tasks, tmp_path / "out1", fits)
    assert sorted(first) == list(range(WORLD)), first
    stored = sorted(fits.glob("[!.]*.safetensors"))  # not the lock files
    # The ranks need the same tables: each was fitted by one rank and read from disk by the other.
    assert len(stored) >= 1
    assert sum(f for f, _ in first.values()) == len(stored) and sum(r for _, r in first.values()) == len(stored), first
    again = run_torchrun(tasks, tmp_path / "out2", fits)
    assert again == {rank: (0, len(stored)) for rank in range(WORLD)}, again
    assert (tmp_path / "out2" / "model.safetensors").exists()
