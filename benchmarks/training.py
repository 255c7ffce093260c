"""Training speed on ML-1M, side by side in one run: the code before issue 11 against this checkout.

    python -m benchmarks.training [--methods reg_paml melu] [--steps 30] [--rounds 3] [--threads 2]
        [--inner-steps N] [--baseline REF] [--variants KEY ...] [--profile] [--quality] [--inner]

Every measurement runs in a fresh process (benchmarks/train_speed.py) on the same exported
ML-1M tasks (benchmarks/export_tasks.py, from PAML_DATA_DIR), with each method's tuned ML-1M
settings, PAML_THREADS threads and the same OpenMP wait policy for every variant, and the same
number of inner steps (`--inner-steps`, default this checkout's tuned value: the baseline's own
settings may have another, and the work grows with it):

- speed: users per second of meta-training over the second epoch (the first pays for
  warm-up; a whole epoch, because a bucketed window shorter than that would time whichever
  length buckets it happened to draw) for `--baseline` (a commit, default the main branch before issue 11:
  random meta-batches, padded to the longest user), this checkout with random batches, and
  this checkout with length-bucketed batches (the default, and with the first layer's user
  columns copied per user instead of carried as one vector per user: `--no-fold`; and on the
  baseline's network, without the fold-ins and the dot-product head: `plain`); and, for
  the baseline and the default, two runs side by side with half the threads each (their users/s
  added: what a method's seeds get when `processes` splits the cores between them); and one run
  of the default data-parallel over two processes of one thread each (models/distributed.py:
  each computes half of every meta-batch, one summed gradient, the same update).
  `--variants` picks some (the baseline always runs). Rounds alternate the variants, so a
  change in the machine's load hits all of them; ratios are taken within a round.
- `--profile`: torch.profiler's self-time by category for one window, before and after.
- `--quality`: full tuned training (step budget, early stopping) of each method x seed with
  both samplers, configured as the model assets and the GPU check configure it (the fold-ins'
  settings chosen on validation users), and the test users' MSE and nDCG: the sampler must not
  change them beyond seed noise; the bucketed runs are the GPU check's CPU reference.
- `--inner`: the vectorized inner step against a per-user Python loop (same arithmetic).

Results print as Markdown and go to benchmarks/out/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, NamedTuple

from benchmarks.export_tasks import export, load_tasks
from models.runtime import OPENMP_WAIT_KEYS, SHORT_SPIN, seed_argument

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
BASELINE = "ecf0ab0"  # main before issue 11 (full-random, fully padded meta-batches)
METHODS = ("reg_paml", "melu")


def machine() -> str:
    """The host, the CPU model and vector extensions as runs record them (pipelines/provenance.py), usable
    cores, Python, and the load at the start."""
    from models.runtime import available_cores
    from pipelines.provenance import machine as recorded

    return (f"{platform.node()}: {recorded()}, {available_cores()} usable, "
            f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start")


def ml1m_tasks() -> Path:
    """Exported ML-1M tasks in benchmarks/out (made once from PAML_DATA_DIR)."""
    from pipelines.locations import default_data_dir

    directory = OUT / "tasks" / "movielens"
    if not (directory / "info.json").is_file():
        export("movielens", directory, None, default_data_dir())
    return directory


def baseline_code(ref: str) -> Path:
    """The `models/` package of commit `ref`, exported under benchmarks/out/code-<ref>/."""
    target = OUT / f"code-{ref}"
    if not (target / "models" / "training.py").is_file():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "models"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def child_command(code: Path, tasks: Path, method: str, batching: str, steps: int, threads: int, profile: bool = False,
                  extra: tuple[str, ...] = (), wait: Mapping[str, str] = SHORT_SPIN) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one run of benchmarks/train_speed.py.

    `wait`: its OpenMP environment, by default the one this checkout sets (models/runtime.py),
    the same for every variant (the baseline sets none of its own).
    """
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_KEYS}
    env |= {**wait, "PAML_THREADS": str(threads), "PYTHONPATH": ""}
    command = [sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "--code", str(code), "--tasks", str(tasks),
               "--method", method, "--batching", batching, "--steps", str(steps), *extra] + (["--profile"] if profile else [])
    return command, env


