"""Jobs, built by selection. A Dagster job runs one partition definition, so the daily logs,
the dataset-partitioned steps and the cross-dataset steps are separate jobs (automation
chains them without jobs; these are for the CLI and for launching by hand)."""

import dagster as dg

taobao_logs_job = dg.define_asset_job(
    "taobao_logs_job",
    selection=dg.AssetSelection.assets("taobao_daily_logs"),
    description="One day of taobao logs (a daily partition; a range is a backfill, one run per day).",
)

taobao_window_job = dg.define_asset_job(
    "taobao_window_job",
    selection=dg.AssetSelection.assets("taobao_log_window"),
    description="The taobao dataset's window of days (config: days, end_day).",
)

data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.groups("data"),
    description="Raw files -> cleaning (with checks) -> cold-start users -> splits -> groups -> tasks, one dataset.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("models") | dg.AssetSelection.assets("reg_paml_gamma_ablation"),
    description="Train every method (and the REG-PAML gamma ablation) on one dataset; promote each model unless worse.",
)

evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.groups("evaluation", "report") - dg.AssetSelection.assets("reg_paml_gamma_ablation"),
    description="Evaluate every method's model in service and the reference rows on every dataset; write the report.",
)

retraining_job = dg.define_asset_job(
    "retraining_job",
    selection=dg.AssetSelection.groups("data", "models") | dg.AssetSelection.assets("reg_paml_gamma_ablation"),
    description="Rebuild one dataset end to end up to its models in service (data, every method, promotion, ablation).",
)

production_job = dg.define_asset_job(
    "production_job",
    selection=dg.AssetSelection.groups("protocols"),
    description="Train and score every meta-learner with the warm users' tasks too (the production protocol), one dataset; "
                "the report shows them beside the reference rows fitted so.",
)

JOBS = [taobao_logs_job, taobao_window_job, data_job, training_job, evaluation_job, retraining_job, production_job]
