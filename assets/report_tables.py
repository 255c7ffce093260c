"""The paper's tables computed from our evaluation frames (pure polars/scipy), and their Markdown.

Table 2: every method and reference row, by dataset, protocol and metric, mean +- sd over
seeds, best marked, `*` where a PAML method beats the best baseline by a paired t-test.
Table 3: error of major vs minor users and the (unpaired) t-test p-value. Table 4: REG-PAML's
gamma ablation. Paired comparisons: every method against the best baseline and the classic
references. Per-user errors are averaged over seeds before a test (the users are the samples).
Every frame keeps a `protocol` column ('paper' or 'production', models/references.py
PROTOCOL_SPLITS) among its keys, so the two protocols are never averaged together; one
Markdown table shows one protocol. Frames keep the code names (`reg_paml`, `ref_item_mean`);
the Markdown shows the paper's.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from assets import paper
from assets.evaluation import SIGNIFICANCE_SCHEMA, with_protocol
from assets.markdown import markdown_table
from models import metrics as M
from models.configs import DEFAULT_PROTOCOL, PROTOCOL_SPLITS


@dataclass(frozen=True)
class MethodRow:
    """How one method appears in the report."""

    code: str  # the `method` value in our frames and DuckDB tables
    name: str  # the paper's name (or the reference row's plain name)
    section: str  # one of SECTIONS


BASELINES_SECTION, PAML_SECTION, OTHER_SECTION, REFERENCE_SECTION = (
    "baselines", "PAML (ours)", "other methods", "reference predictors (not in the paper)")
SECTIONS = (BASELINES_SECTION, PAML_SECTION, OTHER_SECTION, REFERENCE_SECTION)

# Names and row order of every table: the paper's Table 2 (baselines, then the PAML family),
# then the reference rows, set apart. A method that is not listed here still appears (under
# its code name, after the listed rows of its section: `ref_*` is a reference row).
METHOD_ROWS = (
    MethodRow("melu", "MeLU", BASELINES_SECTION),
    MethodRow("meta_sgd", "Meta-SGD", BASELINES_SECTION),
    MethodRow("transfer", "Transfer learning", BASELINES_SECTION),
    MethodRow("paml", "PAML", PAML_SECTION),
    MethodRow("at_paml", "AT-PAML", PAML_SECTION),
    MethodRow("reg_paml", "REG-PAML", PAML_SECTION),
    MethodRow("ref_global_mean", "global mean", REFERENCE_SECTION),
    MethodRow("ref_item_mean", "item mean", REFERENCE_SECTION),
    MethodRow("ref_user_item_bias", "user + item bias", REFERENCE_SECTION),
    MethodRow("ref_mf", "MF (fold-in)", REFERENCE_SECTION),
    MethodRow("ref_item_knn", "item-kNN", REFERENCE_SECTION),
    MethodRow("ref_mf_knn", "MF + kNN blend", REFERENCE_SECTION),
)
METHOD_BY_CODE = {row.code: row for row in METHOD_ROWS}
BASELINES = tuple(r.code for r in METHOD_ROWS if r.section == BASELINES_SECTION)
PAML_METHODS = tuple(r.code for r in METHOD_ROWS if r.section == PAML_SECTION)


@dataclass(frozen=True)
class MetricColumn:
    """A metric's column header and direction."""

    label: str
    lower_is_better: bool

    @property
    def header(self) -> str:
        return f"{self.label} {'↓' if self.lower_is_better else '↑'}"