def free_port() -> int:
    """A TCP port nobody listens on now (for a data-parallel run's rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child(code: Path, tasks: Path, method: str, batching: str, steps: int, threads: int, profile: bool = False,
          extra: tuple[str, ...] = (), processes: int = 1, ranks: int = 1) -> dict:
    """Runs of benchmarks/train_speed.py in fresh processes, `threads` threads in all: one run; or
    `processes` runs side by side (each a run of its own with threads // processes threads),
    whose users/s add up (their timed windows overlap: same work, started together); or one run
    data-parallel over `ranks` processes (models/distributed.py), each computing its share of
    every meta-batch with threads // ranks threads (rank 0's users/s counts the whole batch)."""
    command, env = child_command(code, tasks, method, batching, steps, max(1, threads // max(processes, ranks)), profile,
                                 extra)
    if ranks > 1:
        rendezvous = {"WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1",
                      "MASTER_PORT": str(free_port())}
        envs = [env | rendezvous | {"RANK": str(rank), "LOCAL_RANK": str(rank)} for rank in range(ranks)]
    else:
        envs = [env] * processes
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e) for e in envs]
    rows = []
    for process in running:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
        rows.append(json.loads(stdout.strip().splitlines()[-1]))
    if len(rows) == 1:
        return rows[0]
    if ranks > 1:  # one run: its users over the CPU time of all its processes
        return {**rows[0], "users_per_cpu_second": 1 / sum(1 / r["users_per_cpu_second"] for r in rows), "runs": rows}
    return {"users_per_second": sum(r["users_per_second"] for r in rows),
            "users_per_cpu_second": statistics.mean(r["users_per_cpu_second"] for r in rows), "runs": rows}


class Variant(NamedTuple):
    """One configuration the speed comparison times."""

    key: str
    label: str  # "{ref}" stands for the baseline commit
    on_baseline: bool  # the baseline commit's models/ package, else this checkout's
    batching: str
    extra: tuple[str, ...] = ()
    processes: int = 1
    ranks: int = 1

    def code_dir(self, ref: str) -> Path:
        return baseline_code(ref) if self.on_baseline else REPO

    def title(self, ref: str) -> str:
        return self.label.format(ref=ref)


# Every variant compared; the first is the baseline the ratios refer to.
VARIANTS = (
    Variant("baseline", "main {ref}, random batches", True, "random"),
    Variant("baseline-pair", "main {ref}, random batches, two runs side by side", True, "random", processes=2),
    Variant("random", "this checkout, random batches", False, "random"),
    Variant("copied", "this checkout, bucketed batches, user columns copied per user", False, "bucketed", ("--no-fold",)),
    Variant("bucketed", "this checkout, bucketed batches", False, "bucketed"),
    Variant("plain", "this checkout, bucketed batches, the baseline's network (no fold-ins, no dot-product head)", False,
            "bucketed", ("--plain-network",)),
    Variant("pair", "this checkout, bucketed batches, two runs side by side", False, "bucketed", processes=2),
    Variant("data-parallel", "this checkout, bucketed batches, one run data-parallel over 2 processes", False, "bucketed",
            ranks=2),
)


def inner_steps_of(method: str, inner_steps: int | None = None) -> int:
    """The inner steps every variant of `method` runs: `inner_steps`, by default this checkout's
    tuned ML-1M value.

    A run's cost grows with its inner steps, and each checkout reads its own tuned settings: the
    baseline's table had 3 steps for every method, this checkout's searched settings have 1 for
    REG-PAML. Without this the comparison would time different work (it did, until 2026-11-29).
    """
    from models.settings import tuned_configs

    return inner_steps or tuned_configs("movielens", method)[0].inner_steps


