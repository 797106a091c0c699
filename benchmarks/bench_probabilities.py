"""Time mvs_probabilities against torch.sort of the same scores, and the draw schemes per step.

Run: ``DGLBACKEND=pytorch python benchmarks/bench_probabilities.py [--repeats 5]``.
Prints two tables and writes ``results/bench_probabilities.json``.  The solver and the sort are
timed alternately in one process (median of the repeats), so machine load affects both alike.
Goal from the issue: solver <= 3x sort at n = 1e7.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from dgl_mvs.draws import horvitz_thompson_weights, poisson_draw, systematic_draw
from dgl_mvs.probabilities import mvs_probabilities


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def scores_of(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Heavy-tailed, as gradient norms are, with some zeros: exercises floor and clipping.
    g = torch.rand(n, generator=gen) ** 6
    g[: n // 100] = 0.0
    return g


def bench_solver(sizes, batch_sizes, repeats):
    rows = []
    for n in sizes:
        g = scores_of(n)
        for b in batch_sizes:
            mvs_probabilities(g, b)  # warm-up
            torch.sort(g, descending=True)
            t_sort, t_mvs = [], []
            for _ in range(repeats):
                t_sort.append(timed(lambda: torch.sort(g, descending=True)))
                t_mvs.append(timed(lambda: mvs_probabilities(g, b)))
            s, m = statistics.median(t_sort), statistics.median(t_mvs)
            rows.append({"n": n, "batch_size": b, "sort_s": s, "mvs_s": m, "ratio": m / s})
    return rows


def bench_draws(pools, batch_size, steps):
    rows = []
    gen = torch.Generator().manual_seed(0)
    for n in pools:
        p = mvs_probabilities(scores_of(n, seed=1), batch_size)
        for name, draw in [("poisson", poisson_draw), ("systematic", systematic_draw)]:
            draw(p, generator=gen)

            def step():
                idx = draw(p, generator=gen)
                return horvitz_thompson_weights(p[idx], n)

            times = [timed(step) for _ in range(steps)]
            rows.append({"pool": n, "batch_size": batch_size, "scheme": name,
                         "median_ms": 1e3 * statistics.median(times),
                         "min_ms": 1e3 * min(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6, 10**7])
    parser.add_argument("--out", default="results/bench_probabilities.json")
    args = parser.parse_args()

    solver = []
    for n in args.sizes:  # a small and a large batch: the partial sort depends on B
        solver += bench_solver([n], [512, n // 10], args.repeats)
    print(f"mvs_probabilities vs torch.sort (float32, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads)")
    print(f"{'n':>10} {'B':>9} {'sort ms':>10} {'mvs ms':>10} {'mvs/sort':>9}")
    for r in solver:
        print(f"{r['n']:>10} {r['batch_size']:>9} {1e3 * r['sort_s']:>10.2f} "
              f"{1e3 * r['mvs_s']:>10.2f} {r['ratio']:>9.2f}")

    draws = bench_draws([10**5, 10**6], 512, args.steps)
    print(f"\ndraw + Horvitz-Thompson weights per step (B=512, median of {args.steps})")
    print(f"{'pool':>10} {'scheme':>11} {'median ms':>10} {'min ms':>8}")
    for r in draws:
        print(f"{r['pool']:>10} {r['scheme']:>11} {r['median_ms']:>10.3f} {r['min_ms']:>8.3f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor()}
    out.write_text(json.dumps({"meta": meta, "solver": solver, "draws": draws}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
