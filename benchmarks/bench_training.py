"""Time to accuracy: MVSSampler's default against DGL's samplers, with DGL's example models.

    python benchmarks/bench_training.py                          # the acceptance grid (hours)
    python benchmarks/bench_training.py --quick                  # a smoke run (a minute)
    python benchmarks/bench_training.py --summarize results/bench_training.json

For every (dataset, model, batch size, seed) the samplers run one after the other, so that
machine load affects all alike:

* ``mvs``: ``dgl_mvs.MVSSampler(g, train_nids, batch_size, model=model, ...)``, all defaults
  (one-hop blocks over the precomputed first layer, importance-sampled seeds);
* ``onehop``: the same blocks with uniform seeds (``dgl_mvs.OneHopSampler`` in DGL's
  DataLoader, ``shuffle=True``): what the MVS seeds add is ``mvs`` against this;
* ``neighbor`` / ``labor``: DGL's ``NeighborSampler([10, 10])`` / ``LaborSampler([10, 10])``.

Models are DGL's example models (2 layers, hidden 256, ReLU, dropout 0.5 between layers):
GraphSAGE with ``SAGEConv('mean')`` and GCN with ``GraphConv`` (default ``norm='both'``, self
loops added).  Adam at ``--lr``.  Validation accuracy is taken ``--evals-per-epoch`` times per
epoch (and at steps 8, 16, 32, ... before the first of those) by full-graph inference (not
counted in the wall time), the test accuracy at the best validation point.  "time to
target" is the training wall time at which a run first reaches the best validation accuracy
of ``neighbor`` with the same seed, against the time ``neighbor`` took to get there.  For
``mvs`` the gradient-variance diagnostic (:func:`dgl_mvs.diagnostics.gradient_variance`)
runs once per epoch.  Every run is written to ``--out`` (JSON) as it finishes; ``--plot``
draws validation accuracy against wall time per sampler.
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
from dgl.nn import GraphConv, SAGEConv
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dgl_mvs  # noqa: E402
from dgl_mvs.diagnostics import gradient_variance  # noqa: E402

DATASETS = {
    # Noisy features and mixed neighbourhoods: far from saturated (mean degree 20).
    "synthetic-100k": dict(num_nodes=100_000, avg_degree=20, num_classes=10, feat_dim=64,
                           signal_to_noise=0.5, homophily=0.5),
    # A Reddit-like degree: 50k nodes, 5M edges.
    "synthetic-deg100": dict(num_nodes=50_000, avg_degree=100, num_classes=10, feat_dim=64,
                             signal_to_noise=0.4, homophily=0.4),
    "cora": None,
}
SAMPLERS = ("mvs", "onehop", "neighbor", "labor")


class SAGE(nn.Module):
    """DGL's examples/pytorch/graphsage model (two layers by default)."""

    def __init__(self, in_size, hid_size, out_size, dropout=0.5, num_layers=2):
        super().__init__()
        sizes = [in_size] + [hid_size] * (num_layers - 1) + [out_size]
        self.layers = nn.ModuleList([SAGEConv(a, b, "mean") for a, b in zip(sizes, sizes[1:])])
        self.dropout = nn.Dropout(dropout)

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if i != len(self.layers) - 1:
                h = F.relu(h)
                h = self.dropout(h)
        return h


