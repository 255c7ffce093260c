"""Jobs, built by selection."""

import dagster as dg

data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.groups("data"),
    description="Raw files -> cleaning (with checks) -> cold-start users -> splits -> groups -> tasks, one dataset.",
)