def same_work(method: str, inner_steps: int | None = None) -> tuple[str, ...]:
    """The children's arguments that give every variant of `method` the same inner steps (`inner_steps_of`)."""
    return ("--inner-steps", str(inner_steps_of(method, inner_steps)))


def speed(tasks: Path, methods: list[str], ref: str, steps: int, rounds: int, threads: int,
          keys: list[str] | None = None, inner_steps: int | None = None) -> list[dict]:
    """Median users/s of every variant (those of `keys` and the baseline), and its median ratio
    to the baseline within a round."""
    chosen = [v for i, v in enumerate(VARIANTS) if i == 0 or keys is None or v.key in keys]
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(rounds):
        for method in methods:
            for v in chosen:
                row = child(v.code_dir(ref), tasks, method, v.batching, steps, threads, extra=v.extra + same_work(method, inner_steps),
                            processes=v.processes, ranks=v.ranks)
                runs.setdefault((method, v.key), []).append(row)
                print(f"round {round_index + 1} {method} {v.title(ref)}: {row['users_per_second']:.0f} users/s, "
                      f"{row['users_per_cpu_second']:.0f} users per CPU-second", flush=True)
    rows = []
    for method in methods:
        base = runs[(method, chosen[0].key)]
        for v in chosen:
            mine = runs[(method, v.key)]
            row = {"method": method, "variant": v.title(ref)}
            for key in ("users_per_second", "users_per_cpu_second"):
                row[key] = statistics.median(r[key] for r in mine)
                row[f"{key}_runs"] = [round(r[key]) for r in mine]
                row[f"{key}_ratio"] = statistics.median(r[key] / b[key] for r, b in zip(mine, base))
            rows.append(row)
    return rows


def profiles(tasks: Path, methods: list[str], ref: str, steps: int, threads: int,
             inner_steps: int | None = None) -> list[dict]:
    """Self-time by category, before (baseline, random) and after (this checkout, bucketed)."""
    chosen = [v for v in VARIANTS if v.key in ("baseline", "bucketed")]
    return [{"method": m, "variant": v.title(ref), **child(v.code_dir(ref), tasks, m, v.batching, steps, threads,
                                                             profile=True, extra=v.extra + same_work(m, inner_steps))}
            for m in methods for v in chosen]


def plain_network(learner_config):
    """The learner without the MF and kNN fold-ins and the dot-product head: MeLU's network with the
    rating statistics. It starts far from a good model, so meta-training has to do all of the work."""
    from dataclasses import replace

    return replace(learner_config, network=replace(learner_config.network, mf_foldin=False, knn_foldin=False, factor_dim=0))


def quality(tasks: Path, methods: list[str], seeds: list[int], plain: bool = False) -> list[dict]:
    """Test metrics of full tuned training with each sampler (runs side by side where cores allow),
    configured as the model assets and the GPU check configure them: the settings file's choice
    and the fold-ins' MF and kNN settings chosen on validation users. `plain`: the same settings
    on the network without fold-ins (`plain_network`), where most tuned runs do not keep their start."""
    from dataclasses import replace

    from benchmarks.gpu_check import settings
    from models.metrics import rating_metrics
    from models.parallel import TrainJob, run_jobs
    from models.references import validation_settings

    data = load_tasks(tasks)
    references = validation_settings(data)
    jobs, labels = [], []
    for method in methods:
        for batching in ("random", "bucketed"):
            for seed in seeds:
                learner_config, train_config = settings(method, None, "cpu", seed, None, None, references=references)
                learner_config = plain_network(learner_config) if plain else learner_config
                jobs.append(TrainJob(method, learner_config, replace(train_config, batching=batching), ("test",)))
                labels.append((method, batching, seed))
    log = lambda i, entry: print(f"{' '.join(map(str, labels[i]))} step {entry.step}: val {entry.val_loss:.4f}, "  # noqa: E731
                                 f"{entry.users_per_second:.0f} users/s", flush=True)
    rows = []
    for (method, batching, seed), result in zip(labels, run_jobs(data, jobs, on_epoch=log)):
        test = result.predictions["test"]
        rows.append({"method": method, "batching": batching, "seed": seed, "best_step": result.best_step,
                     "stopped": result.stopped, "seconds": round(result.seconds, 1),
                     **{k: round(v, 4) for k, v in rating_metrics(test.pred, test.target, test.mask).items()}})
    return rows


