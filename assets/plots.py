"""The report's figures as PNG bytes (matplotlib, Agg backend), every axis labelled.

Methods carry the paper's names and order (assets/report_tables.py); reference rows stand
apart behind a dashed line.
"""

import base64
import io
import math

import numpy as np
import polars as pl

from assets.report_tables import (
    BASELINES_SECTION, PAML_SECTION, error_name, method_name, method_order, method_section,
)

GROUP_COLOURS = {"major": "tab:blue", "minor": "tab:orange"}


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """Render and close a matplotlib figure.

    A figure with a layout engine (constrained layout) already fits its labels; cropping it to a tight box
    as well draws it once more for nothing (0.3-0.6 s a figure on a 2 GHz core)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches=None if fig.get_layout_engine() is not None else "tight")
    pyplot().close(fig)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG embedded in Markdown as a data URI (the Dagster UI renders it; no file link to break)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def legend_beside(ax, fontsize: float = 8) -> None:
    """The legend right of the axes, never over the data. Where it goes is fixed: matplotlib's default ("best")
    tests every box, flier and point against each candidate place, a third of the error plot's time."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def group_boxplots(ax, part: pl.DataFrame, methods: list[str], column: str) -> list[str]:
    """Per method, a box of `column` over major users and one over minor users side by side, coloured by group;
    the groups drawn (empty when no user has a value: nothing drawn)."""
    drawn = []
    for offset, group in ((-0.2, "major"), (0.2, "minor")):
        values = [part.filter((pl.col("method") == m) & (pl.col("group") == group))[column].drop_nulls().to_numpy()
                  for m in methods]
        positions = [i + offset for i, v in enumerate(values) if len(v)]
        if positions:
            boxes = ax.boxplot([v for v in values if len(v)], positions=positions, widths=0.35, patch_artist=True,
                               flierprops={"markersize": 2})
            for box in boxes["boxes"]:
                box.set_facecolor(GROUP_COLOURS[group])
                box.set_alpha(0.6)
            ax.plot([], [], "s", color=GROUP_COLOURS[group], alpha=0.6, label=f"{group} users")
            drawn.append(group)
    return drawn


def groups_title(groups: list[str]) -> str:
    """What the boxes show: 'major vs minor users', or the one group there is (a dataset may have no minor users)."""
    return " vs ".join(groups) + " users" if len(groups) == 2 else f"{groups[0]} users only" if groups else "no users"


def say_empty(ax, text: str) -> None:
    """Write why an axes holds nothing in its middle (an empty frame with no word read as a broken plot)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, wrap=True)
    ax.set_yticks([])


def error_boxplots(user_metrics: pl.DataFrame, dataset: str) -> bytes:
    """Per-user error (averaged over seeds) of every method, major and minor users side by side
    (the paper's Figs. 5-6 split by group, its point being the gap between them)."""
    plt = pyplot()
    # in user order: group_by's order varies between processes, and so did the PNG's bytes
    part = user_metrics.filter(pl.col("dataset") == dataset).sort("method", "user_id", "seed").group_by(
        "method", "user_id", maintain_order=True).agg(pl.col("error").mean(), pl.col("group").first())
    methods = method_order(part["method"].unique().to_list())
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(methods)), 4))
    drawn = group_boxplots(ax, part, methods, "error")
    first_extra = next((i for i, m in enumerate(methods) if method_section(m) not in (BASELINES_SECTION, PAML_SECTION)), None)
    if first_extra:
        ax.axvline(first_extra - 0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(methods)), [method_name(m) for m in methods], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("method (reference predictors right of the dashed line)" if first_extra else "method")
    ax.set_ylabel(f"per-user {error_name(dataset)} (mean over seeds)")
    ax.set_title(f"{dataset}: per-user test {error_name(dataset)}, {groups_title(drawn)}")
    if drawn:
        legend_beside(ax)
    else:
        ax.set_xlim(-0.5, len(methods) - 0.5)
        say_empty(ax, f"no test user has a per-user {error_name(dataset)} (undefined for every user and method)")
    return figure_png(fig)


def lr_histograms(user_metrics: pl.DataFrame, dataset: str, methods: tuple[str, ...]) -> bytes | None:
    """Distribution of the per-user inner learning rate, minor vs major users, one panel per method."""
    part = user_metrics.filter((pl.col("dataset") == dataset) & pl.col("method").is_in(methods) & pl.col("lr").is_not_null())
    shown = method_order(part["method"].unique().to_list())
    if not shown:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3), squeeze=False, layout="constrained")
    for ax, method in zip(axes[0], shown):
        for group in ("major", "minor"):
            lr = part.filter((pl.col("method") == method) & (pl.col("group") == group))["lr"].to_numpy()
            if len(lr):  # weights: each group's bars sum to 1, so groups of different sizes compare
                # One filled outline per group, not 30 bars: the same shape, half the drawing time.
                ax.hist(lr, bins=30, alpha=0.6, weights=np.full(len(lr), 1 / len(lr)), color=GROUP_COLOURS[group],
                        label=f"{group} users", histtype="stepfilled")
        ax.set_title(f"{method_name(method)} ({dataset})", fontsize=9)
        ax.set_xlabel("inner learning rate")
        ax.set_ylabel("share of the group's test users")
        ax.legend(fontsize=7)
    return figure_png(fig)


