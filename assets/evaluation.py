"""Scoring adapted predictions: per-user metrics, aggregates by group, significance tests.

Pure functions from model outputs (numpy) and user tables (polars) to frames that the
`<method>_eval` assets store and mirror into DuckDB (`user_metrics`, `metrics`, `significance`).
"""

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from models import metrics as M
from models.configs import DEFAULT_PROTOCOL

if TYPE_CHECKING:  # models.training imports torch; the report imports this module without it
    from models.training import Predictions

POPULATIONS = ("all", "major", "minor")
USER_METRIC_COLUMNS = ("error", "mse", "ndcg@3", "ndcg@5", "auc", "nel", "logloss")
# Per-user diagnostics of the meta-learners (`user_diagnostics`); reference rows lack them (null).
DIAGNOSTIC_COLUMNS = {
    "loss_unadapted": pl.Float64, "loss_adapted": pl.Float64, "adaptation_gain": pl.Float64,
    "nearest_weight": pl.Float64, "attention_entropy": pl.Float64, "memory_k": pl.Int64, "unknown_fields": pl.Int64,
}


def user_diagnostics(preds: "Predictions", memory_k: int) -> dict[str, np.ndarray]:
    """Per-user diagnostic columns of one evaluation, from `predict_split(..., diagnostics=True)`.

    loss_unadapted / loss_adapted: the query loss the model minimizes (MSE for ratings, log-loss
    for clicks) with zero inner steps / after the inner loop; adaptation_gain = their difference
    (> 0: adapting on the support set helped). nearest_weight and attention_entropy (nats): AT-PAML's
    normalized kernel weight of the nearest stored user and the entropy of all K weights (NaN
    without attention); memory_k: the K those weights spread over, only where they exist.
    unknown_fields: categorical user fields that fell back to UNKNOWN (no training user had the value).
    """
    if preds.query_loss_unadapted is None or preds.unknown_fields is None:
        raise ValueError("user_diagnostics needs predictions made with predict_split(..., diagnostics=True)")
    unadapted, adapted = preds.query_loss_unadapted.astype(np.float64), preds.query_loss.astype(np.float64)
    attended = ~np.isnan(preds.nearest_weight)
    return {
        "loss_unadapted": unadapted, "loss_adapted": adapted, "adaptation_gain": unadapted - adapted,
        "nearest_weight": preds.nearest_weight.astype(np.float64), "attention_entropy": preds.attention_entropy.astype(np.float64),
        "memory_k": np.where(attended, float(memory_k), np.nan), "unknown_fields": preds.unknown_fields.round().astype(np.int64),
    }


def user_metrics_frame(
    users: pl.DataFrame, groups: pl.DataFrame, pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
    lr_per_user: np.ndarray, task: str, train_ctr: float | None = None, diagnostics: dict[str, np.ndarray] | None = None,
    lowest_rating: float = 0.0,
) -> pl.DataFrame:
    """One row per test user: group, true group, metrics, the per-user `error`, inner LR, and
    the `diagnostics` columns when given (`user_diagnostics`; DIAGNOSTIC_COLUMNS).

    `users` maps user_id to the row of `pred` (columns user_id, user_row); `groups` has
    user_id, group, true_group. `error` is MSE for ratings and log-loss for clicks.
    `lowest_rating`: the bottom of the rating scale, which nDCG grades from when it is below 0.
    """
    if task == "rating":
        values = {"mse": M.per_user_mse(pred, target, mask), "ndcg@3": M.ndcg_at_k(pred, target, mask, 3, lowest_rating),
                  "ndcg@5": M.ndcg_at_k(pred, target, mask, 5, lowest_rating)}
        values["error"] = values["mse"]
    else:
        values = {"auc": M.per_user_auc(pred, target, mask), "nel": M.per_user_nel(pred, target, mask, train_ctr),
                  "logloss": M.per_user_logloss(pred, target, mask)}
        values["error"] = values["logloss"]
    # One schema for every task (inapplicable metrics are null), so all rows share one table.
    columns = {name: values.get(name, np.full(len(pred), np.nan)) for name in USER_METRIC_COLUMNS}
    frame = pl.DataFrame({
        "user_row": np.arange(len(pred), dtype=np.int64), "n_query": mask.sum(1).astype(np.int64),
        "lr": lr_per_user.astype(np.float64), **{k: v.astype(np.float64) for k, v in columns.items()},
        # NaN means "none" (no attention without a memory): null, also in the integer columns.
        **{k: pl.Series(k, np.asarray(v, np.float64)).fill_nan(None).cast(DIAGNOSTIC_COLUMNS[k]) for k, v in (diagnostics or {}).items()},
    }).with_columns(pl.col(pl.Float64).fill_nan(None))
    frame = users.select("user_id", "user_row").join(frame, on="user_row", how="inner")
    return frame.join(groups.select("user_id", "group", "true_group"), on="user_id", how="left").drop("user_row")


