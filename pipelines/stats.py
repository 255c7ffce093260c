"""What is built per dataset, and the counts after every data step, read back from the lineage store
(the `stats` command; docs/data.md shows its output)."""

from __future__ import annotations

import polars as pl

from assets.markdown import markdown_table
from pipelines.store import LineageStore, PartitionNotBuiltError

DATA_STEPS = ("raw_logs", "clean_logs", "cold_start_users", "user_splits", "user_groups", "meta_tasks")
COUNTED_STEPS = DATA_STEPS[:-1]  # meta_tasks holds tensors; its rows are the users of the splits

NEWEST_SQL = """
SELECT a.asset_key, a.n_rows, a.run_id, strftime(a.created_at, '%Y-%m-%d %H:%M') AS written
FROM artifacts a WHERE a.kind = 'bundle' AND a.partition = ?
QUALIFY row_number() OVER (PARTITION BY a.asset_key ORDER BY a.seq DESC) = 1
"""


def markdown(frame: pl.DataFrame) -> str:
    """Markdown with three decimals, as docs/data.md shows the counts."""
    return markdown_table(frame, decimals=3)


def partition_steps(methods: tuple[str, ...]) -> tuple[str, ...]:
    """Every per-dataset asset, in pipeline order: data steps, one model per method, the ablation."""
    return (*DATA_STEPS, *(f"{m}_model" for m in methods), "reg_paml_gamma_ablation")


def built_steps(store: LineageStore, dataset: str, steps: tuple[str, ...]) -> pl.DataFrame:
    """One row per step: whether it is built for `dataset` and, if so, its newest artifact's run."""
    newest = {r["asset_key"]: r for r in store.query(NEWEST_SQL, [dataset]).iter_rows(named=True)}
    return pl.DataFrame([
        {"step": step, "built": "yes" if step in newest else "no", "rows": newest.get(step, {}).get("n_rows"),
         "run": (newest.get(step, {}).get("run_id") or "")[:8], "written": newest.get(step, {}).get("written")}
        for step in steps
    ], schema={"step": pl.String, "built": pl.String, "rows": pl.Int64, "run": pl.String, "written": pl.String})


def step_counts(store: LineageStore, dataset: str, steps: tuple[str, ...] = COUNTED_STEPS) -> pl.DataFrame:
    """Rows of every frame of the newest artifact of each built data step of `dataset`."""
    rows = []
    for asset in steps:
        try:
            bundle = store.load(store.latest(asset, dataset))
        except PartitionNotBuiltError:
            continue
        # A frame kept as Parquet shards (PAML_SHARDS) is counted from its files' metadata, never read whole.
        for name in sorted([*bundle.frames, *bundle.parts]):
            height = bundle.parts[name].height() if name in bundle.parts else bundle.frames[name].height
            rows.append({"step": asset, "frame": name, "rows": height})
        if asset == "cold_start_users":
            users = bundle.frame("users")
            rows.append({"step": asset, "frame": "users (cold-start)", "rows": users.filter("is_cold_start").height})
        if asset == "user_splits":
            for (split,), part in sorted(bundle.frame("users").group_by("split")):
                rows.append({"step": asset, "frame": f"users ({split})", "rows": part.height})
            by_set = bundle.scan("items").group_by("set").agg(pl.len().alias("rows")).sort("set").collect()
            for kind, n in by_set.iter_rows():
                rows.append({"step": asset, "frame": f"items ({kind})", "rows": n})
    return pl.DataFrame(rows, schema={"step": pl.String, "frame": pl.String, "rows": pl.Int64})


def data_report(store: LineageStore, datasets: list[str], methods: tuple[str, ...] = ()) -> str:
    """Markdown per dataset: what is built (and what is not, with the command that builds it), counts
    per step, rejected rows by reason, Table-1 statistics and group shares."""
    parts = []
    for dataset in datasets:
        built = built_steps(store, dataset, partition_steps(methods))
        missing = built.filter(pl.col("built") == "no")["step"].to_list()
        if len(missing) < built.height:
            parts.append(f"### {dataset}\n\nWhat is built:\n\n{markdown(built)}\n")
        else:
            parts.append(f"### {dataset}\n")
        if missing:
            command = f".venv/bin/python -m pipelines.cli demo --dataset {dataset}"
            data_first = f"the data steps with `{command} --data-only`, " if set(missing) & set(DATA_STEPS) else ""
            parts.append(f"Not built for {dataset}: {', '.join(missing)}. Build {data_first}everything "
                         f"(data, every model, evaluation, report) with `{command}`.\n")
        if "clean_logs" in missing:
            continue
        parts.append(f"Counts after every step:\n\n{markdown(step_counts(store, dataset))}\n")
        rejected = store.query(
            "SELECT source_file, reason, count(*) AS n_rows FROM rejected_rows WHERE dataset = ? "
            "GROUP BY ALL ORDER BY n_rows DESC, reason", [dataset])
        rejected = rejected.with_columns(
            pl.col("source_file").str.replace(r"logs/dt=[^/]+/", "logs/dt=*/")
        ).group_by("source_file", "reason").agg(pl.col("n_rows").sum()).sort("n_rows", "reason", descending=[True, False])
        parts.append(f"Rejected rows by reason:\n\n{markdown(rejected)}\n")
        if "user_groups" in missing:
            continue
        table1 = store.query("SELECT feature, n_values, n_top_values, share_top FROM table1_stats WHERE dataset = ?", [dataset])
        shares = store.query("SELECT population, \"group\", n_users, share FROM group_shares WHERE dataset = ? ORDER BY ALL", [dataset])
        parts.append(f"Table 1 (share of users holding a top-30% value):\n\n{markdown(table1)}\n\n"
                     f"Major/minor shares:\n\n{markdown(shares)}\n")
    return "\n".join(parts)
