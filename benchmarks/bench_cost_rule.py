"""Where control variates should take over from exact one-hop blocks: a sweep over the degree.

    python benchmarks/bench_cost_rule.py                  # degrees 20 40 70 100, ~40 min
    python benchmarks/bench_cost_rule.py --layers 3 --degrees 20 --fanouts x,x,x x,2,x x,2,2

For each mean degree, a synthetic graph (50k nodes, the ``synthetic-deg100`` settings of
``bench_training.py`` otherwise) trains GraphSAGE with ``OneHopSampler`` (uniform seeds) for
each fanout setting given (default: exact last layer ``x,x`` and control variates ``x,2``)
next to ``NeighborSampler``, side by side per seed, through ``bench_training.py``.  The table
gives the best validation accuracy, the training time per epoch and the time to reach
NeighborSampler's best validation accuracy; ``dgl_mvs.onehop.EXACT_MAX_DEGREE`` is the degree
where the exact layer stops paying for itself.  Writes ``results/bench_cost_rule.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_training  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--degrees", type=float, nargs="+", default=[20, 40, 70, 100])
    p.add_argument("--fanouts", nargs="+", default=["x,x", "x,2"],
                   help="one-hop fanout settings, one per run: comma-separated, x for an "
                        "exact layer (-1), a number for control variates")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--num-nodes", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--dataset", default="synthetic-deg100")
    p.add_argument("--out", default=str(ROOT / "results" / "bench_cost_rule.json"))
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    runs = []
    for degree in args.degrees:
        for i, fanouts in enumerate(args.fanouts):
            values = ["-1" if f == "x" else f for f in fanouts.split(",")]
            tag = "-" + ("exact" if set(values) == {"-1"} else fanouts.replace(",", ""))
            out = Path(args.out).with_name(f"{Path(args.out).stem}_d{degree:g}{tag}.json")
            samplers = ["onehop", "neighbor"] if i == 0 else ["onehop"]
            argv_run = [
                "--datasets", args.dataset, "--models", "sage", "--layers", str(args.layers),
                "--batch-sizes", str(args.batch_size), "--epochs", str(args.epochs),
                "--seeds", *map(str, args.seeds), "--samplers", *samplers,
                "--num-nodes", str(args.num_nodes), "--avg-degree", str(degree),
                "--onehop-fanouts", *values, "--no-variance", f"--tag={tag}",
                "--out", str(out), "--plot", "",
            ]
            bench_training.main(argv_run)
            for r in json.loads(out.read_text()):
                r["degree"] = degree
                if r["sampler"].startswith("neighbor"):
                    r["sampler"] = "neighbor"
                runs.append(r)
    Path(args.out).write_text(json.dumps(runs, indent=1))
    print(f"\n{args.num_nodes} nodes, SAGE, {args.layers} layers, batch {args.batch_size}, "
          f"{args.epochs} epochs, seeds {args.seeds}\n")
    print(f"{'degree':>6s} {'blocks':14s} {'best val':>8s} {'s/epoch':>8s} {'to NS best':>10s} "
          f"{'rows/step':>9s}")
    for degree in args.degrees:
        group = [r for r in runs if r["degree"] == degree]
        ns = {r["seed"]: r for r in group if r["sampler"] == "neighbor"}
        for name in sorted({r["sampler"] for r in group}):
            rs = [r for r in group if r["sampler"] == name]
            reach = [bench_training.time_to(r["curve"], ns[r["seed"]]["best_val"]) for r in rs]
            print(f"{degree:6g} {name:14s} {statistics.mean(r['best_val'] for r in rs):8.4f} "
                  f"{statistics.mean(r['train_time_s'] / r['epochs'] for r in rs):8.2f} "
                  f"{statistics.mean(reach):10.1f} "
                  f"{statistics.mean(r['input_rows_per_step'] for r in rs):9.0f}")


if __name__ == "__main__":
    main()
