"""GPU check: ML-1M, all six methods x 3 seeds + the gamma ablation on one GPU, and GPU vs CPU metrics.

    PYTHONUNBUFFERED=1 python -m benchmarks.gpu_check --tasks DIR --out DIR [--budget full|tiny]
        [--device cuda] [--processes N] [--check-steps 200] [--max-steps N]

Needs only torch, numpy, scipy and safetensors (a GPU machine without the data stack): the
tasks come as an exported directory, made where the raw data is with

    PAML_DATA_DIR=/path/to/data python -m benchmarks.export_tasks --dataset movielens --from-raw --out benchmarks/out/tasks/movielens

Two phases, each run in its own process sharing the device (models/parallel.py):

1. check: every method, seed 0, the same short budget (`--check-steps` outer steps) on CPU
   and on the GPU, side by side. Same seed and data order, so the two should differ only by
   floating-point rounding grown through training: the test MSE and nDCG must agree within
   TOLERANCE; the first validation loss (after `eval_every` steps) must agree more tightly.
2. full: the 30 runs of the pipeline's ML-1M training job (6 methods x seeds 0-2, REG-PAML
   with gamma in {1e-5, 1e-4, 1e-3, 1e-2} x seeds 0-2) with the tuned settings and the full
   step budget (early stopping on validation users; each run's training capped at
   `--run-seconds`, so the script ends in time: a capped run says `max_seconds`), on the GPU. Prints the wall time of the whole set (the number to compare
   with the issue's 2-minute target), each run's time and steps, and the test metrics per
   method (mean and sd over seeds) beside the CPU reference measured on the 2-core machine
   (REFERENCE, where it has the method).

Before each phase the fold-ins' tables (MF cross-fits, kNN lists) are fitted once in this
process and kept in a fits directory (`--fits`, default a temporary one) that the runs'
processes read, so no run fits its own copy and a phase's wall time is its runs' training.

`--budget tiny` (a dry run on any machine): 2 methods for the check, 12 outer steps per run,
one seed. Results stream to OUT/results.jsonl as runs finish (a killed run keeps what was
done), and OUT/summary.json at the end; each full run's per-user test predictions go to
OUT/users/, packed into OUT/users.tar at the end (the device machine hands back at most 8
files). Exit status 1 when the check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.export_tasks import load_tasks

METHODS = ("melu", "meta_sgd", "transfer", "paml", "at_paml", "reg_paml")
ABLATION_GAMMAS = (1e-5, 1e-4, 1e-3, 1e-2)  # assets/gamma_ablation.py (not imported: it needs polars)
SEEDS = (0, 1, 2)
# GPU vs CPU after the same short training: absolute differences allowed.
TOLERANCE = {"mse": 0.01, "ndcg@3": 0.01, "ndcg@5": 0.01, "first_val_loss": 1e-3}
# Test MSE on the 2-core CPU machine (tuned settings, bucketed batches; docs/benchmarks.md).
REFERENCE = Path(__file__).resolve().parent / "reference_ml1m_cpu.json"


def settings(method: str, gamma: float | None, device: str, seed: int, steps: int | None, eval_every: int | None,
             seconds: float | None = None, dataset: str = "movielens", references=None):
    """The pipeline's tuned settings of `dataset` for one run, optionally capped to `steps` or `seconds`;
    `references` (models/references.py `ReferenceSettings`) sets the fold-ins' MF and kNN as the model assets do."""
    from models.settings import tuned_configs
    from models.training import TrainConfig

    learner_config, train_config = tuned_configs(dataset, method, TrainConfig(device=device, seed=seed, max_seconds=seconds),
                                                 references)
    if gamma is not None:
        learner_config = replace(learner_config, gamma=gamma)
    if steps is not None:
        train_config = replace(train_config, max_steps=steps, eval_every=eval_every or train_config.eval_every,
                               patience=10**6)
    return learner_config, train_config