def aggregate(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, group: np.ndarray, task: str, train_ctr: float | None = None,
    lowest_rating: float = 0.0,
) -> list[dict]:
    """Dataset-level metrics for all users, major users and minor users (long format); `lowest_rating`
    as in `user_metrics_frame`."""
    rows = []
    for population in POPULATIONS:
        keep = np.ones(len(pred), bool) if population == "all" else (group == population)
        if not keep.any():
            continue
        p, t, m = pred[keep], target[keep], mask[keep]
        values = M.rating_metrics(p, t, m, lowest_rating) if task == "rating" else M.ctr_metrics(p, t, m, train_ctr)
        rows += [{"population": population, "metric": k, "value": float(v), "n_users": int(keep.sum())} for k, v in values.items()]
    return rows


def minor_vs_major(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """Two-tailed Student t-test of per-user error, minor vs major, per dataset, protocol, method and seed.

    Unpaired on purpose: the two samples are different users. Rows without a `protocol`
    column count as the paper's protocol.
    """
    rows = []
    frame = with_protocol(user_metrics)
    for (dataset, protocol, method, seed), part in frame.group_by("dataset", "protocol", "method", "seed", maintain_order=True):
        errors = part["error"].to_numpy().astype(np.float64)
        group = part["group"].fill_null("").to_numpy()
        try:
            statistic, p_value = M.ttest_groups(errors, group)
        except ValueError:
            statistic, p_value = float("nan"), float("nan")
        means = {g: float(np.nanmean(errors[group == g])) if (group == g).any() else float("nan") for g in ("major", "minor")}
        counted = np.isin(group, ("major", "minor")) & ~np.isnan(errors)
        rows.append({"comparison": "minor_vs_major", "dataset": dataset, "protocol": protocol, "method": method, "other": None,
                     "seed": int(seed), "test": "student_t", "n_users": int(counted.sum()), "mean_a": means["minor"],
                     "mean_b": means["major"], "statistic": float(statistic), "p_value": float(p_value),
                     "ci_low": None, "ci_high": None})
    return pl.DataFrame(rows, schema=SIGNIFICANCE_SCHEMA)


def with_protocol(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with a `protocol` column, null or missing values meaning the paper's protocol."""
    if "protocol" not in frame.columns:
        return frame.with_columns(pl.lit(DEFAULT_PROTOCOL).alias("protocol"))
    return frame.with_columns(pl.col("protocol").fill_null(DEFAULT_PROTOCOL))


# One schema for the unpaired minor-vs-major rows and the paired method-vs-method rows.
# mean_a/mean_b: mean per-user error of a and b; ci_low/ci_high: bootstrap interval of mean(a - b).
SIGNIFICANCE_SCHEMA = {
    "comparison": pl.String, "dataset": pl.String, "protocol": pl.String, "method": pl.String, "other": pl.String,
    "seed": pl.Int64, "test": pl.String, "n_users": pl.Int64, "mean_a": pl.Float64, "mean_b": pl.Float64,
    "statistic": pl.Float64, "p_value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
}
