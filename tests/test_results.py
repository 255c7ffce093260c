"""docs/results.md rendered from DuckDB, and what every run records about itself (hand-made tables)."""

import json
import platform

import numpy as np
import polars as pl
import pytest
from scipy import stats

from assets.bundle import Bundle
from pipelines.provenance import cpu_description
from pipelines.results import read_store, render, selected_steps, write_results
from pipelines.store import LineageStore
from pipelines.tune import GENERATED_END, GENERATED_START

SETTINGS = {"file": "models/settings/movielens.json", "sha256": "ab" * 32, "trial": 4, "value": 0.9}
# Seed-averaged per-user errors of two methods (users 1-4): paml - melu = -0.1, -0.2, -0.2, -0.3.
PAML_ERRORS, MELU_ERRORS = [0.5, 0.6, 0.7, 0.8], [0.6, 0.8, 0.9, 1.1]


def user_rows() -> pl.DataFrame:
    rows = []
    for seed, shift in ((0, -0.01), (1, 0.01)):  # the seeds average to the errors above
        for user, (p, m) in enumerate(zip(PAML_ERRORS, MELU_ERRORS), start=1):
            group = "major" if user <= 2 else "minor"
            rows.append({"dataset": "movielens", "method": "paml", "seed": seed, "user_id": user, "group": group,
                         "error": p + shift, "lr": 0.1 * user})
            rows.append({"dataset": "movielens", "method": "melu", "seed": seed, "user_id": user, "group": group,
                         "error": m + shift, "lr": 0.05})
    return pl.DataFrame(rows)


def metric_rows() -> pl.DataFrame:
    rows = []
    values = {"paml": {"all": (0.64, 0.66), "major": (0.55, 0.55), "minor": (0.75, 0.75)},
              "melu": {"all": (0.84, 0.86), "major": (0.75, 0.75), "minor": (0.95, 0.95)},
              "ref_user_item_bias": {"all": (0.9, 0.9)}}
    for method, populations in values.items():
        for population, per_seed in populations.items():
            for seed, value in enumerate(per_seed):
                rows.append({"dataset": "movielens", "method": method, "seed": seed, "population": population,
                             "metric": "mse", "value": value, "n_users": 4})
    return pl.DataFrame(rows)


@pytest.fixture()
def store(tmp_path):
    store = LineageStore(tmp_path / "home")
    model = Bundle(frames={"history": pl.DataFrame({"step": [1]})},
                   info={"method": "paml", "dataset": "movielens", "settings": SETTINGS,
                         "runtime": {"threads": 3, "device": "cpu", "deterministic": True}})
    store.record(model, run_id="run-1", job_name="training_job", asset_key="paml_model", partition="movielens",
                 code_version="1", inputs=[], mirrors={})
    other = Bundle(frames={"history": pl.DataFrame({"step": [2]})},
                   info={"method": "melu", "dataset": "movielens", "settings": {**SETTINGS, "trial": 9},
                         "runtime": {"threads": 3, "device": "cuda", "deterministic": True}})
    store.record(other, run_id="run-1", job_name="training_job", asset_key="melu_model", partition="movielens",
                 code_version="1", inputs=[], mirrors={})
    production = Bundle(frames={"metrics": pl.DataFrame({"step": [3]})},
                        info={"dataset": "movielens", "protocol": "production", "methods": ["paml"],
                              "settings": {"paml": {**SETTINGS, "file": "models/settings/movielens.production.json", "trial": 2}},
                              "runtime": {"threads": 3, "device": "cpu", "deterministic": True}})
    store.record(production, run_id="run-1", job_name="production_job", asset_key="production_protocol", partition="movielens",
                 code_version="1", inputs=[], mirrors={})
    store.set_run_wall_seconds("run-1", 120.0)
    for name, frame in {"user_metrics": user_rows(), "metrics": metric_rows(), "significance": pl.DataFrame([
            {"comparison": "vs_reference", "dataset": "movielens", "protocol": "paper", "method": "paml", "other": "ref_mf",
             "seed": None, "n_users": 4, "mean_a": 0.65, "mean_b": 0.7, "statistic": -3.0, "p_value": 0.04,
             "ci_low": -0.08, "ci_high": -0.01}])}.items():
        store.record_table(name, frame, source="test", partition="movielens", artifact_id="a")
    return store


