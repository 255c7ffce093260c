"""Per-dataset counts after every data step, read back from the lineage store (for docs/data.md)."""

from __future__ import annotations

import polars as pl

from pipelines.outputs import markdown_rows
from pipelines.store import LineageStore


def markdown(frame: pl.DataFrame) -> str:
    """Markdown with three decimals, as docs/data.md shows the counts."""
    return markdown_rows(frame, "{:.3f}")


def step_counts(store: LineageStore, dataset: str) -> pl.DataFrame:
    """Rows of every frame of the newest artifact of each data step of `dataset`."""
    rows = []
    for asset in ("raw_logs", "clean_logs", "cold_start_users", "user_splits", "user_groups"):
        bundle = store.load(store.latest(asset, dataset))
        for name, frame in sorted(bundle.frames.items()):
            rows.append({"step": asset, "frame": name, "rows": frame.height})
        if asset == "cold_start_users":
            users = bundle.frame("users")
            rows.append({"step": asset, "frame": "users (cold-start)", "rows": users.filter("is_cold_start").height})
        if asset == "user_splits":
            for (split,), part in sorted(bundle.frame("users").group_by("split")):
                rows.append({"step": asset, "frame": f"users ({split})", "rows": part.height})
            for (kind,), part in sorted(bundle.frame("items").group_by("set")):
                rows.append({"step": asset, "frame": f"items ({kind})", "rows": part.height})
    return pl.DataFrame(rows)


def data_report(store: LineageStore, datasets: list[str]) -> str:
    """Markdown: counts per step, rejected rows by reason, Table-1 statistics and group shares."""
    parts = []
    for dataset in datasets:
        parts.append(f"### {dataset}\n\nCounts after every step:\n\n{markdown(step_counts(store, dataset))}\n")
        rejected = store.query(
            "SELECT source_file, reason, count(*) AS n_rows FROM rejected_rows WHERE dataset = ? "
            "GROUP BY ALL ORDER BY n_rows DESC, reason", [dataset])
        rejected = rejected.with_columns(
            pl.col("source_file").str.replace(r"logs/dt=[^/]+/", "logs/dt=*/")
        ).group_by("source_file", "reason").agg(pl.col("n_rows").sum()).sort("n_rows", "reason", descending=[True, False])
        parts.append(f"Rejected rows by reason:\n\n{markdown(rejected)}\n")
        table1 = store.query("SELECT feature, n_values, n_top_values, share_top FROM table1_stats WHERE dataset = ?", [dataset])
        shares = store.query("SELECT population, \"group\", n_users, share FROM group_shares WHERE dataset = ? ORDER BY ALL", [dataset])
        parts.append(f"Table 1 (share of users holding a top-30% value):\n\n{markdown(table1)}\n\n"
                     f"Major/minor shares:\n\n{markdown(shares)}\n")
    return "\n".join(parts)
