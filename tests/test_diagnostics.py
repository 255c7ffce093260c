"""Personalization diagnostics: per-user columns from predictions, the summary by hand, the report's section."""

import math

import numpy as np
import polars as pl
import pytest

from assets.diagnostics import by_group, diagnostics_summary, markdown_diagnostics, targets_line
from assets.evaluation import user_diagnostics, user_metrics_frame
from models.training import Predictions

LN4 = math.log(4)
# Per user (seed 0): paml's step size, query loss before and after adapting, unseen profile fields.
USERS = {"u1": ("major", 0.1, 1.0, 0.8, 0), "u2": ("major", 0.3, 1.0, 1.1, 0),
         "u3": ("minor", 0.2, 2.0, 1.5, 1), "u4": ("minor", 0.4, 2.0, 2.0, 2)}


def tiny_user_metrics() -> pl.DataFrame:
    """paml (its rates doubled in seed 1), at_paml (K = 4, one fixed rate), melu, a reference row."""
    rows = []
    for seed in (0, 1):
        for i, (user, (group, lr, before, after, unknown)) in enumerate(USERS.items()):
            base = {"dataset": "movielens", "protocol": "paper", "seed": seed, "user_id": user, "group": group,
                    "error": after, "loss_unadapted": before, "loss_adapted": after, "adaptation_gain": before - after,
                    "unknown_fields": unknown, "nearest_weight": None, "attention_entropy": None, "memory_k": None}
            rows.append({**base, "method": "paml", "lr": lr * (1 + seed)})
            rows.append({**base, "method": "melu", "lr": 0.05, "error": after * 1.1})
            rows.append({**base, "method": "at_paml", "lr": 0.1, "memory_k": 4, "error": after * 0.9 + 0.01 * i,
                         "nearest_weight": (0.5, 0.25, 0.75, 0.5)[i] if seed == 0 else 0.25,
                         "attention_entropy": 1.0 if seed == 0 else LN4})
            rows.append({"dataset": "movielens", "protocol": "paper", "seed": 0, "user_id": user, "group": group,
                         "error": 0.9 + 0.1 * i, "method": "ref_mf", "lr": None})
    return pl.DataFrame(rows)


def row(summary: pl.DataFrame, method: str, group: str) -> dict:
    return summary.filter((pl.col("method") == method) & (pl.col("group") == group)).row(0, named=True)


