"""The report as a researcher reads it: names, order, arrows, missing rows, provenance, plots."""

import subprocess

import numpy as np
import polars as pl
import pytest

import assets.plots as plots
from assets.bundle import Bundle
from assets.markdown import markdown_table
from assets.report import Provenance, build_report, code_commit, provenance_markdown, render_markdown
from assets.report_tables import (
    gamma_label, markdown_group_table, markdown_table2, method_name, method_order, variant_name, variant_order,
)

EXPECTED = ("melu", "meta_sgd", "transfer", "paml", "at_paml", "reg_paml", "ref_global_mean", "ref_item_mean")


def test_method_order_is_the_papers_then_references_and_new_rows_just_appear():
    codes = ["ref_item_mean", "reg_paml", "ref_zz_new", "melu", "my_learner", "ref_mf", "paml", "transfer"]
    assert method_order(codes) == ["melu", "transfer", "paml", "reg_paml", "my_learner", "ref_item_mean", "ref_mf", "ref_zz_new"]
    assert [method_name(c) for c in ("transfer", "at_paml", "ref_mf", "ref_item_knn", "my_learner")] == [
        "Transfer learning", "AT-PAML", "MF (fold-in)", "item-kNN", "my_learner"]
    labels = [gamma_label(1e-2), "at_paml", gamma_label(1e-5), "ref_global_mean", "paml"]
    assert variant_order(labels) == ["reg_paml (gamma=1e-05)", "reg_paml (gamma=0.01)", "paml", "at_paml", "ref_global_mean"]
    assert variant_name(gamma_label(1e-4)) == "REG-PAML (γ = 1e-4)"


def test_markdown_table_escapes_and_formats():
    frame = pl.DataFrame({"name": ["a|b", None], "value": [1.23456, None], "genres": [["x", "y"], []]})
    assert markdown_table(frame, decimals=2).splitlines() == [
        "| name | value | genres |",
        "|------|-------|--------|",
        r"| a\|b | 1.23  | x, y   |",
        "|      |       |        |",
    ]


def table2_rows(dataset: str, rows: dict[str, dict[str, float]]) -> pl.DataFrame:
    """A table2 frame: {method: {metric: mean}}, sd 0.01, nothing best or significant."""
    return pl.DataFrame([
        {"dataset": dataset, "method": m, "metric": k, "mean": v, "sd": 0.01, "n_seeds": 3, "best": False,
         "significant": False, "paper_mean": None, "paper_sd": None}
        for m, values in rows.items() for k, v in values.items()
    ])


def test_table2_names_orders_points_arrows_and_sets_references_apart():
    table = table2_rows("movielens", {
        "ref_item_mean": {"mse": 0.9, "ndcg@3": 0.7}, "reg_paml": {"mse": 0.8, "ndcg@3": 0.75},
        "melu": {"mse": 1.0, "ndcg@3": 0.72}, "ref_mf": {"mse": 0.85, "ndcg@3": 0.8},
    }).with_columns(best=pl.col("mean") == 0.8, n_seeds=pl.when(pl.col("method").str.starts_with("ref_")).then(1).otherwise(3))
    text = markdown_table2(table, ["movielens", "taobao"], EXPECTED)
    lines = text.splitlines()
    assert lines[0] == "#### MovieLens-1M (`movielens`)"
    assert header_cells(text) == ["method", "MSE ↓", "nDCG@3 ↑"]
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and not line.startswith("| method")]
    assert rows == ["MeLU", "Meta-SGD", "Transfer learning", "PAML", "AT-PAML", "REG-PAML",
                    "*reference predictors (not in the paper)*", "global mean", "item mean", "MF (fold-in)"]
    assert "| REG-PAML " in text and "**0.800 ± 0.010**" in text  # best in its column, bold
    assert "| 0.850 " in text and "0.850 ±" not in text  # a deterministic reference row has no spread
    meta_sgd = next(line for line in lines if line.startswith("| Meta-SGD"))
    assert [cell.strip() for cell in meta_sgd.strip("|").split("|")] == ["Meta-SGD", "—", "—"]
    missing = next(line for line in lines if line.startswith("No results for"))
    assert missing.startswith("No results for Meta-SGD, Transfer learning, PAML, AT-PAML, global mean on movielens")
    assert "--select meta_sgd_model,transfer_model,paml_model,at_paml_model --partition movielens" in missing
    assert "No results for Taobao-like clicks (`taobao`) yet" in text


