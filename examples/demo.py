"""README command 1: MVS-GNN against DGL's NeighborSampler on Cora, offline, in about a minute.

Trains the same 2-layer GCN (dgl.nn.GraphConv) with each sampler at the same batch size over
three seeds, and prints test accuracy, optimizer steps, training wall time and the nodes a step
touches (input nodes of its blocks).
"""
from __future__ import annotations

import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import node_classification  # noqa: E402

SEEDS = (0, 1, 2)
BATCH = 32


def main() -> None:
    warnings.filterwarnings("ignore", message="Dataloader CPU affinity")
    rows = []
    for sampler in ("mvs", "neighbor"):
        runs = []
        for seed in SEEDS:
            args = node_classification.parse_args([
                "--dataset", "cora", "--model", "gcn", "--sampler", sampler,
                "--batch-size", str(BATCH), "--epochs", "60", "--patience", "15",
                "--seed", str(seed), "--quiet",
            ])
            runs.append(node_classification.run(args))
            print(f"  {sampler:8s} seed {seed}: test accuracy {runs[-1]['test']:.3f}", flush=True)
        rows.append((sampler, runs))
    print(f"\nCora, 2-layer GCN, batch size {BATCH}, {len(SEEDS)} seeds (mean ± std)\n")
    header = f"{'sampler':10s} {'test accuracy':>16s} {'steps':>7s} {'train time (s)':>15s} " \
             f"{'nodes/step':>11s}"
    print(header)
    print("-" * len(header))
    for sampler, runs in rows:
        acc = [r["test"] for r in runs]
        print(f"{sampler:10s} {statistics.mean(acc):10.3f} ± {statistics.stdev(acc):.3f} "
              f"{statistics.mean(r['steps'] for r in runs):7.0f} "
              f"{statistics.mean(r['train_time_s'] for r in runs):15.2f} "
              f"{statistics.mean(r['nodes_per_step'] for r in runs):11.0f}")
    print("\nmvs: importance-sampled seeds + history blocks (dgl_mvs.MVSSampler); "
          "neighbor: dgl.dataloading.NeighborSampler([10, 10]).")


if __name__ == "__main__":
    main()
