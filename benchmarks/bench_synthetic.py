"""Time the synthetic DC-SBM generator at scale.

Usage::

    DGLBACKEND=pytorch .venv/bin/python benchmarks/bench_synthetic.py
    DGLBACKEND=pytorch .venv/bin/python benchmarks/bench_synthetic.py --sizes 1e5,1e6,5e6

Prints one line per size (nodes, directed edges, seconds) and writes
``results/bench_synthetic.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")

import torch  # noqa: E402

from dgl_mvs.data import synthetic_graph  # noqa: E402


def bench(num_nodes: int, avg_degree: float, repeats: int, multilabel: bool) -> dict:
    times = []
    for rep in range(repeats):
        start = time.perf_counter()
        ds = synthetic_graph(num_nodes, avg_degree=avg_degree, multilabel=multilabel, seed=rep)
        times.append(time.perf_counter() - start)
        g = ds[0]
        edges = g.num_edges()
        del ds, g
    return {
        "nodes": num_nodes,
        "edges": edges,
        "avg_degree_requested": avg_degree,
        "multilabel": multilabel,
        "seconds": min(times),
        "seconds_all": times,
        # Process-wide peak so far; sizes run in increasing order, so it tracks the largest.
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e5,1e6", help="comma-separated node counts")
    parser.add_argument("--avg-degree", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--multilabel", action="store_true")
    parser.add_argument("--out", default="results/bench_synthetic.json")
    args = parser.parse_args()

    synthetic_graph(1_000, seed=0)  # warm up imports and allocators
    sizes = sorted(int(float(s)) for s in args.sizes.split(","))
    rows = []
    print(f"{'nodes':>10} {'edges':>12} {'seconds':>8} {'peak GiB':>8}")
    for n in sizes:
        row = bench(n, args.avg_degree, args.repeats, args.multilabel)
        rows.append(row)
        print(f"{row['nodes']:>10,} {row['edges']:>12,} {row['seconds']:>8.2f} "
              f"{row['peak_rss_gib']:>8.2f}", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "synthetic_graph",
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "results": rows,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
