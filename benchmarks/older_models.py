"""Does this code read models of an older commit as that commit did? The check behind a config field's
declared value before it existed (models/config_fields.py `added_field`, docs/operations.md).

    git worktree add /tmp/old <commit before the field>; here=$PWD
    (cd /tmp/old && PYTHONPATH=. $here/.venv/bin/python $here/benchmarks/older_models.py train /tmp/old.pt)
    PYTHONPATH=. .venv/bin/python benchmarks/older_models.py check /tmp/old.pt
    git worktree remove /tmp/old

`train` (in the older tree) trains every method on the tiny task data of tests/model_fixtures.py (ratings
and clicks; with both fold-ins where the tree has the kNN one, with the MF one only, with none) and saves
weights, settings and test predictions. `check` (in this tree) reads each record as a stored model is
read (`learner_config_from_dict`: declared values filled in, an undeclared missing field refused),
loads the weights strictly and prints whether its predictions equal the older code's, bit for bit.
Exit status 1 when any differs or fails to load. About 30 s per command on one core. The older tree
needs tests/model_fixtures.py (there since 2026-11-26) and `models.training.train`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields

import torch

from models.learners import METHODS, LearnerConfig, build_learner
from models.network import NetworkConfig
from models.training import TrainConfig, predict_split, train
from tests.model_fixtures import tiny_task_data

SMALL = {"embedding_dim": 4, "hidden": (8,)}


def variants() -> dict[str, LearnerConfig]:
    """The networks trained, by name: only switches this tree knows (an older one may lack the kNN fold-in)."""
    known = {f.name for f in fields(NetworkConfig)}
    chosen = {"default": LearnerConfig(network=NetworkConfig(**SMALL))}
    if "knn_foldin" in known:
        chosen["mf_only"] = LearnerConfig(network=NetworkConfig(**SMALL, knn_foldin=False))
    chosen["no_head"] = LearnerConfig(network=NetworkConfig(**SMALL, mf_foldin=False, factor_dim=0))
    return chosen


def train_all(out: str) -> None:
    """Train every method x task x variant for 2 epochs; save weights, settings (as stored) and test predictions."""
    torch.set_num_threads(1)
    saved = {}
    for task in ("rating", "ctr"):
        data = tiny_task_data(task)
        for method in METHODS:
            for name, config in variants().items():
                result = train(method, data, config, TrainConfig(epochs=2, meta_batch=4, seed=0))
                saved[f"{task}/{method}/{name}"] = {
                    "state": result.learner.state_dict(), "settings": json.loads(json.dumps(asdict(config))),
                    "pred": torch.as_tensor(predict_split(result.learner, data, "test").pred)}
    torch.save(saved, out)


def check(path: str) -> int:
    """Print one line per saved model: filled-in fields, then equal / the largest difference / why it does not load.
    Returns how many differ or fail."""
    from models.learners import learner_config_from_dict, settings_of_older_code  # this tree's only (train runs in older ones)

    torch.set_num_threads(1)
    failed = 0
    for key, item in torch.load(path, weights_only=False).items():
        task, method, _ = key.split("/")
        data = tiny_task_data(task)
        try:
            learner = build_learner(method, data, learner_config_from_dict(item["settings"]))
            learner.load_state_dict(item["state"])
        except (ValueError, RuntimeError) as error:
            failed += 1
            print(f"{key:28s} not loaded: {str(error).strip().splitlines()[-1].strip()}")
            continue
        pred = torch.as_tensor(predict_split(learner, data, "test").pred)
        same = torch.equal(pred, item["pred"])
        failed += not same
        outcome = "equal" if same else f"differs by up to {(pred - item['pred']).abs().max().item():.3g}"
        filled = ", ".join(settings_of_older_code(item["settings"])) or "none"
        print(f"{key:28s} {outcome}  (filled: {filled})")
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("train", "check"))
    parser.add_argument("path")
    args = parser.parse_args()
    if args.command == "train":
        train_all(args.path)
    else:
        sys.exit(1 if check(args.path) else 0)


if __name__ == "__main__":
    main()
