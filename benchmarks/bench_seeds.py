"""MVS seeds against uniform seeds on the same one-hop blocks: accuracy at equal wall time.

    python benchmarks/bench_seeds.py                       # the grid of the issue (an hour+)
    python benchmarks/bench_seeds.py --quick               # a smoke run (a minute)
    python benchmarks/bench_seeds.py --summarize results/bench_seeds.json
    python benchmarks/bench_seeds.py --overhead-only       # the interleaved step timing only

Two samplers on the same blocks, DGL's example GraphSAGE (``bench_training.SAGE``: 2 layers,
hidden 256, dropout 0.5), Adam, B=256, 5 epochs, seeds 0-2, learning rates 1e-3 and 1e-2, on
synthetic-100k, synthetic-deg100 and the Debian package graph (``benchmarks/debian_graph.py``,
cached in ``data/``):

* ``mvs``: ``dgl_mvs.MVSSampler`` with its defaults: one-hop blocks, importance-sampled seeds
  while they pay and uniform ones otherwise (``sampler.seed_report()``);
* ``onehop``: ``dgl_mvs.OneHopSampler`` (the same blocks) in DGL's DataLoader with
  ``shuffle=True``: uniform seeds, the plain mean;
* ``mvs-small`` (``--samplers``, item 3 of the issue): the MVS sampler at a batch
  ``--small-factor`` times smaller, spending the variance cut on cheaper steps.

The runs reuse ``bench_training``'s models, datasets and evaluation (full-graph inference,
not counted in the wall time); the two samplers of a (dataset, lr, seed) run one after the
other, in alternating order, so that the machine's load affects both alike.

**Accuracy at equal wall time.**  Validation and test accuracy are taken ``--evals-per-epoch``
times per epoch (and at steps 8, 16, 32, ...).  For each (dataset, lr, seed), ``T`` is the
shorter of the two runs' training times; each run's accuracy at ``T`` is its test accuracy at
its best validation point among the evaluations made by then.  The table gives, per
(dataset, lr), the mean and standard deviation over the seeds of that accuracy, of the final
test accuracy (at the best validation point of the whole run), the training times, and the
wall-time overhead of the MVS runs (their time over the uniform runs', minus one).  The
acceptance of the issue: MVS seeds never below uniform seeds by more than one standard
deviation (of the uniform runs) at equal wall time, in any cell; overhead at most 5 %.

**Overhead, interleaved** (``--overhead-steps``): the wall-time ratio of two whole runs
carries the machine's load; so the per-step cost is also measured with both samplers in one
process, one step of each in turn (loader, forward, backward, optimizer, and for ``mvs`` the
score computation and ``update_scores`` with the refreshes they trigger), over
``--overhead-steps`` steps each, as means (refreshes included) and medians.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import dgl
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_training  # noqa: E402
import dgl_mvs  # noqa: E402

DATASETS = ("synthetic-100k", "synthetic-deg100", "debian")
SAMPLERS = ("mvs", "onehop", "mvs-small")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--samplers", nargs="+", default=["mvs", "onehop"], choices=list(SAMPLERS))
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 1e-2])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--small-factor", type=float, default=0.7,
                   help="mvs-small's batch over --batch-size")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--evals-per-epoch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier times)")
    p.add_argument("--overhead-steps", type=int, default=600,
                   help="interleaved steps per sampler and dataset for the overhead (0: none)")
    p.add_argument("--overhead-only", action="store_true", help="only the interleaved timing")
    p.add_argument("--out", default=str(ROOT / "results" / "bench_seeds.json"))
    p.add_argument("--summarize", nargs="+", default=None, metavar="JSON",
                   help="only print the tables of earlier result files")
    p.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    p.add_argument("--quick", action="store_true",
                   help="5000-node synthetic graphs (Debian as is), one seed, lr 1e-2, "
                        "2 epochs, 100 overhead steps")
    return p.parse_args(argv)


def _training_args(args, lr: float):
    """bench_training's options for one run (its models, data and evaluation)."""
    targs = bench_training.parse_args([])
    targs.lr, targs.epochs, targs.hidden = lr, args.epochs, args.hidden
    targs.evals_per_epoch, targs.no_variance, targs.quick = args.evals_per_epoch, True, args.quick
    bench_training.ARGS = targs
    return targs


def _batch(args, name: str) -> int:
    return max(1, round(args.batch_size * args.small_factor)) if name == "mvs-small" \
        else args.batch_size


def _trainer(g, num_classes, name, batch, seed, targs, dataset):
    base = "mvs" if name.startswith("mvs") else name
    return bench_training._Trainer(g, num_classes, "sage", base, batch, seed, targs, dataset)