def header_cells(text: str) -> list[str]:
    """The cells of the first Markdown table header in `text`."""
    header = next(line for line in text.splitlines() if line.startswith("| "))
    return [cell.strip() for cell in header.strip("|").split("|")]


def test_group_tables_name_the_error_of_each_dataset():
    table = pl.DataFrame([
        {"dataset": d, "variant": v, "mean_major": 0.5, "sd_major": 0.1, "mean_minor": 0.6, "sd_minor": 0.1, "p_value": p}
        for d in ("movielens", "taobao") for v, p in ((gamma_label(1e-3), 0.0004), ("paml", float("nan")))
    ])
    text = markdown_group_table(table, "variant", ["movielens", "taobao"], ["paml"], {gamma_label(1e-3): (1.196, 1.183, 0.312)})
    movielens, taobao = text.split("#### Taobao")
    assert header_cells(movielens) == ["variant", "MSE, major users ↓", "MSE, minor users ↓", "p (minor vs major)",
                                       "paper: major / minor / p"]
    assert header_cells(taobao) == ["variant", "log-loss, major users ↓", "log-loss, minor users ↓", "p (minor vs major)"]
    assert "REG-PAML (γ = 1e-3)" in movielens and "1.196 / 1.183 / 0.312" in movielens
    assert "<0.001" in movielens  # the p-value of the gamma row
    paml_row = next(line for line in movielens.splitlines() if line.startswith("| PAML"))
    assert paml_row.split("|")[4].strip() == "—"  # an undefined p-value says so


def test_undefined_metrics_and_empty_groups_say_why_under_the_table():
    # Every test user's query set holds one class: AUC is NaN for every method (it was a bare '—',
    # which the legend reads as "no results").
    nan = float("nan")
    table = table2_rows("shop", {m: {"auc": nan, "global_auc": 0.7, "nel": 0.9} for m in ("melu", "paml")})
    text = markdown_table2(table, ["shop"], ("melu", "paml"))
    melu = next(line for line in text.splitlines() if line.startswith("| MeLU"))
    assert [cell.strip() for cell in melu.strip("|").split("|")][1] == "—"
    line = next(line for line in text.splitlines() if line.startswith("— where a row has results"))
    assert line == ("— where a row has results: undefined on every test user; AUC (every method): a user's AUC needs a "
                    "clicked and an unclicked item in the query set, which a query set of one item never has.")
    assert "global AUC (" not in line and "No results for" not in text
    # Every test user is major (one profile for everyone): no minor users, so no minor error and no p.
    groups = pl.DataFrame([{"dataset": "shop", "method": m, "mean_major": 0.5, "sd_major": 0.0, "mean_minor": None,
                            "sd_minor": None, "p_value": nan} for m in ("melu", "paml")])
    text = markdown_group_table(groups, "method", ["shop"], ("melu", "paml"))
    assert "— where a row has results: no minor test users (the major/minor rule tags every test user major)." in text
    # Both groups present, every error one value: scipy's t is 0/0.
    text = markdown_group_table(groups.with_columns(mean_minor=pl.lit(0.5)), "method", ["shop"], ("melu", "paml"))
    assert "the t-test is undefined where fewer than 2 users of a group have an error, or where every user's error" in text
    defined = markdown_group_table(groups.with_columns(mean_minor=pl.lit(0.5), p_value=pl.lit(0.2)), "method", ["shop"],
                                   ("melu", "paml"))
    assert "where a row has results" not in defined


