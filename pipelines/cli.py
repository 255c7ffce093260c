"""Command line: `python -m pipelines.cli demo [--dataset taobao]` runs the data job and reports.

Runs go through the persistent Dagster instance in PAML_HOME, so they are listed in
`dagster dev` afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import polars as pl

from pipelines.instance import ensure_dagster_home
from pipelines.resources import default_data_dir, default_home

SAMPLE_QUERY = (
    "SELECT dataset, reason, count(*) AS n FROM rejected_rows GROUP BY ALL ORDER BY n DESC"
)


def run_job(job: str, dataset: str | None = None, run_config: dict | None = None) -> str:
    """Run one job (for one dataset partition, when partitioned) in the persistent instance."""
    import dagster as dg

    from pipelines.definitions import defs

    ensure_dagster_home()
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    # Progress lines (pipelines/progress.py) instead of Dagster's console log: one line per
    # message an asset logs (training progress, evaluations), plus warnings and errors.
    config = {"loggers": {"progress": {"config": {"log_level": "INFO"}}}, **(run_config or {})}
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(job).execute_in_process(
            partition_key=dataset, instance=instance, raise_on_error=True, run_config=config
        )
    return result.run_id


# `demo` trains every method with a small step budget so the whole chain (30 training runs)
# finishes in about two minutes on two cores; the models' own budget is max_steps=3000 with
# early stopping (models/training.py). `--max-steps 0` gives the demo the full budget.
DEMO_MAX_STEPS = 60
DEMO_EVAL_EVERY = 30


def training_config(epochs: int | None, seeds: list[int] | None, max_steps: int | None = None,
                    eval_every: int | None = None) -> dict:
    """Run config overriding epochs/seeds/step budget of every model asset and the ablation (None = defaults)."""
    from models.learners import METHODS

    values = {k: v for k, v in {"epochs": epochs, "seeds": seeds, "max_steps": max_steps, "eval_every": eval_every}.items()
              if v is not None}
    if not values:
        return {}
    ops = {f"{m}_model": {"config": dict(values)} for m in METHODS} | {"reg_paml_gamma_ablation": {"config": dict(values)}}
    return {"ops": ops}


def summary(run_id: str) -> str:
    """What a run made and where: artifacts, rejected rows by reason, checks."""
    from pipelines.store import LineageStore

    pl.Config.set_tbl_width_chars(160)
    pl.Config.set_fmt_str_lengths(70)
    pl.Config.set_tbl_hide_dataframe_shape(True)
    store = LineageStore(default_home(), read_only=True)
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
        "Try some SQL (reads paml-snapshot.duckdb, so it works while runs write):",
        f"  .venv/bin/python -m pipelines.cli sql \"{SAMPLE_QUERY}\"",
    ])


def report_summary() -> str:
    """Where the report is, Table 2 from DuckDB, and a query to try."""
    from pipelines.store import LineageStore

    home = default_home()
    pl.Config.set_tbl_rows(60)
    table = LineageStore(home, read_only=True).query(
        "SELECT dataset, method, metric, round(mean, 4) AS mean, round(sd, 4) AS sd FROM table2 "
        "WHERE metric IN ('mse', 'nel') ORDER BY dataset, mean")
    return "\n".join([
        f"report: {home / 'reports' / 'report.md'} (plots beside it)",
        "Table 2, primary error (from the DuckDB view table2):", str(table),
        "Try: .venv/bin/python -m pipelines.cli sql \"SELECT method, \\\"group\\\", avg(lr) FROM user_metrics "
        "WHERE lr IS NOT NULL GROUP BY ALL ORDER BY ALL\"",
    ])


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    """['a=1', 'b=2'] -> {'a': '1', 'b': '2'}, or an error naming the bad or repeated pair."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SystemExit(f"error: {what}: expected KEY=VALUE, got {pair!r}")
        if key in parsed:
            raise SystemExit(f"error: {what}: {key!r} is given twice ({key}={parsed[key]} and {key}={value})")
        parsed[key] = value
    return parsed


