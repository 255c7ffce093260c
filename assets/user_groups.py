"""Major/minor tagging (paper, "Major and minor users separating") and Table-1 statistics.

A value is "top" for a feature when it is among the ceil(30% x distinct values) most
frequent values of that feature (ties broken by the value itself); a user is major
when more than two of the tagging features take a top value.
"""


import math

import polars as pl

from assets.specs import MAJOR_MIN_TOP_FEATURES, TOP_VALUE_SHARE


def top_values(users: pl.DataFrame, feature: str, share: float = TOP_VALUE_SHARE) -> pl.DataFrame:
    """The ceil(share x n_distinct) most frequent values of `feature` (count desc, value asc); a missing
    value (null, kept by a spec's `keep_missing`) is no value, so never a top one."""
    counts = (
        users.filter(pl.col(feature).is_not_null()).group_by(pl.col(feature).cast(pl.String).alias("value"))
        .agg(n_users=pl.len())
        .sort(["n_users", "value"], descending=[True, False])
    )
    return counts.head(math.ceil(share * counts.height))


def feature_concentration(users: pl.DataFrame, features: tuple[str, ...], share: float = TOP_VALUE_SHARE) -> pl.DataFrame:
    """Paper Table 1: per feature, the share of users whose value is a top value."""
    rows = []
    for feature in features:
        top = top_values(users, feature, share)
        holders = users.filter(pl.col(feature).cast(pl.String).is_in(top["value"].implode())).height
        rows.append(
            {"feature": feature, "n_values": users[feature].drop_nulls().n_unique(), "n_top_values": top.height,
             "share_top": holders / users.height if users.height else 0.0}
        )
    return pl.DataFrame(rows, schema={"feature": pl.String, "n_values": pl.Int64, "n_top_values": pl.Int64, "share_top": pl.Float64})


def tag_users(
    users: pl.DataFrame, reference: pl.DataFrame, features: tuple[str, ...],
    share: float = TOP_VALUE_SHARE, min_top: int = MAJOR_MIN_TOP_FEATURES,
) -> pl.DataFrame:
    """Count each user's features holding a top value (top values from `reference`) and tag them.

    Returns user_id, n_top_features, group ("major" when n_top_features >= min_top).
    """
    in_top = [
        pl.col(f).cast(pl.String).is_in(top_values(reference, f, share)["value"].implode()).cast(pl.Int64).fill_null(0)
        for f in features
    ]
    # A log without user features tags by none: no user holds a top value, so the rule tags every user minor.
    return users.select(
        "user_id",
        (pl.sum_horizontal(in_top) if in_top else pl.lit(0, dtype=pl.Int64)).alias("n_top_features"),
    ).with_columns(
        group=pl.when(pl.col("n_top_features") >= min_top).then(pl.lit("major")).otherwise(pl.lit("minor"))
    )


def user_groups_for(
    users: pl.DataFrame, cold_start: pl.DataFrame, features: tuple[str, ...], truth: pl.DataFrame | None = None
) -> dict[str, pl.DataFrame]:
    """Tag every cleaned user (top values over all cleaned users) and summarize.

    Returns `groups` (cold-start users: user_id, n_top_features, group, true_group),
    `table1` (feature concentration) and `shares` (major/minor share, all and cold-start).
    """
    tagged = tag_users(users, users, features)
    cold_ids = cold_start.filter("is_cold_start").select("user_id")
    groups = tagged.join(cold_ids, on="user_id", how="semi")
    if truth is not None:
        groups = groups.join(truth.select("user_id", "true_group"), on="user_id", how="left")
    else:
        groups = groups.with_columns(true_group=pl.lit(None, dtype=pl.String))
    shares = pl.concat([
        tagged.group_by("group").agg(n_users=pl.len()).with_columns(population=pl.lit("all cleaned users")),
        groups.group_by("group").agg(n_users=pl.len()).with_columns(population=pl.lit("cold-start users")),
    ]).with_columns(share=pl.col("n_users") / pl.col("n_users").sum().over("population")).sort("population", "group")
    return {"groups": groups.sort("user_id"), "table1": feature_concentration(users, features), "shares": shares}


def group_notes(table1: pl.DataFrame, shares: pl.DataFrame, features: tuple[str, ...],
                min_top: int = MAJOR_MIN_TOP_FEATURES) -> list[str]:
    """What makes a dataset's major/minor tagging degenerate, one sentence each (empty when it is not).

    A tagging feature with one value is a top value for every user, so it counts towards major for all
    of them; and when every cold-start user lands in one group, the minor-vs-major comparisons have
    no second group. Either would otherwise show as a share of 1.000 or a major share of 1.000 or 0.000
    that reads like a result.
    """
    single = [r["feature"] for r in table1.iter_rows(named=True) if r["n_values"] == 1]
    notes = [f"groups feature{'s' if len(single) > 1 else ''} {', '.join(repr(f) for f in single)} "
             f"{'have' if len(single) > 1 else 'has'} one value for every user: {'each' if len(single) > 1 else 'it'} is a "
             "top value for all of them, so counts towards major for everyone and tells no user apart"] if single else []
    if not features:
        return ["no groups features (no [groups] in its spec): no user can be major, so every user is minor and the "
                "minor-vs-major comparisons are empty"]
    cold = shares.filter(pl.col("population") == "cold-start users")
    if cold.height == 1:  # every cold-start user in one group
        group = cold["group"][0]
        why = (f"{len(single)} of the {len(features)} groups features have a single value" if single
               else f"the groups features are {', '.join(features)}")
        held = "at least" if group == "major" else "fewer than"
        notes.append(f"every cold-start user is {group} (each holds a top value in {held} {min_top} features; {why}): "
                     f"there is no {'minor' if group == 'major' else 'major'} group, so the minor-vs-major comparisons "
                     "are empty; groups features with more distinct values separate users")
    return notes


# -- Dagster asset ---------------------------------------------------------------------
import dagster as dg  # noqa: E402

from assets.bundle import Bundle  # noqa: E402
from assets.specs import spec_for  # noqa: E402
from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars", "duckdb"}, code_version="1",
    description="Major/minor tagging by the paper's rule, with Table-1 feature concentration and group shares.",
)
def user_groups(context: dg.AssetExecutionContext, clean_logs: Bundle, cold_start_users: Bundle) -> dg.Output[Bundle]:
    spec = spec_for(context.partition_key)
    truth = clean_logs.frames.get("truth")
    frames = user_groups_for(clean_logs.frame("users"), cold_start_users.frame("users"), spec.tagging_fields, truth)
    notes = group_notes(frames["table1"], frames["shares"], spec.tagging_fields)
    for note in notes:
        context.log.warning(f"major/minor tagging of {context.partition_key}: {note}")
    bundle = Bundle(frames=frames, info={"tagging_fields": list(spec.tagging_fields), "top_share": TOP_VALUE_SHARE,
                                         "major_min_top_features": MAJOR_MIN_TOP_FEATURES,
                                         # only when there are some: the built-ins' groups keep their content hashes
                                         **({"notes": notes} if notes else {})})
    return bundle_output(bundle, table1=table(frames["table1"]), group_shares=table(frames["shares"]),
                         notes=dg.MetadataValue.json(notes))