def user_metrics(dataset: str, methods: dict[str, tuple[float, float]], n_users: int = 6) -> pl.DataFrame:
    """Per-user errors: {method: (major error, minor error)}, half the users in each group, two seeds."""
    rows = []
    for method, (major, minor) in methods.items():
        for seed in (0, 1):
            for u in range(n_users):
                group = "major" if u % 2 else "minor"
                error = (major if group == "major" else minor) + 0.01 * u + 0.001 * seed
                rows.append({"dataset": dataset, "method": method, "seed": seed, "user_id": f"u{u}", "group": group,
                             "error": error, "lr": 0.01 * (1 + u) if method == "paml" else None})
    return pl.DataFrame(rows)


def eval_bundle(frame: pl.DataFrame) -> Bundle:
    keys = [c for c in ("dataset", "protocol", "method", "seed") if c in frame.columns]
    metrics = frame.group_by(*keys).agg(pl.col("error").mean().alias("value")).with_columns(
        population=pl.lit("all"), metric=pl.lit("mse"))
    return Bundle(frames={"user_metrics": frame, "metrics": metrics})


def test_report_markdown_for_files_and_for_the_ui():
    frame = user_metrics("movielens", {"melu": (1.0, 1.2), "paml": (0.9, 1.0), "ref_item_mean": (0.95, 1.1)})
    tables, pngs = build_report([eval_bundle(frame)], {}, {}, {}, {})
    assert sorted(pngs) == ["errors_movielens.png", "learning_rates_movielens.png"]
    as_file = render_markdown(tables, pngs, "## Provenance", lambda name, _: f"![{name}]({name})", ["movielens"], EXPECTED)
    as_ui = render_markdown(tables, pngs, "## Provenance", lambda name, png: plots.markdown_image(png, name), ["movielens"], EXPECTED)
    assert "![errors_movielens.png](errors_movielens.png)" in as_file and "data:image" not in as_file
    # In the UI each plot is embedded once and nothing links to a file beside report.md.
    assert as_ui.count("](data:image/png;base64,") == len(pngs) and "](errors_" not in as_ui
    assert as_file.index("## Provenance") < as_file.index("## Table 1") < as_file.index("## Table 2")
    assert "No user groups for MovieLens-1M" in as_file and "No gamma ablation for movielens" in as_file
    assert "each test on its own (no correction for the number of comparisons" in as_file  # what bold means, honestly
    assert tables.frame("table2")["method"].to_list() == ["melu", "paml", "ref_item_mean"]  # SQL sees the report's order


def test_one_seed_has_no_spread_in_table3():
    # `demo --seeds 0`: the sample sd of one seed is undefined; it was stored as 0.0 and shown as '± 0.000',
    # against the reading guide's "no ± for a single seed".
    frame = user_metrics("movielens", {"melu": (1.0, 1.2), "ref_mf": (0.95, 1.1)}).filter(pl.col("seed") == 0)
    tables, pngs = build_report([eval_bundle(frame)], {}, {}, {}, {})
    t3 = tables.frame("table3")
    assert t3["sd_major"].null_count() == t3.height and t3["mean_major"].null_count() == 0
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["movielens"], EXPECTED)
    table3 = text.split("## Table 3")[1].split("\n## ")[0]
    melu = next(line for line in table3.splitlines() if line.startswith("| MeLU"))
    assert "±" not in melu and "1.030" in melu  # major: 1.0 + 0.01 * mean(1, 3, 5)
    two_seeds = build_report([eval_bundle(user_metrics("movielens", {"melu": (1.0, 1.2)}))], {}, {}, {}, {})[0]
    assert two_seeds.frame("table3")["sd_major"].to_list() == pytest.approx([0.001 / 2 ** 0.5])