class GCN(SAGE):
    """The same with dgl.nn.GraphConv (norm='both', DGL's default)."""

    def __init__(self, in_size, hid_size, out_size, dropout=0.5, num_layers=2):
        super().__init__(in_size, hid_size, out_size, dropout, num_layers)
        sizes = [in_size] + [hid_size] * (num_layers - 1) + [out_size]
        # Sampled blocks (LaborSampler's in particular) can leave a node without in-edges.
        self.layers = nn.ModuleList([GraphConv(a, b, allow_zero_in_degree=True)
                                     for a, b in zip(sizes, sizes[1:])])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["synthetic-100k", "synthetic-deg100"],
                   choices=list(DATASETS))
    p.add_argument("--models", nargs="+", default=["sage", "gcn"], choices=["sage", "gcn"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 1024])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--evals-per-epoch", type=int, default=4)
    p.add_argument("--layers", type=int, default=2, help="GNN layers")
    p.add_argument("--onehop-fanouts", type=int, nargs="+", default=None,
                   help="fanouts of the mvs and onehop blocks (default: the cost rule)")
    p.add_argument("--ns-fanout", type=int, default=10, help="neighbor/labor fanout per layer")
    p.add_argument("--num-nodes", type=int, default=None, help="override the synthetic size")
    p.add_argument("--avg-degree", type=float, default=None,
                   help="override the synthetic mean degree")
    p.add_argument("--no-variance", action="store_true", help="skip the variance diagnostic")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--tag", default="", help="suffix for sampler names in the results")
    p.add_argument("--out", default=str(ROOT / "results" / "bench_training.json"))
    p.add_argument("--plot", default=str(ROOT / "results" / "bench_training.png"))
    p.add_argument("--summarize", nargs="+", default=None, metavar="JSON",
                   help="only print the tables (and plot) of earlier result files")
    p.add_argument("--quick", action="store_true", help="small graph, one seed, two epochs")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in --out and run only the missing ones")
    return p.parse_args(argv)


def load(name: str, model: str, quick: bool):
    if name == "cora":
        ds = dgl_mvs.data.load_dataset("cora")
    else:
        params = dict(DATASETS[name])
        if quick:
            params["num_nodes"] = 5000
        for key in ("num_nodes", "avg_degree"):
            if getattr(ARGS, key, None) is not None:
                params[key] = getattr(ARGS, key)
        ds = dgl_mvs.data.load_dataset("synthetic", seed=0, **params)
    g = ds[0]
    if model == "gcn":  # GCN averages over the node itself too
        g = dgl.add_self_loop(dgl.remove_self_loop(g))
    g.create_formats_()
    return g, ds.num_classes


@torch.no_grad()
def evaluate(model, g):
    """Validation and test accuracy from full-graph inference (DGL's layers on the graph)."""
    model.eval()
    logits = model([g] * len(model.layers), g.ndata["feat"])
    model.train()
    pred, y = logits.argmax(1), g.ndata["label"]
    return tuple(float((pred[g.ndata[m]] == y[g.ndata[m]]).float().mean())
                 for m in ("val_mask", "test_mask"))


def run(g, num_classes, model_name, sampler_name, batch, seed, args):
    torch.manual_seed(seed)
    dgl.seed(seed)
    cls = SAGE if model_name == "sage" else GCN
    model = cls(g.ndata["feat"].shape[1], args.hidden, num_classes, num_layers=args.layers)
    fanouts = args.onehop_fanouts
    ns_fanouts = [args.ns_fanout] * args.layers
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    feats = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])
    tick = time.perf_counter()
    mvs = None
    if sampler_name == "mvs":
        mvs = dgl_mvs.MVSSampler(g, train, batch, model=model, fanouts=fanouts, seed=seed,
                                 **feats)
        loader_for = lambda: dgl.dataloading.DataLoader(g, mvs.step_ids(), mvs)  # noqa: E731
    else:
        if sampler_name == "onehop":
            sampler = dgl_mvs.OneHopSampler(g, model, fanouts, **feats)
        elif sampler_name == "neighbor":
            sampler = dgl.dataloading.NeighborSampler(ns_fanouts, **feats)
        else:
            sampler = dgl.dataloading.LaborSampler(ns_fanouts, **feats)
        loader = dgl.dataloading.DataLoader(g, train, sampler, batch_size=batch, shuffle=True)
        loader_for = lambda: loader  # noqa: E731
    setup = time.perf_counter() - tick
    steps_per_epoch = math.ceil(train.numel() / batch)
    eval_every = max(1, steps_per_epoch // args.evals_per_epoch)
    wall, steps, rows = setup, 0, 0
    curve, variance = [], []
    best = (-1.0, 0.0, None)
    for epoch in range(args.epochs):
        if mvs is not None:
            mvs.set_epoch(epoch)
        tick = time.perf_counter()
        for _, _, blocks in loader_for():
            x, y = blocks[0].srcdata["feat"], blocks[-1].dstdata["label"]
            logits = model(blocks, x)
            if mvs is not None:
                w = blocks[-1].dstdata["mvs_weight"]
                loss = (w * F.cross_entropy(logits, y, reduction="none")).sum()
            else:
                loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if mvs is not None:
                mvs.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, y))
            steps += 1
            rows += blocks[0].num_src_nodes()
            # Every eval_every steps, and at steps 8, 16, 32, ... before that: a sampler that
            # peaks early is timed to within a few steps, not a quarter epoch.
            if steps % eval_every == 0 or (steps < eval_every and steps >= 8
                                           and steps & (steps - 1) == 0):
                wall += time.perf_counter() - tick
                val, test = evaluate(model, g)
                curve.append({"step": steps, "time": wall, "val": val, "test": test})
                if val > best[0]:
                    best = (val, test, steps)
                tick = time.perf_counter()
        wall += time.perf_counter() - tick
        if mvs is not None and not args.no_variance:
            d = gradient_variance(mvs, model, repeats=8, seed=epoch)
            variance.append({"epoch": epoch, **d})
    return {
        "model": model_name, "layers": args.layers, "fanouts": fanouts,
        "sampler": sampler_name + args.tag, "batch_size": batch,
        "seed": seed, "lr": args.lr, "epochs": args.epochs, "steps": steps,
        "train_time_s": wall, "setup_s": setup, "input_rows_per_step": rows / max(1, steps),
        "best_val": best[0], "test_at_best_val": best[1], "curve": curve,
        "variance": variance,
    }


