"""What the reference rows' fits cost, and what the reuse of fitted tables saves (cpu).

Two measurements on exported tasks (`python -m benchmarks.export_tasks`, default ML-1M's):

- `reference_settings`' validation grid (`models/references.py` `tune_settings`: 25 MF fits by
  ALS, the bias and kNN grids), with the MF fits one at a time (`PAML_THREADS=1`) and
  `--threads` at a time (`in_threads`), alternated over `--rounds`; the choices and every
  validation error must be equal.
- Building a method's tuned network in a process that has fitted nothing: fitting its fold-in
  tables (MF cross-fits, kNN lists) and storing them in a fits directory, then reading them back
  as a later step or process would (`models/factors.py` `keep_fits_in`); the tables must be equal.
- With `--catalogue N` (no tasks needed): item-kNN's predictions for evaluated users of a
  synthetic log whose query x support items exceed the whole-table bound (KNN_TABLE_ENTRIES),
  with each chunk of users computing its own pairs and with the pairs the users hold computed
  once (`needed_pairs`), for each `--users` count; the predictions must be equal.

    python -m benchmarks.reference_fits [--tasks DIR] [--dataset movielens] [--method reg_paml]
        [--threads 2] [--rounds 2]
    python -m benchmarks.reference_fits --catalogue 25000 --users 1000 8000 16000

Prints Markdown and writes benchmarks/out/reference_fits.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "out"


def timed_tuning(data, threads: int) -> tuple[float, object]:
    """Seconds of one `tune_settings` with the MF grid `threads` fits at a time, and its result."""
    from models.references import tune_settings

    os.environ["PAML_THREADS"] = str(threads)  # read by in_threads at the call
    start = time.perf_counter()
    result = tune_settings(data)
    return time.perf_counter() - start, result


def timed_builds(data, dataset: str, method: str) -> dict:
    """Seconds to build `method`'s tuned learner fitting its tables, then twice reading them."""
    from models.factors import fit_counts, forget_fits, keep_fits_in
    from models.learners import LearnerConfig, build_learner
    from models.settings import apply_params, chosen_settings
    from models.tasks import training_view
    from models.training import TrainConfig

    learner_config, _ = apply_params(chosen_settings(dataset, method).params, LearnerConfig(), TrainConfig())
    data = training_view(data) if "warm" in data.splits else data
    seconds, counts, tables = [], [], []
    with tempfile.TemporaryDirectory() as directory:
        keep_fits_in(Path(directory))
        try:
            for _ in range(3):
                forget_fits()  # as a fresh process: nothing in memory
                start = time.perf_counter()
                learner = build_learner(method, data, learner_config)
                seconds.append(time.perf_counter() - start)
                counts.append(fit_counts())
                tables.append(fold_in_tables(learner))
        finally:
            keep_fits_in(None)
            forget_fits()
    equal = all(torch.equal(tables[0][k], t[k]) for t in tables[1:] for k in tables[0])
    return {"fit_and_store_s": seconds[0], "read_s": seconds[1:], "counts": counts, "tables_equal": equal,
            "tables": sorted(tables[0])}


def fold_in_tables(learner) -> dict:
    """The network's fitted tables: the MF buffers and the kNN lists (buffers a model does not save)."""
    return {name: buffer for name, buffer in learner.named_buffers() if name.split(".")[-1].startswith(("mf_", "knn_"))}


def synthetic_knn(n_items: int, fitting_users: int, evaluated: int, seed: int = 0):
    """A fitted item-kNN and a split of `evaluated` users over `n_items` items of Zipf(0.9)
    popularity; activity a truncated power law (fitting users 20-2,000 ratings, mean about 100;
    evaluated users 20-150, as the lightest 80% a cold-start selection keeps), 20% of each
    evaluated user's items its query set."""
    import numpy as np

    from models.references import BiasConfig, Ratings, fit_item_knn
    from models.tasks import TaskSplit

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()

    def activity(n: int, most: int) -> np.ndarray:
        return np.clip((rng.pareto(1.5, n) + 1) * 100 / 3, 20, most).astype(int)

    counts = activity(fitting_users, 2000)
    items = np.concatenate([rng.choice(n_items, size=c, replace=False, p=popularity) + 1 for c in counts])
    ratings = Ratings(np.repeat(np.arange(fitting_users), counts), items, rng.integers(1, 6, len(items)).astype(float),
                      fitting_users, n_items + 1)
    parts = []
    for c in activity(evaluated, 150):
        chosen = rng.choice(n_items, size=c, replace=False, p=popularity) + 1
        parts.append((chosen[max(1, round(0.2 * c)):], chosen[:max(1, round(0.2 * c))]))

    def padded(lists) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(map(len, lists))
        items, mask = np.zeros((len(lists), width), dtype=np.int64), np.zeros((len(lists), width), dtype=bool)
        for row, values in enumerate(lists):
            items[row, :len(values)], mask[row, :len(values)] = values, True
        labels = rng.integers(1, 6, items.shape).astype(np.float32)
        return torch.from_numpy(items), torch.from_numpy(labels), torch.from_numpy(mask)

    split = TaskSplit(torch.zeros((evaluated, 1), dtype=torch.long), *padded([s for s, _ in parts]),
                      *padded([q for _, q in parts]))
    return fit_item_knn(ratings, BiasConfig(5.0, 5.0)), split, len(items)


