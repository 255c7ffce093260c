"""Data-parallel training with 2 CPU processes (gloo) gives the model of 1 process."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.distributed import Collective
from models.training import TrainConfig, predict_split, train
from tests.model_fixtures import tiny_task_data
from tests.test_learners import CONFIG

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
