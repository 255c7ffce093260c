"""Asset `report`: the paper's Tables 1-4, plots, Markdown and PNG files, DuckDB tables.

Writes `PAML_HOME/reports/report.md` and its PNGs (atomically replacing the previous
report), puts the same content in Dagster metadata, and stores the tables so that the
DuckDB views `table2`, `table3`, `table4` return the same numbers.
"""

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import polars as pl

from assets import paper
from assets.bundle import Bundle
from assets.evaluation import with_protocol
from assets.plots import figure_png
from assets.report_tables import (
    best_baselines, group_table, markdown_group_table, markdown_paired, markdown_table2, paired_comparisons,
    seed_averaged_errors, table2,
)
from models.references import DEFAULT_PROTOCOL, REFERENCES

PER_USER_LR_METHODS = ("paml", "at_paml", "reg_paml")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def error_boxplots(user_metrics: pl.DataFrame, dataset: str) -> bytes:
    """Per-user error of every method on one dataset (paper Figs. 5-6)."""
    plt = _pyplot()
    part = user_metrics.filter(pl.col("dataset") == dataset)
    methods = sorted(part["method"].unique().to_list())
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.boxplot([part.filter(pl.col("method") == m)["error"].drop_nulls().to_numpy() for m in methods], showfliers=True)
    ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("per-user error (MSE or log-loss)")
    ax.set_title(f"{dataset}: per-user test error")
    return figure_png(fig)


def lr_histograms(user_metrics: pl.DataFrame, dataset: str) -> bytes | None:
    """Distribution of the per-user inner learning rate, minor vs major users."""
    part = user_metrics.filter((pl.col("dataset") == dataset) & pl.col("method").is_in(PER_USER_LR_METHODS))
    methods = sorted(part["method"].unique().to_list())
    if not methods:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for group in ("major", "minor"):
            lr = part.filter((pl.col("method") == method) & (pl.col("group") == group))["lr"].drop_nulls().to_numpy()
            if len(lr):
                ax.hist(lr, bins=30, alpha=0.6, density=True, label=group)
        ax.set_title(f"{method} ({dataset})", fontsize=9)
        ax.set_xlabel("inner learning rate")
        ax.legend(fontsize=7)
    return figure_png(fig)


def embedding_map(embeddings: np.ndarray, groups: np.ndarray, title: str) -> bytes:
    """2-D PCA of user embeddings coloured by major/minor group (paper Fig. 11 uses t-SNE)."""
    plt = _pyplot()
    centred = embeddings - embeddings.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T
    fig, ax = plt.subplots(figsize=(5, 4))
    for group, colour in (("major", "tab:blue"), ("minor", "tab:orange")):
        keep = groups == group
        ax.scatter(points[keep, 0], points[keep, 1], s=4, alpha=0.5, c=colour, label=group)
    ax.set_title(title, fontsize=9)
    ax.legend()
    return figure_png(fig)


def validation_curves(histories: pl.DataFrame, dataset: str) -> bytes:
    """Validation loss per epoch (mean over seeds), one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    part = histories.filter(pl.col("dataset") == dataset)
    for (method,), rows in part.group_by("method", maintain_order=True):
        curve = rows.group_by("epoch").agg(pl.col("val_loss").mean()).sort("epoch")
        ax.plot(curve["epoch"], curve["val_loss"], label=method)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.set_title(f"{dataset}: training curves")
    ax.legend(fontsize=7)
    return figure_png(fig)


def test_embeddings(model: Bundle, tasks: Bundle, groups: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """Seed-0 user embeddings h of the test users and their groups."""
    import torch

    from assets.method_assets import load_learner
    from models.tasks import task_data_from_tensors

    data = task_data_from_tensors(tasks.tensors, tasks.info)
    learner = load_learner(model, data, model.info["seeds"][0])
    with torch.no_grad():
        h = learner.net.embedder.user_of(data.splits["test"]).numpy()
    users = tasks.frame("users__test").join(groups.frame("groups"), on="user_id", how="left").sort("user_row")
    return h, users["group"].fill_null("").to_numpy()


def table1(groups: dict[str, Bundle]) -> pl.DataFrame:
    """Feature concentration and group shares per dataset, with the paper's ML-1M values."""
    rows = []
    for dataset, bundle in sorted(groups.items()):
        for r in bundle.frame("table1").iter_rows(named=True):
            paper_value = paper.TABLE1_ML.get(r["feature"]) if dataset == "movielens" else None
            rows.append({"dataset": dataset, "item": f"share holding a top value: {r['feature']}", "ours": r["share_top"], "paper": paper_value})
        shares = bundle.frame("shares").filter((pl.col("population") == "all cleaned users") & (pl.col("group") == "major"))
        if shares.height:
            rows.append({"dataset": dataset, "item": "major share", "ours": shares["share"][0], "paper": paper.MAJOR_SHARE.get(dataset)})
    return pl.DataFrame(rows, schema={"dataset": pl.String, "item": pl.String, "ours": pl.Float64, "paper": pl.Float64})


