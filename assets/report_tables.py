"""The paper's tables computed from our evaluation frames (pure polars/scipy).

Table 2: every method and reference row, by dataset and metric, mean +- sd over seeds,
best marked, `*` where a PAML method beats the best baseline significantly. Table 3: error
of major vs minor users and the t-test p-value. Table 4: REG-PAML's gamma ablation.
Per-user errors are averaged over seeds before a t-test (the users are the samples).
"""

import numpy as np
import polars as pl
from scipy import stats

from assets import paper

LOWER_IS_BETTER = {"mse": True, "nel": True, "ndcg@3": False, "ndcg@5": False, "auc": False, "global_auc": False}
BASELINES = ("melu", "meta_sgd", "transfer")
PAML_METHODS = ("paml", "at_paml", "reg_paml")
SIGNIFICANCE_LEVEL = 0.05


def seed_averaged_errors(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """One row per (dataset, method, user): error averaged over seeds, with the user's group."""
    return user_metrics.group_by("dataset", "method", "user_id").agg(
        pl.col("error").mean(), pl.col("group").first(), pl.col("lr").mean()
    )


def best_baselines(metrics: pl.DataFrame) -> dict[str, str]:
    """Per dataset, the baseline (MeLU, Meta-SGD, transfer) with the lowest mean primary error."""
    primary = (
        metrics.filter((pl.col("population") == "all") & pl.col("metric").is_in(["mse", "nel"])
                       & pl.col("method").is_in(BASELINES))
        .group_by("dataset", "method").agg(mean=pl.col("value").mean())
    )
    return {d: part.sort("mean", "method")["method"][0] for (d,), part in primary.group_by("dataset")}


def vs_best_baseline(errors: pl.DataFrame, best: dict[str, str]) -> pl.DataFrame:
    """Two-tailed t-test of per-user error: each method against its dataset's best baseline."""
    rows = []
    for (dataset, method), part in errors.group_by("dataset", "method", maintain_order=True):
        baseline = best.get(dataset)
        if baseline is None or method == baseline:
            continue
        other = errors.filter((pl.col("dataset") == dataset) & (pl.col("method") == baseline))["error"].drop_nulls()
        mine = part["error"].drop_nulls()
        statistic, p_value = stats.ttest_ind(mine.to_numpy(), other.to_numpy()) if len(mine) > 1 and len(other) > 1 else (np.nan, np.nan)
        rows.append({"comparison": "vs_best_baseline", "dataset": dataset, "method": method, "other": baseline,
                     "seed": None, "mean_a": float(mine.mean()), "mean_b": float(other.mean()),
                     "statistic": float(statistic), "p_value": float(p_value)})
    return pl.DataFrame(rows, schema={"comparison": pl.String, "dataset": pl.String, "method": pl.String, "other": pl.String,
                                      "seed": pl.Int64, "mean_a": pl.Float64, "mean_b": pl.Float64,
                                      "statistic": pl.Float64, "p_value": pl.Float64})


def table2(metrics: pl.DataFrame, significance: pl.DataFrame) -> pl.DataFrame:
    """dataset, method, metric, mean, sd, n_seeds, best, significant (all users)."""
    table = (
        metrics.filter(pl.col("population") == "all")
        .group_by("dataset", "method", "metric")
        .agg(mean=pl.col("value").mean(), sd=pl.col("value").std().fill_null(0.0), n_seeds=pl.len())
    )
    lower = pl.col("metric").replace_strict(LOWER_IS_BETTER, return_dtype=pl.Boolean)
    table = table.with_columns(
        best=pl.when(lower).then(pl.col("mean") == pl.col("mean").min().over("dataset", "metric"))
        .otherwise(pl.col("mean") == pl.col("mean").max().over("dataset", "metric"))
    )
    better = significance.filter(
        (pl.col("comparison") == "vs_best_baseline") & (pl.col("p_value") < SIGNIFICANCE_LEVEL) & (pl.col("mean_a") < pl.col("mean_b"))
    ).select("dataset", "method", significant=pl.lit(True))
    table = table.join(better, on=["dataset", "method"], how="left").with_columns(
        pl.col("significant").fill_null(False) & pl.col("method").is_in(PAML_METHODS)
    )
    paper_rows = [{"dataset": d, "method": m, "metric": k, "paper_mean": v[0], "paper_sd": v[1]}
                  for (d, m), values in paper.TABLE2.items() for k, v in values.items()]
    table = table.join(pl.DataFrame(paper_rows), on=["dataset", "method", "metric"], how="left")
    return table.sort("dataset", "metric", "method")


def group_table(user_metrics: pl.DataFrame, label: str = "method") -> pl.DataFrame:
    """Table 3 shape: per dataset and `label`, error of major and minor users (mean +- sd over seeds), p-value."""
    per_seed = user_metrics.group_by("dataset", label, "seed", "group").agg(pl.col("error").mean())
    spread = per_seed.group_by("dataset", label, "group").agg(mean=pl.col("error").mean(), sd=pl.col("error").std().fill_null(0.0))
    wide = spread.pivot(on="group", index=["dataset", label], values=["mean", "sd"])
    rows = []
    errors = user_metrics.group_by("dataset", label, "user_id").agg(pl.col("error").mean(), pl.col("group").first())
    for (dataset, key), part in errors.group_by("dataset", label, maintain_order=True):
        major = part.filter(pl.col("group") == "major")["error"].drop_nulls().to_numpy()
        minor = part.filter(pl.col("group") == "minor")["error"].drop_nulls().to_numpy()
        p_value = float(stats.ttest_ind(minor, major).pvalue) if len(major) > 1 and len(minor) > 1 else float("nan")
        rows.append({"dataset": dataset, label: key, "p_value": p_value})
    return wide.join(pl.DataFrame(rows), on=["dataset", label], how="left").sort("dataset", label)


def format_cell(mean: float, sd: float | None, best: bool = False, significant: bool = False) -> str:
    """'1.234 +- 0.010', bold when best, '*' when significantly better than the best baseline."""
    text = f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "") + ("*" if significant else "")
    return f"**{text}**" if best else text