def describe(label: dict, result) -> dict:
    """One result line: the run's label, time, steps, test metrics and personalization diagnostics."""
    import numpy as np

    from models.metrics import rating_metrics

    test = result.predictions["test"]
    trained = [h for h in result.history if h.step > 0]  # the step-0 scoring is the untrained start
    diagnostics = {}
    if test.query_loss_unadapted is not None:
        lr = test.lr_per_user
        diagnostics = {"lr_cv": round(float(np.std(lr) / max(float(np.mean(lr)), 1e-12)), 4),
                       "adaptation_gain": round(float(np.mean(test.query_loss_unadapted - test.query_loss)), 5),
                       "nearest_weight": round(float(np.nanmean(test.nearest_weight)), 4)
                       if not np.isnan(test.nearest_weight).all() else None}
    return {**label, "seconds": round(result.seconds, 2), "best_step": result.best_step, "stopped": result.stopped,
            "best_val_loss": round(result.best_val_loss, 5),
            "steps": result.history[-1].step if result.history else 0,
            "first_val_loss": trained[0].val_loss if trained else math.nan, **diagnostics,
            "users_per_second": round(sum(h.users_per_second for h in result.history) / max(1, len(result.history))),
            **{k: round(v, 5) for k, v in rating_metrics(test.pred, test.target, test.mask).items()}}


def run_phase(name: str, data, runs: list[tuple[dict, object, object]], processes: int | None, out: Path) -> tuple[list[dict], float]:
    """Train `runs` (label, learner config, train config) side by side; stream results to OUT."""
    from models.parallel import TrainJob, run_jobs

    import numpy as np

    jobs = [TrainJob(label["method"], learner_config, train_config, ("test",), diagnostics=name == "full")
            for label, learner_config, train_config in runs]
    rows: list[dict | None] = [None] * len(jobs)

    def finished(index: int, result) -> None:
        rows[index] = {"phase": name, **describe(runs[index][0], result)}
        if name == "full":  # per test user, for paired tests against the reference rows made elsewhere
            label, test = runs[index][0], result.predictions["test"]
            run = f"{label.get('variant') or label['method']}{'_gamma' + format(label['gamma'], 'g') if label.get('gamma') is not None else ''}"
            (out / "users").mkdir(exist_ok=True)
            np.savez_compressed(out / "users" / f"{run}_seed{label['seed']}.npz", pred=test.pred, query_loss=test.query_loss,
                                query_loss_unadapted=test.query_loss_unadapted, lr=test.lr_per_user,
                                nearest_weight=test.nearest_weight, attention_entropy=test.attention_entropy)
        with (out / "results.jsonl").open("a") as handle:
            handle.write(json.dumps(rows[index]) + "\n")
        r = rows[index]
        print(f"  [{name}] {r['method']}{' gamma ' + format(r['gamma'], 'g') if r.get('gamma') is not None else ''} "
              f"seed {r['seed']} on {r['device']}: {r['seconds']} s, {r['steps']} steps (best {r['best_step']}, {r['stopped']}), "
              f"test MSE {r['mse']:.4f}", flush=True)

    print(f"fold-in tables of the {name} phase's settings ready in {prefit(data, runs):.1f} s", flush=True)
    start = time.perf_counter()
    run_jobs(data, jobs, processes=processes, on_result=finished)
    return [r for r in rows if r is not None], time.perf_counter() - start


def prefit(data, runs: list[tuple[dict, object, object]]) -> float:
    """Fit the fold-ins' tables (MF cross-fits, kNN lists) here, once per network setting, into the
    fits directory (`--fits`): each run's process then reads them (a fraction of a second) instead
    of fitting its own copy on its CPU while the GPU waits, and the phase's wall time is training."""
    from models.learners import build_learner
    from models.tasks import training_view

    start, done = time.perf_counter(), set()
    for label, learner_config, train_config in runs:
        key = (repr(learner_config.network), train_config.protocol)
        if key not in done:
            done.add(key)
            build_learner(label["method"], training_view(data, train_config.protocol), learner_config)
    return time.perf_counter() - start


def pack_users(out: Path) -> None:
    """OUT/users/*.npz as one file, OUT/users.tar: the device machine hands back at most 8 files."""
    import shutil
    import tarfile

    folder = out / "users"
    if folder.is_dir():
        with tarfile.open(out / "users.tar", "w") as archive:
            for path in sorted(folder.glob("*.npz")):
                archive.add(path, arcname=f"users/{path.name}")
        shutil.rmtree(folder)


