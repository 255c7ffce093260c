"""Great Expectations suites on the cleaned tables, run as blocking Dagster asset checks.

Great Expectations 1.x validates pandas frames in an ephemeral context (no files are
written); it is imported inside the function because it takes seconds to import.
"""


import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from assets.specs import MIN_ITEMS_PER_USER, DatasetSpec

SHARD_BATCH_ROWS = 1_000_000  # interactions validated at once when the cleaned log is in shards


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result."""

    suite: str
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    details: str


def domain_expectations(column: str, domain, as_text: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The expectation a cleaned column meets for its field domain (assets/domains.py).

    `as_text`: the cleaned column holds the integers as text (e.g. ML-1M occupation '0'-'20').
    """
    from assets.domains import Category, EpochSeconds, IntegerIn, NumberIn

    if isinstance(domain, Category) and domain.values:
        return [("ExpectColumnValuesToBeInSet", {"column": column, "value_set": list(domain.values)})]
    if isinstance(domain, NumberIn):
        return [("ExpectColumnValuesToBeBetween", {"column": column, "min_value": domain.low, "max_value": domain.high})]
    if isinstance(domain, IntegerIn):
        values = list(domain.codes) if domain.codes else None
        if as_text:
            values = [str(v) for v in (values or range(domain.low, domain.high + 1))]
        if values is not None:
            return [("ExpectColumnValuesToBeInSet", {"column": column, "value_set": values})]
        return [("ExpectColumnValuesToBeBetween", {"column": column, "min_value": domain.low, "max_value": domain.high})]
    if isinstance(domain, EpochSeconds):
        return [("ExpectColumnValuesToBeBetween", {"column": column, "min_value": domain.low, "max_value": domain.high - 1})]
    return []


def users_suite(spec: DatasetSpec) -> list[tuple[str, dict[str, Any]]]:
    """Expectations on cleaned users: unique ids, every feature in its domain, no blank features (null only
    where the spec keeps a missing value: `keep_missing`).

    A dataset spec's numeric feature is expected within its bounds, or, bucketed, to be one of
    its bucket labels; its categorical features in their `values` when the spec lists them.
    """
    domains = dict(spec.user_domains)
    buckets = {f.name: f.labels() for f in spec.numeric if f.bins}
    numbers = {f.name for f in spec.numeric if not f.bins}
    blank_values = {f for f in spec.user_fields if blank_is_value(domains.get(f))}
    in_domain: list[tuple[str, dict[str, Any]]] = []
    for f in spec.user_fields:
        if f in buckets:
            in_domain.append(("ExpectColumnValuesToBeInSet", {"column": f, "value_set": list(buckets[f])}))
        elif f in domains:
            in_domain += domain_expectations(f, domains[f], as_text=f not in numbers)
    return [
        ("ExpectColumnValuesToBeUnique", {"column": "user_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "user_id"}),
        *in_domain,
        *[("ExpectColumnValuesToNotBeNull", {"column": f}) for f in spec.user_fields if f not in spec.user_keep_missing],
        *[("ExpectColumnValueLengthsToBeBetween", {"column": f, "min_value": 1})
          for f in spec.user_fields if f not in numbers and f not in blank_values],
    ]


def blank_is_value(domain: object) -> bool:
    """True for a categorical feature whose spec's `missing` leaves out the blank (Yelp's `elite`, blank = never):
    cleaning keeps a blank there as a value, so the suite must not fail it."""
    from assets.domains import Category

    return isinstance(domain, Category) and "" not in domain.missing


def interactions_suite(spec: DatasetSpec) -> list[tuple[str, dict[str, Any]]]:
    """Expectations on cleaned interactions: ids present, labels in range, plausible times, no duplicate pairs."""
    from assets.clean_logs import time_domain

    times = domain_expectations("ts", domain) if (domain := time_domain(spec)) is not None else []
    return [
        ("ExpectColumnValuesToNotBeNull", {"column": "user_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "item_id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "label", "min_value": spec.label_min, "max_value": spec.label_max}),
        *times,
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["user_id", "item_id"]}),
    ]


def per_user_suite(spec: DatasetSpec) -> list[tuple[str, dict[str, Any]]]:
    """Expectations on per-user counts: at least two items (two clicked items for CTR)."""
    return [("ExpectColumnMinToBeBetween", {"column": "n_items", "min_value": MIN_ITEMS_PER_USER})]


