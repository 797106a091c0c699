"""The full training step (sample + forward + backward + optimizer step) against NeighborSampler.

    python benchmarks/bench_step.py              # 1M nodes / 20M edges, L = 2, B = 512
    python benchmarks/bench_step.py --quick      # 50k nodes, smoke run
    python benchmarks/bench_step.py --dataset debian   # the Debian package graph

Every timed round runs one step of each sampler, in a shuffled order, on a synthetic graph
(DC-SBM, power-law degrees) or the Debian package graph (``benchmarks/debian_graph.py``): the time from asking the sampler for the step's blocks to the end
of ``optimizer.step()``, including the feature gather and, for ``mvs``,
``update_scores`` with its scheduled score refreshes and snapshot refreshes (so refreshes are
amortised over the steps as in training).  The model is DGL's example GraphSAGE (or GCN),
hidden 256.  Samplers:

* ``mvs``: ``dgl_mvs.MVSSampler`` with its defaults (the cost rule picks exact or
  control-variate blocks for the last layer from the mean degree);
* ``onehop`` / ``onehop-cv``: ``dgl_mvs.OneHopSampler`` with uniform seeds, exact last layer
  (``fanouts=[-1, -1]``) / control variates (``[-1, 2]``);
* ``neighbor`` / ``labor``: DGL's ``NeighborSampler([10, 10])`` / ``LaborSampler([10, 10])``.

Prints median milliseconds per step, the ratio to ``neighbor`` and input rows per step; writes
``results/bench_step.json``.
"""
from __future__ import annotations

import argparse
import json
import random
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
import dgl_mvs  # noqa: E402
from bench_training import GCN, SAGE  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["synthetic", "debian"], default="synthetic")
    p.add_argument("--num-nodes", type=int, default=1_000_000)
    p.add_argument("--avg-degree", type=float, default=20.0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--model", choices=["sage", "gcn"], default="sage")
    p.add_argument("--samplers", nargs="+",
                   default=["mvs", "onehop", "onehop-cv", "neighbor", "labor"])
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "results" / "bench_step.json"))
    p.add_argument("--quick", action="store_true")
    return p.parse_args(argv)


class Runner:
    """One sampler with its own model and optimizer; ``step()`` trains one mini-batch."""

    def __init__(self, name, g, train, num_classes, args):
        torch.manual_seed(0)
        cls = SAGE if args.model == "sage" else GCN
        self.model = cls(g.ndata["feat"].shape[1], 256, num_classes)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.01)
        self.name, self.g, self.train, self.batch = name, g, train, args.batch_size
        feats = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])
        tick = time.perf_counter()
        self.mvs = None
        if name == "mvs":
            self.mvs = dgl_mvs.MVSSampler(g, train, self.batch, model=self.model, **feats)
            self.loader = dgl.dataloading.DataLoader(g, self.mvs.step_ids(), self.mvs)
        else:
            if name == "onehop":
                sampler = dgl_mvs.OneHopSampler(g, self.model, [-1, -1], **feats)
            elif name == "onehop-cv":
                sampler = dgl_mvs.OneHopSampler(g, self.model, [-1, 2], **feats)
            elif name == "neighbor":
                sampler = dgl.dataloading.NeighborSampler([10, 10], **feats)
            else:
                sampler = dgl.dataloading.LaborSampler([10, 10], **feats)
            self.loader = dgl.dataloading.DataLoader(g, train, sampler, batch_size=self.batch,
                                                     shuffle=True)
        self.setup = time.perf_counter() - tick
        self.iterator = iter(self.loader)
        self.epoch = 0
        self.rows = []

    def _next(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.epoch += 1
            if self.mvs is not None:
                self.mvs.set_epoch(self.epoch)
                self.loader = dgl.dataloading.DataLoader(self.g, self.mvs.step_ids(), self.mvs)
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def step(self) -> float:
        tick = time.perf_counter()
        _, _, blocks = self._next()
        x, y = blocks[0].srcdata["feat"], blocks[-1].dstdata["label"]
        logits = self.model(blocks, x)
        if self.mvs is not None:
            w = blocks[-1].dstdata["mvs_weight"]
            loss = (w * F.cross_entropy(logits, y, reduction="none")).sum()
        else:
            loss = F.cross_entropy(logits, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if self.mvs is not None:
            self.mvs.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, y))
        self.rows.append(blocks[0].num_src_nodes())
        return time.perf_counter() - tick


def main(argv=None):
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.num_nodes, args.rounds = 50_000, 10
    tick = time.perf_counter()
    if args.dataset == "debian":
        import debian_graph

        g, meta = debian_graph.load()
        num_classes = len(meta["classes"])
    else:
        ds = dgl_mvs.data.load_dataset(
            "synthetic", num_nodes=args.num_nodes, avg_degree=args.avg_degree, num_classes=10,
            feat_dim=64, signal_to_noise=0.5, homophily=0.5, seed=0)
        g, num_classes = ds[0], ds.num_classes
    if args.model == "gcn":
        g = dgl.add_self_loop(dgl.remove_self_loop(g))
    g.create_formats_()
    train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    print(f"graph: {g.num_nodes()} nodes, {g.num_edges()} edges, {train.numel()} training "
          f"nodes ({time.perf_counter() - tick:.1f} s)", flush=True)
    runners = [Runner(name, g, train, num_classes, args) for name in args.samplers]
    times = {r.name: [] for r in runners}
    order = random.Random(0)
    for round_ in range(args.warmup + args.rounds):
        order.shuffle(runners)
        for runner in runners:
            elapsed = runner.step()
            if round_ >= args.warmup:
                times[runner.name].append(elapsed)
    base = statistics.median(times["neighbor"]) if "neighbor" in times else None
    rows = []
    print(f"\n{args.model}, L = 2, batch {args.batch_size}, median of {args.rounds} steps "
          "(mean in brackets: refreshes included)\n")
    print(f"{'sampler':10s} {'ms/step':>8s} {'(mean)':>8s} {'x NS':>6s} {'rows/step':>10s} "
          f"{'setup s':>8s}")
    for runner in sorted(runners, key=lambda r: args.samplers.index(r.name)):
        t = times[runner.name]
        med, mean = statistics.median(t) * 1e3, statistics.mean(t) * 1e3
        ratio = med / (base * 1e3) if base else float("nan")
        rows.append({"sampler": runner.name, "median_ms": med, "mean_ms": mean,
                     "ratio_to_neighbor": ratio, "rows_per_step": statistics.mean(runner.rows),
                     "setup_s": runner.setup})
        print(f"{runner.name:10s} {med:8.1f} {mean:8.1f} {ratio:6.2f} "
              f"{statistics.mean(runner.rows):10.0f} {runner.setup:8.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