def time_to(curve, target):
    for point in curve:
        if point["val"] >= target:
            return point["time"]
    return math.inf


def summary(runs) -> str:
    out = []
    groups = sorted({(r["dataset"], r["model"], r["batch_size"]) for r in runs})
    header = (f"{'dataset':17s} {'model':5s} {'batch':>5s} {'sampler':10s} "
              f"{'test (mean ± std)':>18s} {'best val':>8s} {'train s':>8s} "
              f"{'to NS best':>10s} {'x NS':>5s} {'rows/step':>9s} {'var ratio':>9s}")
    out.append(header)
    out.append("-" * len(header))
    for dataset, model, batch in groups:
        group = [r for r in runs if (r["dataset"], r["model"], r["batch_size"])
                 == (dataset, model, batch)]
        # Per seed: NeighborSampler's best validation accuracy and when it got there.
        ns = {r["seed"]: r for r in group if r["sampler"] == "neighbor"}
        ns_time = statistics.mean(time_to(r["curve"], r["best_val"]) for r in ns.values()) \
            if ns else math.nan
        for name in sorted({r["sampler"] for r in group}, key=_order):
            rs = [r for r in group if r["sampler"] == name]
            tests = [r["test_at_best_val"] for r in rs]
            std = statistics.stdev(tests) if len(tests) > 1 else 0.0
            reach = [time_to(r["curve"], ns[r["seed"]]["best_val"]) for r in rs
                     if r["seed"] in ns]
            t_reach = statistics.mean(reach) if reach and all(map(math.isfinite, reach)) \
                else math.inf
            var = [v["realised_ratio"] for r in rs for v in r["variance"][1:]]
            out.append(
                f"{dataset:17s} {model:5s} {batch:5d} {name:10s} "
                f"{statistics.mean(tests):9.4f} ± {std:.4f} "
                f"{statistics.mean(r['best_val'] for r in rs):8.4f} "
                f"{statistics.mean(r['train_time_s'] for r in rs):8.1f} "
                f"{t_reach:10.1f} {t_reach / ns_time:5.2f} "
                f"{statistics.mean(r['input_rows_per_step'] for r in rs):9.0f} "
                + (f"{statistics.mean(var):9.2f}" if var else f"{'':9s}")
            )
    out.append("\n'to NS best': mean training seconds to reach the best validation accuracy "
               "of neighbor with the same seed (inf: some seed never did); 'x NS': that over "
               "neighbor's own time to its best; 'var ratio': realised gradient "
               "variance of the MVS seeds / uniform seeds on the same blocks (dropout off), "
               "mean over epochs 2+.")
    return "\n".join(out)


