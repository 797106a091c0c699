"""Time to accuracy: MVSSampler's default against DGL's samplers, with DGL's example models.

    python benchmarks/bench_training.py                          # the acceptance grid (hours)
    python benchmarks/bench_training.py --quick                  # a smoke run (minutes)
    python benchmarks/tune_neighbor.py                           # NeighborSampler's best, then
    python benchmarks/bench_training.py --ns-tuned results/tune_neighbor.json
    python benchmarks/bench_training.py --summarize results/bench_training.json

For every (dataset, model, batch size, seed) the samplers run one after the other, so that
machine load affects all alike:

* ``mvs``: ``dgl_mvs.MVSSampler(g, train_nids, batch_size, model=model, ...)``, all defaults
  (one-hop blocks over the precomputed first layer, importance-sampled seeds);
* ``onehop``: the same blocks with uniform seeds (``dgl_mvs.OneHopSampler`` in DGL's
  DataLoader, ``shuffle=True``): what the MVS seeds add is ``mvs`` against this;
* ``neighbor`` / ``labor``: DGL's ``NeighborSampler([10, 10])`` / ``LaborSampler([10, 10])``
  (``--ns-tuned results/tune_neighbor.json``: ``neighbor`` at the fanouts and learning rate
  that ``benchmarks/tune_neighbor.py`` found best for the dataset and model);
* ``gb-labor`` / ``gb-neighbor``: GraphBolt's pipeline (DGL's C++ sampling path): a
  ``FusedCSCSamplingGraph`` of the graph, ``ItemSampler`` over the training nodes,
  ``sample_layer_neighbor`` / ``sample_neighbor`` with the same fanouts, ``fetch_feature`` from
  a ``BasicFeatureStore``, ``graphbolt.DataLoader`` (no workers), the same model on
  ``minibatch.blocks``;
* ``sign``: no sampler but another model, the reference for what a user gets by changing the
  model instead (SIGN, Frasca et al. 2020): ``[X, AX, A^2 X]`` with mean aggregation over
  in-neighbours (``update_all`` on the cell's graph, with the self loops that GCN cells add;
  timed as part of the run), concatenated, into a 2-layer MLP
  (hidden ``--hidden``, ReLU, dropout 0.5) trained on mini-batches of node rows with the same
  learning rate, batch size and epochs; validation and test on the same rows.

Datasets: ``synthetic-100k`` (mean degree 20), ``synthetic-deg100`` (50k nodes, degree 100),
``debian`` (the Debian package graph, ``benchmarks/debian_graph.py``: 64k nodes, mean degree
9.3, hubs of 22k neighbours; built once from the apt index and cached in ``data/``) and
``cora``.

Models are DGL's example models (2 layers, hidden 256, ReLU, dropout 0.5 between layers):

* ``sage``: GraphSAGE with ``SAGEConv('mean')``;
* ``gcn``: ``GraphConv`` with its default ``norm='both'``, self loops added: what a user gets
  by swapping the layer in.  On a sampled block ``norm='both'`` takes degrees from the block
  (about the fanout), in full-graph evaluation from the graph: training and evaluation
  normalise differently, and ``NeighborSampler``'s accuracy collapses on dense graphs.  That
  is a mismatch, not a divergence of the training;
* ``gcn-ew`` (the fair GCN comparison): ``GraphConv(norm='none')`` with edge weights, self
  loops added.  The weights are the full graph's symmetric normalisation
  ``1 / sqrt(d_u d_v)`` (:func:`dgl_mvs.gcn_norm`), also in full-graph evaluation; on a
  sampled block (``neighbor``, ``labor``, GraphBolt) each destination's weights are scaled by
  ``d_v / s_v`` (its graph in-degree over its in-edges in the block), the usual unbiased
  neighbour-sampling estimate of the full-graph aggregation, computed in the training loop
  from the blocks' node IDs and the graph's degrees (counted in the wall time).  This is the
  set-up chosen because it is the one in which a sampled model computes, in expectation,
  what it is evaluated with (evaluating ``norm='both'`` on sampled blocks instead would make
  evaluation depend on the sampler and the fanout, and not be comparable across samplers).
  ``mvs`` and ``onehop`` get the same weights through ``edge_weight=`` (their blocks hold
  every in-edge, no rescaling).

Adam at ``--lr``.  Validation accuracy is taken ``--evals-per-epoch`` times per
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
sys.path.insert(0, str(ROOT / "benchmarks"))
import dgl_mvs  # noqa: E402
from dgl_mvs.diagnostics import gradient_variance  # noqa: E402

DATASETS = {
    # Noisy features and mixed neighbourhoods: far from saturated (mean degree 20).
    "synthetic-100k": dict(num_nodes=100_000, avg_degree=20, num_classes=10, feat_dim=64,
                           signal_to_noise=0.5, homophily=0.5),
    # A Reddit-like degree: 50k nodes, 5M edges.
    "synthetic-deg100": dict(num_nodes=50_000, avg_degree=100, num_classes=10, feat_dim=64,
                             signal_to_noise=0.4, homophily=0.4),
    "debian": "debian",
    "cora": None,
}
SAMPLERS = ("mvs", "onehop", "neighbor", "labor", "gb-labor", "gb-neighbor", "sign")
MODELS = ("sage", "gcn", "gcn-ew")
#: g.edata key of the full-graph GCN weights of the gcn-ew model.
GCN_WEIGHT = "gcn_w"


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


class GCNW(SAGE):
    """GCN with edge weights: ``GraphConv(norm='none')`` reading ``edata["edge_weights"]``."""

    def __init__(self, in_size, hid_size, out_size, dropout=0.5, num_layers=2):
        super().__init__(in_size, hid_size, out_size, dropout, num_layers)
        sizes = [in_size] + [hid_size] * (num_layers - 1) + [out_size]
        self.layers = nn.ModuleList([GraphConv(a, b, norm="none", allow_zero_in_degree=True)
                                     for a, b in zip(sizes, sizes[1:])])

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h, edge_weight=block.edata["edge_weights"])
            if i != len(self.layers) - 1:
                h = F.relu(h)
                h = self.dropout(h)
        return h


MODEL_CLASSES = {"sage": SAGE, "gcn": GCN, "gcn-ew": GCNW}


def sampled_gcn_weights(block, out_degrees, in_degrees):
    """Full-graph GCN weights on a sampled block, times ``d_v / s_v`` per destination.

    ``sum_{u sampled} d_v / s_v * w_uv h_u`` is an unbiased estimate of the full-graph
    ``sum_u w_uv h_u`` for uniform neighbour samples (exact when the block holds every
    in-edge of ``v``; close to unbiased for LABOR, whose per-node sample size varies).
    Destination nodes are the first source nodes of a block (DGL's and GraphBolt's
    convention).
    """
    src, dst = block.edges()
    ids = block.srcdata[dgl.NID]
    u, v = ids[src.long()].long(), ids[dst.long()].long()
    weights = (out_degrees[u] * in_degrees[v]).rsqrt()
    in_block = block.in_degrees().clamp(min=1).float()
    return weights * in_degrees[v] / in_block[dst.long()]


class SIGN(nn.Module):
    """A 2-layer MLP on precomputed ``[X, AX, A^2 X]`` rows (SIGN with mean aggregation)."""

    def __init__(self, in_size, hid_size, out_size, dropout=0.5):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_size, hid_size), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hid_size, out_size))

    def forward(self, x):
        return self.mlp(x)


def sign_features(g, hops: int = 2):
    """``[X, AX, ..., A^hops X]`` with ``A`` the mean over in-neighbours (DGL's update_all)."""
    xs = [g.ndata["feat"]]
    with g.local_scope():
        for _ in range(hops):
            g.ndata["h"] = xs[-1]
            g.update_all(dgl.function.copy_u("h", "m"), dgl.function.mean("m", "h"))
            xs.append(g.ndata["h"])
    return torch.cat(xs, dim=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+",
                   default=["synthetic-100k", "synthetic-deg100", "debian"],
                   choices=list(DATASETS))
    p.add_argument("--models", nargs="+", default=["sage", "gcn-ew"], choices=list(MODELS),
                   help="gcn: GraphConv(norm='both') as is; gcn-ew: full-graph GCN weights "
                        "(see the module notes)")
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
    p.add_argument("--ns-fanout", type=int, default=10,
                   help="neighbor/labor/GraphBolt fanout per layer")
    p.add_argument("--ns-tuned", default=None, metavar="JSON",
                   help="neighbor at the best fanouts and lr per (dataset, model) found by "
                        "benchmarks/tune_neighbor.py (e.g. results/tune_neighbor.json)")
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
    p.add_argument("--quick", action="store_true",
                   help="5000-node synthetic graphs (Debian as is), one seed, B=256, 2 epochs")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in --out and run only the missing ones")
    return p.parse_args(argv)


def load(name: str, model: str, quick: bool):
    if name == "debian":
        import debian_graph

        g, meta = debian_graph.load()
        return _for_model(g, model), len(meta["classes"])
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
    return _for_model(ds[0], model), ds.num_classes


def _for_model(g, model: str):
    if model.startswith("gcn"):  # GCN averages over the node itself too
        g = dgl.add_self_loop(dgl.remove_self_loop(g))
    if model == "gcn-ew":
        g.edata[GCN_WEIGHT] = dgl_mvs.gcn_norm(g)
    g.create_formats_()
    return g


@torch.no_grad()
def evaluate(model, g):
    """Validation and test accuracy from full-graph inference (DGL's layers on the graph)."""
    model.eval()
    with g.local_scope():
        if GCN_WEIGHT in g.edata:
            g.edata["edge_weights"] = g.edata[GCN_WEIGHT]
        logits = model([g] * len(model.layers), g.ndata["feat"])
    model.train()
    pred, y = logits.argmax(1), g.ndata["label"]
    return tuple(float((pred[g.ndata[m]] == y[g.ndata[m]]).float().mean())
                 for m in ("val_mask", "test_mask"))


def ns_settings(args, dataset: str, model_name: str, sampler_name: str) -> tuple[list, float]:
    """(fanouts, lr) of a DGL or GraphBolt sampler: ``--ns-fanout``, or the tuned ones."""
    fanouts = getattr(args, "ns_fanouts", None) or [args.ns_fanout] * args.layers
    lr = args.lr
    if sampler_name == "neighbor" and args.ns_tuned:
        tuned = json.loads(Path(args.ns_tuned).read_text())
        if bool(tuned["args"].get("quick")) != bool(args.quick):
            raise ValueError(
                f"{args.ns_tuned} was tuned {'with' if tuned['args'].get('quick') else 'without'}"
                f" --quick (other graph sizes) but this run is "
                f"{'with' if args.quick else 'without'} it: tune with the same graphs")
        best, key = tuned["best"], f"{dataset}/{model_name}"
        if key not in best:
            raise ValueError(f"{args.ns_tuned} has no tuned settings for {key} (it has "
                             f"{sorted(best)}): run benchmarks/tune_neighbor.py --datasets "
                             f"{dataset} --models {model_name} --append --out {args.ns_tuned}")
        fanouts, lr = list(best[key]["fanouts"]), float(best[key]["lr"])
    return fanouts, lr


class _Trainer:
    """One run's model, optimizer and batches; ``step(batch)`` trains one mini-batch."""

    def __init__(self, g, num_classes, model_name, sampler_name, batch, seed, args, dataset):
        self.g, self.args, self.mvs = g, args, None
        self.name = sampler_name
        fanouts, lr = ns_settings(args, dataset, model_name, sampler_name)
        self.fanouts = fanouts if sampler_name in ("neighbor", "labor", "gb-labor",
                                                   "gb-neighbor") else args.onehop_fanouts
        self.lr = lr
        in_size = g.ndata["feat"].shape[1]
        self.weighted = model_name == "gcn-ew"
        if self.weighted:
            self.out_deg = g.out_degrees().float()
            self.in_deg = g.in_degrees().float()
        if sampler_name == "sign":
            self.x = sign_features(g)
            self.model = SIGN(self.x.shape[1], args.hidden, num_classes)
        else:
            self.model = MODEL_CLASSES[model_name](in_size, args.hidden, num_classes,
                                                   num_layers=args.layers)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
        feats = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])
        edge_weight = GCN_WEIGHT if self.weighted else None
        if sampler_name == "mvs":
            self.mvs = dgl_mvs.MVSSampler(g, self.train, batch, model=self.model,
                                          fanouts=args.onehop_fanouts, seed=seed,
                                          edge_weight=edge_weight, **feats)
        elif sampler_name == "sign":
            self.batch = batch
        elif sampler_name.startswith("gb-"):
            self.loader = self._graphbolt(sampler_name, batch, fanouts)
        else:
            if sampler_name == "onehop":
                sampler = dgl_mvs.OneHopSampler(g, self.model, args.onehop_fanouts,
                                                edge_weight=edge_weight, **feats)
            elif sampler_name == "neighbor":
                sampler = dgl.dataloading.NeighborSampler(fanouts, **feats)
            else:
                sampler = dgl.dataloading.LaborSampler(fanouts, **feats)
            self.loader = dgl.dataloading.DataLoader(g, self.train, sampler, batch_size=batch,
                                                     shuffle=True)

    def _graphbolt(self, sampler_name, batch, fanouts):
        import dgl.graphbolt as gb

        g = self.g
        structure = dgl.graph(g.edges(), num_nodes=g.num_nodes())  # no node data copied
        graph = gb.from_dglgraph(structure, is_homogeneous=True)
        store = gb.BasicFeatureStore({("node", None, "feat"):
                                      gb.TorchBasedFeature(g.ndata["feat"])})
        items = gb.ItemSet((self.train, g.ndata["label"][self.train]),
                           names=("seed_nodes", "labels"))
        pipe = gb.ItemSampler(items, batch_size=batch, shuffle=True)
        if sampler_name == "gb-labor":
            pipe = pipe.sample_layer_neighbor(graph, fanouts)
        else:
            pipe = pipe.sample_neighbor(graph, fanouts)
        pipe = pipe.fetch_feature(store, node_feature_keys=["feat"])
        return gb.DataLoader(pipe, num_workers=0)

    def batches(self, epoch):
        """The epoch's mini-batches as ``(blocks or None, x, y)``."""
        if self.mvs is not None:
            self.mvs.set_epoch(epoch)
            for _, _, blocks in dgl.dataloading.DataLoader(self.g, self.mvs.step_ids(),
                                                            self.mvs):
                yield blocks, blocks[0].srcdata["feat"], blocks[-1].dstdata["label"]
        elif self.name == "sign":
            order = self.train[torch.randperm(self.train.numel())]
            for rows in order.split(self.batch):
                yield None, self.x[rows], self.g.ndata["label"][rows]
        elif self.name.startswith("gb-"):
            for mb in self.loader:
                blocks = mb.blocks  # a property that builds the blocks: read it once
                if self.weighted:  # GraphBolt sets the node IDs of the first block only
                    for block, sub in zip(blocks[1:], mb.sampled_subgraphs[1:]):
                        block.srcdata[dgl.NID] = sub.original_row_node_ids
                yield blocks, mb.node_features["feat"], mb.labels
        else:
            for _, _, blocks in self.loader:
                yield blocks, blocks[0].srcdata["feat"], blocks[-1].dstdata["label"]

    def step(self, blocks, x, y) -> int:
        """Train one mini-batch; returns its input rows."""
        if blocks is None:
            logits = self.model(x)
        else:
            if self.weighted and self.name not in ("mvs", "onehop"):
                for block in blocks:
                    block.edata["edge_weights"] = sampled_gcn_weights(block, self.out_deg,
                                                                      self.in_deg)
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
        return x.shape[0]

    @torch.no_grad()
    def evaluate(self):
        if self.name != "sign":
            return evaluate(self.model, self.g)
        self.model.eval()
        pred = self.model(self.x).argmax(1)
        self.model.train()
        y = self.g.ndata["label"]
        return tuple(float((pred[self.g.ndata[m]] == y[self.g.ndata[m]]).float().mean())
                     for m in ("val_mask", "test_mask"))