def run(g, num_classes, dataset, name, lr, seed, args) -> dict:
    """One training run: its curve (wall time, validation, test) and, for MVS, its seeds."""
    targs = _training_args(args, lr)
    batch = _batch(args, name)
    torch.manual_seed(seed)
    dgl.seed(seed)
    tick = time.perf_counter()
    trainer = _trainer(g, num_classes, name, batch, seed, targs, dataset)
    wall = time.perf_counter() - tick
    steps_per_epoch = math.ceil(trainer.train.numel() / batch)
    eval_every = max(1, steps_per_epoch // args.evals_per_epoch)
    steps, curve, modes = 0, [], []
    for epoch in range(args.epochs):
        tick = time.perf_counter()
        for blocks, x, y in trainer.batches(epoch):
            trainer.step(blocks, x, y)
            steps += 1
            if trainer.mvs is not None:
                modes.append(trainer.mvs.uniform_mix < 1.0)
            if steps % eval_every == 0 or (steps < eval_every and steps >= 8
                                           and steps & (steps - 1) == 0):
                wall += time.perf_counter() - tick
                val, test = trainer.evaluate()
                curve.append({"step": steps, "time": wall, "val": val, "test": test})
                tick = time.perf_counter()
        wall += time.perf_counter() - tick
    val, test = trainer.evaluate()
    curve.append({"step": steps, "time": wall, "val": val, "test": test})
    result = {"dataset": dataset, "sampler": name, "lr": lr, "seed": seed, "batch_size": batch,
              "epochs": args.epochs, "steps": steps, "train_time_s": wall, "curve": curve}
    if trainer.mvs is not None:
        report = trainer.mvs.seed_report()
        result["seeds"] = {
            "report": str(report), "mvs_share": sum(modes) / max(1, len(modes)),
            "first_mvs_step": modes.index(True) if any(modes) else None,
            "refreshes": report.refreshes, "ratio": report.ratio,
            "overhead_model": report.overhead_model,
            "overhead_measured": report.overhead_measured,
            "timings_ms": report.timings_ms,
            "history": trainer.mvs._switch.history,
        }
    return result


def accuracy_at(curve, t: float) -> float:
    """Test accuracy at the best validation point among the evaluations up to time ``t``."""
    best = None
    for point in curve:
        if point["time"] <= t + 1e-9 and (best is None or point["val"] > best["val"]):
            best = point
    return best["test"] if best is not None else math.nan


def final_accuracy(curve) -> float:
    return max(curve, key=lambda p: p["val"])["test"]


# ---------------------------------------------------------------------- the overhead
def overhead(g, num_classes, dataset, args) -> dict:
    """Per-step seconds of mvs and onehop, one step of each in turn (see the module notes)."""
    targs = _training_args(args, 1e-2)
    torch.manual_seed(0)
    dgl.seed(0)
    trainers = {name: _trainer(g, num_classes, name, args.batch_size, 0, targs, dataset)
                for name in ("mvs", "onehop")}
    iterators = {name: _endless(trainer) for name, trainer in trainers.items()}
    seconds = {name: [] for name in trainers}
    for _ in range(args.overhead_steps):
        for name, trainer in trainers.items():
            tick = time.perf_counter()
            blocks, x, y = next(iterators[name])
            trainer.step(blocks, x, y)
            seconds[name].append(time.perf_counter() - tick)
    mean = {name: statistics.fmean(s) for name, s in seconds.items()}
    median = {name: statistics.median(s) for name, s in seconds.items()}
    report = trainers["mvs"].mvs.seed_report()
    return {
        "dataset": dataset, "steps": args.overhead_steps, "batch_size": args.batch_size,
        "mean_ms": {k: v * 1e3 for k, v in mean.items()},
        "median_ms": {k: v * 1e3 for k, v in median.items()},
        "overhead_mean": mean["mvs"] / mean["onehop"] - 1,
        "overhead_median": median["mvs"] / median["onehop"] - 1,
        "refreshes": report.refreshes, "seed_report": str(report),
        "timings_ms": report.timings_ms,
    }


def _endless(trainer):
    epoch = 0
    while True:
        yield from trainer.batches(epoch)
        epoch += 1


# ---------------------------------------------------------------------- tables
def _mean_std(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary(runs, overheads) -> str:
    out = []
    header = (f"{'dataset':17s} {'lr':>6s} {'sampler':10s} {'B':>4s} {'acc @ equal T':>16s} "
              f"{'final test':>16s} {'train s':>8s} {'overhead':>8s} {'MVS share':>9s} "
              f"{'1st MVS':>7s} {'refr':>4s} {'r':>5s}  verdict")
    out += [header, "-" * len(header)]
    for dataset, lr in sorted({(r["dataset"], r["lr"]) for r in runs}):
        cell = [r for r in runs if (r["dataset"], r["lr"]) == (dataset, lr)]
        uniform = {r["seed"]: r for r in cell if r["sampler"] == "onehop"}
        for name in [s for s in SAMPLERS if any(r["sampler"] == s for r in cell)]:
            rs = {r["seed"]: r for r in cell if r["sampler"] == name}
            seeds = sorted(set(rs) & set(uniform))
            at_t = [accuracy_at(rs[s]["curve"], min(rs[s]["train_time_s"],
                                                    uniform[s]["train_time_s"]))
                    for s in seeds]
            acc, std = _mean_std(at_t)
            fin, fin_std = _mean_std([final_accuracy(r["curve"]) for r in rs.values()])
            time_s = statistics.fmean(r["train_time_s"] for r in rs.values())
            over = statistics.fmean(rs[s]["train_time_s"] / uniform[s]["train_time_s"] - 1
                                    for s in seeds) if seeds else math.nan
            seeds_info = [r.get("seeds") for r in rs.values() if r.get("seeds")]
            share = statistics.fmean(i["mvs_share"] for i in seeds_info) if seeds_info else None
            firsts = [i["first_mvs_step"] for i in seeds_info if i["first_mvs_step"] is not None]
            refr = statistics.fmean(i["refreshes"] for i in seeds_info) if seeds_info else None
            ratio = statistics.fmean(i["ratio"] for i in seeds_info
                                     if not math.isnan(i["ratio"])) if seeds_info else None
            verdict = ""
            if name != "onehop" and uniform:
                u_acc, u_std = _mean_std([accuracy_at(uniform[s]["curve"], min(
                    rs[s]["train_time_s"], uniform[s]["train_time_s"])) for s in seeds])
                verdict = (f"{acc - u_acc:+.4f} vs uniform ({'ok' if acc >= u_acc - u_std else 'BELOW'}"
                           f" by 1 std {u_std:.4f})")
            out.append(
                f"{dataset:17s} {lr:6.0e} {name:10s} {next(iter(rs.values()))['batch_size']:4d} "
                f"{acc:8.4f} ± {std:.4f} {fin:8.4f} ± {fin_std:.4f} {time_s:8.1f} "
                + (f"{over:+8.1%} " if name != "onehop" else f"{'':8s} ")
                + (f"{share:9.2f} " if share is not None else f"{'':9s} ")
                + (f"{statistics.fmean(firsts):7.0f} " if firsts else f"{'':7s} ")
                + (f"{refr:4.1f} " if refr is not None else f"{'':4s} ")
                + (f"{ratio:5.2f}  " if ratio is not None else f"{'':5s}  ") + verdict)
    out.append("\n'acc @ equal T': test accuracy at the best validation point up to the shorter "
               "training time of the two samplers of a seed (mean ± std over seeds); 'final "
               "test': at the best validation point of the whole run; 'overhead': training "
               "time over the uniform run's of the same seed, minus one (whole runs, the "
               "machine's load included); 'MVS share': steps drawn with importance-sampled "
               "seeds; '1st MVS': the first such step; 'refr': score refreshes; 'r': the "
               "last measured variance ratio against uniform seeds.")
    if overheads:
        out.append("\nInterleaved per-step cost (one step of each sampler in turn, B="
                   f"{overheads[0]['batch_size']}):")
        out.append(f"{'dataset':17s} {'steps':>6s} {'mvs ms':>8s} {'onehop ms':>9s} "
                   f"{'overhead (mean)':>15s} {'(median)':>9s} {'refreshes':>9s}")
        for o in overheads:
            out.append(f"{o['dataset']:17s} {o['steps']:6d} {o['mean_ms']['mvs']:8.2f} "
                       f"{o['mean_ms']['onehop']:9.2f} {o['overhead_mean']:15.1%} "
                       f"{o['overhead_median']:9.1%} {o['refreshes']:9d}")
            out.append("  mvs, measured by the sampler (ms): " + ", ".join(
                f"{k} {v:.2f}" for k, v in o["timings_ms"].items()))
    return "\n".join(out)


def main(argv=None):
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.summarize:
        data = [json.loads(Path(p).read_text()) for p in args.summarize]
        print(summary([r for d in data for r in d["runs"]],
                      [o for d in data for o in d.get("overheads", [])]))
        return
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.lrs, args.epochs, args.overhead_steps = [0], [1e-2], 2, 100
    out = Path(args.out)
    saved = json.loads(out.read_text()) if args.resume and out.exists() else {}
    runs, overheads = saved.get("runs", []), saved.get("overheads", [])
    done = {(r["dataset"], r["sampler"], r["lr"], r["seed"]) for r in runs}
    for dataset in args.datasets:
        _training_args(args, args.lrs[0])
        g, num_classes = bench_training.load(dataset, "sage", args.quick)
        if args.overhead_steps and not any(o["dataset"] == dataset for o in overheads):
            overheads.append(overhead(g, num_classes, dataset, args))
            print(f"{dataset}: overhead {overheads[-1]['overhead_mean']:+.1%} (mean), "
                  f"{overheads[-1]['overhead_median']:+.1%} (median)", flush=True)
            _save(out, args, runs, overheads)
        if args.overhead_only:
            continue
        for lr in args.lrs:
            for seed in args.seeds:
                order = args.samplers if seed % 2 == 0 else args.samplers[::-1]
                for name in order:
                    if (dataset, name, lr, seed) in done:
                        continue
                    result = run(g, num_classes, dataset, name, lr, seed, args)
                    runs.append(result)
                    print(f"{dataset:17s} lr={lr:g} seed={seed} {name:10s} "
                          f"final={final_accuracy(result['curve']):.4f} "
                          f"train={result['train_time_s']:.1f}s", flush=True)
                    _save(out, args, runs, overheads)
    print()
    print(summary(runs, overheads))


def _save(out: Path, args, runs, overheads):
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "overheads": overheads},
                              indent=1))


if __name__ == "__main__":
    main()
