"""The paper's schedule (history blocks, checkpoints every K steps) against DGL's samplers.

    python benchmarks/bench_history_blocks.py                # the full grid (long: ~1 h)
    python benchmarks/bench_history_blocks.py --quick        # a smoke run

The measurements behind the README's "history blocks" tables (MVSSampler(blocks="history"),
the default before one-hop blocks); benchmarks/bench_training.py measures the default.

Runs examples/compare_samplers.py's ``run`` for every (dataset, batch size, sampler, seed),
prints a table of the test metric (mean ± std over seeds), optimizer steps, training wall
time and nodes touched per step, and writes every run to results/bench_training.json.
Runs of one configuration are interleaved with the other samplers' so that machine load
affects all alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import compare_samplers  # noqa: E402

DATASETS = {
    "cora": ["--dataset", "cora"],
    # Noisy features and mixed neighbourhoods: about 0.75 test accuracy, far from saturated.
    "synthetic-100k": ["--dataset", "synthetic", "--num-nodes", "100000", "--avg-degree", "20",
                       "--num-classes", "10", "--feat-dim", "64", "--snr", "0.5",
                       "--homophily", "0.5"],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 1024])
    p.add_argument("--samplers", nargs="+", default=["mvs", "neighbor", "labor", "cv"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--model", default="gcn")
    p.add_argument("--epochs", type=int, default=30, help="cap on epochs (Cora)")
    p.add_argument("--large-epochs", type=int, default=3, help="cap on epochs (synthetic)")
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--K", type=int, default=3)
    p.add_argument("--gamma", type=float, default=None, help="default: pool of K batches")
    p.add_argument("--tag", default="", help="label appended to the sampler name in tables")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="more compare_samplers.py options, passed through")
    p.add_argument("--out", default=str(ROOT / "results" / "bench_history_blocks.json"))
    p.add_argument("--summarize", nargs="+", default=None, metavar="JSON",
                   help="only print the table of earlier result files")
    p.add_argument("--quick", action="store_true", help="one seed, batch 64, small graph")
    return p.parse_args(argv)


def main(argv=None):
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.summarize:
        print(summary([r for path in args.summarize for r in json.loads(Path(path).read_text())]))
        return
    if args.quick:
        args.seeds, args.batch_sizes, args.epochs, args.large_epochs = [0], [64], 3, 1
        DATASETS["synthetic-100k"][3] = "5000"
    runs = []
    started = time.perf_counter()
    for dataset in args.datasets:
        epochs = args.epochs if dataset == "cora" else args.large_epochs
        for batch in args.batch_sizes:
            for seed in args.seeds:
                for sampler in args.samplers:
                    argv_run = DATASETS[dataset] + [
                        "--model", args.model, "--sampler", sampler, "--batch-size", str(batch),
                        "--epochs", str(epochs), "--patience", str(args.patience),
                        "--hidden", str(args.hidden), "--K", str(args.K),
                        "--blocks", "history",
                        "--seed", str(seed), "--quiet",
                    ] + (["--gamma", str(args.gamma)] if args.gamma else []) + args.extra
                    result = compare_samplers.run(compare_samplers.parse_args(argv_run))
                    result.pop("curve")
                    result["bench_dataset"] = dataset
                    result["sampler"] = sampler + (f"-{args.tag}" if args.tag else "")
                    runs.append(result)
                    print(f"{dataset:15s} B={batch:5d} seed={seed} {result['sampler']:9s} "
                          f"test={result['test']:.4f} steps={result['steps']:5d} "
                          f"train={result['train_time_s']:7.1f}s", flush=True)
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out).write_text(json.dumps(runs, indent=1))
    print(f"\n{len(runs)} runs in {time.perf_counter() - started:.0f} s\n")
    print(summary(runs))


def summary(runs) -> str:
    lines = [f"{'dataset':15s} {'batch':>5s} {'sampler':12s} {'test (mean ± std)':>18s} "
             f"{'steps':>6s} {'train s':>8s} {'nodes/step':>10s}"]
    keys = sorted({(r["bench_dataset"], r["batch_size"], r["sampler"]) for r in runs},
                  key=lambda k: (k[0], k[1], k[2]))
    for dataset, batch, sampler in keys:
        group = [r for r in runs if (r["bench_dataset"], r["batch_size"], r["sampler"])
                 == (dataset, batch, sampler)]
        tests = [r["test"] for r in group]
        std = statistics.stdev(tests) if len(tests) > 1 else 0.0
        lines.append(
            f"{dataset:15s} {batch:5d} {sampler:12s} {statistics.mean(tests):9.4f} ± {std:.4f} "
            f"{statistics.mean(r['steps'] for r in group):6.0f} "
            f"{statistics.mean(r['train_time_s'] for r in group):8.1f} "
            f"{statistics.mean(r['nodes_per_step'] for r in group):10.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
