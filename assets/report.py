"""Asset `report`: the paper's Tables 1-4, plots, Markdown and PNG files, DuckDB tables.

Writes `PAML_HOME/reports/report.md` and its PNGs (atomically replacing the previous
report), puts the same content in Dagster metadata (plots embedded, so nothing links to a
file the UI cannot reach), and stores the tables so that the DuckDB views `table2`,
`table3`, `table4` return the same numbers. A provenance header says which runs, code,
seeds, device and data files the numbers come from. The paper's tables, the personalization
diagnostics (assets/diagnostics.py, after Table 3), the paired comparisons and the plots show
the paper's protocol; rows fitted under another protocol (the production protocol: warm
users' ratings too) get their own, labelled block.
"""

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from assets import paper
from assets.bundle import Bundle, remove_staged
from assets.diagnostics import INTRO as DIAGNOSTICS_INTRO
from assets.diagnostics import STEP_SIZE_CV_TARGET, diagnostics_summary, markdown_diagnostics, targets_line
from assets.evaluation import with_protocol
from assets.markdown import markdown_table
from assets.plots import adaptation_plot, embedding_map, error_boxplots, lr_histograms, validation_curves
from assets.report_tables import (
    BASELINES, ERROR_NAMES, METRICS, PAIRED_REFERENCES, PAML_METHODS, best_baselines, dataset_name, gamma_label,
    group_table, in_report_order, markdown_group_table, markdown_paired, markdown_table2, method_name, metric_coverage,
    no_dataset_line, paired_comparisons, seed_averaged_errors, table2,
)
from assets.user_groups import group_notes
from models.locks import file_lock
from models.metrics import BOOTSTRAP_RESAMPLES
from models.configs import DEFAULT_PROTOCOL, REFERENCES


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
        everyone = bundle.frame("shares").filter(pl.col("population") == "all cleaned users")
        if everyone.height:  # a dataset without [groups] tags no user major: its share is 0, not absent
            major = everyone.filter(pl.col("group") == "major")["share"]
            rows.append({"dataset": dataset, "item": "major share", "ours": major[0] if major.len() else 0.0,
                         "paper": paper.MAJOR_SHARE.get(dataset)})
    return pl.DataFrame(rows, schema={"dataset": pl.String, "item": pl.String, "ours": pl.Float64, "paper": pl.Float64})


def ablation_table(ablations: dict[str, Bundle], user_metrics: pl.DataFrame) -> pl.DataFrame:
    """Table 4: REG-PAML per gamma, plus PAML, AT-PAML and the reference rows from their own evaluations
    (the paper's protocol only, as the paper's table)."""
    frames = [b.frame("user_metrics").with_columns(
                  pl.col("gamma").replace_strict({g: gamma_label(g) for g in b.info["gammas"]}, return_dtype=pl.String).alias("variant"))
              for b in ablations.values() if b.frame("user_metrics").height]
    # The reference rows come along so that every table shows what a plain predictor gets.
    others = ["paml", "at_paml", *(f"ref_{name}" for name in REFERENCES)]
    frames.append(user_metrics.filter(pl.col("method").is_in(others)).with_columns(pl.col("method").alias("variant")))
    combined = pl.concat([with_protocol(f).select("dataset", "protocol", "variant", "seed", "user_id", "group", "error")
                          for f in frames], how="vertical_relaxed")
    return in_report_order(group_table(paper_rows(combined), label="variant"), "variant")