def test_table2_says_over_how_many_test_users_a_per_user_mean_was_taken():
    # A small click log: 2 of 6 test users have both classes in their query set, so "AUC 1.000" was the
    # mean of two users, with nothing saying so.
    frame = user_metrics("shop", {"melu": (0.3, 0.4), "paml": (0.3, 0.5)}).with_columns(
        auc=pl.when(pl.col("user_id").is_in(["u0", "u1"])).then(1.0).otherwise(float("nan")), nel=pl.col("error"))
    metrics = pl.concat([frame.group_by("dataset", "method", "seed").agg(value=pl.col(m).fill_nan(None).mean())
                         .with_columns(population=pl.lit("all"), metric=pl.lit(m)) for m in ("auc", "nel")])
    tables, pngs = build_report([Bundle(frames={"user_metrics": frame, "metrics": metrics})], {}, {}, {}, {})
    coverage = tables.frame("table2").select("method", "metric", "n_users", "n_defined").sort("method", "metric").rows()
    assert coverage == [("melu", "auc", 6, 2), ("melu", "nel", 6, 6), ("paml", "auc", 6, 2), ("paml", "nel", 6, 6)]
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["shop"], ("melu", "paml"))
    assert ("Means over the test users where the metric is defined: AUC over 2 of 6 (a user's AUC needs a clicked and an "
            "unclicked item in the query set, which a query set of one item never has).") in text
    assert "NEL over" not in text


def test_table2_says_how_many_test_users_have_one_query_item_whose_ndcg_is_one_whatever_the_prediction():
    # Book-Crossing's cold-start users mostly have a single query item: nDCG 1 by definition for every
    # method, so the column's 0.99 for all rows looked like agreement the methods had earned.
    frame = user_metrics("books", {"melu": (1.0, 1.2), "paml": (0.9, 1.0)}).with_columns(
        n_query=pl.when(pl.col("user_id").is_in(["u0", "u1", "u2", "u3"])).then(1).otherwise(3),
        **{"ndcg@3": pl.when(pl.col("user_id") == "u5").then(float("nan")).otherwise(1.0)})
    metrics = pl.concat([frame.group_by("dataset", "method", "seed").agg(value=pl.col(m).fill_nan(None).mean())
                         .with_columns(population=pl.lit("all"), metric=pl.lit(m)) for m in ("error", "ndcg@3")]
                        ).with_columns(pl.col("metric").replace({"error": "mse"}))
    tables, pngs = build_report([Bundle(frames={"user_metrics": frame.with_columns(mse=pl.col("error")), "metrics": metrics})],
                                {}, {}, {}, {})
    coverage = tables.frame("table2").filter(pl.col("method") == "melu").select("metric", "n_defined", "n_single").sort("metric").rows()
    assert coverage == [("mse", 6, None), ("ndcg@3", 5, 4)]  # u5's nDCG undefined; u0-u3 have one query item
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["books"], ("melu", "paml"))
    assert ("nDCG: 4 of the 5 test users it is defined for (80%) have a single query item, whose nDCG is 1 whatever "
            "the prediction; the nDCG columns differ over the other 1 user only.") in text
    # Every user with one query item (a log of 2 ratings per user): the line says the column is no use.
    single = frame.with_columns(n_query=pl.lit(1), mse=pl.col("error"), **{"ndcg@3": pl.lit(1.0)})
    tables, pngs = build_report([Bundle(frames={"user_metrics": single, "metrics": metrics})], {}, {}, {}, {})
    assert ("nDCG: every one of the 6 test users it is defined for has a single query item, whose nDCG is 1 whatever "
            "the prediction: the nDCG columns cannot tell the methods apart here.") in render_markdown(
        tables, pngs, "", lambda name, _: name, ["books"], ("melu", "paml"))
    # Every user with several query items: no line.
    several = frame.with_columns(n_query=pl.lit(3), mse=pl.col("error"))
    text = render_markdown(*build_report([Bundle(frames={"user_metrics": several, "metrics": metrics})], {}, {}, {}, {}),
                           "", lambda name, _: name, ["books"], ("melu", "paml"))
    assert "single query item" not in text