def inner_step_speed(tasks: Path, batches: int = 8, repeats: int = 5) -> dict:
    """Seconds per meta-gradient of the inner loop on 32-user ML-1M batches: vmap vs Python loop.

    Both paths take the same precomputed embeddings (so only the inner update, the query
    loss and the backward pass through them are timed), the same REG-PAML step sizes, and
    one second-order inner step. Averaged over `batches` random training batches.
    """
    import torch

    from dataclasses import replace

    from models.inner import InnerConfig, adapt_batch, adapt_loop, predict_batch, total_sq_norm
    from models.learners import LearnerConfig, build_learner

    data = load_tasks(tasks)
    torch.manual_seed(0)
    learner = build_learner("reg_paml", data, LearnerConfig())
    net, config = learner.net, InnerConfig(steps=1)
    order = torch.randperm(len(data.splits["train"]), generator=torch.Generator().manual_seed(0))
    totals: dict[str, float] = {}
    for b in range(batches):
        batch = data.splits["train"].select(order[32 * b: 32 * (b + 1)])
        with torch.no_grad():
            items = net.embedder.items(data.items)
            h0 = net.embedder.user_of(batch)
            support0 = net.inputs(h0, batch.support_items, items)
            query0 = net.inputs(h0, batch.query_items, items)
            _, _, users0 = learner.prepare(batch, data.items)

        def meta_gradient(vectorized: bool, backward: bool = True) -> None:
            xs = tuple(t.clone().requires_grad_(True) for t in support0)
            xq = tuple(t.clone().requires_grad_(True) for t in query0)
            alpha = learner.step_size(replace(users0, h=xs[0]))
            args = (net.adapted_params(), xs, batch.support_labels, batch.support_mask, alpha, net.predict, learner.loss, config,
                    learner.per_user_step)
            if vectorized:
                adapted, norms = adapt_batch(*args)
                loss = learner.loss(predict_batch(net.predict, adapted, xq), batch.query_labels, batch.query_mask).sum()
            else:
                adapted, norms = adapt_loop(*args)
                loss = sum(learner.loss(net.predict(p, (xq[0][u], xq[1][u])), batch.query_labels[u], batch.query_mask[u])
                           for u, p in enumerate(adapted))
            if backward:
                (loss + total_sq_norm(norms).sum()).backward()

        for name, vectorized, backward in (("vectorized", True, True), ("loop", False, True),
                                           ("vectorized_inner", True, False), ("loop_inner", False, False)):
            meta_gradient(vectorized, backward)  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                meta_gradient(vectorized, backward)
            totals[name] = totals.get(name, 0.0) + (time.perf_counter() - start) / repeats / batches
    return {"batch_users": 32, "batches": batches, "vectorized_s": round(totals["vectorized"], 4),
            "loop_s": round(totals["loop"], 4), "speedup": round(totals["loop"] / totals["vectorized"], 2),
            "inner_vectorized_s": round(totals["vectorized_inner"], 4), "inner_loop_s": round(totals["loop_inner"], 4),
            "inner_speedup": round(totals["loop_inner"] / totals["vectorized_inner"], 2),
            "threads": torch.get_num_threads()}