def paper_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of the paper's protocol (the paper's tables show nothing else)."""
    return frame.filter(pl.col("protocol") == DEFAULT_PROTOCOL) if "protocol" in frame.columns else frame


# The columns the report reads, so that a report with no evaluations at all still renders (and says so).
EMPTY_USER_METRICS = pl.DataFrame(schema={"dataset": pl.String, "protocol": pl.String, "method": pl.String, "seed": pl.Int64,
                                          "user_id": pl.String, "group": pl.String, "error": pl.Float64, "lr": pl.Float64})
EMPTY_METRICS = pl.DataFrame(schema={"dataset": pl.String, "protocol": pl.String, "method": pl.String, "seed": pl.Int64,
                                     "population": pl.String, "metric": pl.String, "value": pl.Float64})


def build_report(evals: list[Bundle], ablations: dict[str, Bundle], groups: dict[str, Bundle],
                 tasks: dict[str, Bundle], models: dict[str, dict[str, Bundle]],
                 embedding_groups: dict[str, Bundle] | None = None,
                 extra_pngs: dict[str, bytes] | None = None) -> tuple[Bundle, dict[str, bytes]]:
    """All tables and plots; returns (bundle of tables, PNG files by name).

    Tables 2-3 and the paired comparisons keep every protocol (`protocol` among their keys);
    Table 4 and the plots show the paper's protocol. `tasks` and `embedding_groups` (default
    `groups`) are those the REG-PAML model was trained with, for its embedding plot;
    `extra_pngs` are further plots to include.
    """
    all_user_metrics = with_protocol(pl.concat(
        [EMPTY_USER_METRICS, *(e.frame("user_metrics") for e in evals if e.frame("user_metrics").height)], how="diagonal_relaxed"))
    metrics = with_protocol(pl.concat([EMPTY_METRICS, *(e.frame("metrics") for e in evals if e.frame("metrics").height)],
                                      how="diagonal_relaxed"))
    significance = paired_comparisons(seed_averaged_errors(all_user_metrics), best_baselines(metrics))
    t1, t3 = table1(groups), group_table(all_user_metrics)
    t2 = table2(metrics, significance, metric_coverage(all_user_metrics))
    diagnostics = diagnostics_summary(all_user_metrics)
    user_metrics = paper_rows(all_user_metrics)
    t4 = ablation_table(ablations, user_metrics)
    histories = pl.concat([b.frame("history").with_columns(pl.lit(d).alias("dataset"))
                           for per_dataset in models.values() for d, b in per_dataset.items()], how="diagonal_relaxed") \
        if any(models.values()) else pl.DataFrame()
    pngs: dict[str, bytes] = {}
    for dataset in sorted(user_metrics["dataset"].unique().to_list()):
        pngs[f"errors_{dataset}.png"] = error_boxplots(user_metrics, dataset)
        adaptation_png = adaptation_plot(user_metrics, paper_rows(diagnostics), dataset, STEP_SIZE_CV_TARGET)
        if adaptation_png:  # shown in the diagnostics section, beside Table 3
            pngs[f"{ADAPTATION_PLOT}_{dataset}.png"] = adaptation_png
        lr_png = lr_histograms(user_metrics, dataset, PAML_METHODS)
        if lr_png:
            pngs[f"learning_rates_{dataset}.png"] = lr_png
        if histories.height and dataset in histories["dataset"].to_list():
            pngs[f"training_curves_{dataset}.png"] = validation_curves(histories, dataset)
        reg = models.get("reg_paml", {}).get(dataset)
        embedding_groups = embedding_groups or groups
        if reg is not None and dataset in tasks and dataset in embedding_groups:
            h, group = test_embeddings(reg, tasks[dataset], embedding_groups[dataset])
            pngs[f"embeddings_{dataset}.png"] = embedding_map(h, group, f"{dataset}: REG-PAML user embeddings (test users, PCA)")
    pngs |= extra_pngs or {}
    frames = {"table1": t1, "table2": t2, "table3": t3, "table4": t4, "significance": significance, "diagnostics": diagnostics}
    # Why a share of 1.000 or a major share of 1.000 / 0.000 is no finding (assets/user_groups.py `group_notes`).
    notes = {dataset: n for dataset, b in sorted(groups.items())
             if (n := group_notes(b.frame("table1"), b.frame("shares"), tuple(b.info.get("tagging_fields", ()))))}
    return Bundle(frames=frames, info={"plots": sorted(pngs), **({"table1_notes": notes} if notes else {})}), pngs


@dataclass(frozen=True)
class Provenance:
    """Where the report's numbers come from: the header of report.md."""

    run_id: str  # the Dagster run that wrote the report
    written_at: str  # UTC
    commit: str  # git commit of the code, with a note when the work tree had changes
    seeds: str  # which seeds the models were trained with
    devices: str  # training devices recorded in the models
    protocols: str  # training protocols recorded in the models ('paper', 'production')
    threads: int  # torch threads of the process that evaluated and wrote the report
    machine: str
    software: str
    runs: pl.DataFrame  # run_id, job_name, written, datasets, assets: runs that wrote the inputs
    data_files: pl.DataFrame  # dataset, file, sha256: raw files behind each dataset's tasks


