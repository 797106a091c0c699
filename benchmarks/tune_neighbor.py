"""NeighborSampler at its best: a sweep of fanouts and learning rates per graph and model.

    python benchmarks/tune_neighbor.py                 # 3 graphs x 2 models x 4 fanouts x 3 lr
    python benchmarks/tune_neighbor.py --quick         # small graphs, one epoch, smoke run
    python benchmarks/tune_neighbor.py --summarize results/tune_neighbor.json

For every (dataset, model) DGL's ``NeighborSampler`` trains DGL's example model (the models of
``bench_training.py``: ``sage``, ``gcn-ew``, ``gcn``) at batch ``--batch-size`` (256) for
``--epochs`` epochs with each fanout of ``--fanouts`` and each learning rate of ``--lrs``,
for each seed of ``--seeds``.  The best setting per (dataset, model) is the one with the
highest best validation accuracy (mean over seeds; the shorter time to it on ties).  Every
run and the best settings are written to ``--out`` (``{"runs": [...], "best":
{"dataset/model": {"fanouts", "lr", "best_val", ...}}}``) as the sweep goes;
``bench_training.py --ns-tuned results/tune_neighbor.json`` then trains ``neighbor`` with
them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_training  # noqa: E402

FANOUTS = ([5, 5], [10, 10], [15, 10], [25, 10])
LRS = (1e-3, 3e-3, 1e-2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["synthetic-100k", "synthetic-deg100",
                                                     "debian"],
                   choices=list(bench_training.DATASETS))
    p.add_argument("--models", nargs="+", default=["sage", "gcn-ew"],
                   choices=list(bench_training.MODELS))
    p.add_argument("--fanouts", nargs="+", default=[",".join(map(str, f)) for f in FANOUTS],
                   help="comma-separated fanouts per layer, first layer first (DGL's order)")
    p.add_argument("--lrs", nargs="+", type=float, default=list(LRS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--evals-per-epoch", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "results" / "tune_neighbor.json"))
    p.add_argument("--quick", action="store_true",
                   help="5000-node synthetic graphs, one epoch, two fanouts and two lr")
    p.add_argument("--append", action="store_true",
                   help="keep the runs already in --out (other datasets, models or settings)")
    p.add_argument("--summarize", default=None, metavar="JSON",
                   help="only print the table of an earlier result file")
    args = p.parse_args(argv)
    fanouts = []
    for text in args.fanouts:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            p.error(f"--fanouts takes comma-separated integers like 10,10, got {text!r}")
        if len(values) != 2 or min(values) < 1:
            p.error(f"--fanouts entries need 2 positive fanouts (2-layer models), got {text!r}")
        fanouts.append(values)
    args.fanouts = fanouts
    return args


def _training_args(args, fanouts, lr):
    """bench_training's arguments for one NeighborSampler run."""
    targs = bench_training.parse_args([
        "--epochs", str(args.epochs), "--evals-per-epoch", str(args.evals_per_epoch),
        "--hidden", str(args.hidden), "--lr", str(lr), "--no-variance",
    ])
    targs.ns_fanout = None
    targs.ns_fanouts = list(fanouts)
    return targs


def best_settings(runs) -> dict:
    """Per ``dataset/model``: the (fanouts, lr) of the highest mean best validation accuracy."""
    best = {}
    for key in sorted({f"{r['dataset']}/{r['model']}" for r in runs}):
        scored = []
        settings = {(tuple(r["fanouts"]), r["lr"]) for r in runs
                    if f"{r['dataset']}/{r['model']}" == key}
        for fanouts, lr in settings:
            rs = [r for r in runs if f"{r['dataset']}/{r['model']}" == key
                  and tuple(r["fanouts"]) == fanouts and r["lr"] == lr]
            val = statistics.mean(r["best_val"] for r in rs)
            t = statistics.mean(bench_training.time_to(r["curve"], r["best_val"]) for r in rs)
            scored.append((-val, t, list(fanouts), lr, len(rs),
                           statistics.mean(r["test_at_best_val"] for r in rs)))
        neg_val, t, fanouts, lr, seeds, test = min(scored)
        best[key] = {"fanouts": fanouts, "lr": lr, "best_val": -neg_val, "test": test,
                     "time_to_best_s": t, "seeds": seeds}
    return best


def table(runs) -> str:
    best = best_settings(runs)
    out = [f"{'dataset/model':26s} {'fanouts':>8s} {'lr':>7s} {'best val':>8s} {'test':>7s} "
           f"{'to best s':>9s} {'seeds':>5s}", "-" * 76]
    for key in sorted({f"{r['dataset']}/{r['model']}" for r in runs}):
        rs = [r for r in runs if f"{r['dataset']}/{r['model']}" == key]
        for fanouts, lr in sorted({(tuple(r["fanouts"]), r["lr"]) for r in rs}):
            these = [r for r in rs if tuple(r["fanouts"]) == fanouts and r["lr"] == lr]
            to_best = statistics.mean(bench_training.time_to(r["curve"], r["best_val"])
                                      for r in these)
            mark = " *" if best[key]["fanouts"] == list(fanouts) and best[key]["lr"] == lr \
                else ""
            out.append(
                f"{key:26s} {','.join(map(str, fanouts)):>8s} {lr:7.0e} "
                f"{statistics.mean(r['best_val'] for r in these):8.4f} "
                f"{statistics.mean(r['test_at_best_val'] for r in these):7.4f} "
                f"{to_best:9.1f} "
                f"{len(these):5d}{mark}")
    out.append("\n*: the best setting of the dataset and model (highest mean best validation "
               "accuracy), what bench_training.py --ns-tuned uses.")
    return "\n".join(out)


def main(argv=None):
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.summarize:
        print(table(json.loads(Path(args.summarize).read_text())["runs"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.fanouts, args.lrs = 1, args.fanouts[:2], args.lrs[1:]
    bench_training.ARGS = bench_training.parse_args([])
    runs = []
    if args.append and Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())
        if bool(old["args"].get("quick")) != bool(args.quick):
            kind = "with" if old["args"].get("quick") else "without"
            raise ValueError(f"{args.out} holds runs {kind} --quick: append runs on the same "
                             "graphs only")
        redo = {(d, m, tuple(f), lr, s) for d in args.datasets for m in args.models
                for f in args.fanouts for lr in args.lrs for s in args.seeds}
        runs = [r for r in old["runs"] if (r["dataset"], r["model"], tuple(r["fanouts"]),
                                            r["lr"], r["seed"]) not in redo]
    started = time.perf_counter()
    for dataset in args.datasets:
        for model in args.models:
            g, num_classes = bench_training.load(dataset, model, args.quick)
            for fanouts in args.fanouts:
                for lr in args.lrs:
                    for seed in args.seeds:
                        targs = _training_args(args, fanouts, lr)
                        result = bench_training.run(g, num_classes, model, "neighbor",
                                                    args.batch_size, seed, targs, dataset)
                        result["dataset"] = dataset
                        runs.append(result)
                        print(f"{dataset:17s} {model:6s} fanouts={fanouts} lr={lr:.0e} "
                              f"seed={seed} val={result['best_val']:.4f} "
                              f"test={result['test_at_best_val']:.4f} "
                              f"train={result['train_time_s']:.1f}s", flush=True)
                        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                        Path(args.out).write_text(json.dumps(
                            {"args": {k: v for k, v in vars(args).items()},
                             "runs": runs, "best": best_settings(runs)}, indent=1))
    print(f"\n{len(runs)} runs in {time.perf_counter() - started:.0f} s\n")
    print(table(runs))


if __name__ == "__main__":
    main()
