"""DistDGL: 2 partitions (2 simulated machines, one trainer each) against 1 partition.

    python benchmarks/bench_distdgl.py            # 100k-node synthetic graph, 3 seeds
    python benchmarks/bench_distdgl.py --quick    # 5k nodes, 1 seed

Runs ``examples/distributed_training.py local`` (partition, graph servers and trainers as
local processes over 127.0.0.1, see ``dgl_mvs.local_cluster``) for each seed with

* ``--num-parts 2`` and ``B`` seeds per trainer (``2 B`` per step in all), and
* ``--num-parts 1`` and ``2 B`` seeds on its single trainer: the same model, the same seeds
  per step and the same number of steps, in one trainer process,

each for ``DistMVSSampler`` on ``DistOneHopSampler`` blocks ("mvs", the default blocks),
``DistMVSSampler`` on DGL's ``NeighborSampler([10, 10])`` blocks ("mvs-neighbor") and DGL's
``NeighborSampler([10, 10])`` with uniform seeds ("neighbor"), on the synthetic graph with
homophily 0.5 and signal-to-noise 1.0 (the at-scale notebook's; validation is exact for
all).  Prints best validation accuracy (mean and standard deviation over seeds), training
time and steps per second, and the overhead of 2 partitions (time per step, 2 partitions /
1); writes ``results/bench_distdgl.json``.  On this 2-core machine both trainers and both servers share
the two cores: the 2-partition run shows the cost of distribution (remote feature pulls,
distributed sampling, gradient all-reduce), not a speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("mvs", "mvs-neighbor", "neighbor")


def run(parts: int, batch: int, seed: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        command = [sys.executable, str(ROOT / "examples" / "distributed_training.py"), "local",
                   "--num-nodes", str(args.num_nodes), "--num-parts", str(parts),
                   "--epochs", str(args.epochs), "--batch-size", str(batch),
                   "--seed", str(seed), "--out", out, "--lr", str(args.lr),
                   "--homophily", str(args.homophily),
                   "--signal-to-noise", str(args.signal_to_noise),
                   "--samplers", *SAMPLERS]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stdout[-2000:] + done.stderr[-4000:])
        with open(out) as f:
            return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-nodes", type=int, default=100_000)
    p.add_argument("--homophily", type=float, default=0.5)
    p.add_argument("--signal-to-noise", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=256, help="seeds per trainer, 2 parts")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "bench_distdgl.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.num_nodes, args.seeds, args.epochs = 5000, 1, 2

    rows = []
    for seed in range(args.seeds):
        for parts in (2, 1):
            batch = args.batch_size * 2 // parts
            result = run(parts, batch, seed, args)
            for sampler, r in result.items():
                h = r["history"]
                rows.append({"parts": parts, "trainers": r["trainers"], "batch_per_trainer": batch,
                             "sampler": sampler, "seed": seed,
                             "best_val_acc": max(e["val_acc"] for e in h),
                             "train_time": h[-1]["train_time"], "steps": h[-1]["steps"],
                             "history": h})
                print(f"seed {seed} | {parts} partition(s) x B={batch} | {sampler:12s} | best val "
                      f"{rows[-1]['best_val_acc']:.4f} | {rows[-1]['train_time']:.1f} s | "
                      f"{h[-1]['steps'] / h[-1]['train_time']:.1f} steps/s", flush=True)

    summary = {}
    print(f"\n{args.num_nodes:,} nodes, {args.epochs} epochs, {args.seeds} seeds, "
          f"{2 * args.batch_size} seeds per step in all")
    print(f"{'sampler':13s} {'partitions':>10s} {'best val acc':>14s} {'train s':>8s} "
          f"{'steps/s':>8s} {'s/step ratio':>12s}")
    for sampler in SAMPLERS:
        per = {}
        for parts in (1, 2):
            sel = [r for r in rows if r["sampler"] == sampler and r["parts"] == parts]
            acc = [r["best_val_acc"] for r in sel]
            per_step = [r["train_time"] / r["steps"] for r in sel]
            per[parts] = {
                "best_val_acc_mean": statistics.mean(acc),
                "best_val_acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "train_time_mean": statistics.mean(r["train_time"] for r in sel),
                "seconds_per_step": statistics.mean(per_step),
            }
        ratio = per[2]["seconds_per_step"] / per[1]["seconds_per_step"]
        summary[sampler] = {"one_partition": per[1], "two_partitions": per[2],
                            "step_time_ratio_2_over_1": ratio}
        for parts in (1, 2):
            s = per[parts]
            print(f"{sampler:13s} {parts:>10d} {s['best_val_acc_mean']:>8.4f}±"
                  f"{s['best_val_acc_std']:.4f} {s['train_time_mean']:>8.1f} "
                  f"{1 / s['seconds_per_step']:>8.1f} "
                  f"{(f'{ratio:.2f}x' if parts == 2 else ''):>12s}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "runs": rows, "summary": summary}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