def check_rows(rows: list[dict]) -> tuple[list[str], bool]:
    """GPU vs CPU, per method: the differences and whether each is within TOLERANCE."""
    by = {(r["method"], r["side"]): r for r in rows}
    lines, passed = ["| method | " + " | ".join(f"{k} cpu / device / diff" for k in TOLERANCE) + " | within tolerance |",
                     "|---|" + "---|" * (len(TOLERANCE) + 1)], True
    for method in sorted({m for m, _ in by}):
        cpu, gpu = by.get((method, "cpu")), by.get((method, "device"))
        if cpu is None or gpu is None:
            continue
        ok = all(abs(cpu[k] - gpu[k]) <= tol for k, tol in TOLERANCE.items())
        passed &= ok
        cells = " | ".join(f"{cpu[k]:.4f} / {gpu[k]:.4f} / {abs(cpu[k] - gpu[k]):.1e}" for k in TOLERANCE)
        lines.append(f"| {method} | {cells} | {'yes' if ok else 'NO'} |")
    return lines, passed


def diagnostic(rows: list[dict], key: str) -> str:
    """Mean of a diagnostic over runs that have it, or '-'."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return f"{sum(values) / len(values):.3f}" if values else "-"


def summary_rows(rows: list[dict], dataset: str = "movielens") -> list[str]:
    """Mean and sd over seeds of each method (and gamma), beside the CPU reference."""
    import numpy as np

    reference = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() and dataset == "movielens" else {}  # ML-1M's
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("variant") or r["method"]) + (f" gamma={r['gamma']:g}" if r.get("gamma") is not None else ""),
                          []).append(r)
    lines = ["| run | seeds | test MSE mean (sd) | nDCG@3 | nDCG@5 | seconds per run | steps | CPU reference MSE mean (sd) "
             "| difference within 2 CPU sd | step-size cv | nearest weight |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, part in groups.items():
        mse = np.array([r["mse"] for r in part])
        ref = reference.get(name)
        ref_cells = "- | -"
        if isinstance(ref, list) and len(ref) > 1:
            within = abs(mse.mean() - np.mean(ref)) <= 2 * np.std(ref, ddof=1)
            ref_cells = f"{np.mean(ref):.4f} ({np.std(ref, ddof=1):.4f}) | {'yes' if within else 'no'}"
        lines.append(f"| {name} | {len(part)} | {mse.mean():.4f} ({mse.std(ddof=1) if len(mse) > 1 else 0:.4f}) | "
                     f"{np.mean([r['ndcg@3'] for r in part]):.4f} | {np.mean([r['ndcg@5'] for r in part]):.4f} | "
                     f"{np.mean([r['seconds'] for r in part]):.1f} | {np.mean([r['steps'] for r in part]):.0f} | {ref_cells} | "
                     f"{diagnostic(part, 'lr_cv')} | {diagnostic(part, 'nearest_weight')} |")
    return lines


def main() -> int:
    from models.runtime import seed_argument

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=Path, required=True, help="exported ML-1M tasks (benchmarks/export_tasks.py)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out/gpu_check")))
    parser.add_argument("--budget", choices=["full", "tiny"], default="full")
    parser.add_argument("--device", default="cuda", help="the device under test ('cpu' for a dry run)")
    parser.add_argument("--processes", type=int, default=None, help="runs side by side (default: one per run, up to the cores)")
    parser.add_argument("--check-steps", type=int, default=200, help="outer steps of each check run")
    parser.add_argument("--max-steps", type=int, default=None, help="cap the full runs' step budget")
    parser.add_argument("--run-seconds", type=float, default=120.0,
                        help="wall-clock cap of each full run's training (its best validation scoring is kept)")
    parser.add_argument("--fits", type=Path, default=None,
                        help="where the fold-ins' fitted tables are kept for the runs' processes (default: a temporary directory)")
    parser.add_argument("--skip-full", action="store_true", help="only the GPU vs CPU check")
    parser.add_argument("--skip-check", action="store_true", help="only the full runs")
    parser.add_argument("--seeds", type=seed_argument, nargs="+", default=list(SEEDS), help="seeds of the full runs")
    parser.add_argument("--no-ablation", action="store_true", help="leave the gamma ablation's runs out of the full phase")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS, help="methods of the full runs (none: only --variants)")
    parser.add_argument("--variants", type=Path, help="JSON {name: {method, network: {...}, learner: {...}, train: {...}}}: more runs x 3 seeds "
                        "beside the pipeline's, each a method with some settings changed")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device visible: run with --device cpu for a dry run")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.jsonl").unlink(missing_ok=True)
    (args.out / "users.tar").unlink(missing_ok=True)
    import tempfile

    from models.kept_fits import fits_kept_in

    with tempfile.TemporaryDirectory() as scratch, fits_kept_in(args.fits or Path(scratch)):
        return check_and_train(args)


def check_and_train(args: argparse.Namespace) -> int:
    """The two phases (module docstring), with the fold-ins' tables kept where `fits_kept_in` says."""
    import torch

    gpu_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"{platform.node()}: {os.cpu_count()} CPUs, GPU {gpu_name}, torch {torch.__version__}, Python {platform.python_version()}")
    data = load_tasks(args.tasks)
    # The exported tasks name their dataset: its settings file chooses each method's settings.
    dataset = json.loads((args.tasks / "info.json").read_text()).get("dataset", "movielens")
    # The fold-ins take the reference rows' validation-chosen settings, as in the pipeline (paper protocol).
    from models.references import validation_settings
    references = validation_settings(data)
    print(f"reference settings (validation): {references}", flush=True)
    print(f"tasks: {', '.join(f'{k} {len(v)}' for k, v in data.splits.items())} (one per user; warm users' "
          "histories in chunks, one task each)", flush=True)
    tiny = args.budget == "tiny"
    check_methods = ("melu", "reg_paml") if tiny else METHODS
    check_steps, check_every = (12, 6) if tiny else (args.check_steps, min(100, args.check_steps))
    summary: dict = {"machine": f"{platform.node()} {os.cpu_count()} CPUs, GPU {gpu_name}", "torch": torch.__version__,
                     "budget": args.budget}
    started = time.perf_counter()

    print(f"\n1. check: {len(check_methods)} methods, seed 0, {check_steps} steps, CPU and {args.device} side by side", flush=True)
    runs = [({"method": m, "seed": 0, "device": device, "side": side, "gamma": None},
             *settings(m, None, device, 0, check_steps, check_every, dataset=dataset, references=references))
            for m in check_methods for side, device in (("cpu", "cpu"), ("device", args.device))]
    passed = True
    if not args.skip_check:
        check, seconds = run_phase("check", data, runs, args.processes, args.out)
        lines, passed = check_rows(check)
        print(f"check done in {seconds:.0f} s\n" + "\n".join(lines), flush=True)
        summary.update(check=check, check_seconds=round(seconds, 1), check_passed=passed)

    if not args.skip_full:
        seeds = args.seeds[:1] if tiny else args.seeds
        steps = 12 if tiny else args.max_steps
        every = 6 if tiny else None
        runs = [({"method": m, "seed": s, "device": args.device, "side": "device", "gamma": None},
                 *settings(m, None, args.device, s, steps, every, args.run_seconds, dataset, references))
                for m in args.methods for s in seeds]
        runs += [({"method": "reg_paml", "seed": s, "device": args.device, "side": "device", "gamma": g},
                  *settings("reg_paml", g, args.device, s, steps, every, args.run_seconds, dataset, references))
                 for g in ABLATION_GAMMAS for s in seeds if not args.no_ablation]
        for variant, spec in (json.loads(args.variants.read_text()) if args.variants else {}).items():
            for s in seeds:
                learner_config, train_config = settings(spec["method"], None, args.device, s, steps, every, args.run_seconds, dataset,
                                                        references)
                # JSON lists stand for tuples (e.g. the adapted parameter prefixes).
                network = replace(learner_config.network, **{k: tuple(v) if isinstance(v, list) else v
                                                             for k, v in spec.get("network", {}).items()})
                learner_config = replace(learner_config, network=network, **spec.get("learner", {}))
                train_config = replace(train_config, **spec.get("train", {}))
                runs.append(({"method": spec["method"], "variant": variant, "seed": s, "device": args.device, "side": "device",
                              "gamma": None}, learner_config, train_config))
        # The slowest runs first, so the last wave is not one long run alone.
        order = sorted(range(len(runs)), key=lambda i: runs[i][0]["method"] not in ("at_paml", "reg_paml", "meta_sgd"))
        runs = [runs[i] for i in order]
        print(f"\n2. full: {len(runs)} runs on {args.device} ({'tiny budget' if tiny else 'tuned settings, full step budget'})",
              flush=True)
        full, seconds = run_phase("full", data, runs, args.processes, args.out)
        print(f"\nall {len(full)} runs trained and scored in {seconds:.0f} s (wall, {args.device})\n" + "\n".join(summary_rows(full, dataset)))
        summary.update(full=full, full_seconds=round(seconds, 1))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    pack_users(args.out)
    print(f"\ncheck {'passed' if passed else 'FAILED'}; everything took {summary['seconds']:.0f} s; results in {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