def test_summary_by_hand_per_seed_then_averaged():
    summary = diagnostics_summary(tiny_user_metrics())
    # Report order; the reference row has no step size and no diagnostics.
    assert list(zip(summary["method"], summary["group"])) == [
        (m, g) for m in ("melu", "paml", "at_paml") for g in ("all", "major", "minor")]
    paml = row(summary, "paml", "all")
    # seed 0: 0.1, 0.2, 0.3, 0.4 -> mean 0.25, sample sd sqrt(0.05 / 3), cv 0.516398;
    # q10 = 0.1 + 0.3 * 0.1 (position 0.3), q50 0.25, q90 = 0.3 + 0.7 * 0.1. Seed 1: all doubled.
    sd0 = math.sqrt(0.05 / 3)
    assert paml["n_seeds"] == 2 and paml["n_users"] == 4
    assert paml["lr_mean"] == pytest.approx((0.25 + 0.5) / 2)
    assert paml["lr_sd"] == pytest.approx((sd0 + 2 * sd0) / 2)
    assert paml["lr_cv"] == pytest.approx(sd0 / 0.25)  # the same cv in both seeds
    assert (paml["lr_q10"], paml["lr_q50"], paml["lr_q90"]) == pytest.approx(((0.13 + 0.26) / 2, 0.375, (0.37 + 0.74) / 2))
    # major: 0.1, 0.3 (seed 0) -> sd sqrt(0.02), cv 0.707107; q10 0.1 + 0.1 * 0.2 = 0.12 and 0.24 in seed 1
    major = row(summary, "paml", "major")
    assert (major["lr_mean"], major["lr_cv"], major["lr_q10"]) == pytest.approx((0.3, math.sqrt(0.02) / 0.2, 0.18))
    # gains 0.2, -0.1, 0.5, 0.0: mean 0.15; helped = u1 and u3 (a gain of 0 did not help)
    assert (paml["loss_unadapted"], paml["loss_adapted"], paml["gain_mean"], paml["gain_positive_share"]) == pytest.approx(
        (1.5, 1.35, 0.15, 0.5))
    minor = row(summary, "paml", "minor")
    assert (major["gain_mean"], minor["gain_mean"], minor["gain_positive_share"]) == pytest.approx((0.05, 0.25, 0.5))
    # unseen profile values: u3 and u4, both minor
    assert (paml["unknown_share"], major["unknown_share"], minor["unknown_share"]) == (0.5, 0.0, 1.0)
    # a fixed rate has no spread; methods without attention have no memory numbers
    melu = row(summary, "melu", "all")
    assert (melu["lr_mean"], melu["lr_sd"], melu["lr_cv"]) == pytest.approx((0.05, 0.0, 0.0))
    assert melu["memory_k"] is None and melu["nearest_weight"] is None and melu["nearest_ratio"] is None
    at = row(summary, "at_paml", "all")
    # nearest weight: seed 0 mean 0.5, seed 1 0.25 -> 0.375 = 1.5 x uniform 1/4; entropy (1 + ln 4) / 2, over ln 4
    assert at["memory_k"] == 4 and at["lr_cv"] == pytest.approx(0.0)
    assert (at["nearest_weight"], at["nearest_ratio"]) == pytest.approx((0.375, 1.5))
    assert (at["attention_entropy"], at["entropy_ratio"]) == pytest.approx(((1 + LN4) / 2, (1 + LN4) / 2 / LN4))
    assert row(summary, "at_paml", "minor")["nearest_weight"] == pytest.approx((0.75 + 0.5 + 0.25 + 0.25) / 4)


def test_summary_of_old_or_empty_evaluations():
    # evaluations written before the diagnostics: step sizes only, the rest null
    old = tiny_user_metrics().select("dataset", "method", "seed", "user_id", "group", "error", "lr")
    summary = diagnostics_summary(old)
    assert summary.height == 9 and set(summary["protocol"]) == {"paper"}
    assert summary["gain_mean"].null_count() == 9 and row(summary, "paml", "all")["lr_cv"] == pytest.approx(0.516398, abs=1e-6)
    assert diagnostics_summary(pl.DataFrame()).height == 0
    assert set(diagnostics_summary(pl.DataFrame()).columns) >= {"lr_cv", "gain_mean", "nearest_ratio", "unknown_share"}
    # a user outside both groups counts among all users only
    grouped = by_group(pl.DataFrame({"user_id": ["a", "b"], "group": ["major", None]}))
    assert sorted(zip(grouped["user_id"], grouped["group"])) == [("a", "all"), ("a", "major"), ("b", "all")]


def test_user_diagnostics_become_user_metrics_columns():
    preds = Predictions(
        pred=np.array([[4.0, 0.0], [2.0, 3.0]]), target=np.array([[5.0, 0.0], [2.0, 1.0]]),
        mask=np.array([[True, False], [True, True]]), lr_per_user=np.array([0.1, 0.2], np.float32),
        query_loss=np.array([1.0, 2.0], np.float32), query_loss_unadapted=np.array([1.5, 1.75], np.float32),
        nearest_weight=np.array([0.6, np.nan], np.float32), attention_entropy=np.array([0.5, np.nan], np.float32),
        unknown_fields=np.array([0.0, 2.0], np.float32))
    columns = user_diagnostics(preds, memory_k=8)
    assert columns["adaptation_gain"].tolist() == [0.5, -0.25]
    users = pl.DataFrame({"user_id": ["a", "b"], "user_row": [0, 1]})
    groups = pl.DataFrame({"user_id": ["a", "b"], "group": ["major", "minor"], "true_group": [None, None]})
    frame = user_metrics_frame(users, groups, preds.pred, preds.target, preds.mask, preds.lr_per_user, "rating",
                               diagnostics=columns).sort("user_id")
    assert frame["mse"].to_list() == [1.0, 2.0] == frame["loss_adapted"].to_list()  # the query loss is the MSE here
    assert frame["loss_unadapted"].to_list() == [1.5, 1.75] and frame["adaptation_gain"].to_list() == [0.5, -0.25]
    # no attention (warm-up, or another method): null weight, entropy and K
    assert frame["nearest_weight"].to_list() == [pytest.approx(0.6), None] and frame["memory_k"].to_list() == [8, None]
    assert frame["attention_entropy"].to_list() == [0.5, None]
    assert frame["unknown_fields"].dtype == pl.Int64 and frame["unknown_fields"].to_list() == [0, 2]
    with pytest.raises(ValueError, match="diagnostics=True"):
        user_diagnostics(Predictions(preds.pred, preds.target, preds.mask, preds.lr_per_user, preds.query_loss), 8)