# Columns in the paper's order (rating metrics, then click metrics).
METRICS = {
    "mse": MetricColumn("MSE", True), "ndcg@3": MetricColumn("nDCG@3", False), "ndcg@5": MetricColumn("nDCG@5", False),
    "auc": MetricColumn("AUC", False), "global_auc": MetricColumn("global AUC", False), "nel": MetricColumn("NEL", True),
}
LOWER_IS_BETTER = {code: metric.lower_is_better for code, metric in METRICS.items()}
# Why a metric is undefined (NaN, models/metrics.py) on every test user of a dataset, for the line under Table 2.
_NDCG_UNDEFINED = "a user's nDCG is undefined when no query rating has a positive gain 2^r - 1 (ideal DCG 0, e.g. every rating 0)"
UNDEFINED_REASONS = {
    "mse": "no test user has a query item",
    "ndcg@3": _NDCG_UNDEFINED, "ndcg@5": _NDCG_UNDEFINED,
    "auc": "a user's AUC needs a clicked and an unclicked item in the query set, which a query set of one item never has",
    "global_auc": "the pooled AUC needs clicked and unclicked items among the test users' query items",
    "nel": "no test user has a query impression",
}
DATASET_NAMES = {"movielens": "MovieLens-1M", "bookcrossing": "Book-Crossing", "taobao": "Taobao-like clicks"}
# The per-user error behind Tables 3-4, the box plots and the t-tests (assets/evaluation.py).
ERROR_NAMES = {"rating": "MSE", "ctr": "log-loss"}
SIGNIFICANCE_LEVEL = 0.05
# The Table 2 column of each task's per-user error (MSE; NEL, the normalized log-loss): the paired
# t-tests compare per-user errors, so they pick the best baseline and earn a `*` in this column only.
ERROR_METRICS = ("mse", "nel")
# The classic references every method is paired against (issue 9 item 7, issue 15).
PAIRED_REFERENCES = ("ref_user_item_bias", "ref_mf", "ref_item_knn", "ref_mf_knn")
BOOTSTRAP_SEED = 0
# Protocols in report order: the paper's first (its tables), then the others (their own block).
PROTOCOL_ORDER = {protocol: i for i, protocol in enumerate([DEFAULT_PROTOCOL, *(p for p in PROTOCOL_SPLITS if p != DEFAULT_PROTOCOL)])}


def method_name(code: str) -> str:
    """The paper's name of a method code; unknown codes as they are."""
    return METHOD_BY_CODE[code].name if code in METHOD_BY_CODE else code


def method_section(code: str) -> str:
    """The section a method's row belongs to."""
    if code in METHOD_BY_CODE:
        return METHOD_BY_CODE[code].section
    return REFERENCE_SECTION if code.startswith("ref_") else OTHER_SECTION


def method_order(codes: Sequence[str]) -> list[str]:
    """`codes` in report order: by section, then METHOD_ROWS order, then unknown codes by name."""
    position = {row.code: i for i, row in enumerate(METHOD_ROWS)}
    return sorted(set(codes), key=lambda c: (SECTIONS.index(method_section(c)), position.get(c, len(position)), c))


def dataset_name(dataset: str) -> str:
    """'movielens' -> 'MovieLens-1M'; unknown datasets as they are."""
    return DATASET_NAMES.get(dataset, dataset)


def error_name(dataset: str) -> str:
    """The per-user error measure of a dataset: 'MSE' for ratings, 'log-loss' for clicks."""
    from assets.specs import spec_for

    try:
        return ERROR_NAMES[spec_for(dataset).task]
    except ValueError:  # a dataset no longer registered
        return "error"


def rank_of(labels: Sequence[str]) -> dict[str, int]:
    """Row label -> its position in report order."""
    return {label: i for i, label in enumerate(variant_order(labels))}


def protocol_rank() -> pl.Expr:
    """The `protocol` column's position in report order (the paper's first; unknown ones last)."""
    return pl.col("protocol").replace_strict(PROTOCOL_ORDER, default=len(PROTOCOL_ORDER), return_dtype=pl.Int64)


