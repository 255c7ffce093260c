"""Asset `reg_paml_gamma_ablation`: REG-PAML trained with gamma in {1e-5, 1e-4, 1e-3, 1e-2} (Table 4)."""

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import polars as pl

from assets.bundle import Bundle
from assets.evaluation import minor_vs_major
from assets.method_assets import (
    ModelConfig, evaluate_dataset, evaluation_line, metrics_summary, progress_line, refusing_settings, train_variants,
)

if TYPE_CHECKING:
    from models.training import EpochLog

ABLATION_GAMMAS = (1e-5, 1e-4, 1e-3, 1e-2)


def gamma_ablation(tasks: Bundle, groups: Bundle, config: ModelConfig, gammas: list[float], dataset: str,
                   references: Bundle | None = None,
                   on_epoch: Callable[[float, int, "EpochLog"], None] = lambda gamma, seed, log: None,
                   on_scored: Callable[[float, str], None] = lambda gamma, line: None) -> Bundle:
    """Train and evaluate REG-PAML once per gamma; rows are labelled with their gamma.

    `references` (the `reference_settings` asset) gives the fold-ins' MF and kNN settings, as for `reg_paml_model`.
    `on_scored(gamma, line)` hears of each gamma's test scoring (`evaluation_line`).
    """
    user_frames, rows = [], []
    learner = config.learner_config("reg_paml", dataset, references)
    variants = [("reg_paml", replace(learner, gamma=gamma)) for gamma in gammas]
    # Every gamma's seeds side by side where the device has room (models/parallel.py).
    settings = config.settings_provenance("reg_paml", dataset)
    models = train_variants(tasks, variants, config.train_config("reg_paml", dataset), config.seeds,
                            lambda variant, seed, log: on_epoch(gammas[variant], seed, log), config.processes, settings)
    for gamma, (model, _) in zip(gammas, models):
        started = time.perf_counter()
        frames, aggregates = evaluate_dataset("reg_paml", dataset, model, tasks, groups)
        on_scored(gamma, evaluation_line(sum(f.height for f in frames), time.perf_counter() - started,
                                         metrics_summary(pl.DataFrame(aggregates))))
        user_frames += [f.with_columns(pl.lit(gamma).alias("gamma")) for f in frames]
        rows += [{**row, "gamma": gamma} for row in aggregates]
    user_metrics = pl.concat(user_frames, how="diagonal_relaxed")
    significance = pl.concat([
        minor_vs_major(part).with_columns(pl.lit(gamma).alias("gamma"))
        for (gamma,), part in user_metrics.group_by("gamma", maintain_order=True)
    ])
    return Bundle(frames={"metrics": pl.DataFrame(rows), "user_metrics": user_metrics, "significance": significance},
                  info={"gammas": list(gammas), "dataset": dataset, "method": "reg_paml_gamma_ablation",
                        "settings": settings, "runtime": models[0][0].info["runtime"] if models else {}})


# -- Dagster asset -------------------------------------------------------------------------
import dagster as dg  # noqa: E402
from pydantic import Field, field_validator  # noqa: E402

from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402


class AblationConfig(ModelConfig):
    """REG-PAML's training settings plus the gammas to compare."""

    gammas: list[float] = Field(default=list(ABLATION_GAMMAS), description="Regularizer weights to train (paper Table 4), each >= 0.")

    @field_validator("gammas")
    @classmethod
    def _gammas(cls, gammas: list[float]) -> list[float]:
        if not gammas or any(not gamma >= 0 for gamma in gammas):  # `not >=` also catches NaN
            raise ValueError(f"gammas: {gammas}; give one or more regularizer weights, each >= 0")
        return gammas


@dg.asset(
    partitions_def=dataset_partitions, group_name="evaluation", kinds={"pytorch", "duckdb"}, code_version="1",
    description="REG-PAML gamma ablation (paper Table 4): major/minor error and p-value per gamma.",
)
def reg_paml_gamma_ablation(context: dg.AssetExecutionContext, config: AblationConfig, meta_tasks: Bundle, user_groups: Bundle,
                            reference_settings: Bundle) -> dg.Output[Bundle]:
    with refusing_settings(f"reg_paml_gamma_ablation ({context.partition_key})"):  # settings are resolved before training
        bundle = gamma_ablation(meta_tasks, user_groups, config, config.gammas, context.partition_key, reference_settings,
                                lambda gamma, seed, log: context.log.info(progress_line(f"gamma {gamma:g} seed {seed}", log)),
                                lambda gamma, line: context.log.info(f"gamma {gamma:g}: {line}"))
    summary = bundle.frame("metrics").group_by("gamma", "population", "metric").agg(pl.col("value").mean()).sort("gamma", "metric", "population")
    return bundle_output(bundle, summary=table(summary))