def _order(name: str) -> tuple:
    base = name.split("-")[0]
    return (SAMPLERS.index(base) if base in SAMPLERS else 99, name)


def plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["dataset"], r["model"], r["batch_size"]) for r in runs})
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colours = {"mvs": "C3", "onehop": "C1", "neighbor": "C0", "labor": "C2"}
    for ax, (dataset, model, batch) in zip(axes.flat, groups):
        group = [r for r in runs if (r["dataset"], r["model"], r["batch_size"])
                 == (dataset, model, batch)]
        for name in sorted({r["sampler"] for r in group}, key=_order):
            for i, r in enumerate(r for r in group if r["sampler"] == name):
                ax.plot([p["time"] for p in r["curve"]], [p["val"] for p in r["curve"]],
                        color=colours.get(name.split("-")[0]), alpha=0.8, lw=1,
                        label=name if i == 0 else None)
        ax.set_title(f"{dataset}, {model}, batch {batch}", fontsize=9)
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel("validation accuracy")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plot_variance(runs, str(Path(path).with_name(Path(path).stem + "_variance.png")))


def plot_variance(runs, path):
    """The paper's Figure 4 quantity per epoch: gradient variance of MVS seeds / uniform."""
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r.get("variance")]
    if not runs:
        return
    groups = sorted({(r["dataset"], r["model"]) for r in runs})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, (dataset, model) in zip(axes.flat, groups):
        for j, batch in enumerate(sorted({r["batch_size"] for r in runs})):
            rs = [r for r in runs if (r["dataset"], r["model"], r["batch_size"])
                  == (dataset, model, batch)]
            if not rs:
                continue
            epochs = sorted({v["epoch"] for r in rs for v in r["variance"]})
            for key, style in (("realised_ratio", "-"), ("oracle_ratio", ":")):
                values = [statistics.mean(v[key] for r in rs for v in r["variance"]
                                          if v["epoch"] == e) for e in epochs]
                ax.plot([e + 1 for e in epochs], values, style, color=f"C{j}", marker="o",
                        label=f"B={batch} {key.split('_')[0]}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(f"{dataset}, {model}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("gradient variance / uniform")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


ARGS = None


def main(argv=None):
    global ARGS
    warnings.filterwarnings("ignore")
    args = ARGS = parse_args(argv)
    if args.summarize:
        runs = [r for path in args.summarize for r in json.loads(Path(path).read_text())]
        print(summary(runs))
        if args.plot:
            plot(runs, args.plot)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.batch_sizes, args.epochs = [0], [256], 2
    runs = json.loads(Path(args.out).read_text()) if args.resume and Path(args.out).exists() \
        else []
    done = {(r["dataset"], r["model"], r["batch_size"], r["seed"], r["sampler"]) for r in runs}
    started = time.perf_counter()
    for dataset in args.datasets:
        for model in args.models:
            g, num_classes = load(dataset, model, args.quick)
            for batch in args.batch_sizes:
                for seed in args.seeds:
                    for name in args.samplers:
                        if (dataset, model, batch, seed, name + args.tag) in done:
                            continue
                        result = run(g, num_classes, model, name, batch, seed, args)
                        result["dataset"] = dataset
                        runs.append(result)
                        print(f"{dataset:17s} {model:5s} B={batch:5d} seed={seed} "
                              f"{result['sampler']:10s} test={result['test_at_best_val']:.4f} "
                              f"val={result['best_val']:.4f} "
                              f"train={result['train_time_s']:6.1f}s", flush=True)
                        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                        Path(args.out).write_text(json.dumps(runs, indent=1))
    print(f"\n{len(runs)} runs in {time.perf_counter() - started:.0f} s\n")
    print(summary(runs))
    if args.plot:
        plot(runs, args.plot)


if __name__ == "__main__":
    main()