def test_markdown_section_names_methods_groups_and_targets():
    summary = diagnostics_summary(tiny_user_metrics())
    text = markdown_diagnostics(summary, ["movielens", "taobao"], {"movielens": "![plot](adaptation_movielens.png)"})
    lines = text.splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ") and "method" not in line]
    assert [(r[0], r[1]) for r in rows] == [(m, g) for m in ("MeLU", "PAML", "AT-PAML") for g in ("all", "major", "minor")]
    paml_all = rows[3]
    assert paml_all[2:9] == ["4", "0.375", "0.52", "0.195 / 0.375 / 0.555", "1.500 → 1.350", "50%", ""]
    assert rows[6][8:11] == ["0.375 (1.5×, K = 4)", f"{(1 + LN4) / 2:.2f} ({(1 + LN4) / 2 / LN4:.2f})", "50%"]
    # PAML's cv 0.52 meets 0.25; AT-PAML's fixed rate does not; its nearest weight 0.375 < 2/4
    assert targets_line(summary) == ("Targets (all test users): step-size cv ≥ 0.25: PAML 0.52 (met), AT-PAML 0.00 (**not met**); "
                                     "AT-PAML nearest weight ≥ 2/K = 0.500: 0.375 (**not met**).")
    assert text.index(targets_line(summary)) < text.index("![plot](adaptation_movielens.png)")
    assert "No diagnostics for Taobao-like clicks (`taobao`) yet" in text
    with pytest.raises(ValueError, match="protocols"):
        markdown_diagnostics(pl.concat([summary, summary.with_columns(protocol=pl.lit("production"))]), ["movielens"])


def test_report_shows_the_section_after_table_3_with_its_plot_once():
    from assets.plots import markdown_image
    from assets.report import build_report, render_markdown

    frame = tiny_user_metrics()
    production = frame.filter(pl.col("method") == "paml").with_columns(pl.lit("production").alias("protocol"), pl.col("lr") * 3)
    frames = pl.concat([frame, production], how="diagonal_relaxed")
    metrics = frames.group_by("dataset", "protocol", "method", "seed").agg(pl.col("error").mean().alias("value")).with_columns(
        population=pl.lit("all"), metric=pl.lit("mse"))
    from assets.bundle import Bundle

    tables, pngs = build_report([Bundle(frames={"user_metrics": frames, "metrics": metrics})], {}, {}, {}, {})
    diagnostics = tables.frame("diagnostics")
    assert set(zip(diagnostics["protocol"], diagnostics["method"])) == {
        ("paper", "melu"), ("paper", "paml"), ("paper", "at_paml"), ("production", "paml")}
    assert "adaptation_movielens.png" in pngs
    text = render_markdown(tables, pngs, "", lambda name, png: markdown_image(png, name), ["movielens"], ())
    paper_part, production_part = text.split("## Production protocol")
    assert paper_part.index("## Table 3") < paper_part.index("## Personalization diagnostics") < paper_part.index("## Paired comparisons")
    section = paper_part.split("## Personalization diagnostics")[1].split("## Paired comparisons")[0]
    assert "cv ≥ 0.25" in section and "2/K" in section and "| PAML " in section
    assert section.count("](data:image/png;base64,") == 1 and text.count("](data:image/png;base64,") == len(pngs)
    # the production rows: their own diagnostics, PAML's rates tripled (the same cv)
    block = production_part.split("### Personalization diagnostics (production protocol)")[1].split("### Paired")[0]
    paml = next(line for line in block.splitlines() if line.startswith("| PAML ") and "| all " in line)
    assert "| 1.12 " in paml and "| 0.52 " in paml and "MeLU" not in block


