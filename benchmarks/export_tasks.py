"""Task tensors as a directory (tensors.safetensors + info.json), for machines without the data stack.

    python -m benchmarks.export_tasks --dataset movielens --out DIR

Takes the newest `meta_tasks` of the dataset from PAML_HOME's store when there is one, else
builds the tasks from the raw files in PAML_DATA_DIR with the pipeline's own pure functions
(seed 0, no Dagster). Reading a directory back (`load_tasks`) needs only torch and
safetensors: the GPU check and the training benchmark read it on machines that have neither
polars nor the raw data. The directory holds data derived from the dataset: keep it out of
the repository (benchmarks/out/ is git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TENSORS, INFO = "tensors.safetensors", "info.json"


def load_tasks(directory: Path):
    """TaskData from an exported directory (torch and safetensors only)."""
    from safetensors.torch import load_file

    from models.tasks import task_data_from_tensors

    directory = Path(directory)
    if not (directory / TENSORS).is_file() or not (directory / INFO).is_file():
        raise FileNotFoundError(f"{directory} holds no exported tasks ({TENSORS} and {INFO}); "
                                f"make them with: python -m benchmarks.export_tasks --dataset movielens --out {directory}")
    return task_data_from_tensors(load_file(str(directory / TENSORS)), json.loads((directory / INFO).read_text()))


def save_tasks(tensors: dict, info: dict, directory: Path) -> Path:
    """Write tensors and info; returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / TENSORS))
    (directory / INFO).write_text(json.dumps(info))
    return directory


def tasks_from_store(dataset: str, home: Path) -> tuple[dict, dict] | None:
    """The newest meta_tasks bundle's tensors and info in `home`'s store, or None when never built."""
    if not (home / "paml.duckdb").is_file():
        return None
    from pipelines.store import LineageStore, PartitionNotBuiltError

    store = LineageStore(home)
    try:
        bundle = store.load(store.latest("meta_tasks", dataset))
    except PartitionNotBuiltError:
        return None
    return bundle.tensors, bundle.info


def tasks_from_raw(dataset: str, data_dir: Path) -> tuple[dict, dict]:
    """Clean, select, split (seed 0) and encode the raw files with the pipeline's pure functions."""
    from assets.clean_logs import clean_logs_from_raw
    from assets.cold_start_users import select_cold_start
    from assets.meta_tasks import encode_tasks
    from assets.raw_files import read_bookcrossing, read_movielens
    from assets.specs import SPECS
    from assets.user_splits import user_splits_for

    readers = {"movielens": read_movielens, "bookcrossing": read_bookcrossing}
    if dataset not in readers:
        raise ValueError(f"exporting from raw files knows {', '.join(readers)}; build {dataset} with the pipeline first")
    spec = SPECS[dataset]
    clean = clean_logs_from_raw(readers[dataset](data_dir), spec)
    cold = select_cold_start(clean.frame("interactions"))
    splits = user_splits_for(cold, clean.frame("interactions"), 0)
    _, tensors, info = encode_tasks(clean.frame("users"), clean.frame("items"), splits, spec)
    return tensors, info


def export(dataset: str, out: Path, home: Path | None, data_dir: Path) -> tuple[Path, str]:
    """Export `dataset`'s tasks to `out`; returns the directory and where they came from."""
    found = tasks_from_store(dataset, home) if home is not None else None
    if found is not None:
        return save_tasks(*found, out), f"meta_tasks in {home}"
    return save_tasks(*tasks_from_raw(dataset, data_dir), out), f"raw files in {data_dir}"


def main() -> int:
    from pipelines.locations import default_data_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--from-raw", action="store_true", help="ignore PAML_HOME's store; build from PAML_DATA_DIR")
    args = parser.parse_args()
    home = None if args.from_raw or not os.environ.get("PAML_HOME") else Path(os.environ["PAML_HOME"])
    directory, source = export(args.dataset, args.out, home, default_data_dir())
    data = load_tasks(directory)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    print(f"{args.dataset} tasks from {source} -> {directory} ({sizes} tasks: one per user, a warm user's history in chunks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