def provenance_markdown(p: Provenance) -> str:
    """The provenance section: one line per fact, then the runs and data files as tables."""
    runs = markdown_table(p.runs) if p.runs.height else "(no stored inputs)"
    files = markdown_table(p.data_files) if p.data_files.height else "(no raw files recorded)"
    return "\n".join([
        "## Provenance", "",
        f"- written {p.written_at} by Dagster run `{p.run_id}`",
        f"- code: commit {p.commit}",
        f"- seeds: {p.seeds}; the reference predictors are deterministic",
        f"- training protocol: {p.protocols}; training device: {p.devices}; torch threads (evaluation and report): {p.threads}",
        f"- machine: {p.machine}; {p.software}", "",
        "Runs that wrote this report's inputs (newest artifact of each input):", "", runs, "",
        "Raw data files behind each dataset's task tensors (SHA-256 as recorded in the lineage store when read):", "",
        files,
    ])


# Plot file prefixes in the order shown, with the caption above each.
PLOT_CAPTIONS = {
    "errors": "Per-user test error of every method, major vs minor users (the paper's Figs. 5-6, split by group).",
    "learning_rates": "The inner learning rate each test user got from the PAML family, major vs minor users.",
    "embeddings": "REG-PAML's user embeddings of the test users, PCA (the paper's Fig. 11 uses t-SNE).",
    "training_curves": "Validation error per epoch while meta-training (mean over seeds).",
    "test_metrics_over_days": "Each method's test error by the newest day of logs its model in service saw "
                              "(one point per retraining night; from the view test_metrics_over_days).",
}
TABLE4_METHODS = ("paml", "at_paml")  # beside the gamma rows, as in the paper
ADAPTATION_PLOT = "adaptation"  # file prefix of the diagnostics plot (in its section, not under Plots)
ADAPTATION_CAPTION = ("Left: each test user's adaptation gain (query loss before minus after the inner loop, mean over "
                      "seeds), major vs minor users; above 0 the inner loop helped. Right: the step size's cv across "
                      "each group's users; the dashed line is the target.")

READING_GUIDE = [
    "## How to read it", "",
    "- Mean ± sd over seeds (no ± for a single seed or a deterministic reference row). ↓ lower is better, ↑ higher is better. **Bold**: best in its column "
    "(reference rows included). `*` (in the error column, MSE or NEL): a PAML method better than the best baseline "
    f"({', '.join(method_name(m) for m in BASELINES)}) by a two-tailed paired t-test of per-user error "
    "(averaged over seeds; the same test users), p < 0.05. `(paper x)`: the paper's value.",
    f"- Per-user error: {ERROR_NAMES['rating']} on the rating datasets, {ERROR_NAMES['ctr']} on clicks. "
    f"{METRICS['nel'].label}: log-loss / entropy of the training click rate (He et al. 2014), "
    "averaged over users weighted by impressions.",
    "- Reference predictors are not in the paper: they are scored on the same test users and query sets, "
    "tuned on validation users, and listed apart, under their own heading, below the paper's methods.",
    "- Protocol: Tables 1-4, the paired comparisons and the plots follow the paper's protocol (fitting on the "
    "training users only). Rows fitted with the warm users' ratings too (the production protocol) are in "
    "their own block at the end, labelled as such, never mixed with the paper's rows.",
    "- — : no results, or a value undefined on these users (an AUC without both classes, a group without users) "
    "or in one of the seeds; "
    "the lines under the table say which, why, and the commands that make missing results.",
]


