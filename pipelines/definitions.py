"""The one Definitions object: assets (with owners, tags and automation conditions), checks,
resources, jobs, sensors."""

from __future__ import annotations

import dagster as dg

from assets.clean_logs import clean_logs
from assets.cold_start_users import cold_start_users
from assets.expectations import clean_logs_expectations
from assets.gamma_ablation import reg_paml_gamma_ablation
from assets.meta_tasks import meta_tasks
from assets.method_assets import EVAL_ASSETS, MODEL_ASSETS
from assets.production_protocol import production_protocol
from assets.promotion import CHAMPION_ASSETS
from assets.raw_logs import raw_logs
from assets.reference_eval import reference_eval, reference_settings
from assets.report import report
from assets.taobao_logs import taobao_daily_logs, taobao_log_window
from assets.user_groups import user_groups
from assets.user_splits import user_splits
from pipelines.automation import SCHEDULES, SENSORS, automation_condition
from pipelines.executors import executor_from_env
from pipelines.io_manager import LineageIOManager
from pipelines.jobs import JOBS
from pipelines.progress import LOGGERS
from pipelines.resources import paml_resource

OWNERS = ["team:paml"]
# What each group holds, as a tag the asset catalog filters on.
LAYERS = {"taobao_logs": "source", "data": "data", "models": "model", "evaluation": "evaluation", "protocols": "evaluation",
          "report": "report"}


def operated(spec: dg.AssetSpec) -> dg.AssetSpec:
    """An asset spec with the team as owner, its layer and partitioning as tags, and its automation condition."""
    partitioned_by = {"taobao_daily_logs": "day", "taobao_log_window": "none"}.get(
        spec.key.to_user_string(), "dataset" if spec.partitions_def else "none")
    tags = {**spec.tags, "layer": LAYERS[spec.group_name], "partitioned_by": partitioned_by}
    return spec.replace_attributes(owners=OWNERS, tags=tags, automation_condition=automation_condition(spec.key.to_user_string()))


SOURCE_ASSETS = dg.map_asset_specs(operated, [taobao_daily_logs, taobao_log_window])
DATA_ASSETS = dg.map_asset_specs(operated, [raw_logs, clean_logs, cold_start_users, user_splits, user_groups, meta_tasks])
MODEL_ASSETS = dg.map_asset_specs(operated, [reference_settings, *MODEL_ASSETS, *CHAMPION_ASSETS])
EVALUATION_ASSETS = dg.map_asset_specs(operated, [*EVAL_ASSETS, reference_eval, reg_paml_gamma_ablation, production_protocol,
                                                  report])
ASSETS = [*SOURCE_ASSETS, *DATA_ASSETS, *MODEL_ASSETS, *EVALUATION_ASSETS]
CHECKS = [clean_logs_expectations]


def build_resources(home=None, data_dir=None, shards: int | None = None) -> dict:
    """Resources for a state directory, raw-data directory and user shards (defaults: the environment)."""
    paml = paml_resource(home, data_dir, shards)
    return {"paml": paml, "io_manager": LineageIOManager(home=paml.home)}


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=build_resources(),
    executor=executor_from_env(),
    loggers=LOGGERS,
)