def markdown_table2(table: pl.DataFrame) -> str:
    """Table 2 as Markdown: one block per dataset, metrics as columns, paper values in brackets."""
    blocks = []
    for (dataset,), part in table.group_by("dataset", maintain_order=True):
        metrics = sorted(part["metric"].unique().to_list(), key=list(LOWER_IS_BETTER).index)
        lines = [f"#### {dataset}", "", "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for (method,), rows in part.sort("method").group_by("method", maintain_order=True):
            cells = []
            for metric in metrics:
                row = rows.filter(pl.col("metric") == metric)
                if row.height == 0:
                    cells.append("")
                    continue
                r = row.row(0, named=True)
                cell = format_cell(r["mean"], r["sd"], r["best"], r["significant"])
                if r.get("paper_mean") is not None:
                    cell += f" (paper {r['paper_mean']:.3f})"
                cells.append(cell)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def markdown_group_table(table: pl.DataFrame, label: str, paper_rows: dict | None = None) -> str:
    """Table 3/4 as Markdown: major error, minor error, p-value (paper's ML-1M values beside)."""
    lines = [f"| dataset | {label} | error (major) | error (minor) | p-value | paper (major / minor / p) |", "|---|---|---|---|---|---|"]
    for r in table.iter_rows(named=True):
        paper_text = ""
        if paper_rows and r["dataset"] == "movielens" and r[label] in paper_rows:
            a, b, p = paper_rows[r[label]]
            paper_text = f"{a:.3f} / {b:.3f} / {p:.3f}"
        major = format_cell(r["mean_major"], r["sd_major"]) if r.get("mean_major") is not None else ""
        minor = format_cell(r["mean_minor"], r["sd_minor"]) if r.get("mean_minor") is not None else ""
        lines.append(f"| {r['dataset']} | {r[label]} | {major} | {minor} | {r['p_value']:.3f} | {paper_text} |")
    return "\n".join(lines)