def gamma_label(gamma: float) -> str:
    """'reg_paml (gamma=1e-05)': the row label of one ablation setting."""
    return f"reg_paml (gamma={gamma:g})"


def ablation_table(ablations: dict[str, Bundle], user_metrics: pl.DataFrame) -> pl.DataFrame:
    """Table 4: REG-PAML per gamma, plus PAML, AT-PAML and the reference rows from their own evaluations."""
    frames = [b.frame("user_metrics").with_columns(
                  pl.col("gamma").replace_strict({g: gamma_label(g) for g in b.info["gammas"]}, return_dtype=pl.String).alias("variant"))
              for b in ablations.values() if b.frame("user_metrics").height]
    # The reference rows come along so that every table shows what a plain predictor gets.
    others = ["paml", "at_paml", *(f"ref_{name}" for name in REFERENCES)]
    frames.append(user_metrics.filter(pl.col("method").is_in(others)).with_columns(pl.col("method").alias("variant")))
    combined = pl.concat([f.select("dataset", "variant", "seed", "user_id", "group", "error") for f in frames], how="vertical_relaxed")
    # Rows in the paper's order: gammas ascending (numerically), then PAML and AT-PAML; references last.
    gammas = sorted({g for b in ablations.values() for g in b.info["gammas"]})
    order = {label: i for i, label in enumerate([gamma_label(g) for g in gammas] + others)}
    table = group_table(combined, label="variant")
    return table.sort(pl.col("dataset"), pl.col("variant").replace_strict(order, default=len(order), return_dtype=pl.Int64))


def build_report(evals: list[Bundle], ablations: dict[str, Bundle], groups: dict[str, Bundle],
                 tasks: dict[str, Bundle], models: dict[str, dict[str, Bundle]]) -> tuple[Bundle, dict[str, bytes], str]:
    """All tables and plots; returns (bundle of tables, PNG files by name, Markdown text)."""
    all_user_metrics = with_protocol(pl.concat([e.frame("user_metrics") for e in evals if e.frame("user_metrics").height],
                                               how="diagonal_relaxed"))
    metrics = with_protocol(pl.concat([e.frame("metrics") for e in evals if e.frame("metrics").height], how="diagonal_relaxed"))
    significance = paired_comparisons(seed_averaged_errors(all_user_metrics), best_baselines(metrics))
    t1, t2, t3 = table1(groups), table2(metrics, significance), group_table(all_user_metrics)
    # The paper's tables and the plots show the paper's protocol; other protocols get their own block.
    user_metrics = all_user_metrics.filter(pl.col("protocol") == DEFAULT_PROTOCOL)
    t4 = ablation_table(ablations, user_metrics)
    histories = pl.concat([b.frame("history").with_columns(pl.lit(d).alias("dataset"))
                           for per_dataset in models.values() for d, b in per_dataset.items()], how="diagonal_relaxed") \
        if any(models.values()) else pl.DataFrame()
    pngs: dict[str, bytes] = {}
    for dataset in sorted(user_metrics["dataset"].unique().to_list()):
        pngs[f"errors_{dataset}.png"] = error_boxplots(user_metrics, dataset)
        lr_png = lr_histograms(user_metrics, dataset)
        if lr_png:
            pngs[f"learning_rates_{dataset}.png"] = lr_png
        if histories.height and dataset in histories["dataset"].to_list():
            pngs[f"training_curves_{dataset}.png"] = validation_curves(histories, dataset)
        reg = models.get("reg_paml", {}).get(dataset)
        if reg is not None and dataset in tasks and dataset in groups:
            h, group = test_embeddings(reg, tasks[dataset], groups[dataset])
            pngs[f"embeddings_{dataset}.png"] = embedding_map(h, group, f"{dataset}: REG-PAML user embeddings (test users, PCA)")
    text = render_markdown(t1, t2, t3, t4, pngs, significance)
    frames = {"table1": t1, "table2": t2, "table3": t3, "table4": t4, "significance": significance}
    return Bundle(frames=frames, info={"plots": sorted(pngs)}), pngs, text