def test_adaptation_plot_labels_both_panels_and_needs_gains(monkeypatch):
    import assets.plots as plots

    figures = []
    monkeypatch.setattr(plots, "figure_png", lambda fig: figures.append(fig) or b"png")
    frame = tiny_user_metrics()
    assert plots.adaptation_plot(frame, diagnostics_summary(frame), "movielens", 0.25) == b"png"
    gain_ax, cv_ax = figures[0].axes
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in (gain_ax, cv_ax))
    assert gain_ax.get_ylabel() == "adaptation gain: query MSE before - after"
    assert [t.get_text() for t in cv_ax.get_xticklabels()] == ["MeLU", "PAML", "AT-PAML"]
    # PAML's bars (all, major, minor) are the cvs of the summary; MeLU's and AT-PAML's fixed rates give 0
    heights = [round(bar.get_height(), 6) for bar in cv_ax.patches]
    assert heights == [0.0, round(math.sqrt(0.05 / 3) / 0.25, 6), 0.0, 0.0, round(math.sqrt(0.02) / 0.2, 6), 0.0,
                       0.0, round(float(row(diagnostics_summary(frame), "paml", "minor")["lr_cv"]), 6), 0.0]
    old = frame.drop("loss_unadapted", "loss_adapted", "adaptation_gain")
    assert plots.adaptation_plot(old, diagnostics_summary(old), "movielens", 0.25) is None


def test_the_plots_title_and_bars_show_what_is_drawn_when_a_dataset_has_no_minor_users(monkeypatch, tmp_path):
    import assets.plots as plots

    frame = tiny_user_metrics().with_columns(group=pl.lit("major"))  # a dataset whose test users are all major
    summary = diagnostics_summary(frame)
    assert summary.filter(pl.col("group") == "minor").height == 0  # no minor users: no cv to show
    # The PNGs themselves, to look at (tmp_path); then the same figures kept to read their text.
    (tmp_path / "errors.png").write_bytes(plots.error_boxplots(frame, "movielens"))
    (tmp_path / "adaptation.png").write_bytes(plots.adaptation_plot(frame, summary, "movielens", 0.25))
    figures = []
    monkeypatch.setattr(plots, "figure_png", lambda fig: figures.append(fig) or b"png")
    plots.error_boxplots(frame, "movielens")
    assert figures[-1].axes[0].get_title() == "movielens: per-user test MSE, major users only"  # was "major vs minor users"
    plots.adaptation_plot(frame, summary, "movielens", 0.25)
    cv_ax = figures[-1].axes[1]
    # 3 methods x (all, major) bars; the minor bars are left out, each marked 'n/a' where it would stand (was a bar of 0).
    assert len(cv_ax.patches) == 6
    assert [(round(t.get_position()[0], 2), t.get_text()) for t in cv_ax.texts] == [(0.27, "n/a"), (1.27, "n/a"), (2.27, "n/a")]
    # Both groups: the title says both, every bar is drawn, a fixed rate's measured cv of 0 stays a bar.
    both = tiny_user_metrics()
    plots.error_boxplots(both, "movielens")
    assert figures[-1].axes[0].get_title() == "movielens: per-user test MSE, major vs minor users"
    plots.adaptation_plot(both, diagnostics_summary(both), "movielens", 0.25)
    assert len(figures[-1].axes[1].patches) == 9 and len(figures[-1].axes[1].texts) == 0
