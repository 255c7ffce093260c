"""Personalization diagnostics: is the step size personal, does adaptation help, does AT-PAML attend?

Issue 9 asks that "personalized" be a measured fact: per dataset, protocol, method and user
group (all / major / minor), over the test users of `user_metrics` (their per-user columns come
from assets/evaluation.py `user_diagnostics`):

- the inner step size each user got (`lr`; paper Eq. 1's alpha(h_i)): mean, sd, coefficient of
  variation (sd / mean) and the 10/50/90% quantiles. MeLU and transfer use one fixed rate and
  Meta-SGD one set of rates for every user, so their cv is 0 by construction: the comparison.
- the adaptation gain: the query loss before the inner loop minus after it, its mean and the
  share of users whom adaptation helped (gain > 0);
- AT-PAML's attention over its K stored neighbours: the nearest one's normalized weight
  s_1 / (sum_j s_j + sigma), also as a multiple of the uniform 1/K, and the entropy of the
  weights, also divided by ln K (1 = uniform);
- the share of users with at least one categorical profile field that no training user had
  (its embedding is the UNKNOWN row).

Every statistic is computed per seed over the group's test users, then averaged over seeds
(a seed's model is one experiment; pooling seeds would count the seeds' different rate
levels as spread between users and give a fixed-rate method a cv above 0). sd is the sample
sd (ddof 1); quantiles interpolate linearly (numpy's default).
"""

import math
from collections.abc import Mapping, Sequence

import polars as pl

from assets.evaluation import DIAGNOSTIC_COLUMNS, with_protocol
from assets.markdown import markdown_table
from assets.report_tables import (
    NOT_EVALUATED, PAML_METHODS, method_name, method_order, one_protocol, per_dataset_markdown, protocol_rank,
)

GROUPS = ("all", "major", "minor")
LR_QUANTILES = (0.1, 0.5, 0.9)
# Targets of issue 9: the PAML family's step sizes vary across test users, and AT-PAML's nearest
# neighbour weighs at least twice a uniform share of the K.
STEP_SIZE_CV_TARGET = 0.25
NEAREST_WEIGHT_TARGET = 2.0  # times the uniform weight 1/K

KEYS = ("dataset", "protocol", "method", "group")
SUMMARY_SCHEMA = {
    "dataset": pl.String, "protocol": pl.String, "method": pl.String, "group": pl.String,
    "n_seeds": pl.Int64, "n_users": pl.Int64,  # seeds averaged; test users in the group (per seed)
    "lr_mean": pl.Float64, "lr_sd": pl.Float64, "lr_cv": pl.Float64,
    "lr_q10": pl.Float64, "lr_q50": pl.Float64, "lr_q90": pl.Float64,
    "loss_unadapted": pl.Float64, "loss_adapted": pl.Float64,  # mean query loss before / after the inner loop
    "gain_mean": pl.Float64, "gain_positive_share": pl.Float64,  # mean(unadapted - adapted); share with gain > 0
    "memory_k": pl.Int64,  # K neighbours (AT-PAML; null for methods without attention)
    "nearest_weight": pl.Float64, "nearest_ratio": pl.Float64,  # mean weight of the nearest; that / (1 / K)
    "attention_entropy": pl.Float64, "entropy_ratio": pl.Float64,  # mean entropy (nats); that / ln K
    "unknown_share": pl.Float64,  # share of users with >= 1 profile field unseen in training
}