def test_paper_tables_show_the_paper_protocol_and_production_rows_get_their_own_block():
    paper = user_metrics("movielens", {"melu": (1.0, 1.2), "paml": (0.9, 1.0), "ref_mf": (0.95, 1.1)})
    production = user_metrics("movielens", {"ref_mf": (0.5, 0.6)}).with_columns(pl.lit("production").alias("protocol"))
    # the paper's evaluation written before the protocol column existed counts as the paper's protocol
    tables, pngs = build_report([eval_bundle(paper), eval_bundle(production)], {}, {}, {}, {})
    t2 = tables.frame("table2")
    assert sorted(zip(t2["protocol"], t2["method"])) == [
        ("paper", "melu"), ("paper", "paml"), ("paper", "ref_mf"), ("production", "ref_mf")]
    mf = dict(t2.filter(pl.col("method") == "ref_mf").select("protocol", "mean").iter_rows())
    # one row per protocol, never their average: (major + minor) / 2 + 0.01 * mean(u) + 0.001 * mean(seed)
    assert mf == pytest.approx({"paper": 1.025 + 0.025 + 0.0005, "production": 0.55 + 0.025 + 0.0005})
    assert set(zip(tables.frame("table3")["protocol"], tables.frame("table3")["method"])) >= {("production", "ref_mf")}
    paired = tables.frame("significance")
    assert set(paired.filter(pl.col("protocol") == "production")["method"]) == set()  # nothing to pair with under production
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["movielens"], EXPECTED)
    paper_part, production_part = text.split("## Production protocol")
    mf_row = lambda part: next(line for line in part.splitlines() if line.startswith("| MF (fold-in)"))  # noqa: E731
    paper_mf, production_mf = f"{mf['paper']:.3f} ±", f"{mf['production']:.3f} ±"
    assert paper_mf in mf_row(paper_part) and production_mf not in paper_part
    assert production_mf in mf_row(production_part) and "PAML" not in production_part and "No results for" not in production_part
    assert "## Paired comparisons" in paper_part and "vs MF (fold-in)" in paper_part
    # a table keyed by method cannot hold two protocols: rendering one is refused, not silently averaged
    with pytest.raises(ValueError, match="protocols \\['paper', 'production'\\]"):
        markdown_table2(t2, ["movielens"], EXPECTED)


def test_report_without_any_results_says_so():
    tables, pngs = build_report([Bundle(frames={"user_metrics": pl.DataFrame(), "metrics": pl.DataFrame()})], {}, {}, {}, {})
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["movielens", "taobao"], EXPECTED)
    assert pngs == {} and "No plots yet" in text
    assert text.count("No results for MovieLens-1M") == 2  # Tables 2 and 3
    assert set(tables.frame("table3").columns) >= {"mean_major", "sd_major", "mean_minor", "sd_minor", "p_value"}


def test_every_plot_axis_is_labelled_and_boxes_split_by_group(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "figure_png", lambda fig: figures.append(fig) or b"png")
    frame = user_metrics("taobao", {"melu": (0.6, 0.7), "paml": (0.5, 0.6), "ref_global_mean": (0.65, 0.75)})
    plots.error_boxplots(frame, "taobao")
    plots.lr_histograms(frame, "taobao", ("paml", "reg_paml"))
    plots.embedding_map(np.random.default_rng(0).normal(size=(10, 4)), np.array(["major", "minor"] * 5), "map")
    history = pl.DataFrame({"dataset": ["taobao"] * 4, "method": ["melu", "melu", "paml", "paml"], "seed": [0] * 4,
                            "epoch": [1, 2, 1, 2], "train_loss": [0.7, 0.6, 0.7, 0.5], "val_loss": [0.7, 0.65, 0.7, 0.6]})
    plots.validation_curves(history, "taobao")
    plots.training_curves_png(history.filter(pl.col("method") == "melu"), "melu")
    axes = [ax for fig in figures for ax in fig.axes]
    assert len(figures) == 5 and all(ax.get_xlabel() and ax.get_ylabel() for ax in axes)
    boxes = figures[0].axes[0]
    assert boxes.get_ylabel() == "per-user log-loss (mean over seeds)"
    assert [t.get_text() for t in boxes.get_xticklabels()] == ["MeLU", "PAML", "global mean"]
    assert [t.get_text() for t in boxes.get_legend().get_texts()] == ["major users", "minor users"]
    assert len(boxes.patches) == 6  # a major and a minor box per method