def per_user_counts(interactions: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    """Items per user (clicked items for CTR), the frame `per_user_suite` validates."""
    counted = (pl.col("label") > 0).sum() if spec.task == "ctr" else pl.len()
    return interactions.group_by("user_id").agg(n_items=counted.cast(pl.Int64))


def validate(frame: pl.DataFrame, suite_name: str, expectations: list[tuple[str, dict[str, Any]]]) -> list[ExpectationOutcome]:
    """Run `expectations` on `frame` with Great Expectations; one outcome per expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("paml")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    )
    suite = gx.ExpectationSuite(name=suite_name)
    for name, kwargs in expectations:
        suite.add_expectation(getattr(gx.expectations, name)(**kwargs))
    result = batch.validate(context.suites.add(suite))
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        kwargs = dict(config.kwargs)
        column = kwargs.get("column") or ",".join(kwargs.get("column_list", []))
        observed = item.result.get("observed_value", item.result.get("partial_unexpected_list"))
        outcomes.append(ExpectationOutcome(
            suite=suite_name, expectation=config.type, column=column or None, success=bool(item.success),
            unexpected_count=item.result.get("unexpected_count"),
            details=f"observed={observed!r}" if not item.exception_info.get("raised_exception") else str(item.exception_info),
        ))
    return outcomes


def validate_clean_logs(users: pl.DataFrame, interactions: pl.DataFrame, spec: DatasetSpec) -> list[ExpectationOutcome]:
    """All suites of the cleaning step."""
    return [
        *validate(users, "clean_users", users_suite(spec)),
        *validate(interactions, "clean_interactions", interactions_suite(spec)),
        *validate(per_user_counts(interactions, spec), "items_per_user", per_user_suite(spec)),
    ]


def merged(batches: list[list[ExpectationOutcome]]) -> list[ExpectationOutcome]:
    """One outcome per expectation over batches that each ran the same suites: passed where every
    batch passed, the unexpected rows summed, the details of the first batch that failed (else the first)."""
    outcomes = []
    for runs in zip(*batches):
        failed = [o for o in runs if not o.success]
        counts = [o.unexpected_count for o in runs if o.unexpected_count is not None]
        outcomes.append(ExpectationOutcome(
            suite=runs[0].suite, expectation=runs[0].expectation, column=runs[0].column, success=not failed,
            unexpected_count=sum(counts) if counts else None,
            details=(failed or runs)[0].details + (f" (in {len(failed)} of {len(runs)} batches)" if len(runs) > 1 else "")))
    return outcomes


def shard_batches(users: list[Path], interactions: list[Path], max_rows: int) -> list[tuple[list[Path], list[Path]]]:
    """The cleaned users' and interactions' shard files (the same names: shard k's users and their
    interactions) grouped into batches of about `max_rows` interactions."""
    names = sorted({p.name for p in users} | {p.name for p in interactions})
    by_name = lambda files: {p.name: p for p in files}  # noqa: E731
    user_files, interaction_files = by_name(users), by_name(interactions)
    batches, rows = [([], [])], 0
    for name in names:
        n = pq.ParquetFile(interaction_files[name]).metadata.num_rows if name in interaction_files else 0
        if rows and rows + n > max_rows:
            batches.append(([], []))
            rows = 0
        for files, part in ((user_files, 0), (interaction_files, 1)):
            if name in files:
                batches[-1][part].append(files[name])
        rows += n
    return batches


def validate_clean_shards(users: list[Path], interactions: list[Path], spec: DatasetSpec,
                          max_rows: int = SHARD_BATCH_ROWS) -> list[ExpectationOutcome]:
    """validate_clean_logs on cleaned logs kept in user shards, a batch of shards at a time. Each
    expectation holds for the whole log exactly when it holds in every batch: a user, and every
    (user, item) pair, is in one shard only (uniqueness), and the rest are per row or per user."""
    user_columns = suite_columns(users_suite(spec))
    interaction_columns = suite_columns([*interactions_suite(spec), ("", {"column": "label"})])  # + per-user counts
    return merged([validate_clean_logs(pl.read_parquet(u, columns=user_columns), pl.read_parquet(i, columns=interaction_columns), spec)
                   for u, i in shard_batches(users, interactions, max_rows)])


def suite_columns(expectations: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The columns a suite's expectations name (a batch reads only those: its memory is the rows')."""
    names = [kwargs["column"] for _, kwargs in expectations if "column" in kwargs]
    names += [c for _, kwargs in expectations for c in kwargs.get("column_list", [])]
    return list(dict.fromkeys(names))


# -- Dagster asset check -----------------------------------------------------------------
import dagster as dg  # noqa: E402

from assets.bundle import Bundle  # noqa: E402
from assets.clean_logs import clean_logs  # noqa: E402
from assets.specs import spec_for  # noqa: E402
from pipelines.partitions import dataset_asset_check  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402


@dataset_asset_check(
    asset=clean_logs, blocking=True,
    description="Great Expectations suites on the cleaned users and interactions (outcomes go to DuckDB `checks`).",
)
def clean_logs_expectations(context: dg.AssetCheckExecutionContext, clean_logs: Bundle, paml: PamlResource) -> dg.AssetCheckResult:
    partition = clean_logs.info["dataset"]
    if clean_logs.parts:  # cleaned in user shards: validated a batch of shards at a time
        outcomes = validate_clean_shards(clean_logs.parts["users"].files, clean_logs.parts["interactions"].files,
                                         spec_for(partition))
    else:
        outcomes = validate_clean_logs(clean_logs.frame("users"), clean_logs.frame("interactions"), spec_for(partition))
    paml.store().record_checks([
        {"run_id": context.run.run_id, "asset_key": "clean_logs", "partition": partition,
         "check_name": f"clean_logs_expectations/{o.suite}", "expectation": o.expectation, "column_name": o.column,
         "success": o.success, "unexpected_count": o.unexpected_count, "details": o.details[:2000]}
        for o in outcomes
    ])
    failed = [o for o in outcomes if not o.success]
    return dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"expectations": len(outcomes), "failed": len(failed),
                  "failures": dg.MetadataValue.json([f"{o.suite}: {o.expectation}({o.column}) {o.details}" for o in failed])},
    )
