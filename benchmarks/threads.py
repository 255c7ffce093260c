"""How OpenMP's wait between parallel regions decides training speed, idle and on shared cores.

    python -m benchmarks.threads [--method melu] [--steps 20] [--busy 0 3 8] [--threads 2]

torch's OpenMP threads wait for each other between any two parallel regions (hundreds per
outer step). libgomp's default spins 300,000 times before a waiting thread sleeps: on cores
shared with other work the spinning threads take the time the working one needs. The passive
policy (never spin) sleeps at once: robust, but every wake-up then costs a system call. The
pipeline's default (models/runtime.py) is a short spin, GOMP_SPINCOUNT=1000.

Every run is benchmarks/train_speed.py in a fresh process on the exported ML-1M tasks (the
training benchmark's child: the method's tuned settings, bucketed batches, the second window
of `--steps` outer steps timed), with `--busy` other processes spinning in pure Python on the
machine meanwhile (0: idle). Results print as Markdown and go to benchmarks/out/threads.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.training import OUT, REPO, child_command, machine, ml1m_tasks
from models.runtime import SHORT_SPIN, SPIN_COUNT

WAITS = [  # (label, threads, the OpenMP environment of the run)
    ("passive (OMP_WAIT_POLICY=PASSIVE)", None, {"OMP_WAIT_POLICY": "PASSIVE"}),
    (f"short spin (GOMP_SPINCOUNT={SPIN_COUNT}, the default here)", None, SHORT_SPIN),
    ("libgomp's default (300,000 spins)", None, {}),
    ("short spin, one thread", 1, SHORT_SPIN),
]


def run(tasks, method: str, steps: int, threads: int, wait: dict[str, str]) -> dict:
    """One train_speed.py run with `threads` threads and the OpenMP environment `wait`."""
    command, env = child_command(REPO, tasks, method, "bucketed", steps, threads, wait=wait)
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy_processes(count: int) -> list[subprocess.Popen]:
    """`count` processes that spin on a core each until killed: other work on a shared machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="melu")
    parser.add_argument("--steps", type=int, default=20, help="outer steps per window (the second is timed)")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 3, 8], help="other busy processes during the runs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tasks = ml1m_tasks()
    header = machine()
    rows = []
    for busy in args.busy:
        others = busy_processes(busy)
        try:
            for label, threads, wait in WAITS:
                threads = threads or args.threads
                result = run(tasks, args.method, args.steps, threads, wait)
                rows.append({"busy": busy, "wait": label, "threads": threads, **result})
                print(f"{busy} busy, {label}, {threads} threads: {result['users_per_second']:.0f} users/s", flush=True)
        finally:
            for process in others:
                process.kill()
                process.wait()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "threads.json").write_text(json.dumps({"machine": header, "method": args.method, "rows": rows}, indent=1))
    print(f"\n{header}; {args.method}, tuned ML-1M settings, bucketed batches, window of {args.steps} outer steps\n")
    print("| busy processes | OpenMP wait | threads | users/s | users per CPU-second |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['busy']} | {r['wait']} | {r['threads']} | {r['users_per_second']:.0f} | {r['users_per_cpu_second']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
