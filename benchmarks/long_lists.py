"""What long multi-valued item lists cost: data steps and training, short against long lists.

    python -m benchmarks.long_lists                       # both cases in a temporary directory: a table
    python -m benchmarks.long_lists gen DIR --longest 5000|5   # write the synthetic spec dataset
    python -m benchmarks.long_lists data DIR OUT          # data steps; bundle in OUT (one JSON line)
    python -m benchmarks.long_lists train OUT [--steps 20]   # short MeLU run on OUT's bundle

50,000 items, most with 1-5 tags (Zipf over 3,000 common tags), LONG_ITEMS items with `--longest`
tags (1,000 common + the rest unique to the item; with 5, their first 5 of the same list).
8,000 users; every item rated at least once; the long items by 60 users each. CODE=<checkout>
measures another checkout's code (e.g. one from before the cap, docs/benchmarks.md "Long
multi-valued lists"); each step runs in its own process so that its peak RSS is its own.
"""
import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("CODE", str(Path(__file__).resolve().parents[1])))  # the code measured
N_ITEMS, N_USERS, N_TAGS, LONG_ITEMS = 50_000, 8_000, 3_000, 5

SPEC = """name = "longtags"
[label]
kind = "rating"
min = 1
max = 5
[interactions]
file = "ratings.csv"
user_id = "user"
item_id = "item"
label = "rating"
timestamp = "ts"
[users.features]
user = { type = "categorical", column = "user" }
[items]
file = "items.csv"
id = "item"
[items.features]
tags = { type = "multi", delimiter = ";" }
"""