def recommend_command(args: argparse.Namespace) -> str:
    """Load the newest model and tasks of a dataset, adapt to the given user, rank items.

    Every input is checked (labels, --top, seed, repeated items) before anything is loaded
    where possible; a bad one is a ColdStartInputError with a one-line message.
    """
    from assets.cold_start import check_top, parse_label, recommend, unknown_profile_fields
    from assets.specs import spec_for
    from pipelines.store import LineageStore

    check_top(args.top)
    spec = spec_for(args.dataset)
    ratings = {item: parse_label(item, text, spec) for item, text in parse_pairs(args.ratings, "--ratings").items()}
    profile = parse_pairs(args.profile, "--profile")
    store = LineageStore(default_home(), read_only=True)
    model = store.load(store.latest(f"{args.method}_model", args.dataset))
    tasks = store.load(store.latest("meta_tasks", args.dataset))
    ranked, lr = recommend(model, tasks, profile, ratings, args.top, args.seed)
    lines = [f"{args.method} adapted to the new user on {len(ratings)} items (inner learning rate {lr:.4g}):"]
    if unknown := unknown_profile_fields(profile, tasks):
        lines.append("profile values never seen in training, so they use the unknown embedding: "
                     + ", ".join(f"{field}={value}" for field, value in unknown.items()))
    pl.Config.set_tbl_rows(args.top)
    return "\n".join([*lines, str(ranked)])


SQL_FORMATS = ("table", "csv", "markdown", "json")


def cell_text(value: object) -> str:
    """One value as table text: NULL, full-precision floats, nested values as JSON."""
    import json

    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def render(frame: pl.DataFrame, fmt: str) -> str:
    """A query result as `fmt` (table, csv, markdown, json); nothing is cut or elided."""
    import json

    if fmt == "json":
        return frame.write_json()
    if fmt == "csv":
        nested = [c for c, t in frame.schema.items() if t.is_nested()]
        flat = frame.with_columns(
            pl.col(c).map_elements(lambda v: json.dumps(v, default=str), return_dtype=pl.String) for c in nested)
        return flat.write_csv().rstrip("\n")
    header = list(frame.columns)
    rows = [[cell_text(v) for v in row] for row in frame.iter_rows()]
    if fmt == "markdown":
        escape = lambda text: text.replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
        lines = ["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(map(escape, row)) + " |" for row in rows])
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows),
                      f"({frame.height} row{'s' if frame.height != 1 else ''})"])