def timed_catalogue(n_items: int, users: list[int]) -> list[dict]:
    """predict_knn per chunk of users against the held pairs on synthetic logs (`synthetic_knn`)."""
    import numpy as np

    import models.references as R

    rows, config, bound = [], R.KNNConfig(40, 100.0, 1.0), R.KNN_TABLE_ENTRIES
    for evaluated in users:
        model, split, n_ratings = synthetic_knn(n_items, 20_000, evaluated)
        q_items, s_items = np.unique(split.query_items.numpy()), np.unique(split.support_items.numpy())
        row = {"items": n_items, "fitting_ratings": n_ratings, "evaluated_users": evaluated,
               "table_entries": len(q_items) * len(s_items)}
        R.KNN_TABLE_ENTRIES = 0  # whatever the size: the large-catalogue paths
        try:
            start = time.perf_counter()
            chunks = R._in_user_chunks(split, lambda part: R.predict_knn_grid(model, part, [config])[0])
            row["per_chunk_s"] = time.perf_counter() - start
            start = time.perf_counter()
            held = R.needed_pairs(model, split, q_items, s_items)
            pred = R._in_user_chunks(split, lambda part: R.predict_knn_grid(model, part, [config], held)[0])
            row["held_pairs_s"] = time.perf_counter() - start
            row["held_pairs"] = len(held.keys)
            row["chosen"] = type(R.pair_table(model, split)).__name__
        finally:
            R.KNN_TABLE_ENTRIES = bound
        row["equal"] = chunks.tobytes() == pred.tobytes()
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=Path, default=OUT / "tasks" / "movielens")
    parser.add_argument("--dataset", default="movielens", help="whose tuned settings the built network uses")
    parser.add_argument("--method", default="reg_paml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--catalogue", type=int, help="items of the synthetic large-catalogue kNN measurement")
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 8000], help="evaluated users (--catalogue)")
    args = parser.parse_args()
    if args.catalogue:
        torch.set_num_threads(args.threads)
        rows = timed_catalogue(args.catalogue, args.users)
        OUT.mkdir(exist_ok=True)
        (OUT / "reference_fits_catalogue.json").write_text(json.dumps({"machine": platform.node(), "rows": rows}, indent=2))
        print("| items | fitting ratings | evaluated users | query x support items | per chunk (s) | held pairs (s) | pairs held | pair_table's choice | equal |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['items']:,} | {r['fitting_ratings']:,} | {r['evaluated_users']:,} | {r['table_entries']:.2e} | "
                  f"{r['per_chunk_s']:.1f} | {r['held_pairs_s']:.1f} | {r['held_pairs']:,} | {r['chosen']} | {r['equal']} |")
        return 0 if all(r["equal"] for r in rows) else 1
    if not (args.tasks / "tensors.safetensors").is_file():
        raise SystemExit(f"no exported tasks in {args.tasks}: run python -m benchmarks.export_tasks --dataset "
                         f"{args.dataset} --out {args.tasks} first (PAML_DATA_DIR must hold the raw files)")
    from benchmarks.train_speed import load

    torch.set_num_threads(args.threads)
    data = load(args.tasks)
    rounds, results = [], {}
    for _ in range(args.rounds):
        row = {}
        for threads in (1, args.threads):
            row[threads], results[threads] = timed_tuning(data, threads)
        rounds.append(row)
    same = results[1] == results[args.threads]
    builds = timed_builds(data, args.dataset, args.method)
    report = {"machine": platform.node(), "cpus": os.cpu_count(), "torch_threads": args.threads, "tasks": str(args.tasks),
              "tuning_rounds": [{str(k): v for k, v in row.items()} for row in rounds], "tuning_same": same,
              "builds": builds, "method": args.method}
    OUT.mkdir(exist_ok=True)
    (OUT / "reference_fits.json").write_text(json.dumps(report, indent=2, default=str))
    print("| reference_settings' grid | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |")
    print("|---|" + "---|" * len(rounds))
    for threads in (1, args.threads):
        print(f"| MF fits {threads} at a time (s) | " + " | ".join(f"{row[threads]:.1f}" for row in rounds) + " |")
    print(f"\nsame settings and validation errors: {same}")
    print(f"{args.method}'s network in a fresh process: fit and store {builds['fit_and_store_s']:.2f} s, read "
          + ", ".join(f"{s:.2f}" for s in builds["read_s"]) + f" s; tables equal: {builds['tables_equal']}")
    return 0 if same and builds["tables_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