def test_the_cpu_is_named_with_the_vector_extensions_that_decide_its_kernels():
    x86 = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.00GHz\n"
           "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16\n\n"
           "processor\t: 1\nmodel name\t: another model\nflags\t\t: fpu\n")
    assert cpu_description(x86) == "Intel(R) Xeon(R) Processor @ 2.00GHz (avx2 avx512f avx512_bf16)"
    assert cpu_description("model name\t: Old CPU\nflags\t: fpu sse2\n") == "Old CPU"
    assert cpu_description("processor\t: 0\nFeatures\t: fp asimd sve\nModel name\t: Neoverse-V1\n") == "Neoverse-V1 (asimd sve)"
    assert cpu_description("processor\t: 0\nFeatures\t: fp asimd\n") is None  # no model name: the caller falls back


def test_a_run_records_threads_devices_kernels_versions_commit_settings_and_wall_time(store):
    run = store.query("SELECT * FROM runs").row(0, named=True)
    assert (run["torch_threads"], run["device"], run["deterministic"], run["wall_seconds"]) == (3, "cpu, cuda", True, 120.0)
    assert json.loads(run["versions"])["duckdb"] and run["machine"].startswith(f"{platform.system()} ")
    assert run["git_commit"] is None or len(run["git_commit"].removesuffix("-dirty")) == 40
    settings = json.loads(run["settings"])
    assert settings["movielens/paml"]["trial"] == 4 and settings["movielens/melu"]["trial"] == 9
    assert settings["movielens/paml (production)"]["file"] == "models/settings/movielens.production.json"


def test_results_are_rendered_from_the_tables_with_hand_checked_targets(store):
    text = render(read_store(store))
    # Table 2: mean +- sd over the two seeds, the paper's ML-1M value beside MeLU.
    assert "| paml | 0.650 ± 0.014 |" in text and "| melu | 0.850 ± 0.014 (1.451) |" in text
    assert "| paml | 0.640 | 0.660 |" in text  # per seed
    # Targets: PAML's step sizes 0.1..0.4 have sd sqrt(0.05 / 3) around 0.25 -> CV 0.516.
    cv = np.std([0.1, 0.2, 0.3, 0.4], ddof=1) / 0.25
    assert f"| 9: paml step size CV across test users ≥ 0.25 (movielens) | {cv:.3f} | yes |" in text
    p = stats.ttest_rel(PAML_ERRORS, MELU_ERRORS).pvalue
    assert f"beats melu, paired t-test p < 0.05 | diff -0.2000, p {p:.2g} | yes |" in text
    assert "| 9: minor − major gap of paml below MeLU's | 0.200 vs 0.200 | **no** |" in text
    assert "| 9: melu beats the tuned bias reference by ≥ 0.03 | 0.850 vs 0.900 | yes |" in text
    assert "| 9: reg_paml beats the tuned bias reference by ≥ 0.03 | — vs 0.900 | — |" in text
    assert "beats ref_mf, paper protocol, paired p < 0.05 | not computed | — |" in text
    # Paired tests, provenance, what is missing.
    assert "| movielens | paper | paml | ref_mf | 4 | 0.650 | 0.700 | -0.050 | [-0.0800, -0.0100] | 0.04 |" in text
    assert "| `run-1` | training_job |" in text and "Total wall time of the timed jobs: 120 s" in text
    assert "| movielens/paml | models/settings/movielens.json | abababababab | 4 |" in text
    assert "| movielens/paml (production) | models/settings/movielens.production.json | abababababab | 2 |" in text
    assert "Not computed: Table 1" in text and "Not computed: the validation search" in text