def test_provenance_header_and_commit(tmp_path):
    runs = pl.DataFrame({"run": ["r-eval"], "job": ["evaluation_job"], "written": ["2026-11-28 10:00"],
                         "datasets": [None], "assets": ["melu_eval"]})
    files = pl.DataFrame({"dataset": ["movielens"], "file": ["/data/ml-1m/ratings.dat"], "sha256": ["0123456789abcdef"]})
    text = provenance_markdown(Provenance("r-report", "2026-11-28 10:01 UTC", "`abc`", "0, 1, 2 (every model)", "cpu", "paper", 2,
                                          "Linux x86_64, 2 CPUs", "torch 2.13.0", runs, files))
    for fact in ("r-report", "2026-11-28 10:01 UTC", "commit `abc`", "seeds: 0, 1, 2 (every model)", "training protocol: paper", "training device: cpu",
                 "torch threads (evaluation and report): 2", "| r-eval ", "| movielens | /data/ml-1m/ratings.dat | 0123456789abcdef |"):
        assert fact in text, fact
    assert code_commit(tmp_path).startswith("unknown")
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout  # noqa: E731
    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "--short=12", "HEAD").strip()
    assert code_commit(tmp_path) == f"`{head}`"
    (tmp_path / "a.txt").write_text("2")
    assert code_commit(tmp_path) == f"`{head}` with uncommitted changes"


def test_table2_says_when_a_seed_is_not_a_number_seeds_differ_or_rows_have_other_test_users():
    frame = user_metrics("movielens", {"melu": (1.0, 1.2), "paml": (0.9, 1.0), "reg_paml": (0.8, 0.9)}).with_columns(
        mse=pl.col("error"))
    metrics = eval_bundle(frame).frame("metrics")
    # PAML's seed 1 diverged (NaN): its '—' was explained as "no test user has a query item".
    diverged = metrics.with_columns(value=pl.when((pl.col("method") == "paml") & (pl.col("seed") == 1))
                                    .then(float("nan")).otherwise(pl.col("value")))
    tables, pngs = build_report([Bundle(frames={"user_metrics": frame, "metrics": diverged})], {}, {}, {}, {})
    assert tables.frame("table2").filter(pl.col("method") == "paml")["undefined_seeds"].to_list() == ["1"]
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["movielens"], ("melu", "paml", "reg_paml"))
    assert ("— where a row has results: no mean over seeds, the value of a seed is not a number (see `metrics` per seed); "
            "MSE (PAML): not a number in seed 1 of its 2 seeds.") in text
    assert "no test user has a query item" not in text and "Rows average" not in text
    # A seed with no value at all (null, not NaN) leaves no mean either: polars' mean skips a null, so
    # PAML's row read as seed 0's value over "2 seeds".
    missing = metrics.with_columns(value=pl.when((pl.col("method") == "paml") & (pl.col("seed") == 1))
                                   .then(None).otherwise(pl.col("value")))
    tables, _ = build_report([Bundle(frames={"user_metrics": frame, "metrics": missing})], {}, {}, {}, {})
    paml = tables.frame("table2").filter((pl.col("method") == "paml") & (pl.col("metric") == "mse"))
    assert paml["undefined_seeds"].item() == "1" and np.isnan(paml["mean"].item())
    # REG-PAML evaluated with one seed of two: its mean is over fewer seeds than the others'.
    fewer = frame.filter((pl.col("method") != "reg_paml") | (pl.col("seed") == 0))
    tables, pngs = build_report([eval_bundle(fewer)], {}, {}, {}, {})
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["movielens"], ("melu", "paml", "reg_paml"))
    assert ("Rows average different numbers of seeds (mean ± sd over each row's own seeds): MeLU, PAML over 2 seeds; "
            "REG-PAML over 1 seed.") in text
    # PAML's model in service was trained on other tasks: scored on 4 of MeLU's 6 users (its hardest two
    # missing), its mean is the column's best without being comparable.
    other_users = frame.filter((pl.col("method") != "paml") | ~pl.col("user_id").is_in(["u4", "u5"]))
    tables, pngs = build_report([eval_bundle(other_users)], {}, {}, {}, {})
    assert set(tables.frame("table2")["n_common"]) == {4}
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["movielens"], ("melu", "paml", "reg_paml"))
    assert ("Rows were scored on different test users (a model in service trained on other tasks): MeLU 6, PAML 4, "
            "REG-PAML 6; 4 users are common to every row.") in text
    paired = tables.frame("significance").filter((pl.col("method") == "paml") & (pl.col("other") == "melu"))
    assert paired["n_users"].item() == 4  # paired by user id, never by position
    # Complete results: none of these lines.
    tables, pngs = build_report([eval_bundle(frame)], {}, {}, {}, {})
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["movielens"], ("melu", "paml", "reg_paml"))
    assert "not a number in seed" not in text and "Rows average" not in text and "Rows were scored" not in text