def one_line(error: BaseException) -> str:
    """The first line of an error message (DuckDB's carry the query under a caret)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def sql_command(args: argparse.Namespace) -> str:
    """Run one query on the snapshot (or the live file) read-only; render it in full."""
    import duckdb

    from pipelines.store import LineageStore, NoDatabaseError

    try:
        frame = LineageStore(default_home(), read_only=True).query(args.query, snapshot=not args.live)
    except NoDatabaseError as error:
        raise SystemExit(f"error: {one_line(error)}") from None
    except duckdb.PermissionException as error:
        raise SystemExit(f"error: refused, the sql command only reads the PAML database: {one_line(error)}") from None
    except duckdb.Error as error:
        raise SystemExit(f"error: {one_line(error)}") from None
    return render(frame, args.format)


def tune_command(args: argparse.Namespace) -> None:
    """Build each dataset's tasks if needed, search every method, write docs/tuning/<dataset>.*."""
    from models.learners import METHODS
    from models.tasks import task_data_from_tensors
    from models.tuned import TUNED_EPOCHS
    from pipelines.store import LineageStore, PartitionNotBuiltError
    from pipelines.tune import tune_dataset, write_results

    store = LineageStore(default_home())
    for dataset in args.datasets:
        try:
            tasks = store.load(store.latest("meta_tasks", dataset))
        except PartitionNotBuiltError:
            print(f"data_job on {dataset} (meta_tasks not built yet) ...", flush=True)
            run_job("data_job", dataset)
            tasks = store.load(store.latest("meta_tasks", dataset))
        data = task_data_from_tensors(tasks.tensors, tasks.info)
        results = tune_dataset(data, dataset, args.trials, args.epochs or TUNED_EPOCHS,
                               methods=tuple(args.methods or METHODS), log=lambda line: print(line, flush=True))
        for path in write_results(results):
            print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="build, train, evaluate and report on one dataset")
    demo.add_argument("--dataset", default="taobao", choices=["taobao", "movielens", "bookcrossing"])
    demo.add_argument("--data-only", action="store_true", help="stop after the data assets")
    demo.add_argument("--epochs", type=int, help="override every method's epochs")
    demo.add_argument("--seeds", type=int, nargs="+", help="override every method's seeds")
    demo.add_argument("--max-steps", type=int, default=DEMO_MAX_STEPS,
                      help=f"outer steps per training run (default {DEMO_MAX_STEPS}; 0 = the models' own budget)")
    repro = commands.add_parser("reproduce", help="every dataset: data, all methods x seeds, ablation; then evaluation and the report")
    repro.add_argument("--datasets", nargs="+", default=["movielens", "bookcrossing", "taobao"])
    repro.add_argument("--epochs", type=int, help="override every method's epochs")
    repro.add_argument("--seeds", type=int, nargs="+", help="override every method's seeds")
    tune = commands.add_parser("tune", help="hyper-parameter search on validation users, same budget per method")
    tune.add_argument("--datasets", nargs="+", default=["movielens", "bookcrossing", "taobao"])
    tune.add_argument("--methods", nargs="+", help="default: every method")
    tune.add_argument("--trials", type=int, default=5, help="settings tried per method (the first: code defaults)")
    tune.add_argument("--epochs", type=int, help="epochs per trial (default: models/tuned.py TUNED_EPOCHS)")
    sql = commands.add_parser("sql", help="run a read-only SQL query on the DuckDB store")
    sql.add_argument("query")
    sql.add_argument("--live", action="store_true",
                     help="query the live database (waits while a run writes) instead of the snapshot (never blocked)")
    sql.add_argument("--format", choices=SQL_FORMATS, default="table", help="output format (never truncated)")
    rec = commands.add_parser("recommend", help="adapt a trained model to a new user and print scored items")
    rec.add_argument("--dataset", required=True, choices=["taobao", "movielens", "bookcrossing"])
    rec.add_argument("--method", default="reg_paml")
    rec.add_argument("--seed", type=int, help="which trained seed (default: the first)")
    rec.add_argument("--profile", nargs="+", required=True, metavar="FIELD=VALUE", help="the user's features")
    rec.add_argument("--ratings", nargs="+", required=True, metavar="ITEM=LABEL", help="a few ratings (or 0/1 clicks)")
    rec.add_argument("--top", type=int, default=10)
    stats = commands.add_parser("stats", help="Markdown counts per step, rejections and Table 1 per dataset")
    stats.add_argument("datasets", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(f"PAML_HOME={default_home()}  PAML_DATA_DIR={default_data_dir()}")
        started = time.perf_counter()
        print(f"[1/3] data_job on {args.dataset} ...", flush=True)
        print(summary(run_job("data_job", args.dataset)))
        if not args.data_only:
            from models.runtime import thread_count

            budget = (args.max_steps, min(DEMO_EVAL_EVERY, args.max_steps)) if args.max_steps else (None, None)
            steps = f"{args.max_steps} outer steps per run" if args.max_steps else "the models' step budget"
            print(f"[2/3] training_job on {args.dataset} (6 methods + gamma ablation, {steps}, {thread_count()} threads) "
                  f"... ({time.perf_counter() - started:.0f} s)", flush=True)
            run_job("training_job", args.dataset, training_config(args.epochs, args.seeds, *budget))
            print(f"[3/3] evaluation_job (every dataset with models) and the report ... ({time.perf_counter() - started:.0f} s)",
                  flush=True)
            run_job("evaluation_job")
            print(report_summary())
        print(f"done in {time.perf_counter() - started:.0f} s")
    elif args.command == "reproduce":
        print(f"PAML_HOME={default_home()}  PAML_DATA_DIR={default_data_dir()}")
        started = time.perf_counter()
        for dataset in args.datasets:
            for job in ("data_job", "training_job"):
                print(f"{job} on {dataset} ... ({time.perf_counter() - started:.0f} s)", flush=True)
                run_job(job, dataset, training_config(args.epochs, args.seeds) if job == "training_job" else None)
        print(f"evaluation_job and the report ... ({time.perf_counter() - started:.0f} s)", flush=True)
        run_job("evaluation_job")
        print(report_summary())
        print(f"done in {time.perf_counter() - started:.0f} s")
    elif args.command == "tune":
        tune_command(args)
    elif args.command == "sql":
        print(sql_command(args))
    elif args.command == "recommend":
        from assets.cold_start import ColdStartInputError
        from pipelines.store import NoDatabaseError, PartitionNotBuiltError

        try:
            print(recommend_command(args))
        except (ColdStartInputError, PartitionNotBuiltError, NoDatabaseError) as error:
            raise SystemExit(f"error: {one_line(error)}") from None
    elif args.command == "stats":
        from pipelines.stats import data_report
        from pipelines.store import LineageStore, NoDatabaseError, PartitionNotBuiltError

        try:
            print(data_report(LineageStore(default_home(), read_only=True), args.datasets))
        except (NoDatabaseError, PartitionNotBuiltError) as error:
            raise SystemExit(f"error: {one_line(error)}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