PAIRED_INTRO = (
    "Per-user error of every method against the best baseline and against each classic reference "
    f"({', '.join(method_name(r) for r in PAIRED_REFERENCES)}), over the same test users: the mean error "
    "difference, row minus column (negative: the row is better), its 95% paired bootstrap interval "
    f"({BOOTSTRAP_RESAMPLES:,} resamples of test users) and the two-tailed paired t-test p-value; **bold**: "
    "p < 0.05, each test on its own (no correction for the number of comparisons: at this level about one in 20 "
    "of the comparisons without a real difference comes out bold). Per-user errors are averaged over seeds first."
)


def render_markdown(tables: Bundle, pngs: dict[str, bytes], header: str, image: Callable[[str, bytes], str],
                    datasets: Sequence[str], expected: Sequence[str]) -> str:
    """The report as Markdown; `image(name, png)` writes one plot (a file link, or an embedded copy).

    The paper's tables and the paired comparisons show the paper's protocol; the production block
    (only when such rows exist) follows the plots.
    """
    t1, t4 = tables.frame("table1"), tables.frame("table4")
    t2, t3, significance, diagnostics = (tables.frame(name) for name in ("table2", "table3", "significance", "diagnostics"))
    adaptation_plots = {d: f"{ADAPTATION_CAPTION}\n\n{image(n, pngs[n])}" for d in datasets
                        if (n := f"{ADAPTATION_PLOT}_{d}.png") in pngs}
    t1_blocks = [markdown_table(t1.filter(pl.col("dataset").is_in(datasets)).select(
        pl.col("dataset").replace_strict({d: dataset_name(d) for d in datasets}, return_dtype=pl.String),
        pl.col("item").alias("statistic"), "ours", "paper"))] if t1.height else []
    t1_notes = tables.info.get("table1_notes", {})
    t1_blocks += [f"{dataset_name(d)}: " + "; ".join(t1_notes[d]) + "." for d in datasets if t1_notes.get(d)]
    t1_blocks += [no_dataset_line(d, "user groups") for d in datasets if d not in set(t1["dataset"])]
    with_results = set(paper_rows(t2)["dataset"])
    ablated = {d for d, v in t4.select("dataset", "variant").iter_rows() if v.startswith("reg_paml (")} if t4.height else set()
    no_ablation = [f"No gamma ablation for {d}; build it: `.venv/bin/dagster asset materialize -m pipelines "
                   f"--select reg_paml_gamma_ablation --partition {d}`, then `evaluation_job`."
                   for d in datasets if d in with_results and d not in ablated]
    table4_paper = {gamma_label(k): v for k, v in paper.TABLE4_ML.items() if isinstance(k, float)} \
        | {k: v for k, v in paper.TABLE4_ML.items() if isinstance(k, str)}
    sections = [
        "# PAML reproduction report", "",
        "Our runs of the experiments of Yu et al., \"Personalized Adaptive Meta Learning for Cold-start User "
        "Preference Prediction\" (AAAI 2021): its Tables 1-4 with our numbers beside the paper's, plus reference "
        "predictors the paper does not have.", "",
        header, "", *READING_GUIDE, "",
        "## Table 1: feature concentration and group shares", "", "\n\n".join(t1_blocks), "",
        "## Table 2: methods by dataset and metric", "", markdown_table2(paper_rows(t2), datasets, expected), "",
        "## Table 3: major vs minor users (per-user error; two-tailed t-test, minor vs major)", "",
        markdown_group_table(paper_rows(t3), "method", datasets, expected, paper.TABLE3_ML), "",
        "## Personalization diagnostics", "", DIAGNOSTICS_INTRO, "",
        markdown_diagnostics(paper_rows(diagnostics), datasets, adaptation_plots), "",
        "## Paired comparisons (per-user error, same test users)", "", PAIRED_INTRO, "",
        markdown_paired(paper_rows(significance), datasets), "",
        "## Table 4: REG-PAML's gamma ablation, PAML, AT-PAML and the reference rows", "",
        markdown_group_table(t4, "variant", datasets, [m for m in expected if m in TABLE4_METHODS or m.startswith("ref_")],
                             table4_paper, what="ablation"),
        *(["", *no_ablation] if no_ablation else []), "",
        "## Plots", "",
    ]
    if not pngs:
        sections += ["No plots yet: no dataset has evaluation results.", ""]
    for dataset in datasets:
        names = [f"{kind}_{dataset}.png" for kind in PLOT_CAPTIONS if f"{kind}_{dataset}.png" in pngs]
        if names:
            sections += [f"### {dataset_name(dataset)} (`{dataset}`)", ""]
            sections += [f"{PLOT_CAPTIONS[n.removesuffix(f'_{dataset}.png')]}\n\n{image(n, pngs[n])}\n" for n in names]
    sections += production_block(t2, t3, significance, datasets, diagnostics)
    return "\n".join(sections) + "\n"