def test_results_doc_keeps_the_hand_written_text(store, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\n\nintro by hand\n\n{GENERATED_START}\nstale table\n{GENERATED_END}\n\n## Why\n\nprose by hand\n")
    write_results(LineageStore(store.home, read_only=True), doc)
    first = doc.read_text()
    assert "intro by hand" in first and "prose by hand" in first and "stale table" not in first
    assert first.index("intro by hand") < first.index("## Targets") < first.index("prose by hand")
    write_results(LineageStore(store.home, read_only=True), doc)
    strip = lambda t: "\n".join(line for line in t.splitlines() if not line.startswith("Generated by"))  # noqa: E731
    assert strip(doc.read_text()) == strip(first)


def test_results_of_a_store_without_the_papers_datasets_go_to_the_home(store, tmp_path):
    from pipelines.results import results_target

    doc, home = tmp_path / "docs" / "results.md", store.home
    target, note = results_target(LineageStore(home, read_only=True), None, doc, home)
    assert target == home / "results.md"  # movielens only: docs/results.md stays the reproduction's
    assert note == (" (docs/results.md is left as it is: this store has no meta-learner metrics of bookcrossing; "
                    "--out names another file)")
    assert write_results(LineageStore(home, read_only=True), target).is_file() and not doc.exists()
    assert results_target(LineageStore(home, read_only=True), str(tmp_path / "mine.md"), doc, home) == (tmp_path / "mine.md", "")


def test_results_of_the_home_outlive_the_next_report(store, tmp_path):
    # They were written into PAML_HOME/reports/, the directory each report replaces whole: a `results` before
    # (or beside) a demo's report was gone once the report landed, with no error anywhere.
    from assets.report import write_report
    from pipelines.results import results_target

    home = store.home
    target, _ = results_target(LineageStore(home, read_only=True), None, tmp_path / "docs" / "results.md", home)
    written = write_results(LineageStore(home, read_only=True), target).read_text()
    write_report(home / "reports", "the next report\n", {"plot.png": b"png"})
    assert target.read_text() == written and (home / "reports" / "report.md").read_text() == "the next report\n"
    assert [p.name for p in target.parent.glob(".results.md.*")] == []  # its staged copy is renamed, none left


def test_reference_rows_alone_do_not_make_a_store_the_reproductions(store, tmp_path):
    # Every evaluation scores the reference rows of each dataset whose data steps are built: a home with
    # Book-Crossing's data steps and any demo holds its ref_* metrics, and `results` rewrote docs/results.md.
    from pipelines.results import results_target

    references = metric_rows().filter(pl.col("method") == "ref_user_item_bias").with_columns(dataset=pl.lit("bookcrossing"))
    store.record_table("metrics", references, source="test", partition="bookcrossing", artifact_id="b")
    doc, home = tmp_path / "docs" / "results.md", store.home
    target, note = results_target(LineageStore(home, read_only=True), None, doc, home)
    assert target == home / "results.md" and "no meta-learner metrics of bookcrossing" in note
    meta = metric_rows().filter(pl.col("method") == "melu").with_columns(dataset=pl.lit("bookcrossing"))
    store.record_table("metrics", pl.concat([references, meta]), source="test", partition="bookcrossing", artifact_id="c")
    assert results_target(LineageStore(home, read_only=True), None, doc, home) == (doc, "")


def test_an_empty_store_renders_every_section_as_not_computed(tmp_path):
    store = LineageStore(tmp_path / "home")
    store.record_table("tuning_trials", pl.DataFrame({"dataset": ["x"], "protocol": ["paper"], "method": ["melu"],
                                                      "trial": [0], "state": ["COMPLETE"], "value": [0.5]}),
                       source="tune", partition="x", artifact_id="j")
    text = render(read_store(LineageStore(store.home, read_only=True)))
    for table in ("Table 2 (`metrics`)", "`report_table3`", "paired tests", "no run is recorded", "the kept steps (`training_history`)"):
        assert f"Not computed: {table}" in text
    assert "| x | paper | melu | 1 | 0 | 0 | 0.5000 |" in text


def test_the_nearest_weight_target_uses_the_recorded_k(tmp_path):
    store = LineageStore(tmp_path / "home")
    rows = pl.DataFrame({"dataset": ["movielens"] * 4, "method": ["at_paml"] * 4, "seed": [0, 0, 1, 1], "user_id": [1, 2, 1, 2],
                         "group": ["major", "minor"] * 2, "error": [0.5] * 4, "lr": [0.1, 0.2, 0.1, 0.2],
                         "nearest_weight": [0.2, 0.4, 0.3, 0.3], "memory_k": [4] * 4})
    store.record_table("user_metrics", rows, source="test", partition="movielens", artifact_id="a")
    store.record_table("metrics", metric_rows(), source="test", partition="movielens", artifact_id="a")
    text = render(read_store(LineageStore(store.home, read_only=True)))
    assert "| 9: AT-PAML nearest-neighbour weight ≥ 2/K = 0.500 | 0.300 | **no** |" in text  # K = 4, not the default 8
    # per seed: 0.1 and 0.2 -> cv sqrt(0.005) / 0.15 in both seeds
    assert f"| 9: at_paml step size CV across test users ≥ 0.25 (movielens) | {np.sqrt(0.005) / 0.15:.3f} | yes |" in text


def test_table2_says_when_most_test_users_have_one_query_item(tmp_path):
    # 3 of 4 test users with a single query item: their nDCG is 1 whatever the model predicts.
    store = LineageStore(tmp_path / "home")
    rows = user_rows().with_columns(n_query=pl.when(pl.col("user_id") <= 3).then(1).otherwise(4),
                                    mse=pl.col("error"), **{"ndcg@3": pl.lit(1.0)})
    store.record_table("user_metrics", rows, source="test", partition="movielens", artifact_id="a")
    store.record_table("metrics", metric_rows(), source="test", partition="movielens", artifact_id="a")
    text = render(read_store(LineageStore(store.home, read_only=True)))
    block = text.split("#### movielens, paper protocol")[1].split("####")[0]
    assert ("nDCG: 3 of the 4 test users it is defined for (75%) have a single query item, whose nDCG is 1 "
            "whatever the prediction; the nDCG columns differ over the other 1 user only.") in block


def test_results_survive_a_diverged_seed_and_identical_methods(tmp_path):
    store = LineageStore(tmp_path / "home")
    # REG-PAML kept MeLU's errors exactly; MeLU's seed 1 diverged (NaN in `metrics`), so it has no mean over seeds.
    users = pl.concat([user_rows(), user_rows().filter(pl.col("method") == "melu").with_columns(method=pl.lit("reg_paml"))])
    metrics = pl.concat([metric_rows(), metric_rows().filter(pl.col("method") == "melu").with_columns(method=pl.lit("reg_paml"))])
    metrics = metrics.with_columns(value=pl.when((pl.col("method") == "melu") & (pl.col("seed") == 1)).then(float("nan"))
                                   .otherwise(pl.col("value")))
    store.record_table("user_metrics", users, source="test", partition="movielens", artifact_id="a")
    store.record_table("metrics", metrics, source="test", partition="movielens", artifact_id="a")
    text = render(read_store(LineageStore(store.home, read_only=True)))
    assert "| melu | — (1.451) |" in text  # was "nan ± nan (1.451)"
    assert "| 9: melu beats the tuned bias reference by ≥ 0.03 | — vs 0.900 | — |" in text
    # The best meta-learner is never the NaN one (min() kept the first, MeLU's NaN, which compared False with every mean).
    assert "15: best meta-learner (paml) beats ref_mf" in text
    # Identical per-user errors: no difference, p = 1 as in the report (scipy's t is 0/0: "p nan").
    p_paml_melu = stats.ttest_rel(PAML_ERRORS, MELU_ERRORS).pvalue
    assert "| 9: best PAML variant (paml) beats melu, paired t-test p < 0.05 | diff -0.2000, p " f"{p_paml_melu:.2g} | yes |" in text
    from pipelines.results import paired_test, with_protocol
    assert paired_test(with_protocol(users), "movielens", "paper", "reg_paml", "melu") == (0.0, 1.0, 4)


def test_a_seed_without_a_value_leaves_no_mean_as_a_nan_seed_does(tmp_path):
    # MeLU's seed 1 has no value (null, not NaN): the mean skipped it while "seeds" counted 2, so one seed's
    # number stood as the mean of two.
    store = LineageStore(tmp_path / "home")
    metrics = metric_rows().with_columns(value=pl.when((pl.col("method") == "melu") & (pl.col("seed") == 1))
                                         .then(None).otherwise(pl.col("value")))
    store.record_table("user_metrics", user_rows(), source="test", partition="movielens", artifact_id="a")
    store.record_table("metrics", metrics, source="test", partition="movielens", artifact_id="a")
    text = render(read_store(LineageStore(store.home, read_only=True)))
    assert "| melu | — (1.451) | 2 |" in text  # was "| melu | 0.840 (1.451) | 2 |"
    assert "| 9: melu beats the tuned bias reference by ≥ 0.03 | — vs 0.900 | — |" in text
    assert "| paml | 0.650 ± 0.014 | 2 |" in text  # the other rows as before


def test_the_demo_summary_prints_every_row_of_table2_as_duckdb_holds_it(tmp_path, monkeypatch):
    from pipelines import cli

    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    # Three datasets x two protocols x 12 rows: 72 rows, which polars' 60-row display cut to its first and
    # last 30; and a 0-0.005 scale's MSE, which round(mean, 4) printed as 0.0 for every method.
    rows = [{"dataset": d, "protocol": p, "method": f"m{i:02d}", "metric": "mse", "sd": 0.001, "n_seeds": 3, "best": False,
             "significant": False, "paper_mean": None, "paper_sd": None, "mean": 7e-7 * (1 + i) if d == "tiny" else 0.8 + i / 1000}
            for d in ("books", "movies", "tiny") for p in ("paper", "production") for i in range(12)]
    t2 = pl.DataFrame(rows, schema_overrides={"paper_mean": pl.Float64, "paper_sd": pl.Float64})
    store = LineageStore(tmp_path / "home")
    store.record(Bundle(frames={"table2": t2}), run_id="r", job_name="evaluation_job", asset_key="report", partition="",
                 code_version="1", inputs=[], mirrors={"report_table2": t2})
    printed = [line.split() for line in cli.report_summary().splitlines() if line.startswith(("books ", "movies ", "tiny "))]
    stored = LineageStore(tmp_path / "home", read_only=True).query(
        "SELECT dataset, protocol, method, mean FROM table2 ORDER BY dataset, protocol, mean").rows()
    assert [(d, p, m) for d, p, m, *_ in printed] == [(d, p, m) for d, p, m, _ in stored]
    assert [float(line[4]) for line in printed] == pytest.approx([mean for *_, mean in stored], rel=1e-3)
    assert [line[4] for line in printed if line[0] == "tiny"][:2] == ["7e-07", "1.4e-06"]


def test_the_kept_step_is_validations_first_lowest_and_a_never_beaten_start_shows_as_zero():
    nan = float("nan")
    history = pl.DataFrame({
        "dataset": ["d"] * 9, "method": ["melu"] * 6 + ["paml"] * 3, "seed": [0, 0, 0, 1, 1, 1, 0, 0, 0],
        "asset_key": ["melu_model"] * 6 + ["production_protocol"] * 3,
        "step": [0, 100, 200, 0, 100, 200, 0, 100, 200],
        # melu seed 0: 100 is lowest; seed 1: 100 and 200 tie, the first is kept; paml: nothing beats the start
        "val_loss": [0.9, 0.8, 0.85, 0.9, 0.7, 0.7, 0.5, nan, 0.6],
    })
    kept = {(r["protocol"], r["method"], r["seed"]): (r["kept"], r["last"]) for r in selected_steps(history).iter_rows(named=True)}
    assert kept == {("paper", "melu", 0): (100, 200), ("paper", "melu", 1): (100, 200), ("production", "paml", 0): (0, 200)}
