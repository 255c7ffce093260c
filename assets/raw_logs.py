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
from assets.taobao_generator import GeneratorConfig, day_path, generate, generate_day
from pipelines.outputs import bundle_output
from pipelines.partitions import dataset_partitions
from pipelines.resources import PamlResource


class RawLogsConfig(dg.Config):
    """How the synthetic `taobao` logs are generated when no real taobao/ directory is given."""

    taobao_seed: int = Field(default=0, description="Seed of the synthetic click-log generator.")
    taobao_users: int = Field(default=3000, description="Number of synthetic users.")
    taobao_items: int = Field(default=2000, description="Number of synthetic items.")
    taobao_days: int = Field(default=14, description="Days of impression logs generated at first.")
    taobao_extra_days: int = Field(
        default=0, description="New days of logs delivered after the first ones (the retraining schedule raises this daily).")


def generator_config(config: RawLogsConfig) -> GeneratorConfig:
    """The generator settings a RawLogsConfig asks for."""
    return GeneratorConfig(
        seed=config.taobao_seed, n_users=config.taobao_users, n_items=config.taobao_items, n_days=config.taobao_days
    )


def ensure_generated(root: Path, config: GeneratorConfig, extra_days: int = 0) -> Path:
    """Generate the synthetic logs for `config` under `root` once, then deliver new days.

    The first `config.n_days` days are generated together (staged and renamed, so a killed
    run never leaves half a dataset); day n_days + i is "new day" i, written on its own when
    first asked for. The directory depends on (seed, users, items, first days) only, so the
    logs for (config, extra_days) are the same whatever was delivered before.
    """
    key = f"seed{config.seed}-users{config.n_users}-items{config.n_items}-days{config.n_days}"
    target = root / key
    if not (target / "_manifest.json").is_file():
        staging = root / f".{key}.{uuid.uuid4().hex}"
        generate(staging, config)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    for day in range(config.n_days, config.n_days + extra_days):
        if not day_path(target, config, day).is_file():
            generate_day(target, config, day)  # writes to a temporary name, then renames
    return target


def read_raw(dataset: str, data_dir: Path, home: Path, config: GeneratorConfig, extra_days: int = 0) -> Bundle:
    """Read one dataset's raw files; for taobao, a user-provided `<data_dir>/taobao/` (all its
    days) or else the synthetic logs under PAML_HOME (the first n_days + extra_days days)."""
    if dataset == "movielens":
        return read_movielens(data_dir)
    if dataset == "bookcrossing":
        return read_bookcrossing(data_dir)
    if dataset != "taobao":
        raise ValueError(f"unknown dataset {dataset!r}")
    provided = data_dir / "taobao"
    if (provided / "user_profile.csv").is_file():
        return read_taobao(provided)
    directory = ensure_generated(home / "raw" / "taobao", config, extra_days)
    bundle = read_taobao(directory, max_days=config.n_days + extra_days)
    bundle.info["generator"] = json.loads((directory / "_manifest.json").read_text()).get("config")
    return bundle


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars", "csv"}, code_version="2",
    description="Raw files of one dataset read as text frames (no cleaning), with file hashes.",
)
def raw_logs(context: dg.AssetExecutionContext, config: RawLogsConfig, paml: PamlResource) -> dg.Output[Bundle]:
    bundle = read_raw(context.partition_key, paml.data_path, paml.home_path, generator_config(config), config.taobao_extra_days)
    context.log.info(f"read {len(bundle.sources)} raw files: " + ", ".join(s.path for s in bundle.sources))
    if bundle.info.get("decoded_as"):
        context.log.warning(f"read in another encoding than declared: {bundle.info['decoded_as']}")
    return bundle_output(bundle, raw_files=dg.MetadataValue.json([asdict(s) for s in bundle.sources]))