def by_group(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """Each row once under group 'all' and once more under its own group when major or minor."""
    rows = user_metrics.with_columns(pl.col("group").cast(pl.String))
    return pl.concat([rows.with_columns(pl.lit("all").alias("group")), rows.filter(pl.col("group").is_in(["major", "minor"]))])


def per_seed(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """The statistics of every (dataset, protocol, method, group, seed) over its test users."""
    lr, gain = pl.col("lr"), pl.col("adaptation_gain")
    # Sums in one order whatever the rows' order (group_by's groups come in a random order per process).
    rows = by_group(user_metrics).sort(*KEYS, "seed", "user_id", maintain_order=True)
    return rows.group_by(*KEYS, "seed", maintain_order=True).agg(
        n_users=pl.len(),
        lr_mean=lr.mean(), lr_sd=lr.std(),
        **{f"lr_q{round(q * 100)}": lr.quantile(q, interpolation="linear") for q in LR_QUANTILES},
        loss_unadapted=pl.col("loss_unadapted").mean(), loss_adapted=pl.col("loss_adapted").mean(),
        gain_mean=gain.mean(), gain_positive_share=(gain > 0).mean(),
        memory_k=pl.col("memory_k").max(),
        nearest_weight=pl.col("nearest_weight").mean(), attention_entropy=pl.col("attention_entropy").mean(),
        unknown_share=(pl.col("unknown_fields") > 0).mean(),
    ).with_columns(lr_cv=pl.col("lr_sd") / pl.col("lr_mean"))


def diagnostics_summary(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """SUMMARY_SCHEMA rows per dataset, protocol, method and group (all/major/minor), in report order.

    Only rows with a step size count (the meta-learners; reference rows have none). Columns
    missing from `user_metrics` (evaluations written before the diagnostics) give nulls.
    """
    if user_metrics.height == 0 or "lr" not in user_metrics.columns:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    frame = with_protocol(user_metrics).filter(pl.col("lr").is_not_null())
    missing = {"group": pl.String, **DIAGNOSTIC_COLUMNS}
    frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name) for name, dtype in missing.items() if name not in frame.columns)
    if frame.height == 0:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    stats = [c for c in SUMMARY_SCHEMA if c not in (*KEYS, "n_seeds", "n_users", "memory_k", "nearest_ratio", "entropy_ratio")]
    summary = per_seed(frame).group_by(*KEYS, maintain_order=True).agg(
        pl.len().alias("n_seeds"), pl.col("n_users").max(), pl.col("memory_k").max(), *(pl.col(c).mean() for c in stats))
    k = pl.col("memory_k").cast(pl.Float64)
    summary = summary.with_columns(nearest_ratio=pl.col("nearest_weight") * k,
                                   entropy_ratio=pl.col("attention_entropy") / k.log())
    summary = summary.select(pl.col(name).cast(dtype) for name, dtype in SUMMARY_SCHEMA.items()).with_columns(
        pl.col(pl.Float64).fill_nan(None))
    rank = {m: i for i, m in enumerate(method_order(summary["method"].to_list()))}
    return summary.sort("dataset", protocol_rank(), pl.col("method").replace_strict(rank, return_dtype=pl.Int64),
                        pl.col("group").replace_strict({g: i for i, g in enumerate(GROUPS)}, return_dtype=pl.Int64))


# -- Markdown --------------------------------------------------------------------------------

INTRO = (
    "Whether the step size is *personal*, measured on the test users. Every number is computed per seed over "
    "the group's test users, then averaged over seeds. **Step size**: the inner learning rate each user got "
    "(PAML family: alpha(h_i) of Eq. 1, the geometric mean over the adapted parameter tensors; Meta-SGD: the mean "
    "of its per-parameter rates; MeLU and transfer: their fixed rate); **cv** = sd / mean across users (0 when every user gets the "
    "same step, as for MeLU, Meta-SGD and transfer by construction); q10 / q50 / q90 its quantiles. "
    "**Query loss before → after**: the loss the model minimizes (MSE; log-loss for clicks) on the query set "
    "with no inner step and after adapting on the support set; **helped**: the share of users whose query loss "
    "fell (adaptation gain > 0). **Nearest weight** (AT-PAML): the normalized kernel weight of the nearest "
    "stored user, and in brackets its multiple of a uniform 1/K; **entropy**: of the K weights, in nats, and in "
    "brackets divided by ln K (1 = uniform). **Unseen profile**: the share of users with at least one "
    "categorical profile value that no training user had (it is embedded as UNKNOWN). "
    f"Targets (issue 9): step-size cv ≥ {STEP_SIZE_CV_TARGET} for the PAML family; AT-PAML's nearest weight "
    f"≥ {NEAREST_WEIGHT_TARGET:g}/K. Views: `diagnostic_step_size`, `diagnostic_adaptation`, `diagnostic_memory`, "
    "`diagnostic_inputs`."
)
COLUMNS = ["method", "group", "users", "step size: mean", "cv", "q10 / q50 / q90", "query loss before → after", "helped",
           "nearest weight (× 1/K)", "entropy (÷ ln K)", "unseen profile"]


def number(value: float | None, spec: str) -> str:
    """`value` formatted with `spec`; '—' when missing."""
    return NOT_EVALUATED if value is None or not math.isfinite(value) else format(value, spec)


def diagnostics_cells(r: Mapping) -> dict[str, str]:
    """One summary row as Markdown cells (memory cells blank for methods without attention)."""
    attends = r["memory_k"] is not None
    return {
        "group": r["group"], "users": str(r["n_users"]),
        "step size: mean": number(r["lr_mean"], ".3g"), "cv": number(r["lr_cv"], ".2f"),
        "q10 / q50 / q90": " / ".join(number(r[f"lr_q{q}"], ".3g") for q in (10, 50, 90)),
        "query loss before → after": (f"{number(r['loss_unadapted'], '.3f')} → {number(r['loss_adapted'], '.3f')}"
                                      if r["loss_adapted"] is not None else NOT_EVALUATED),
        "helped": number(r["gain_positive_share"], ".0%"),
        "nearest weight (× 1/K)": f"{number(r['nearest_weight'], '.3f')} ({number(r['nearest_ratio'], '.1f')}×, K = {r['memory_k']})"
        if attends else "",
        "entropy (÷ ln K)": f"{number(r['attention_entropy'], '.2f')} ({number(r['entropy_ratio'], '.2f')})" if attends else "",
        "unseen profile": number(r["unknown_share"], ".0%"),
    }


def targets_line(part: pl.DataFrame) -> str:
    """The issue's targets on one dataset's users (group 'all'): each PAML method's cv, AT-PAML's nearest weight."""
    everyone = {r["method"]: r for r in part.filter(pl.col("group") == "all").iter_rows(named=True)}
    verdict = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    checks = [f"{method_name(m)} {number(everyone[m]['lr_cv'], '.2f')} "
              f"({verdict(everyone[m]['lr_cv'] is not None and everyone[m]['lr_cv'] >= STEP_SIZE_CV_TARGET)})"
              for m in PAML_METHODS if m in everyone]
    parts = [f"step-size cv ≥ {STEP_SIZE_CV_TARGET}: {', '.join(checks)}"] if checks else []
    at = everyone.get("at_paml")
    if at is not None and at["memory_k"] is not None:
        bound = NEAREST_WEIGHT_TARGET / at["memory_k"]
        ok = at["nearest_weight"] is not None and at["nearest_weight"] >= bound
        parts.append(f"AT-PAML nearest weight ≥ {NEAREST_WEIGHT_TARGET:g}/K = {bound:.3f}: "
                     f"{number(at['nearest_weight'], '.3f')} ({verdict(ok)})")
    elif at is not None:
        parts.append("AT-PAML nearest weight: no attention (its memory was still warming up)")
    return f"Targets (all test users): {'; '.join(parts)}." if parts else ""


def markdown_diagnostics(summary: pl.DataFrame, datasets: Sequence[str], plots: Mapping[str, str] | None = None) -> str:
    """One table per dataset (a row per method and group, the paper's names and order), the targets
    line, then `plots[dataset]` (an image's Markdown) when given. `summary` holds one protocol."""
    summary = one_protocol(summary, "the diagnostics table")

    def body(dataset: str, part: pl.DataFrame) -> list[str | None]:
        rows = [{"method": method_name(r["method"]), **diagnostics_cells(r)} for r in part.iter_rows(named=True)]
        table = markdown_table(pl.DataFrame(rows, schema={c: pl.String for c in COLUMNS}, orient="row"))
        return [table, targets_line(part), (plots or {}).get(dataset)]

    return per_dataset_markdown(summary, datasets, "diagnostics", body)