def in_report_order(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """Rows by dataset, protocol (the paper's first), then `label` in report order (so SQL views
    list them as the report does)."""
    keys = ["dataset", protocol_rank()] if "protocol" in frame.columns else ["dataset"]
    return frame.sort(*keys, pl.col(label).replace_strict(rank_of(frame[label]), return_dtype=pl.Int64))


def seed_averaged_errors(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """One row per (dataset, protocol, method, user): error averaged over seeds, with the user's group."""
    return with_protocol(user_metrics).group_by("dataset", "protocol", "method", "user_id").agg(
        pl.col("error").mean(), pl.col("group").first(), pl.col("lr").mean()
    )


def best_baselines(metrics: pl.DataFrame) -> dict[tuple[str, str], str]:
    """Per (dataset, protocol), the baseline (MeLU, Meta-SGD, transfer) with the lowest mean primary error."""
    primary = (
        with_protocol(metrics)
        .filter((pl.col("population") == "all") & pl.col("metric").is_in(ERROR_METRICS) & pl.col("method").is_in(BASELINES))
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
        for method in method_order(by_method):
            for comparison, other in others:
                if other == method:
                    continue
                # In user order: the bootstrap resamples positions, so the same users in another
                # order (group_by's order varies between runs) would give another interval.
                pairs = by_method[method].join(by_method[other], on="user_id", suffix="_other").drop_nulls().sort("user_id")
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
    frame = pl.DataFrame(rows, schema=SIGNIFICANCE_SCHEMA)
    return frame.sort("dataset", protocol_rank(), pl.col("method").replace_strict(rank_of(frame["method"]), return_dtype=pl.Int64),
                      "comparison", pl.col("other").replace_strict(rank_of(frame["other"]), return_dtype=pl.Int64))


PER_USER_METRICS = ("mse", "ndcg@3", "ndcg@5", "auc", "nel")  # user_metrics columns averaged over users into Table 2
RANKING_METRICS = ("ndcg@3", "ndcg@5")


def metric_coverage(user_metrics: pl.DataFrame) -> pl.DataFrame:
    """dataset, protocol, method, metric, n_users (test users scored), n_defined (those whose value is a
    number), n_single (of those, users with a single query item; ranking metrics only, else null),
    n_common (test users that every row of the dataset and protocol scored).

    Table 2's per-user means skip users where a metric is undefined (an AUC without both classes, an
    nDCG without a positive gain), so a mean may stand for few of the users; and a user with one query
    item has nDCG 1 whatever the model predicts, so a mean over many such users cannot tell methods apart.
    """
    present = [m for m in PER_USER_METRICS if m in user_metrics.columns]
    schema = {"dataset": pl.String, "protocol": pl.String, "method": pl.String, "metric": pl.String,
              "n_users": pl.Int64, "n_defined": pl.Int64, "n_single": pl.Int64, "n_common": pl.Int64}
    if not present or user_metrics.height == 0:
        return pl.DataFrame(schema=schema)
    frame = with_protocol(user_metrics)
    # Stores written before user_metrics had n_query: the single-item count is unknown (null).
    single_query = pl.col("n_query") == 1 if "n_query" in frame.columns else pl.lit(None, dtype=pl.Boolean)
    long = frame.with_columns(single_query=single_query).unpivot(
        on=present, index=["dataset", "protocol", "method", "user_id", "single_query"], variable_name="metric")
    defined = pl.col("value").is_not_null() & pl.col("value").is_not_nan()
    # Users every row of the (dataset, protocol) scored: fewer than a row's n_users when models in
    # service were trained on different tasks (each is evaluated on its own tasks' test users).
    methods = frame.group_by("dataset", "protocol").agg(n_methods=pl.col("method").n_unique())
    common = (frame.group_by("dataset", "protocol", "user_id").agg(n=pl.col("method").n_unique())
              .join(methods, on=["dataset", "protocol"]).filter(pl.col("n") == pl.col("n_methods"))
              .group_by("dataset", "protocol").agg(n_common=pl.len().cast(pl.Int64)))
    return long.group_by("dataset", "protocol", "method", "metric").agg(
        n_users=pl.col("user_id").n_unique().cast(pl.Int64),
        n_defined=pl.col("user_id").filter(defined).n_unique().cast(pl.Int64),
        n_single=pl.when(pl.col("single_query").is_null().any()).then(None)
        .otherwise(pl.col("user_id").filter(defined & pl.col("single_query")).n_unique()),
    ).with_columns(n_single=pl.when(pl.col("metric").is_in(RANKING_METRICS)).then(pl.col("n_single"))).join(
        common, on=["dataset", "protocol"], how="left").with_columns(pl.col("n_common").fill_null(0)).cast(schema)


def table2(metrics: pl.DataFrame, significance: pl.DataFrame, coverage: pl.DataFrame | None = None) -> pl.DataFrame:
    """dataset, protocol, method, metric, mean, sd, n_seeds, best, significant (all users).

    `best` and `significant` (a PAML method below the best baseline by the paired t-test of per-user
    error, p < 0.05; set on the error metric's row only, MSE or NEL) are judged within each protocol;
    the paper's values sit on paper-protocol rows.
    With `coverage` (`metric_coverage`), n_users and n_defined say over how many test users a
    per-user mean was taken. undefined_seeds: the seeds whose value is not a number ('1, 3'; null
    when none), which make the mean over seeds undefined.
    """
    undefined = pl.col("value").is_null() | pl.col("value").is_nan()
    table = (
        with_protocol(metrics).filter(pl.col("population") == "all")
        .group_by("dataset", "protocol", "method", "metric")
        # A seed with no value (null) makes the mean undefined, as a NaN does: polars' mean would skip it
        # and show one seed's value as the mean of n_seeds.
        .agg(mean=pl.col("value").fill_null(float("nan")).mean(), sd=pl.col("value").std().fill_null(0.0), n_seeds=pl.len(),
             undefined_seeds=pl.col("seed").filter(undefined).sort().cast(pl.String).str.join(", "))
        .with_columns(pl.col("undefined_seeds").replace("", None))
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
    # The paired test is on the per-user error, so only the error column earns the `*`: an nDCG or
    # AUC cell starred by it would claim a significance nobody tested (and could sit on a worse value).
    table = table.join(better, on=["dataset", "protocol", "method"], how="left").with_columns(
        pl.col("significant").fill_null(False) & pl.col("method").is_in(PAML_METHODS) & pl.col("metric").is_in(ERROR_METRICS)
    )
    paper_rows = [{"dataset": d, "protocol": DEFAULT_PROTOCOL, "method": m, "metric": k, "paper_mean": v[0], "paper_sd": v[1]}
                  for (d, m), values in paper.TABLE2.items() for k, v in values.items()]
    table = table.join(pl.DataFrame(paper_rows), on=["dataset", "protocol", "method", "metric"], how="left")
    if coverage is not None:
        table = table.join(coverage, on=["dataset", "protocol", "method", "metric"], how="left")
    metric_rank = {m: i for i, m in enumerate([*METRICS, *sorted(set(table["metric"]) - set(METRICS))])}
    return table.sort(
        "dataset", protocol_rank(), pl.col("method").replace_strict(rank_of(table["method"]), return_dtype=pl.Int64),
        pl.col("metric").replace_strict(metric_rank, return_dtype=pl.Int64))


GROUP_COLUMNS = ("mean_major", "sd_major", "mean_minor", "sd_minor")


def group_table(user_metrics: pl.DataFrame, label: str = "method") -> pl.DataFrame:
    """Table 3 shape: per dataset, protocol and `label`, error of major and minor users (mean +- sd
    over seeds; sd null with one seed) and the (unpaired: different users) Student t-test p-value,
    minor vs major."""
    keys = ["dataset", "protocol", label]
    # Sums in one order whatever the rows' order: group_by's groups come in a random order per process,
    # and two runs of the same models gave other last digits (and the columns in another order).
    user_metrics = with_protocol(user_metrics).sort(*keys, "seed", "user_id", "group", maintain_order=True)
    per_seed = user_metrics.group_by(*keys, "seed", "group", maintain_order=True).agg(pl.col("error").mean())
    # One seed has no spread: its sd stays null (shown without ±, as Table 2 shows it), not a measured 0.
    spread = per_seed.sort(*keys, "group", "seed").group_by(*keys, "group", maintain_order=True).agg(
        mean=pl.col("error").mean(), sd=pl.col("error").std())
    wide = spread.pivot(on="group", index=keys, values=["mean", "sd"])
    from scipy import stats  # late, as in models.metrics.ttest_groups: slow to load, needed only here

    rows = []
    errors = user_metrics.group_by(*keys, "user_id", maintain_order=True).agg(pl.col("error").mean(), pl.col("group").first())
    for (dataset, protocol, key), part in errors.group_by(*keys, maintain_order=True):
        major = part.filter(pl.col("group") == "major")["error"].drop_nulls().to_numpy()
        minor = part.filter(pl.col("group") == "minor")["error"].drop_nulls().to_numpy()
        with M.identical_values_quiet():
            p_value = float(stats.ttest_ind(minor, major).pvalue) if len(major) > 1 and len(minor) > 1 else float("nan")
        rows.append({"dataset": dataset, "protocol": protocol, label: key, "p_value": p_value})
    # Both groups' columns always exist (the DuckDB views select them), even when a group has no users.
    wide = wide.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in GROUP_COLUMNS if c not in wide.columns)
    wide = wide.select(*keys, *sorted(c for c in wide.columns if c not in keys))
    p_values = pl.DataFrame(rows, schema={"dataset": pl.String, "protocol": pl.String, label: pl.String, "p_value": pl.Float64})
    return in_report_order(wide.join(p_values, on=keys, how="left"), label)


GAMMA_LABEL_PREFIX = "reg_paml (gamma="


def gamma_label(gamma: float) -> str:
    """'reg_paml (gamma=1e-05)': the row label (in frames and DuckDB) of one ablation setting."""
    return f"{GAMMA_LABEL_PREFIX}{gamma:g})"


def label_gamma(label: str) -> float | None:
    """The gamma of an ablation row label; None for any other row."""
    return float(label[len(GAMMA_LABEL_PREFIX):-1]) if label.startswith(GAMMA_LABEL_PREFIX) else None


def variant_method(label: str) -> str:
    """The method code behind a Table 3/4 row label."""
    return "reg_paml" if label_gamma(label) is not None else label


def variant_name(label: str) -> str:
    """'REG-PAML (γ = 1e-05)' for an ablation row, else the method's name."""
    gamma = label_gamma(label)
    return f"{method_name('reg_paml')} (γ = {gamma:.0e})".replace("e-0", "e-") if gamma is not None else method_name(label)


def variant_order(labels: Sequence[str]) -> list[str]:
    """Ablation rows by gamma ascending (the paper's Table 4), then every method in report order."""
    labels = set(labels)
    gammas = sorted((label for label in labels if label_gamma(label) is not None), key=label_gamma)
    return gammas + method_order([label for label in labels if label_gamma(label) is None])

# -- Markdown --------------------------------------------------------------------------------

NOT_EVALUATED = "—"


def number_format(mean: float) -> str:
    """The format of a table cell's mean and sd: three decimals, unless the mean is below 0.1 in size
    (a 0-1 or 0-0.005 rating scale's MSE), which keeps three significant digits instead, so that such a
    table does not read 0.000 in every cell; below 1e-4, in powers of ten."""
    if mean == 0 or abs(mean) >= 0.1 or not math.isfinite(mean):
        return ".3f"
    return ".3g" if abs(mean) < 1e-4 else f".{2 - math.floor(math.log10(abs(mean)))}f"


def format_cell(mean: float | None, sd: float | None, best: bool = False, significant: bool = False) -> str:
    """'1.234 ± 0.010', bold when best, '*' when significantly better than the best baseline."""
    if mean is None or np.isnan(mean):
        return NOT_EVALUATED
    form = number_format(mean)
    text = f"{mean:{form}}" + (f" ± {sd:{form}}" if sd is not None else "") + ("*" if significant else "")
    return f"**{text}**" if best else text


def format_p(p_value: float | None) -> str:
    """A p-value with three decimals; '<0.001' below that; '—' when undefined (a group of < 2 users)."""
    if p_value is None or np.isnan(p_value):
        return NOT_EVALUATED
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def sectioned(rows: list[tuple[str, dict[str, str]]], columns: list[str]) -> pl.DataFrame:
    """(method code, cells) in report order -> a frame with a label row before every section the
    paper does not have (reference predictors, other methods), so those rows stand apart."""
    out, previous = [], None
    for code, cells in rows:
        section = method_section(code)
        if section != previous and section not in (BASELINES_SECTION, PAML_SECTION):
            out.append({columns[0]: f"*{section}*", **{c: "" for c in columns[1:]}})
        previous = section
        out.append(cells)
    return pl.DataFrame(out, schema={c: pl.String for c in columns}, orient="row")


def missing_line(dataset: str, missing: list[str]) -> str:
    """One line naming the methods without results on `dataset` and the commands that make them."""
    if not missing:
        return ""
    models = list(dict.fromkeys(f"{variant_method(m)}_model" for m in missing if not m.startswith("ref_")))
    train = (f"train: `.venv/bin/dagster asset materialize -m pipelines --select {','.join(models)} --partition {dataset}`, then "
             if models else "")
    return (f"No results for {', '.join(variant_name(m) for m in missing)} on {dataset} ({NOT_EVALUATED} above); "
            f"{train}evaluate: `.venv/bin/dagster job execute -m pipelines -j evaluation_job`.")


def no_dataset_line(dataset: str, what: str) -> str:
    """The line standing for a dataset without any rows in a table."""
    return (f"No {what} for {dataset_name(dataset)} (`{dataset}`) yet; build it with "
            f"`.venv/bin/python -m pipelines.cli demo --dataset {dataset}`.")


def per_dataset_markdown(table: pl.DataFrame, datasets: Sequence[str], what: str,
                         body: Callable[[str, pl.DataFrame], list[str | None]]) -> str:
    """One block per dataset: its heading, then `body(dataset, rows)`'s pieces (None skipped), or
    the line saying the dataset has no `what` yet."""
    blocks = []
    for dataset in datasets:
        part = table.filter(pl.col("dataset") == dataset)
        pieces = body(dataset, part) if part.height else [no_dataset_line(dataset, what)]
        blocks.append("\n\n".join(filter(None, [f"#### {dataset_name(dataset)} (`{dataset}`)", *pieces])))
    return "\n\n".join(blocks)


def one_protocol(table: pl.DataFrame, what: str) -> pl.DataFrame:
    """`table` as it is when its rows hold at most one protocol; a ValueError naming the protocols
    otherwise (a Markdown table keyed by method would show one protocol's row and drop the other's)."""
    protocols = sorted(set(table["protocol"].drop_nulls())) if "protocol" in table.columns else []
    if len(protocols) > 1:
        raise ValueError(f"{what}: rows of protocols {protocols} in one table; filter on `protocol` and render each apart")
    return table


def is_undefined(value: float | None) -> bool:
    """A stored value that is no number: NaN (undefined on these users) or null (nothing to average)."""
    return value is None or math.isnan(value)


def undefined_metrics_line(undefined: dict[str, list[str]], n_methods: int) -> str:
    """The line under Table 2 saying why a '—' stands where a method has results: per metric, the
    methods whose value is undefined on every test user and the metric's reason (UNDEFINED_REASONS)."""
    parts = []
    for metric, methods in undefined.items():
        who = "every method" if len(methods) == n_methods else ", ".join(method_name(m) for m in methods)
        header = METRICS[metric].label if metric in METRICS else metric
        parts.append(f"{header} ({who}): {UNDEFINED_REASONS.get(metric, 'not a number on these users')}")
    return f"{NOT_EVALUATED} where a row has results: undefined on every test user; " + "; ".join(parts) + "." if parts else ""


def undefined_seeds_line(cells: list[str]) -> str:
    """The line under Table 2 for a '—' whose metric is a number in some seeds and not in others (e.g. a
    run whose predictions diverged): the users are not the reason, so `undefined_metrics_line`'s is wrong."""
    return (f"{NOT_EVALUATED} where a row has results: no mean over seeds, the value of a seed is not a number "
            f"(see `metrics` per seed); " + "; ".join(cells) + ".") if cells else ""


def seeds_line(part: pl.DataFrame) -> str:
    """The line under Table 2 naming how many seeds each trained row averages when they differ (a model
    trained with fewer seeds than the others); the reference rows, deterministic, are left out."""
    trained = part.filter(~pl.col("method").map_elements(lambda m: method_section(m) == REFERENCE_SECTION,
                                                         return_dtype=pl.Boolean))
    counts = trained.group_by("method").agg(pl.col("n_seeds").max()) if trained.height else trained
    if not counts.height or counts["n_seeds"].n_unique() == 1:
        return ""
    by_count = {}
    for method in method_order(counts["method"].to_list()):
        by_count.setdefault(int(counts.filter(pl.col("method") == method)["n_seeds"].item()), []).append(method_name(method))
    listed = "; ".join(f"{', '.join(names)} over {n} seed{'s' if n != 1 else ''}" for n, names in sorted(by_count.items(), reverse=True))
    return f"Rows average different numbers of seeds (mean ± sd over each row's own seeds): {listed}."


def test_users_line(part: pl.DataFrame) -> str:
    """The line under Table 2 when rows were scored on different test users (a model in service trained
    on other tasks, e.g. an older window of days): their means are over different users, so the
    column's best is no like-for-like comparison; the paired comparisons pair the users both rows share
    (from `metric_coverage`'s n_users and n_common)."""
    if "n_common" not in part.columns or not part.filter(pl.col("n_users") != pl.col("n_common")).height:
        return ""
    counts = part.group_by("method").agg(pl.col("n_users").max(), pl.col("n_common").max())
    listed = ", ".join(f"{method_name(m)} {counts.filter(pl.col('method') == m)['n_users'].item():,}"
                       for m in method_order(counts["method"].to_list()))
    return (f"Rows were scored on different test users (a model in service trained on other tasks): {listed}; "
            f"{int(counts['n_common'].max()):,} users are common to every row. Each mean is over its row's own users, "
            "so the column's best compares different users; the paired comparisons pair the users both rows share.")


def partial_coverage_line(part: pl.DataFrame) -> str:
    """The line under Table 2 naming each per-user metric averaged over only some of the test users
    (n_defined < n_users, from `metric_coverage`) and why the others have no value."""
    if "n_defined" not in part.columns:
        return ""
    partial = part.filter(pl.col("n_defined").is_between(1, pl.col("n_users") - 1))
    pieces = []
    for metric in [m for m in METRICS if m in set(partial["metric"])]:
        rows = partial.filter(pl.col("metric") == metric)
        low, high, users = rows["n_defined"].min(), rows["n_defined"].max(), rows["n_users"].max()
        count = f"{low}" if low == high else f"{low}-{high}"
        pieces.append(f"{METRICS[metric].label} over {count} of {users} ({UNDEFINED_REASONS[metric]})")
    return "Means over the test users where the metric is defined: " + "; ".join(pieces) + "." if pieces else ""


def single_query_line(part: pl.DataFrame) -> str:
    """The line under Table 2 saying how many test users have a single query item, whose nDCG is 1
    whatever the model predicts (from `metric_coverage`'s n_single; Book-Crossing's cold-start users
    mostly have one), so that the nDCG columns are read as differing over the other users only."""
    if "n_single" not in part.columns:
        return ""
    rows = part.filter(pl.col("metric").is_in(RANKING_METRICS) & (pl.col("n_single") > 0))
    if not rows.height:
        return ""
    single, defined = int(rows["n_single"].max()), int(rows["n_defined"].max())
    if single == defined:  # "differ over the other 0 users" said it backwards
        return (f"nDCG: every one of the {defined:,} test users it is defined for has a single query item, whose nDCG is "
                f"1 whatever the prediction: the nDCG columns cannot tell the methods apart here.")
    return (f"nDCG: {single:,} of the {defined:,} test users it is defined for ({single / defined:.0%}) have a single "
            f"query item, whose nDCG is 1 whatever the prediction; the nDCG columns differ over the other "
            f"{defined - single:,} user{'' if defined - single == 1 else 's'} only.")


def undefined_groups_line(part: pl.DataFrame) -> str:
    """The line under Table 3/4 saying why a group's error or the p-value is '—' on rows that have results:
    a group without test users (every user tagged the other way), or a t-test without a defined statistic."""
    reasons = []
    for group in ("major", "minor"):
        means = part[f"mean_{group}"] if f"mean_{group}" in part.columns else pl.Series([None] * part.height)
        if part.height and all(is_undefined(v) for v in means):
            other = "minor" if group == "major" else "major"
            reasons.append(f"no {group} test users (the major/minor rule tags every test user {other})")
    groups_present = not reasons
    if groups_present and any(is_undefined(r["p_value"]) for r in part.iter_rows(named=True)):
        reasons.append("the t-test is undefined where fewer than 2 users of a group have an error, or where every "
                       "user's error in both groups is one value (zero variance: t = 0/0)")
    return f"{NOT_EVALUATED} where a row has results: " + "; ".join(reasons) + "." if reasons else ""


def markdown_table2(table: pl.DataFrame, datasets: Sequence[str], expected: Sequence[str]) -> str:
    """Table 2 as Markdown: one table per dataset, the paper's method names and order, metrics with
    their direction as columns, the paper's values beside ours, a line for whatever has no results.

    `table` holds the rows of one protocol (`one_protocol`).
    """
    table = one_protocol(table, "Table 2")

    def body(dataset: str, part: pl.DataFrame) -> list[str | None]:
        present = set(part["metric"])
        metrics = [m for m in METRICS if m in present] + sorted(present - set(METRICS))
        columns = ["method"] + [METRICS[m].header if m in METRICS else m for m in metrics]
        by_key = {(r["method"], r["metric"]): r for r in part.iter_rows(named=True)}
        rows, undefined, in_seeds = [], {}, []
        for method in method_order([*part["method"], *expected]):
            cells = {"method": method_name(method)}
            for metric, column in zip(metrics, columns[1:]):
                r = by_key.get((method, metric))
                # One seed (or a deterministic reference row) has no spread to show.
                sd = r["sd"] if r and r.get("n_seeds", 2) > 1 else None
                cell = format_cell(r["mean"], sd, r["best"], r["significant"]) if r else NOT_EVALUATED
                if r and is_undefined(r["mean"]):
                    seeds = r.get("undefined_seeds")
                    if seeds and len(seeds.split(", ")) < r.get("n_seeds", 0):  # a diverged seed, not the users
                        in_seeds.append(f"{METRICS[metric].label if metric in METRICS else metric} ({method_name(method)}): "
                                        f"not a number in seed {seeds} of its {r['n_seeds']} seeds")
                    else:
                        undefined.setdefault(metric, []).append(method)
                if r and r.get("paper_mean") is not None:
                    cell += f" (paper {r['paper_mean']:.3f})"
                cells[column] = cell
            rows.append((method, cells))
        missing = [m for m in method_order(expected) if m not in set(part["method"])]
        return [markdown_table(sectioned(rows, columns)), undefined_metrics_line(undefined, part["method"].n_unique()),
                undefined_seeds_line(in_seeds), seeds_line(part), test_users_line(part), partial_coverage_line(part),
                single_query_line(part), missing_line(dataset, missing)]

    return per_dataset_markdown(table, datasets, "results", body)


def markdown_group_table(table: pl.DataFrame, label: str, datasets: Sequence[str], expected: Sequence[str],
                         paper_rows: dict | None = None, what: str = "results") -> str:
    """Tables 3/4 as Markdown, one table per dataset: the error of major and minor users named for
    the dataset (MSE or log-loss), the minor-vs-major p-value, the paper's ML-1M values beside.

    `label` is the frame's row column (`method`, or `variant` for Table 4's gamma rows); `table`
    holds the rows of one protocol (`one_protocol`).
    """
    table = one_protocol(table, f"the {label} table")

    def body(dataset: str, part: pl.DataFrame) -> list[str | None]:
        error = error_name(dataset)
        columns = [label, f"{error}, major users ↓", f"{error}, minor users ↓", "p (minor vs major)"]
        with_paper = bool(paper_rows) and dataset == "movielens"
        if with_paper:
            columns.append("paper: major / minor / p")
        by_key = {r[label]: r for r in part.iter_rows(named=True)}
        rows = []
        for key in variant_order([*by_key, *expected]):
            r = by_key.get(key, {})
            cells = {label: variant_name(key), columns[1]: format_cell(r.get("mean_major"), r.get("sd_major")),
                     columns[2]: format_cell(r.get("mean_minor"), r.get("sd_minor")), columns[3]: format_p(r.get("p_value"))}
            if with_paper:
                cells[columns[4]] = " / ".join(f"{v:.3f}" for v in paper_rows[key]) if key in paper_rows else ""
            rows.append((variant_method(key), cells))
        missing = [k for k in variant_order(expected) if k not in by_key]
        return [markdown_table(sectioned(rows, columns)), undefined_groups_line(part), missing_line(dataset, missing)]

    return per_dataset_markdown(table, datasets, what, body)


def paired_cell(row: dict | None) -> str:
    """'-0.031 [-0.040, -0.022] p = 0.002': mean error difference (row minus column), its 95%
    bootstrap interval and the paired t-test p-value, in the precision `number_format` gives the
    larger of the two mean errors; bold when p < 0.05. Blank where a method
    meets itself, '—' where no user has an error from both."""
    if row is None:
        return ""
    if not row["n_users"] or row["mean_a"] is None or row["mean_b"] is None:
        return NOT_EVALUATED
    # In the precision of the errors compared (as Table 2 shows them): on a 0-0.005 rating scale a fixed
    # three decimals read +0.000 [+0.000, +0.000] for every difference.
    form = "+" + number_format(max(abs(row["mean_a"]), abs(row["mean_b"])))
    interval = (f" [{row['ci_low']:{form}}, {row['ci_high']:{form}}]"
                if row["ci_low"] is not None and np.isfinite(row["ci_low"]) else "")
    p_text = format_p(row["p_value"])
    text = f"{row['mean_a'] - row['mean_b']:{form}}{interval} p {'' if p_text.startswith('<') else '= '}{p_text}"
    significant = row["p_value"] is not None and row["p_value"] < SIGNIFICANCE_LEVEL
    return f"**{text}**" if significant else text


NO_PAIRED = "No paired comparisons: no dataset has two methods evaluated on the same test users."


def markdown_paired(significance: pl.DataFrame, datasets: Sequence[str]) -> str:
    """The paired comparisons as Markdown, one table per dataset with paired rows: a row per method
    (the paper's names and order, references apart), a column per opponent (the best baseline,
    then each classic reference in PAIRED_REFERENCES), cells as `paired_cell` writes them.

    `significance` holds the rows of one protocol (`one_protocol`); rows other than the paired
    t-tests (minor vs major) are left out.
    """
    paired = one_protocol(significance.filter(pl.col("test") == "paired_t"), "paired comparisons")
    blocks = []
    for dataset in datasets:
        part = paired.filter(pl.col("dataset") == dataset)
        if part.height == 0:
            continue
        baselines = method_order(part.filter(pl.col("comparison") == "vs_best_baseline")["other"].to_list())
        opponents = [("vs_best_baseline", b, f"vs best baseline ({method_name(b)})") for b in baselines]
        opponents += [("vs_reference", r, f"vs {method_name(r)}") for r in PAIRED_REFERENCES if r in set(part["other"])]
        columns = ["method", *(label for _, _, label in opponents)]
        by_key = {(r["method"], r["comparison"], r["other"]): r for r in part.iter_rows(named=True)}
        rows = [(method, {"method": method_name(method),
                          **{label: paired_cell(by_key.get((method, comparison, other))) for comparison, other, label in opponents}})
                for method in method_order(part["method"].to_list())]
        blocks.append(f"#### {dataset_name(dataset)} (`{dataset}`)\n\n{markdown_table(sectioned(rows, columns))}")
    return "\n\n".join(blocks) if blocks else NO_PAIRED