def markdown(results: dict) -> str:
    lines = [f"machine: {results['machine']}"]
    if results.get("inner_steps"):
        lines.append("inner steps of every variant: " + ", ".join(f"{m} {n}" for m, n in results["inner_steps"].items()))
    lines.append("")
    if "speed" in results:
        lines += ["| method | variant | users/s (median) | runs | ratio to main | users per CPU-second (median) | runs | ratio to main |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['variant']} | {r['users_per_second']:.0f} | {r['users_per_second_runs']} | "
                  f"{r['users_per_second_ratio']:.2f}x | {r['users_per_cpu_second']:.0f} | {r['users_per_cpu_second_runs']} | "
                  f"{r['users_per_cpu_second_ratio']:.2f}x |" for r in results["speed"]]
        lines.append("(ratios: median over rounds of each run's ratio to the main run of the same round)")
    for r in results.get("profile", []):
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["share"].items())
        top = ", ".join(f"{t['op']} {100 * t['share']:.0f}% ({t['calls_per_step']:.0f}/step)" for t in r["top"][:8])
        lines += ["", f"{r['method']}, {r['variant']}: {r['cpu_ms_per_step']:.0f} CPU-ms per outer step (profiler on); "
                  f"{shares}", f"top: {top}"]
    if "quality" in results:
        lines += ["", "| method | batching | seed | test MSE | nDCG@3 | nDCG@5 | best step | stopped | seconds |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['batching']} | {r['seed']} | {r['mse']} | {r['ndcg@3']} | {r['ndcg@5']} | "
                  f"{r['best_step']} | {r['stopped']} | {r['seconds']} |" for r in results["quality"]]
    if "inner" in results:
        i = results["inner"]
        lines += ["", f"inner step, 32 users: vectorized {i['inner_vectorized_s']} s, loop {i['inner_loop_s']} s "
                  f"({i['inner_speedup']}x); with the backward pass {i['vectorized_s']} s vs {i['loop_s']} s ({i['speedup']}x)"]
    return "\n".join(lines)


def main() -> int:
    from models.runtime import thread_count

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=None, help="outer steps per timed window (default: one epoch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of every run (default PAML_THREADS)")
    parser.add_argument("--baseline", default=BASELINE, help="commit whose models/ is the baseline")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    parser.add_argument("--variants", nargs="+", default=None, choices=[v.key for v in VARIANTS],
                        help="time only these variants (and the baseline); default: all")
    parser.add_argument("--inner-steps", type=int, default=None,
                        help="inner steps of every timed run (default: this checkout's tuned value, per method)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--seeds", type=seed_argument, nargs="+", default=[0, 1, 2])
    parser.add_argument("--plain", action="store_true", help="--quality on the network without fold-ins (plain_network)")
    parser.add_argument("--inner", action="store_true")
    args = parser.parse_args()
    threads = args.threads or thread_count()
    tasks = ml1m_tasks()
    if args.steps is None:
        train_users = json.loads((tasks / "info.json").read_text())["n_users"]["train"]
        args.steps = -(-train_users // 32)  # one epoch of 32-user meta-batches
    inner_steps = args.inner_steps
    results: dict = {"machine": machine(), "threads": threads, "baseline": args.baseline,
                     "inner_steps": {m: inner_steps_of(m, inner_steps) for m in args.methods}}
    started = time.perf_counter()
    if not args.no_speed:
        results["speed"] = speed(tasks, args.methods, args.baseline, args.steps, args.rounds, threads, args.variants,
                                 inner_steps)
    if args.profile:
        results["profile"] = profiles(tasks, args.methods, args.baseline, args.steps, threads, inner_steps)
    if args.quality:
        results["quality"] = quality(tasks, args.methods, args.seeds, args.plain)
        results["plain_network"] = args.plain
    if args.inner:
        results["inner"] = inner_step_speed(tasks)
    results["seconds"] = round(time.perf_counter() - started)
    OUT.mkdir(exist_ok=True)
    name = "training_quality.json" if args.quality and args.no_speed else "training.json"
    name = name.replace(".json", "_plain.json") if args.plain else name
    (OUT / name).write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