def production_block(t2: pl.DataFrame, t3: pl.DataFrame, significance: pl.DataFrame, datasets: Sequence[str],
                     diagnostics: pl.DataFrame) -> list[str]:
    """The rows fitted with the warm users too, as Tables 2-3, the diagnostics (when a meta-learner
    was fitted so) and the paired comparisons, under their own heading (nothing when there are
    none). One protocol besides the paper's is known (models/references.py PROTOCOL_SPLITS);
    each gets its own block should there be more."""
    blocks = []
    for protocol in sorted(set(t2["protocol"]) - {DEFAULT_PROTOCOL}):
        t2_rows, t3_rows, paired = (frame.filter(pl.col("protocol") == protocol) for frame in (t2, t3, significance))
        diagnosed = diagnostics.filter(pl.col("protocol") == protocol)
        shown = [d for d in datasets if d in set(t2_rows["dataset"])]
        blocks += [
            f"## {protocol.capitalize()} protocol (warm users' ratings available for fitting)", "",
            f"Rows with `protocol = '{protocol}'` in the DuckDB views. The same test users and query sets as above; the "
            "fitting data adds the warm users the paper's protocol drops. Only the rows fitted this way are listed "
            "(no line for the methods that were not); `*`, bold and the paired tests compare them with each other only.", "",
            f"### As Table 2 ({protocol} protocol)", "", markdown_table2(t2_rows, shown, ()), "",
            f"### As Table 3 ({protocol} protocol)", "", markdown_group_table(t3_rows, "method", shown, ()), "",
            *([f"### Personalization diagnostics ({protocol} protocol)", "",
               markdown_diagnostics(diagnosed, [d for d in shown if d in set(diagnosed["dataset"])]), ""]
              if diagnosed.height else []),
            f"### Paired comparisons ({protocol} protocol)", "", markdown_paired(paired, shown), "",
        ]
    return blocks


def write_report(directory: Path, text: str, pngs: dict[str, bytes]) -> Path:
    """Replace `directory` with the new report (staged, then renamed).

    The old report is renamed aside before the new one takes its place and removed after, so a
    killed run leaves the old report or the new one in place (but for a kill in the instant between
    the two renames, which leaves them as `.reports.old.<hex>` and `.reports.<hex>`), and two reports written at once (two
    runs on one home) both succeed, the last one staying: removing the old one in place let the
    other writer's report land in between, and the rename failed ("Directory not empty").
    Writers take turns (a lock beside the directory), so a staged or set-aside copy found under the
    lock is a killed writer's, and is removed.
    """
    with file_lock(directory.with_name(f".{directory.name}.lock")):
        remove_staged(directory.parent, directory.name)
        return _replace_report(directory, text, pngs)