def gen(directory: Path, longest: int) -> None:
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dataset.toml").write_text(SPEC)
    weights = [1 / (k + 1) for k in range(N_TAGS)]
    tags = [f"t{k}" for k in range(N_TAGS)]
    long_rows = set(range(1, N_ITEMS + 1, N_ITEMS // LONG_ITEMS))
    lines = ["item,tags"]
    quality = {}
    for i in range(1, N_ITEMS + 1):
        if i in long_rows:
            full = rng.sample(tags, 1000) + [f"u{i}_{k}" for k in range(4000)]
            rng.shuffle(full)
            chosen = full[:longest]
        else:
            chosen = list(dict.fromkeys(rng.choices(tags, weights, k=rng.randint(1, 5))))
        quality[i] = rng.gauss(0, 0.7) + (0.3 if "t1" in chosen else 0)
        lines.append(f"{i},{';'.join(chosen)}")
    (directory / "items.csv").write_text("\n".join(lines) + "\n")
    per_user = {u: set() for u in range(1, N_USERS + 1)}
    for i in range(1, N_ITEMS + 1):
        per_user[rng.randint(1, N_USERS)].add(i)
    for i in long_rows:
        for u in rng.sample(range(1, N_USERS + 1), 60):
            per_user[u].add(i)
    for u in per_user:
        while len(per_user[u]) < 8 + u % 30:
            per_user[u].add(rng.randint(1, N_ITEMS))
    out = ["user,item,rating,ts"]
    for u, items in per_user.items():
        bias = rng.gauss(0, 0.5)
        for k, i in enumerate(sorted(items)):
            r = min(5, max(1, round(3.5 + bias + quality[i] + rng.gauss(0, 0.8))))
            out.append(f"{u},{i},{r},{1_600_000_000 + u * 1000 + k}")
    (directory / "ratings.csv").write_text("\n".join(out) + "\n")


def hwm_mb() -> float:
    kib = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return kib / 1024


def data(directory: Path, out: Path) -> None:
    from safetensors.torch import save_file
    from assets.clean_logs import clean_logs_from_raw
    from assets.cold_start_users import select_cold_start
    from assets.custom_reader import read_custom
    from assets.dataset_spec import load_spec
    from assets.meta_tasks import encode_tasks
    from assets.user_splits import user_splits_for
    from assets.bundle import Bundle

    rows = []

    def timed(step, fn):
        Path("/proc/self/clear_refs").write_text("5")
        start = time.perf_counter()
        value = fn()
        rows.append({"step": step, "seconds": round(time.perf_counter() - start, 2), "step_peak_rss_mb": round(hwm_mb())})
        return value

    dataset = load_spec(directory)
    spec = dataset.spec
    raw = timed("read", lambda: read_custom(dataset))
    clean = timed("clean", lambda: clean_logs_from_raw(raw, spec))
    raw = None  # the raw tables are not needed past cleaning: free them as the asset chain does
    cold = timed("cold-start", lambda: select_cold_start(clean.frame("interactions")))
    splits = timed("splits", lambda: user_splits_for(cold, clean.frame("interactions"), 0))
    frames, tensors, info = timed("encode tasks", lambda: encode_tasks(clean.frame("users"), clean.frame("items"), splits, spec))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "tensors.safetensors"))
    (out / "info.json").write_text(json.dumps(info))
    for name, frame in frames.items():
        frame.write_parquet(out / f"{name}.parquet")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(json.dumps({"steps": rows, "bundle_bytes": size, "content_hash": Bundle(frames=frames, tensors=tensors, info=info).content_hash(),
                      "shapes": {k: list(v.shape) for k, v in tensors.items() if k.startswith("item")},
                      "truncated": info.get("truncated_lists"),
                      "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def train(out: Path, steps: int) -> None:
    from safetensors.torch import load_file
    from models.learners import LearnerConfig
    from models.tasks import task_data_from_tensors
    from models.training import TrainConfig, train as run

    data = task_data_from_tensors(load_file(str(out / "tensors.safetensors")), json.loads((out / "info.json").read_text()))
    config = TrainConfig(max_steps=2 * steps, eval_every=steps, patience=10**6, seed=0, threads=2)
    start = time.perf_counter()
    from dataclasses import replace
    from models.network import NetworkConfig
    # No MF head or fold-ins: their fits over 50,000 items (about 12 min) would hide the lists' cost.
    learner = replace(LearnerConfig(), network=NetworkConfig(factor_dim=0, mf_foldin=False, knn_foldin=False))
    result = run("melu", data, learner, config)
    window = result.history[-1]
    print(json.dumps({"seconds_per_step": round(window.seconds / steps, 3), "run_seconds": round(time.perf_counter() - start, 1),
                      "val_losses": [h.val_loss for h in result.history],
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def main() -> None:
    """Generate both catalogues, then data steps and 100-step training of each, one process each."""
    import subprocess
    import tempfile

    me = [sys.executable, "-m", "benchmarks.long_lists"]
    env = {**os.environ, "PAML_THREADS": os.environ.get("PAML_THREADS", "2")}
    print(f"machine: {os.cpu_count()} CPUs, PAML_THREADS={env['PAML_THREADS']}, load average {os.getloadavg()[0]:.1f}")
    print("| case | item_multi__tags | bundle MB | encode peak MiB | data process peak MiB | training peak MiB | s per step |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for case, longest in (("short", 5), ("long", 5000)):
            raw, out = Path(tmp) / case, Path(tmp) / f"{case}_bundle"
            subprocess.run([*me, "gen", str(raw), "--longest", str(longest)], check=True, env=env)
            made = json.loads(subprocess.run([*me, "data", str(raw), str(out)], check=True, env=env,
                                             capture_output=True, text=True).stdout.strip().splitlines()[-1])
            trained = json.loads(subprocess.run([*me, "train", str(out), "--steps", "100"], check=True, env=env,
                                                capture_output=True, text=True).stdout.strip().splitlines()[-1])
            encode = next(s["step_peak_rss_mb"] for s in made["steps"] if s["step"] == "encode tasks")
            shape = " x ".join(map(str, made["shapes"]["item_multi__tags"]))
            print(f"| {case} | {shape} | {made['bundle_bytes'] / 1e6:.1f} | {encode} | {made['process_peak_rss_mb']} | "
                  f"{trained['peak_rss_mb']} | {trained['seconds_per_step']} |")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line of the module docstring: no subcommand runs both cases."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_lists",
                                     description=__doc__.split("\n\n")[0].strip())
    commands = parser.add_subparsers(dest="cmd")
    gen_cmd = commands.add_parser("gen", help="write the synthetic spec dataset into DIR")
    gen_cmd.add_argument("directory", type=Path, metavar="DIR")
    gen_cmd.add_argument("--longest", type=int, required=True, help="tags on each long item (5000 or 5)")
    data_cmd = commands.add_parser("data", help="the data steps on DIR; the bundle in OUT (one JSON line)")
    data_cmd.add_argument("directory", type=Path, metavar="DIR")
    data_cmd.add_argument("out", type=Path, metavar="OUT")
    train_cmd = commands.add_parser("train", help="a short MeLU run on OUT's bundle (one JSON line)")
    train_cmd.add_argument("out", type=Path, metavar="OUT")
    train_cmd.add_argument("--steps", type=int, default=20, help="outer steps per timed window (default 20)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse(sys.argv[1:])
    if args.cmd == "gen":
        gen(args.directory, args.longest)
    elif args.cmd == "data":
        data(args.directory, args.out)
    elif args.cmd == "train":
        train(args.out, args.steps)
    else:
        main()
