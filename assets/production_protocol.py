"""Asset `production_protocol`: the meta-learners fitted with the warm users' tasks too, scored
on the same test users as the paper's protocol (docs/protocol.md, "Two protocols").

The paper's protocol trains on the cold-start training users only and throws the warm users'
ratings away; a recommender in production would not. The reference rows are fitted both ways
(`reference_eval`); this asset does the same for the meta-learners, so Tables 2-3 and the paired
tests have a production block with every method in it. Like the gamma ablation it keeps the
scores, not the models: the models in service stay the paper protocol's (`<method>_champion`).
"""

import time
from typing import TYPE_CHECKING, Callable

import polars as pl

from assets.bundle import Bundle
from assets.evaluation import minor_vs_major
from assets.method_assets import (
    ModelConfig, evaluate_dataset, evaluation_line, metrics_summary, progress_line, refusing_settings, train_variants,
    training_users,
)
from models.configs import METHOD_NAMES, WARM_SPLIT

if TYPE_CHECKING:
    from models.training import EpochLog

PRODUCTION = "production"


class NoWarmUsersError(ValueError):
    """The dataset's tasks hold no warm users: nothing to add to the paper's protocol."""


def production_protocol_runs(tasks: Bundle, groups: Bundle, config: ModelConfig, methods: list[str], dataset: str,
                             references: Bundle | None = None,
                             on_epoch: Callable[[str, int, "EpochLog"], None] = lambda method, seed, log: None,
                             on_scored: Callable[[str, str], None] = lambda method, line: None,
                             on_warning: Callable[[str], None] = lambda line: None) -> Bundle:
    """Train every method of `methods` under the production protocol (each with its tuned settings,
    its seeds side by side) and score its test users; rows carry `protocol = 'production'`.

    The settings are the production protocol's settings file's (`tune --protocol production`), else, for a
    method it lacks, the paper protocol's (models/settings.py `chosen_settings`); the fold-ins' MF and kNN
    settings are the ones `reference_settings` chose for the production protocol.
    """
    if not tasks.info.get("n_users", {}).get(WARM_SPLIT):
        raise NoWarmUsersError(f"the {dataset!r} tasks hold no {WARM_SPLIT!r} split (no user has more ratings than "
                               "the cold-start bound): the production protocol would train on the paper's users only")
    unknown = sorted(set(methods) - set(METHOD_NAMES))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose among {sorted(METHOD_NAMES)}")
    production = config.model_copy(update={"protocol": PRODUCTION})
    user_frames, rows, settings, runtime, histories = [], [], {}, {}, []
    users = training_users(tasks, PRODUCTION)
    # Every method's settings first: a value refused for the last method stops the step before the
    # first one trains, not after it (a SettingError, `ModelConfig.training_configs`).
    configs = {method: production.training_configs(method, dataset, references, users) for method in methods}
    for method in methods:
        learner, train = configs[method]
        if note := production.memory_note(method, learner, users):
            on_warning(note)
        settings[method] = production.settings_provenance(method, dataset)
        [(model, _)] = train_variants(tasks, [(method, learner)], train, config.seeds,
                                      lambda _, seed, log, m=method: on_epoch(m, seed, log), config.processes,
                                      settings[method])
        runtime = model.info["runtime"]
        histories.append(model.frame("history"))  # which step validation kept, per seed: did the method train at all
        started = time.perf_counter()
        frames, aggregates = evaluate_dataset(method, dataset, model, tasks, groups)
        on_scored(method, evaluation_line(sum(f.height for f in frames), time.perf_counter() - started,
                                          metrics_summary(pl.DataFrame(aggregates))))
        user_frames += frames
        rows += aggregates
    user_metrics = pl.concat(user_frames, how="diagonal_relaxed") if user_frames else pl.DataFrame()
    significance = minor_vs_major(user_metrics) if user_frames else pl.DataFrame()
    history = pl.concat(histories, how="diagonal_relaxed") if histories else pl.DataFrame()
    return Bundle(frames={"metrics": pl.DataFrame(rows), "user_metrics": user_metrics, "significance": significance,
                          "history": history},
                  info={"dataset": dataset, "protocol": PRODUCTION, "methods": list(methods), "seeds": list(config.seeds),
                        "settings": settings, "runtime": runtime})


def skipped(dataset: str, reason: str) -> Bundle:
    """The asset's output for a dataset it cannot fit so: empty frames (its rows in the tables are removed), the reason."""
    return Bundle(frames={"metrics": pl.DataFrame(), "user_metrics": pl.DataFrame(), "significance": pl.DataFrame(),
                          "history": pl.DataFrame()},
                  info={"dataset": dataset, "protocol": PRODUCTION, "skipped": reason})


# -- Dagster asset -------------------------------------------------------------------------
import dagster as dg  # noqa: E402
from pydantic import Field, field_validator  # noqa: E402

from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402


class ProductionConfig(ModelConfig):
    """The model assets' training settings (the protocol is always 'production' here) and the methods to fit."""

    methods: list[str] = Field(default=list(METHOD_NAMES), description="Methods to train and score under the production protocol.")

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        # A list of Literals is no Dagster config type, so the names are checked here, when the step starts.
        if unknown := sorted(set(methods) - set(METHOD_NAMES)):
            raise ValueError(f"methods: unknown {unknown}; choose among {', '.join(METHOD_NAMES)}")
        return methods


@dg.asset(
    partitions_def=dataset_partitions, group_name="protocols", kinds={"pytorch", "duckdb"}, code_version="2",
    description="Every meta-learner trained with the warm users' tasks too (the production protocol) and scored on the "
                "paper's test users: the meta-learners' rows of the report's production block. Scores only; the "
                "models in service stay the paper protocol's.",
)
def production_protocol(context: dg.AssetExecutionContext, config: ProductionConfig, meta_tasks: Bundle,
                        user_groups: Bundle, reference_settings: Bundle) -> dg.Output[Bundle]:
    try:
        with refusing_settings(f"production_protocol ({context.partition_key})"):
            bundle = production_protocol_runs(
                meta_tasks, user_groups, config, config.methods, context.partition_key, reference_settings,
                lambda method, seed, log: context.log.info(progress_line(f"{method} ({PRODUCTION}) seed {seed}", log)),
                lambda method, line: context.log.info(f"{method} ({PRODUCTION}): {line}"), context.log.warning)
    except NoWarmUsersError as error:  # a dataset without warm users has no production block; not a failure
        context.log.warning(str(error))
        bundle = skipped(context.partition_key, str(error))
    metrics = bundle.frame("metrics")
    summary = metrics.group_by("method", "population", "metric").agg(pl.col("value").mean()).sort("method", "metric", "population") \
        if metrics.height else metrics
    return bundle_output(bundle, summary=table(summary))

