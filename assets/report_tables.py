"""The paper's tables computed from our evaluation frames (pure polars/scipy).

Table 2: every method and reference row, by dataset and metric, mean +- sd over seeds,
best marked, `*` where a PAML method beats the best baseline by a paired t-test. Table 3:
error of major vs minor users and the t-test p-value. Table 4: REG-PAML's gamma ablation.
Paired comparisons: every method against the best baseline and the classic references.
Per-user errors are averaged over seeds before a test (the users are the samples).
"""

import numpy as np
import polars as pl
from scipy import stats

from assets import paper
from assets.evaluation import SIGNIFICANCE_SCHEMA, with_protocol
from models import metrics as M
from models.references import DEFAULT_PROTOCOL

LOWER_IS_BETTER = {"mse": True, "nel": True, "ndcg@3": False, "ndcg@5": False, "auc": False, "global_auc": False}
BASELINES = ("melu", "meta_sgd", "transfer")
PAML_METHODS = ("paml", "at_paml", "reg_paml")
SIGNIFICANCE_LEVEL = 0.05
# The classic references every method is paired against (issue 9 item 7, issue 15).
PAIRED_REFERENCES = ("ref_user_item_bias", "ref_mf", "ref_item_knn")
BOOTSTRAP_SEED = 0


def seed_averaged_errors(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """One row per (dataset, protocol, method, user): error averaged over seeds, with the user's group."""
    return with_protocol(user_metrics).group_by("dataset", "protocol", "method", "user_id").agg(
        pl.col("error").mean(), pl.col("group").first(), pl.col("lr").mean()
    )


def best_baselines(metrics: pl.DataFrame) -> dict[tuple[str, str], str]:
    """Per (dataset, protocol), the baseline (MeLU, Meta-SGD, transfer) with the lowest mean primary error."""
    primary = (
        with_protocol(metrics)
        .filter((pl.col("population") == "all") & pl.col("metric").is_in(["mse", "nel"]) & pl.col("method").is_in(BASELINES))
        .group_by("dataset", "protocol", "method").agg(mean=pl.col("value").mean())
    )
    return {(d, p): part.sort("mean", "method")["method"][0] for (d, p), part in primary.group_by("dataset", "protocol")}


def paired_comparisons(errors: pl.DataFrame, best: dict[tuple[str, str], str], seed: int = BOOTSTRAP_SEED) -> pl.DataFrame:
    """Paired t-test and bootstrap interval of per-user error: every method against the best
    baseline (`vs_best_baseline`) and against each classic reference (`vs_reference`).

    `errors` holds one seed-averaged error per (dataset, protocol, method, user); pairs are
    the same test users under the same protocol. mean_a/mean_b are the two methods' mean
    errors over the paired users; ci_low/ci_high bound mean(a - b).
    """
    rows = []
    for (dataset, protocol), part in errors.group_by("dataset", "protocol", maintain_order=True):
        by_method = {m: frame.select("user_id", "error") for (m,), frame in part.group_by("method", maintain_order=True)}
        baseline = best.get((dataset, protocol))
        others = ([("vs_best_baseline", baseline)] if baseline in by_method else []) + \
            [("vs_reference", r) for r in PAIRED_REFERENCES if r in by_method]
        for method in sorted(by_method):
            for comparison, other in others:
                if other == method:
                    continue
                pairs = by_method[method].join(by_method[other], on="user_id", suffix="_other").drop_nulls()
                a, b = pairs["error"].to_numpy(), pairs["error_other"].to_numpy()
                try:
                    statistic, p_value = M.paired_ttest(a, b)
                    ci_low, ci_high = M.paired_bootstrap_ci(a, b, seed)
                except ValueError:  # fewer than two paired users
                    statistic = p_value = ci_low = ci_high = float("nan")
                rows.append({"comparison": comparison, "dataset": dataset, "protocol": protocol, "method": method,
                             "other": other, "seed": None, "test": "paired_t", "n_users": len(a),
                             "mean_a": float(a.mean()) if len(a) else float("nan"),
                             "mean_b": float(b.mean()) if len(b) else float("nan"),
                             "statistic": statistic, "p_value": p_value, "ci_low": ci_low, "ci_high": ci_high})
    return pl.DataFrame(rows, schema=SIGNIFICANCE_SCHEMA)


def table2(metrics: pl.DataFrame, significance: pl.DataFrame) -> pl.DataFrame:
    """dataset, protocol, method, metric, mean, sd, n_seeds, best, significant (all users).

    `best` and `significant` (a PAML method below the best baseline by the paired t-test,
    p < 0.05) are judged within each protocol; the paper's values sit on paper-protocol rows.
    """
    table = (
        with_protocol(metrics).filter(pl.col("population") == "all")
        .group_by("dataset", "protocol", "method", "metric")
        .agg(mean=pl.col("value").mean(), sd=pl.col("value").std().fill_null(0.0), n_seeds=pl.len())
    )
    lower = pl.col("metric").replace_strict(LOWER_IS_BETTER, return_dtype=pl.Boolean)
    within = ("dataset", "protocol", "metric")
    table = table.with_columns(
        best=pl.when(lower).then(pl.col("mean") == pl.col("mean").min().over(within))
        .otherwise(pl.col("mean") == pl.col("mean").max().over(within))
    )
    better = with_protocol(significance).filter(
        (pl.col("comparison") == "vs_best_baseline") & (pl.col("p_value") < SIGNIFICANCE_LEVEL) & (pl.col("mean_a") < pl.col("mean_b"))
    ).select("dataset", "protocol", "method", significant=pl.lit(True))
    table = table.join(better, on=["dataset", "protocol", "method"], how="left").with_columns(
        pl.col("significant").fill_null(False) & pl.col("method").is_in(PAML_METHODS)
    )
    paper_rows = [{"dataset": d, "protocol": DEFAULT_PROTOCOL, "method": m, "metric": k, "paper_mean": v[0], "paper_sd": v[1]}
                  for (d, m), values in paper.TABLE2.items() for k, v in values.items()]
    table = table.join(pl.DataFrame(paper_rows), on=["dataset", "protocol", "method", "metric"], how="left")
    return table.sort("dataset", "protocol", "metric", "method")


def group_table(user_metrics: pl.DataFrame, label: str = "method") -> pl.DataFrame:
    """Table 3 shape: per dataset, protocol and `label`, error of major and minor users (mean +- sd
    over seeds) and the (unpaired: different users) Student t-test p-value, minor vs major."""
    user_metrics = with_protocol(user_metrics)
    keys = ["dataset", "protocol", label]
    per_seed = user_metrics.group_by(*keys, "seed", "group").agg(pl.col("error").mean())
    spread = per_seed.group_by(*keys, "group").agg(mean=pl.col("error").mean(), sd=pl.col("error").std().fill_null(0.0))
    wide = spread.pivot(on="group", index=keys, values=["mean", "sd"])
    rows = []
    errors = user_metrics.group_by(*keys, "user_id").agg(pl.col("error").mean(), pl.col("group").first())
    for (dataset, protocol, key), part in errors.group_by(*keys, maintain_order=True):
        major = part.filter(pl.col("group") == "major")["error"].drop_nulls().to_numpy()
        minor = part.filter(pl.col("group") == "minor")["error"].drop_nulls().to_numpy()
        p_value = float(stats.ttest_ind(minor, major).pvalue) if len(major) > 1 and len(minor) > 1 else float("nan")
        rows.append({"dataset": dataset, "protocol": protocol, label: key, "p_value": p_value})
    return wide.join(pl.DataFrame(rows), on=keys, how="left").sort(*keys)


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


def paired_cell(row: dict) -> str:
    """'-0.031 [-0.040, -0.022] p=0.000': mean difference, bootstrap interval, paired t-test p-value."""
    if row["n_users"] == 0 or row["mean_a"] is None or row["mean_b"] is None:
        return ""
    diff = row["mean_a"] - row["mean_b"]
    text = f"{diff:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] p={row['p_value']:.3g}"
    return f"**{text}**" if row["p_value"] < SIGNIFICANCE_LEVEL else text


def markdown_paired(significance: pl.DataFrame) -> str:
    """The paired comparisons as Markdown: one block per dataset, a row per method, a column per opponent."""
    paired = significance.filter(pl.col("test") == "paired_t")
    blocks = []
    for (dataset,), part in paired.sort("dataset").group_by("dataset", maintain_order=True):
        baseline = part.filter(pl.col("comparison") == "vs_best_baseline")["other"].unique().to_list()
        columns = [("vs_best_baseline", b, f"best baseline ({b})") for b in baseline]
        columns += [("vs_reference", r, r) for r in PAIRED_REFERENCES if r in part["other"].to_list()]
        lines = [f"#### {dataset}", "", "| method | " + " | ".join(c[2] for c in columns) + " |", "|---|" + "---|" * len(columns)]
        for method in sorted(part["method"].unique().to_list()):
            cells = []
            for comparison, other, _ in columns:
                match = part.filter((pl.col("method") == method) & (pl.col("comparison") == comparison) & (pl.col("other") == other))
                cells.append(paired_cell(match.row(0, named=True)) if match.height else "")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "(no paired comparisons: no two methods share test users)"
