"""User memory search: FLANN recall@k against exact search, and query / build time.

Stored points and queries are N(0, I) in 32-d (the hard case for kd-trees). For each stored
size it times the exact backend (torch cdist + topk, CPU) and the FLANN randomized kd-tree
backend at several `checks`, all through `UserMemory.search`: a batch of queries (best of
`--repeats`) and 100 single-user searches. "build" is one FLANN index build, which happens
after every insert or gradient step that precedes a search. Usage:

    python -m benchmarks.memory_recall [--sizes 5000 50000] [--queries 1000] [--k 8]

Prints Markdown and writes benchmarks/out/memory_recall.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from models.user_memory import MemoryConfig, UserMemory

OUT = Path(__file__).resolve().parent / "out"


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of the true K nearest that the search returned, averaged over queries."""
    hits = (found.unsqueeze(2) == truth.unsqueeze(1)).any(dim=2).sum().item()
    return hits / truth.numel()


def synced_search(memory: UserMemory, queries: torch.Tensor) -> torch.Tensor:
    found = memory.search(queries)
    if found.is_cuda:
        torch.cuda.synchronize()  # kernels are asynchronous: time their completion
    return found


def timed_search(memory: UserMemory, queries: torch.Tensor, repeats: int) -> tuple[torch.Tensor, float]:
    """Best-of-`repeats` seconds for one batched search (the index is already built)."""
    found, best = synced_search(memory, queries), float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        found = synced_search(memory, queries)
        best = min(best, time.perf_counter() - start)
    return found, best


def single_query_us(memory: UserMemory, queries: torch.Tensor) -> float:
    """Mean microseconds per search of one user at a time (batch of 1), the per-task case."""
    start = time.perf_counter()
    for q in queries:
        synced_search(memory, q.unsqueeze(0))
    return 1e6 * (time.perf_counter() - start) / len(queries)


def run(sizes: list[int], n_queries: int, k: int, dim: int, checks: list[int], trees: int, repeats: int,
        device: str = "cpu") -> list[dict]:
    rows = []
    for size in sizes:
        generator = torch.Generator().manual_seed(size)
        stored = torch.randn(size, dim, generator=generator)
        queries = torch.randn(n_queries, dim, generator=generator)
        exact = UserMemory(dim, MemoryConfig(capacity=size, k=k), device=device)
        exact.insert(stored.to(device), torch.zeros(size, device=device))
        truth, seconds = timed_search(exact, queries.to(device), repeats)
        single = single_query_us(exact, queries[:100].to(device))
        truth = truth.cpu()
        rows.append({"stored": size, "backend": f"exact ({device})", "checks": "", "recall": 1.0, "build_ms": 0.0,
                     "query_ms": round(1e3 * seconds, 2), "us_per_query": round(1e6 * seconds / n_queries, 1),
                     "us_single": round(single, 1)})
        for c in checks:
            flann = UserMemory(dim, MemoryConfig(capacity=size, k=k, backend="flann", flann_trees=trees, flann_checks=c))
            flann.load_state_dict({key: value.cpu() for key, value in exact.state_dict().items()})
            start = time.perf_counter()
            flann.search(queries[:1])  # first search builds the index
            build = time.perf_counter() - start
            found, seconds = timed_search(flann, queries, repeats)
            rows.append({"stored": size, "backend": f"flann ({trees} trees)", "checks": c,
                         "recall": round(recall(found, truth), 3), "build_ms": round(1e3 * build, 1),
                         "query_ms": round(1e3 * seconds, 2), "us_per_query": round(1e6 * seconds / n_queries, 1),
                         "us_single": round(single_query_us(flann, queries[:100]), 1)})
    return rows


def markdown(rows: list[dict], n_queries: int, k: int) -> str:
    lines = [f"| stored | backend | checks | recall@{k} | build (ms) | {n_queries} queries (ms) | µs/query | µs/query, batch of 1 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stored']:,} | {r['backend']} | {r['checks']} | {r['recall']:.3f} | {r['build_ms']} "
                     f"| {r['query_ms']} | {r['us_per_query']} | {r['us_single']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--checks", type=int, nargs="+", default=[256, 1024, 1536, 4096, 16384])
    parser.add_argument("--trees", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--device", default="cpu", help="device of the exact backend (FLANN is CPU only)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.sizes, args.queries, args.k, args.dim, args.checks, args.trees, args.repeats, args.device)
    print(f"torch threads: {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(markdown(rows, args.queries, args.k))
    OUT.mkdir(parents=True, exist_ok=True)
    name = "memory_recall.json" if args.device == "cpu" else f"memory_recall_{args.device.replace(':', '')}.json"
    (OUT / name).write_text(json.dumps({"torch_threads": torch.get_num_threads(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
