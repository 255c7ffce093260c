"""Partitions, defined once: the dataset dimension and the daily taobao logs.

The dataset dimension is static: the built-in datasets, then those registered with
`python -m pipelines.cli dataset add` (PAML_HOME/datasets), read when this module is loaded, so
a newly added dataset appears after a code reload (a new process, or "Reload" in the UI).
A static list rather than Dagster's dynamic partitions keeps every job, check, automation
condition and partition mapping as they are; the cost is that reload. The taobao logs are daily
partitions from the generator's first day; their window reaches the dataset chain through
`taobao_log_window`, whose only partition is `taobao` and which feeds only the `taobao`
partition of `raw_logs` (`TAOBAO_ONLY`), so a new day of logs never touches MovieLens or
Book-Crossing.
"""

import warnings

import dagster as dg

from assets.specs import all_datasets
from assets.taobao_generator import GeneratorConfig

dataset_partitions = dg.StaticPartitionsDefinition(list(all_datasets()))

# Day 0 of the synthetic generator; each partition is one UTC day, the newest is yesterday.
taobao_days = dg.DailyPartitionsDefinition(start_date=GeneratorConfig().start_date, timezone="UTC")

taobao_only = dg.StaticPartitionsDefinition(["taobao"])
TAOBAO_ONLY = dg.StaticPartitionMapping({"taobao": "taobao"})


def dataset_asset_check(**kwargs):
    """`dg.asset_check` with one result per dataset partition.

    Partitioned checks are a Dagster preview in 1.13; we use them knowingly (a failed check on
    one dataset must not block automation of another), so their preview warning is silenced
    here, where the choice is made, and nowhere else.
    """

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(partitions_def=dataset_partitions, **kwargs)(fn)

    return decorate