def adaptation_plot(user_metrics: pl.DataFrame, summary: pl.DataFrame, dataset: str, cv_target: float) -> bytes | None:
    """Left: each user's adaptation gain (query loss before minus after the inner loop, mean over
    seeds) per method, major vs minor users. Right: the step size's cv across each group's users,
    with the target as a dashed line. None when no user has a gain (evaluations without diagnostics)."""
    if "adaptation_gain" not in user_metrics.columns:
        return None
    part = user_metrics.filter((pl.col("dataset") == dataset) & pl.col("adaptation_gain").is_not_null()).sort(
        "method", "user_id", "seed").group_by("method", "user_id", maintain_order=True).agg(
        pl.col("adaptation_gain").mean(), pl.col("group").first())
    if part.height == 0:
        return None
    plt = pyplot()
    methods = method_order(part["method"].unique().to_list())
    cv = summary.filter(pl.col("dataset") == dataset)
    fig, (gain_ax, cv_ax) = plt.subplots(1, 2, figsize=(max(9.0, 2.2 * len(methods)), 4), layout="constrained")
    group_boxplots(gain_ax, part, methods, "adaptation_gain")
    for offset, group in ((-0.27, "all"), (0.0, "major"), (0.27, "minor")):  # the target is judged on all users
        rates = {r["method"]: r["lr_cv"] for r in cv.filter(pl.col("group") == group).iter_rows(named=True)}
        cv_bars(cv_ax, [rates.get(m) for m in methods], offset, group)
    cv_ax.set_xlim(-0.5, len(methods) - 0.5)  # room for the outer bars and their 'n/a'
    gain_ax.axhline(0.0, color="grey", linewidth=1)
    cv_ax.axhline(cv_target, color="grey", linestyle="--", linewidth=1, label=f"target {cv_target:g}")
    for ax in (gain_ax, cv_ax):
        ax.set_xticks(range(len(methods)), [method_name(m) for m in methods], rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("method")
        legend_beside(ax, 7)
    gain_ax.set_ylabel(f"adaptation gain: query {error_name(dataset)} before - after")
    gain_ax.set_title(f"{dataset}: what the inner loop gains per user (mean over seeds)", fontsize=9)
    cv_ax.set_ylabel("step-size cv across users (sd / mean)")
    cv_ax.set_title(f"{dataset}: how personal the step size is (mean over seeds)", fontsize=9)
    return figure_png(fig)


def cv_bars(ax, values: list[float | None], offset: float, group: str) -> None:
    """One bar per method at position i + offset; a missing value (no such users, no cv: None or NaN) gets no
    bar but an 'n/a' at the axis, so it never reads as a measured 0 (a fixed rate's real cv of 0 stays a bar)."""
    shown = [(i + offset, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    ax.bar([x for x, _ in shown], [v for _, v in shown], width=0.25, color=GROUP_COLOURS.get(group, "tab:grey"),
           alpha=0.6, label=f"{group} users" + ("" if shown else " (n/a: no value)"))
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            ax.text(i + offset, 0.0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)


def embedding_map(embeddings: np.ndarray, groups: np.ndarray, title: str) -> bytes:
    """2-D PCA of user embeddings coloured by major/minor group (paper Fig. 11 uses t-SNE)."""
    plt = pyplot()
    centred = embeddings - embeddings.mean(0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    # One test user (or 1-d embeddings) has one component: the second axis is 0, not an IndexError.
    points = np.zeros((len(centred), 2))
    points[:, :min(2, len(components))] = centred @ components[:2].T
    explained = singular[:2] ** 2 / max(float((singular**2).sum()), 1e-12)
    fig, ax = plt.subplots(figsize=(5, 4))
    for group, colour in GROUP_COLOURS.items():
        keep = groups == group
        ax.scatter(points[keep, 0], points[keep, 1], s=4, alpha=0.5, c=colour, label=f"{group} users")
    ax.set_xlabel(f"principal component 1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"principal component 2 ({explained[1]:.0%} of variance)" if len(explained) > 1 else "principal component 2")
    ax.set_title(title, fontsize=9)
    legend_beside(ax)
    return figure_png(fig)


def validation_curves(histories: pl.DataFrame, dataset: str) -> bytes:
    """Validation loss per epoch (mean over seeds), one line per method."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    part = histories.filter(pl.col("dataset") == dataset)
    for method in method_order(part["method"].unique().to_list()):
        curve = part.filter(pl.col("method") == method).group_by("epoch").agg(pl.col("val_loss").mean()).sort("epoch")
        ax.plot(curve["epoch"], curve["val_loss"], marker=".", label=method_name(method))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {error_name(dataset)} (mean over users, seeds)")
    ax.set_title(f"{dataset}: training curves")
    ax.legend(fontsize=7)
    return figure_png(fig)


def training_curves_png(history: pl.DataFrame, title: str) -> bytes:
    """Train and validation loss per epoch, one line pair per seed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (seed,), part in history.group_by("seed", maintain_order=True):
        ax.plot(part["epoch"], part["train_loss"], "--", label=f"train (seed {seed})")
        ax.plot(part["epoch"], part["val_loss"], "-", label=f"validation (seed {seed})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return figure_png(fig)
