"""Command line: `python -m pipelines.cli demo [--dataset taobao]` runs the data job and reports.

Runs go through the persistent Dagster instance in PAML_HOME, so they are listed in
`dagster dev` afterwards.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import polars as pl

from pipelines.instance import ensure_dagster_home
from pipelines.resources import default_data_dir, default_home

SAMPLE_QUERY = (
    "SELECT dataset, reason, count(*) AS n FROM rejected_rows GROUP BY ALL ORDER BY n DESC"
)


def run_data_job(dataset: str) -> str:
    """Materialize every data asset of `dataset` in the persistent instance; return the run id."""
    import dagster as dg

    from pipelines.definitions import defs

    ensure_dagster_home()
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("data_job").execute_in_process(
            partition_key=dataset, instance=instance, raise_on_error=True, run_config=quiet
        )
    return result.run_id


def summary(run_id: str) -> str:
    """What a run made and where: artifacts, rejected rows by reason, checks."""
    from pipelines.store import LineageStore

    pl.Config.set_tbl_width_chars(160)
    pl.Config.set_fmt_str_lengths(70)
    pl.Config.set_tbl_hide_dataframe_shape(True)
    store = LineageStore(default_home())
    artifacts = store.query(
        "SELECT asset_key, partition, n_rows, n_bytes, left(content_hash, 12) AS hash, location "
        "FROM artifacts WHERE run_id = ? ORDER BY seq", [run_id])
    dataset = artifacts["partition"][0] if artifacts.height else ""
    rejected = store.query(
        "SELECT reason, count(*) AS n_rows FROM rejected_rows WHERE dataset = ? GROUP BY ALL ORDER BY n_rows DESC",
        [dataset])
    checks = store.query(
        "SELECT check_name, count(*) AS expectations, count(*) FILTER (WHERE success) AS passed "
        "FROM checks WHERE run_id = ? GROUP BY ALL ORDER BY ALL", [run_id])
    return "\n".join([
        f"run {run_id} (dataset {dataset})",
        f"DuckDB lineage store: {store.db_path}",
        "artifacts made:", str(artifacts),
        "rejected rows by reason:", str(rejected),
        "Great Expectations checks:", str(checks),
        "Try some SQL (stop `dagster dev` first, DuckDB has one writer):",
        f"  .venv/bin/python -m pipelines.cli sql \"{SAMPLE_QUERY}\"",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="build every data asset of one dataset and report")
    demo.add_argument("--dataset", default="taobao", choices=["taobao", "movielens", "bookcrossing"])
    sql = commands.add_parser("sql", help="run a read-only SQL query on the DuckDB store")
    sql.add_argument("query")
    stats = commands.add_parser("stats", help="Markdown counts per step, rejections and Table 1 per dataset")
    stats.add_argument("datasets", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(f"PAML_HOME={default_home()}  PAML_DATA_DIR={default_data_dir()}")
        print(summary(run_data_job(args.dataset)))
    elif args.command == "sql":
        from pipelines.store import LineageStore

        pl.Config.set_tbl_rows(50)
        print(LineageStore(default_home()).query(args.query))
    elif args.command == "stats":
        from pipelines.stats import data_report
        from pipelines.store import LineageStore

        print(data_report(LineageStore(default_home()), args.datasets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
