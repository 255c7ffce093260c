"""Asset `raw_logs`: each dataset's raw files read as text frames, with their file hashes."""


import json
import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.bundle import Bundle
from assets.raw_files import read_bookcrossing, read_movielens, read_taobao
from assets.taobao_generator import GeneratorConfig, generate
from pipelines.outputs import bundle_output
from pipelines.partitions import dataset_partitions
from pipelines.resources import PamlResource


class RawLogsConfig(dg.Config):
    """How the synthetic `taobao` logs are generated when no real taobao/ directory is given."""

    taobao_seed: int = Field(default=0, description="Seed of the synthetic click-log generator.")
    taobao_users: int = Field(default=3000, description="Number of synthetic users.")
    taobao_items: int = Field(default=2000, description="Number of synthetic items.")
    taobao_days: int = Field(default=14, description="Days of impression logs.")


def generator_config(config: RawLogsConfig) -> GeneratorConfig:
    """The generator settings a RawLogsConfig asks for."""
    return GeneratorConfig(
        seed=config.taobao_seed, n_users=config.taobao_users, n_items=config.taobao_items, n_days=config.taobao_days
    )


def ensure_generated(root: Path, config: GeneratorConfig) -> Path:
    """Generate the synthetic logs for `config` under `root` once; reuse them afterwards.

    Written to a staging directory and renamed, so a killed run never leaves half a dataset.
    """
    key = f"seed{config.seed}-users{config.n_users}-items{config.n_items}-days{config.n_days}"
    target = root / key
    if (target / "_manifest.json").is_file():
        return target
    staging = root / f".{key}.{uuid.uuid4().hex}"
    generate(staging, config)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def taobao_directory(data_dir: Path, home: Path, config: GeneratorConfig) -> Path:
    """A user-provided `<data_dir>/taobao/` if it exists, else generated logs under PAML_HOME."""
    provided = data_dir / "taobao"
    if (provided / "user_profile.csv").is_file():
        return provided
    return ensure_generated(home / "raw" / "taobao", config)


def read_raw(dataset: str, data_dir: Path, home: Path, config: GeneratorConfig) -> Bundle:
    """Read one dataset's raw files (generating the synthetic ones if needed)."""
    if dataset == "movielens":
        return read_movielens(data_dir)
    if dataset == "bookcrossing":
        return read_bookcrossing(data_dir)
    if dataset == "taobao":
        directory = taobao_directory(data_dir, home, config)
        bundle = read_taobao(directory)
        bundle.info["generator"] = json.loads((directory / "_manifest.json").read_text()).get("config") \
            if (directory / "_manifest.json").is_file() else None
        return bundle
    raise ValueError(f"unknown dataset {dataset!r}")


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars", "csv"}, code_version="1",
    description="Raw files of one dataset read as text frames (no cleaning), with file hashes.",
)
def raw_logs(context: dg.AssetExecutionContext, config: RawLogsConfig, paml: PamlResource) -> dg.Output[Bundle]:
    bundle = read_raw(context.partition_key, paml.data_path, paml.home_path, generator_config(config))
    context.log.info(f"read {len(bundle.sources)} raw files: " + ", ".join(s.path for s in bundle.sources))
    return bundle_output(bundle, raw_files=dg.MetadataValue.json([asdict(s) for s in bundle.sources]))
