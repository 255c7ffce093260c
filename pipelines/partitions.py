"""The dataset dimension: one static partition per dataset."""

import dagster as dg

from assets.specs import DATASETS

dataset_partitions = dg.StaticPartitionsDefinition(list(DATASETS))