def render_markdown(t1: pl.DataFrame, t2: pl.DataFrame, t3: pl.DataFrame, t4: pl.DataFrame, pngs: dict[str, bytes],
                    significance: pl.DataFrame) -> str:
    """The report as Markdown, plots referenced as files next to it."""
    t1_lines = ["| dataset | statistic | ours | paper |", "|---|---|---|---|"] + [
        f"| {r['dataset']} | {r['item']} | {r['ours']:.3f} | {'' if r['paper'] is None else format(r['paper'], '.3f')} |"
        for r in t1.iter_rows(named=True)
    ]
    sections = [
        "# PAML reproduction report", "",
        "Mean ± sd over seeds; **bold** = best in its column; `*` = a PAML method better than the best "
        "baseline (MeLU, Meta-SGD, transfer) by a two-tailed paired t-test of per-user error (same test users), "
        "p < 0.05. Rows `ref_*` are reference predictors on the same query sets, tuned on validation users.", "",
        "## Table 1: feature concentration and group shares", "", "\n".join(t1_lines), "",
        "## Table 2: methods by dataset and metric", "", markdown_table2(paper_rows(t2)), "",
        "## Table 3: major vs minor users (per-user error; t-test minor vs major)", "",
        markdown_group_table(paper_rows(t3), "method", paper.TABLE3_ML), "",
        "## Paired comparisons (per-user error, same test users)", "",
        "Mean error difference (row minus column; negative = the row is better), 95% paired bootstrap interval "
        "(2,000 resamples of test users) and the paired t-test p-value; per-user errors averaged over seeds first.", "",
        markdown_paired(paper_rows(significance)), "",
        "## Table 4: REG-PAML gamma ablation, PAML, AT-PAML and the reference rows", "",
        markdown_group_table(t4, "variant", {gamma_label(k): v for k, v in paper.TABLE4_ML.items() if isinstance(k, float)}
                             | {k: v for k, v in paper.TABLE4_ML.items() if isinstance(k, str)}), "",
        "## Plots", "",
    ]
    sections += [f"![{name}]({name})" for name in sorted(pngs)]
    sections += production_block(t2, t3, significance)
    return "\n".join(sections) + "\n"


def paper_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of the paper's protocol (the paper's tables show nothing else)."""
    return frame.filter(pl.col("protocol") == DEFAULT_PROTOCOL) if "protocol" in frame.columns else frame


def production_block(t2: pl.DataFrame, t3: pl.DataFrame, significance: pl.DataFrame) -> list[str]:
    """A short section for the rows fitted with the warm users too (only when there are any)."""
    other = t2.filter(pl.col("protocol") != DEFAULT_PROTOCOL)
    if other.height == 0:
        return []
    return [
        "", "## Production protocol (warm users' ratings available for fitting)", "",
        "The same test users and query sets; the fitting data adds the warm users the paper's protocol drops.", "",
        "**As Table 2:**", "", markdown_table2(other), "",
        "**As Table 3:**", "", markdown_group_table(t3.filter(pl.col("protocol") != DEFAULT_PROTOCOL), "method"), "",
        "**Paired comparisons:**", "", markdown_paired(significance.filter(pl.col("protocol") != DEFAULT_PROTOCOL)),
    ]


def write_report(directory: Path, text: str, pngs: dict[str, bytes]) -> Path:
    """Replace `directory` with the new report (staged, then renamed)."""
    staging = directory.with_name(f".{directory.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    (staging / "report.md").write_text(text)
    for name, png in pngs.items():
        (staging / name).write_bytes(png)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)
    return directory / "report.md"


# -- Dagster asset -------------------------------------------------------------------------
import dagster as dg  # noqa: E402

from models.learners import METHODS  # noqa: E402
from pipelines.outputs import bundle_output  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402

EVAL_INPUTS = {f"{m}_eval": dg.AssetIn(f"{m}_eval") for m in METHODS} | {"reference_eval": dg.AssetIn("reference_eval")}
MODEL_INPUTS = {f"{m}_model": dg.AssetIn(f"{m}_model") for m in METHODS}


@dg.asset(
    group_name="report", kinds={"markdown", "duckdb"}, code_version="1",
    ins={**EVAL_INPUTS, **MODEL_INPUTS, "ablation": dg.AssetIn("reg_paml_gamma_ablation"),
         "groups": dg.AssetIn("user_groups"), "tasks": dg.AssetIn("meta_tasks")},
    description="The paper's Tables 1-4 with reference rows, t-tests and plots: Markdown + PNG under PAML_HOME/reports.",
)
def report(paml: PamlResource, ablation: dict, groups: dict, tasks: dict, **inputs) -> dg.Output[Bundle]:
    evals = [inputs[name] for name in EVAL_INPUTS]
    models = {name.removesuffix("_model"): inputs[name] for name in MODEL_INPUTS}
    bundle, pngs, text = build_report(evals, ablation, groups, tasks, models)
    path = write_report(paml.home_path / "reports", text, pngs)
    from assets.plots import markdown_image

    inline = text + "\n".join(markdown_image(png, name) for name, png in sorted(pngs.items()))
    return bundle_output(bundle, report_path=dg.MetadataValue.path(str(path)), report=dg.MetadataValue.md(inline))