def test_plots_of_odd_inputs_say_why_they_are_empty_and_one_test_user_draws(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "figure_png", lambda fig: figures.append(fig) or b"png")
    # No user has an error (every query set empty): the axes were blank, with an empty legend.
    frame = user_metrics("movielens", {"melu": (1.0, 1.2), "paml": (0.9, 1.0)}).with_columns(error=pl.lit(None, pl.Float64))
    plots.error_boxplots(frame, "movielens")
    ax = figures[-1].axes[0]
    assert [t.get_text() for t in ax.texts] == ["no test user has a per-user MSE (undefined for every user and method)"]
    assert ax.get_legend() is None
    # One test user: PCA has one component, and the second axis raised an IndexError.
    plots.embedding_map(np.ones((1, 4)), np.array(["minor"]), "one user")
    assert [tuple(c.get_offsets()[0]) for c in figures[-1].axes[0].collections if len(c.get_offsets())] == [(0.0, 0.0)]


def test_table1_says_why_a_share_of_one_or_a_population_in_one_group_is_no_finding():
    # A spec whose four groups features each hold one value: Table 1 showed every share and the major share as
    # 1.000, read as a result, with nothing saying that the rule had nothing to tell users apart by.
    from assets.user_groups import user_groups_for

    users = pl.DataFrame({"user_id": ["1", "2", "3"], **{f: ["x"] * 3 for f in ("age", "gender", "region", "job")}})
    features = ("age", "gender", "region", "job")
    frames = user_groups_for(users, users.select("user_id").with_columns(is_cold_start=pl.lit(True)), features)
    groups = {"same": Bundle(frames=frames, info={"tagging_fields": list(features)})}
    tables, pngs = build_report([], {}, groups, {}, {})
    text = render_markdown(tables, pngs, "", lambda name, _: name, ["same"], ("melu",))
    assert "| same    | major share                       | 1.000 |       |" in text
    assert ("same: groups features 'age', 'gender', 'region', 'job' have one value for every user: each is a top value "
            "for all of them, so counts towards major for everyone and tells no user apart; every cold-start user is "
            "major (each holds a top value in at least 3 features; 4 of the 4 groups features have a single value)") in text
    # The built-in datasets' groups (varied features, both groups) get no such line.
    varied = pl.DataFrame({"user_id": ["1", "2", "3", "4", "5"], "age": ["p", "p", "p", "q", "r"],
                           "gender": ["s", "s", "s", "k", "m"], "region": ["t", "t", "o", "t", "n"],
                           "job": ["u", "h", "j", "u", "u"]})  # users 1 and 2 major, the others minor
    frames = user_groups_for(varied, varied.select("user_id").with_columns(is_cold_start=pl.lit(True)), features)
    tables, _ = build_report([], {}, {"same": Bundle(frames=frames, info={"tagging_fields": list(features)})}, {}, {})
    assert "table1_notes" not in tables.info