def _replace_report(directory: Path, text: str, pngs: dict[str, bytes]) -> Path:
    """Stage the report beside `directory`, then swap it in (the old one set aside, then removed)."""
    import errno

    staging = directory.with_name(f".{directory.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    (staging / "report.md").write_text(text)
    for name, png in pngs.items():
        (staging / name).write_bytes(png)
    for _ in range(100):
        old = directory.with_name(f".{directory.name}.old.{uuid.uuid4().hex}")
        try:
            os.replace(directory, old)
        except FileNotFoundError:
            pass
        try:
            os.replace(staging, directory)
            break
        except OSError as error:  # another report landed between the two renames: move it aside too
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        raise OSError(f"could not put the report in {directory}: other writers kept replacing it")
    return directory / "report.md"


def code_commit(root: Path) -> str:
    """`abc123def456` of the checkout at `root`, noting uncommitted changes; 'unknown' outside git."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"`{commit}`" + (" with uncommitted changes" if dirty else "")


def seeds_text(models: dict[str, dict[str, Bundle]]) -> str:
    """'0, 1, 2 (every model)', or the seeds of each method and dataset when they differ."""
    seeds = {f"{method_name(m)} on {d}": tuple(b.info["seeds"]) for m, per in models.items() for d, b in sorted(per.items())}
    if not seeds:
        return "none (no trained models)"
    if len(set(seeds.values())) == 1:
        return f"{', '.join(map(str, next(iter(seeds.values()))))} (every model)"
    return "; ".join(f"{name}: {', '.join(map(str, s))}" for name, s in seeds.items())


# -- Dagster asset -------------------------------------------------------------------------
import dagster as dg  # noqa: E402

from assets.plots import markdown_image  # noqa: E402
from assets.specs import all_datasets  # noqa: E402
from models.configs import METHOD_NAMES  # noqa: E402
from pipelines.lineage import ANCESTORS_SQL, LATEST_SQL  # noqa: E402
from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.locations import REPO_ROOT  # noqa: E402
from pipelines.provenance import machine  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402
from pipelines.store import LineageStore, PartitionNotBuiltError  # noqa: E402

EVAL_INPUTS = {f"{m}_eval": dg.AssetIn(f"{m}_eval") for m in METHOD_NAMES} | {"reference_eval": dg.AssetIn("reference_eval")}
CHAMPION_INPUTS = {f"{m}_champion": dg.AssetIn(f"{m}_champion") for m in METHOD_NAMES}
# Every row the report expects per dataset; rows evaluated but not listed here appear as well.
EXPECTED_ROWS = (*METHOD_NAMES, *(f"ref_{name}" for name in REFERENCES))
INPUT_ASSETS = (*EVAL_INPUTS, *CHAMPION_INPUTS, *(f"{m}_model" for m in METHOD_NAMES), "reg_paml_gamma_ablation",
                "user_groups", "meta_tasks")

RUNS_SQL = """
WITH newest AS (
    SELECT * FROM artifacts WHERE kind = 'bundle' AND list_contains(?, asset_key)
    QUALIFY row_number() OVER (PARTITION BY asset_key, partition ORDER BY seq DESC) = 1
)
SELECT n.run_id AS run, r.job_name AS job, strftime(max(n.created_at), '%Y-%m-%d %H:%M') AS written,
       string_agg(DISTINCT nullif(n.partition, ''), ', ' ORDER BY nullif(n.partition, '')) AS datasets,
       string_agg(DISTINCT n.asset_key, ', ' ORDER BY n.asset_key) AS assets
FROM newest n LEFT JOIN runs r USING (run_id)
GROUP BY ALL ORDER BY max(n.created_at), run  -- the minute alone left runs of one minute in any order
"""


def gather_provenance(store: LineageStore, run_id: str, models: dict[str, dict[str, Bundle]], datasets: Sequence[str]) -> Provenance:
    """Runs, raw files (from the lineage store), code, seeds and machine behind this report."""
    import datetime
    import sys

    import torch

    files = []
    for dataset in datasets:
        tasks_id = store.query(LATEST_SQL, ["meta_tasks", dataset])
        if tasks_id.height:
            raw = store.query(ANCESTORS_SQL, [tasks_id.item()]).filter(pl.col("kind") == "raw_file")
            files += [{"dataset": dataset, "file": r["location"], "sha256": r["content_hash"][:16]} for r in raw.iter_rows(named=True)]
    recorded = lambda key, default: sorted({str(b.info["train_config"].get(key, default))  # noqa: E731
                                            for per in models.values() for b in per.values()})
    return Provenance(
        run_id=run_id, written_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=code_commit(REPO_ROOT), seeds=seeds_text(models), devices=", ".join(recorded("device", "cpu")) or "none",
        protocols=", ".join(recorded("protocol", "paper")) or "none",
        threads=torch.get_num_threads(), machine=machine(),
        software=f"Python {sys.version.split()[0]}, torch {torch.__version__}, dagster {dg.__version__}",
        runs=store.query(RUNS_SQL, [list(INPUT_ASSETS)]),
        data_files=pl.DataFrame(files, schema={"dataset": pl.String, "file": pl.String, "sha256": pl.String}),
    )


def days_plots(paml: PamlResource) -> dict[str, bytes]:
    """`test_metrics_over_days_<dataset>.png` for every dataset evaluated on two or more windows of days."""
    import duckdb

    from assets.promotion import metrics_over_days

    try:
        history = paml.store().query("SELECT * FROM test_metrics_over_days")
    except duckdb.CatalogException:  # no evaluation has written its history yet
        return {}
    plots = {}
    for dataset in sorted(set(history["dataset"])):
        if history.filter(pl.col("dataset") == dataset)["last_day"].n_unique() > 1:
            plots[f"test_metrics_over_days_{dataset}.png"] = metrics_over_days(history, dataset)
    return plots


def production_runs(store: LineageStore, load: Callable[[str], Bundle]) -> list[Bundle]:
    """The newest `production_protocol` scores of every dataset that has them (none: no production rows).

    Read from the store rather than declared as an input: the asset is built on request
    (`production_job`, `make reproduce`), and a report must not wait for it.
    """
    runs = []
    for dataset in all_datasets():
        try:
            runs.append(load(store.latest("production_protocol", dataset).artifact_id))
        except PartitionNotBuiltError:
            continue
    return runs


@dg.asset(
    group_name="report", kinds={"markdown", "duckdb"}, code_version="3",
    ins={**EVAL_INPUTS, **CHAMPION_INPUTS, "ablation": dg.AssetIn("reg_paml_gamma_ablation"), "groups": dg.AssetIn("user_groups")},
    description="The paper's Tables 1-4 with reference rows, paired tests, plots and a production-protocol block, of the models in service: "
                "Markdown + PNG under PAML_HOME/reports.",
)
def report(context: dg.AssetExecutionContext, paml: PamlResource, ablation, groups, **inputs) -> dg.MaterializeResult:
    from functools import cache

    from assets.promotion import in_service

    store = paml.store()
    load = cache(lambda artifact: store.load(store.row(artifact)))
    services = {m: in_service(inputs[f"{m}_champion"], load) for m in METHOD_NAMES}
    models = {m: {d: s["model"] for d, s in service.items()} for m, service in services.items()}
    reg = services["reg_paml"]
    production = production_runs(store, load)
    bundle, pngs = build_report([*(inputs[name] for name in EVAL_INPUTS), *production], ablation, groups,
                                {d: s["tasks"] for d, s in reg.items()}, models,
                                embedding_groups={d: s["groups"] for d, s in reg.items()}, extra_pngs=days_plots(paml))
    loaded = tuple(sorted({b.artifact_id for service in services.values() for s in service.values()
                           for b in (s["model"], s["tasks"], s["groups"])} | {b.artifact_id for b in production}))
    bundle = Bundle(frames=bundle.frames, info=bundle.info, inputs=loaded)
    datasets = all_datasets()
    header = provenance_markdown(gather_provenance(store, context.run.run_id, models, datasets))
    text = render_markdown(bundle, pngs, header, lambda name, _: f"![{name}]({name})", datasets, EXPECTED_ROWS)
    path = write_report(paml.home_path / "reports", text, pngs)
    # The UI cannot reach files beside report.md: the metadata copy embeds each plot once.
    inline = render_markdown(bundle, pngs, header, lambda name, png: markdown_image(png, name), datasets, EXPECTED_ROWS)
    for dataset in datasets:  # the numbers that show the step size is personal, in the run's log
        if line := targets_line(paper_rows(bundle.frame("diagnostics")).filter(pl.col("dataset") == dataset)):
            context.log.info(f"{dataset}: {line}")
    return bundle_output(bundle, report_path=dg.MetadataValue.path(str(path)), report=dg.MetadataValue.md(inline),
                         table2=table(bundle.frame("table2")), table3=table(bundle.frame("table3")),
                         table4=table(bundle.frame("table4")), diagnostics=table(bundle.frame("diagnostics")),
                         plots=", ".join(sorted(pngs)) or "none")
