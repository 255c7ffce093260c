"""The one Definitions object: assets, checks, resources, jobs."""

from __future__ import annotations

import dagster as dg

from assets.clean_logs import clean_logs
from assets.cold_start_users import cold_start_users
from assets.expectations import clean_logs_expectations
from assets.gamma_ablation import reg_paml_gamma_ablation
from assets.meta_tasks import meta_tasks
from assets.method_assets import EVAL_ASSETS, MODEL_ASSETS
from assets.raw_logs import raw_logs
from assets.reference_eval import reference_eval
from assets.report import report
from assets.user_groups import user_groups
from assets.user_splits import user_splits
from pipelines.automation import SCHEDULES, SENSORS
from pipelines.executors import executor_from_env
from pipelines.io_manager import LineageIOManager
from pipelines.jobs import JOBS
from pipelines.progress import LOGGERS
from pipelines.resources import paml_resource

DATA_ASSETS = [raw_logs, clean_logs, cold_start_users, user_splits, user_groups, meta_tasks]
ASSETS = [*DATA_ASSETS, *MODEL_ASSETS, *EVAL_ASSETS, reference_eval, reg_paml_gamma_ablation, report]
CHECKS = [clean_logs_expectations]


def build_resources(home=None, data_dir=None) -> dict:
    """Resources for a state directory and raw-data directory (defaults: the environment)."""
    paml = paml_resource(home, data_dir)
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