def test_table3_and_the_diagnostics_are_the_same_numbers_whatever_the_row_order():
    # Two clean `make demo` runs wrote different Table 3 p-values and sds and diagnostics (last digits) and
    # Table 3's columns in another order: polars' group_by returns groups in a per-process random order,
    # and the seeds (or users) of a group were then summed in that order.
    from assets.diagnostics import diagnostics_summary
    from assets.report_tables import group_table

    rng = np.random.default_rng(3)
    n = 400
    frame = pl.DataFrame({
        "dataset": "taobao", "protocol": "paper", "method": "melu",
        "seed": np.repeat(np.arange(8), n // 8), "user_id": [f"u{i % 50:03d}" for i in range(n)],
        "group": ["major" if i % 50 < 30 else "minor" for i in range(n)],
        "error": rng.random(n) / 3, "lr": rng.random(n) / 7, "adaptation_gain": rng.random(n) / 11,
    })
    shuffled = [frame.sample(fraction=1.0, shuffle=True, seed=s) for s in range(6)]
    tables = [group_table(f) for f in (frame, *shuffled)]
    assert all(t.columns == ["dataset", "protocol", "method", *GROUP_COLUMNS_IN_ORDER, "p_value"] for t in tables)
    assert all(t.equals(tables[0]) for t in tables)  # bitwise: equals compares floats exactly
    summaries = [diagnostics_summary(f) for f in (frame, *shuffled)]
    assert all(s.equals(summaries[0]) for s in summaries)


GROUP_COLUMNS_IN_ORDER = ["mean_major", "mean_minor", "sd_major", "sd_minor"]


PLOT_BYTES_SCRIPT = """
import hashlib, numpy as np, polars as pl
import assets.plots as plots
from assets.diagnostics import diagnostics_summary
rng = np.random.default_rng(3)
n = 4000
frame = pl.DataFrame({"dataset": "taobao", "protocol": "paper", "method": ["melu", "paml", "ref_mf", "at_paml"] * (n // 4),
    "seed": np.repeat(np.arange(8), n // 8), "user_id": [f"u{i % 500:03d}" for i in range(n)],
    "group": ["major" if i % 50 < 30 else "minor" for i in range(n)],
    "error": rng.random(n) ** 3, "lr": rng.random(n) / 7, "adaptation_gain": rng.standard_normal(n) ** 3})
pngs = plots.error_boxplots(frame, "taobao"), plots.adaptation_plot(frame, diagnostics_summary(frame), "taobao", 0.3)
print(*(hashlib.sha256(png).hexdigest() for png in pngs))
"""


def test_the_report_plots_are_the_same_bytes_in_every_process():
    # Two clean `make demo` runs wrote different errors_ and adaptation_ PNGs: the users came out of a
    # group_by in a per-process random order and were drawn in it. One process draws the same each time,
    # so the processes are separate.
    import sys

    runs = [subprocess.Popen([sys.executable, "-c", PLOT_BYTES_SCRIPT], stdout=subprocess.PIPE, text=True)
            for _ in range(4)]
    outputs = {run.communicate(timeout=120)[0] for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(outputs) == 1, outputs
