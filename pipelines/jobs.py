"""Jobs, built by selection. Dataset-partitioned steps and the cross-dataset steps are separate
jobs because a Dagster job runs one partition definition."""

import dagster as dg

data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.groups("data"),
    description="Raw files -> cleaning (with checks) -> cold-start users -> splits -> groups -> tasks, one dataset.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("models") | dg.AssetSelection.assets("reg_paml_gamma_ablation"),
    description="Train every method (and the REG-PAML gamma ablation) on one dataset.",
)

evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.groups("evaluation", "report") - dg.AssetSelection.assets("reg_paml_gamma_ablation"),
    description="Evaluate every trained method and the reference rows on every dataset; write the report.",
)

JOBS = [data_job, training_job, evaluation_job]

retraining_job = dg.define_asset_job(
    "retraining_job",
    selection=dg.AssetSelection.groups("data", "models") | dg.AssetSelection.assets("reg_paml_gamma_ablation"),
    description="Rebuild one dataset end to end up to its trained models (data, every method, ablation).",
)

JOBS.append(retraining_job)
