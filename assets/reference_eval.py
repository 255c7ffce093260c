"""Asset `reference_eval`: the reference rows (global mean, item mean, user + item bias).

Scored on exactly the test users' query sets the meta-learners are scored on, and written
to the same `user_metrics`, `metrics` and `significance` tables (method `ref_<name>`).
"""

import numpy as np

from assets.bundle import Bundle
from assets.method_assets import metrics_bundle, score
from models.references import REFERENCES, clip_for_task, predict_reference
from models.tasks import task_data_from_tensors

REFERENCE_SEED = 0  # deterministic predictors: one "seed"


def evaluate_references(tasks: dict[str, Bundle], groups: dict[str, Bundle]) -> Bundle:
    """Every reference on every dataset that has tasks and groups."""
    user_frames, rows, evaluated = [], [], []
    for dataset in sorted(set(tasks) & set(groups)):
        data = task_data_from_tensors(tasks[dataset].tensors, tasks[dataset].info)
        test = data.splits["test"]
        for name in REFERENCES:
            pred = clip_for_task(predict_reference(name, data, test), data.task)
            no_lr = np.full(len(test), np.nan)
            frame, aggregates = score(dataset, f"ref_{name}", REFERENCE_SEED, data, tasks[dataset], groups[dataset], pred, no_lr)
            user_frames.append(frame)
            rows += aggregates
        evaluated.append(dataset)
    return metrics_bundle("references", user_frames, rows, evaluated)


# -- Dagster asset -------------------------------------------------------------------------
import dagster as dg  # noqa: E402

from pipelines.outputs import bundle_output  # noqa: E402


@dg.asset(
    group_name="evaluation", kinds={"numpy", "duckdb"}, code_version="1",
    ins={"tasks": dg.AssetIn("meta_tasks"), "groups": dg.AssetIn("user_groups")},
    description="Reference rows a practitioner tries first (global mean, item mean, user+item bias) on the same query sets.",
)
def reference_eval(tasks: dict, groups: dict) -> dg.Output[Bundle]:
    bundle = evaluate_references(tasks, groups)
    return bundle_output(bundle, datasets_evaluated=", ".join(bundle.info["datasets"]) or "none")