def run(g, num_classes, model_name, sampler_name, batch, seed, args, dataset=""):
    torch.manual_seed(seed)
    dgl.seed(seed)
    tick = time.perf_counter()
    trainer = _Trainer(g, num_classes, model_name, sampler_name, batch, seed, args, dataset)
    setup = time.perf_counter() - tick
    steps_per_epoch = math.ceil(trainer.train.numel() / batch)
    eval_every = max(1, steps_per_epoch // args.evals_per_epoch)
    wall, steps, rows = setup, 0, 0
    curve, variance = [], []
    best = (-1.0, 0.0, None)
    for epoch in range(args.epochs):
        tick = time.perf_counter()
        for blocks, x, y in trainer.batches(epoch):
            rows += trainer.step(blocks, x, y)
            steps += 1
            # Every eval_every steps, and at steps 8, 16, 32, ... before that: a sampler that
            # peaks early is timed to within a few steps, not a quarter epoch.
            if steps % eval_every == 0 or (steps < eval_every and steps >= 8
                                           and steps & (steps - 1) == 0):
                wall += time.perf_counter() - tick
                val, test = trainer.evaluate()
                curve.append({"step": steps, "time": wall, "val": val, "test": test})
                if val > best[0]:
                    best = (val, test, steps)
                tick = time.perf_counter()
        wall += time.perf_counter() - tick
        if trainer.mvs is not None and not args.no_variance:
            d = gradient_variance(trainer.mvs, trainer.model, repeats=8, seed=epoch)
            variance.append({"epoch": epoch, **d})
    return {
        "model": model_name, "layers": args.layers, "fanouts": trainer.fanouts,
        "sampler": sampler_name + args.tag, "batch_size": batch,
        "seed": seed, "lr": trainer.lr, "epochs": args.epochs, "steps": steps,
        "train_time_s": wall, "setup_s": setup, "input_rows_per_step": rows / max(1, steps),
        "best_val": best[0], "test_at_best_val": best[1], "curve": curve,
        "variance": variance,
    }


def time_to(curve, target):
    for point in curve:
        if point["val"] >= target:
            return point["time"]
    return math.inf


def _reach(rs, refs) -> float:
    """Mean time of runs ``rs`` to the best validation accuracy of ``refs`` (same seeds)."""
    reach = [time_to(r["curve"], refs[r["seed"]]["best_val"]) for r in rs if r["seed"] in refs]
    return statistics.mean(reach) if reach and all(map(math.isfinite, reach)) else math.inf


def _own_time(refs) -> float:
    """Mean time of runs ``refs`` to their own best validation accuracy."""
    return statistics.mean(time_to(r["curve"], r["best_val"]) for r in refs.values()) \
        if refs else math.nan


def summary(runs) -> str:
    out = []
    groups = sorted({(r["dataset"], r["model"], r["batch_size"]) for r in runs})
    header = (f"{'dataset':17s} {'model':6s} {'batch':>5s} {'sampler':12s} "
              f"{'test (mean ± std)':>18s} {'best val':>8s} {'train s':>8s} "
              f"{'to NS best':>10s} {'x NS':>5s} {'x SIGN':>6s} {'rows/step':>9s} "
              f"{'var ratio':>9s}")
    out.append(header)
    out.append("-" * len(header))
    for dataset, model, batch in groups:
        group = [r for r in runs if (r["dataset"], r["model"], r["batch_size"])
                 == (dataset, model, batch)]
        # Per seed: the reference's best validation accuracy and when it got there.
        ns = {r["seed"]: r for r in group if r["sampler"] == "neighbor"}
        sign = {r["seed"]: r for r in group if r["sampler"] == "sign"}
        ns_time, sign_time = _own_time(ns), _own_time(sign)
        for name in sorted({r["sampler"] for r in group}, key=_order):
            rs = [r for r in group if r["sampler"] == name]
            tests = [r["test_at_best_val"] for r in rs]
            std = statistics.stdev(tests) if len(tests) > 1 else 0.0
            t_reach = _reach(rs, ns)
            var = [v["realised_ratio"] for r in rs for v in r["variance"][1:]]
            out.append(
                f"{dataset:17s} {model:6s} {batch:5d} {name:12s} "
                f"{statistics.mean(tests):9.4f} ± {std:.4f} "
                f"{statistics.mean(r['best_val'] for r in rs):8.4f} "
                f"{statistics.mean(r['train_time_s'] for r in rs):8.1f} "
                f"{t_reach:10.1f} {t_reach / ns_time:5.2f} "
                f"{_reach(rs, sign) / sign_time:6.2f} "
                f"{statistics.mean(r['input_rows_per_step'] for r in rs):9.0f} "
                + (f"{statistics.mean(var):9.2f}" if var else f"{'':9s}")
            )
    out.append("\n'to NS best': mean training seconds to reach the best validation accuracy "
               "of neighbor with the same seed (inf: some seed never did); 'x NS': that over "
               "neighbor's own time to its best; 'x SIGN': the same against sign; 'var "
               "ratio': realised gradient variance of the MVS seeds / uniform seeds on the "
               "same blocks (dropout off), mean over epochs 2+.")
    return "\n".join(out)


def _order(name: str) -> tuple:
    bases = [b for b in SAMPLERS if name == b or name.startswith(b + "-") or name.startswith(b)]
    base = max(bases, key=len) if bases else None
    return (SAMPLERS.index(base) if base else 99, name)


def plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["dataset"], r["model"], r["batch_size"]) for r in runs})
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colours = {"mvs": "C3", "onehop": "C1", "neighbor": "C0", "labor": "C2", "gb": "C4",
               "sign": "C5"}
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
                        result = run(g, num_classes, model, name, batch, seed, args, dataset)
                        result["dataset"] = dataset
                        runs.append(result)
                        print(f"{dataset:17s} {model:6s} B={batch:5d} seed={seed} "
                              f"{result['sampler']:12s} test={result['test_at_best_val']:.4f} "
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
