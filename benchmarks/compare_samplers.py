"""The comparison harness: node classification with dgl_mvs or DGL's own samplers.

For a training script to copy, see ``examples/node_classification.py``; this one runs every
sampler and block kind under one set of options, for the benchmarks and the tests.

    python benchmarks/compare_samplers.py                       # MVS, GCN, Cora (offline)
    python benchmarks/compare_samplers.py --sampler neighbor    # DGL's NeighborSampler
    python benchmarks/compare_samplers.py --dataset synthetic --num-nodes 100000 --model sage

Samplers: ``mvs`` (importance-sampled seeds; one-hop blocks by default, ``--blocks history``
for the paper's Algorithm 1), ``cv`` (VR-GCN
control variates with uniform seeds), and DGL's ``neighbor``, ``labor``, ``full`` (full-graph
gradient descent), ``cluster_gcn`` and ``saint``.  Validation every epoch, early stopping on
it, and the test metric from layer-wise full-graph inference with the best-validation weights.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import dgl
import torch
import torch.nn.functional as F
from dgl.nn import GATConv, GraphConv, SAGEConv
from torch import nn

import dgl_mvs
from dgl_mvs.data import load_dataset
from dgl_mvs.nn import ControlVariate
from dgl_mvs.training import EarlyStopping, evaluate, gradient_scores, weighted_loss

SAMPLERS = ("mvs", "cv", "neighbor", "labor", "full", "cluster_gcn", "saint")
MODELS = ("gcn", "sage", "gat")


class GNN(nn.Module):
    """A stack of dgl.nn layers called as model(blocks, x), the DGL mini-batch convention."""

    def __init__(self, kind, in_feats, hidden, num_classes, num_layers, dropout=0.0, heads=4,
                 control_variates=False):
        super().__init__()
        dims = [in_feats] + [hidden] * (num_layers - 1) + [num_classes]
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == num_layers - 1
            if kind == "gcn":  # mean over in-neighbours incl. self: exact on history blocks
                layer = GraphConv(a, b, norm="right", allow_zero_in_degree=True)
            elif kind == "sage":
                layer = SAGEConv(a, b, "mean")
            else:
                out_heads = 1 if last else heads
                layer = GATConv(a, b // out_heads, num_heads=out_heads,
                                allow_zero_in_degree=True)
            layers.append(ControlVariate(layer) if control_variates else layer)
        self.layers = nn.ModuleList(layers)
        self.kind = kind
        self.dropout = nn.Dropout(dropout)

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if self.kind == "gat":
                h = h.flatten(1)
            if i != len(self.layers) - 1:
                h = self.dropout(F.relu(h))
        return h


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="cora",
                   help="cora (offline), synthetic, reddit, ppi, flickr, yelp, ogbn-arxiv, "
                        "ogbn-products")
    p.add_argument("--data-root", default=None, help="cache folder of downloadable datasets")
    p.add_argument("--num-nodes", type=int, default=100_000, help="synthetic: nodes")
    p.add_argument("--avg-degree", type=float, default=20.0, help="synthetic: average degree")
    p.add_argument("--num-classes", type=int, default=10, help="synthetic: classes")
    p.add_argument("--feat-dim", type=int, default=64, help="synthetic: feature width")
    p.add_argument("--multilabel", action="store_true", help="synthetic: multi-label")
    p.add_argument("--snr", type=float, default=2.0, help="synthetic: feature signal-to-noise")
    p.add_argument("--homophily", type=float, default=0.7,
                   help="synthetic: fraction of edges inside a class")
    p.add_argument("--model", choices=MODELS, default="gcn")
    p.add_argument("--sampler", choices=SAMPLERS, default="mvs")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--K", type=int, default=3,
                   help="mvs: steps per checkpoint interval (the paper used 20)")
    p.add_argument("--gamma", type=float, default=None,
                   help="mvs: pool ratio (default: a pool of K * batch-size nodes)")
    p.add_argument("--probabilities", choices=("frozen", "step"), default="frozen",
                   help="mvs: p fixed per interval or recomputed each step")
    p.add_argument("--checkpoint-steps", choices=("train", "score"), default="train",
                   help="mvs: train on checkpoint steps (the pool's exact gradient) or only "
                        "refresh histories and scores there, forward without grad (the "
                        "authors' code)")
    p.add_argument("--draw", choices=("systematic", "poisson"), default="systematic")
    p.add_argument("--blocks", choices=("onehop", "history", "cv", "exact", "neighbor", "labor"),
                   default="onehop",
                   help="mvs: blocks of the MVS steps: onehop (the default: precomputed first "
                        "layer, exact or control-variate layers above), the paper's history "
                        "blocks with checkpoints (history, cv, exact), or DGL's sampled blocks "
                        "(neighbor/labor, with --fanout) with seeds drawn by importance")
    p.add_argument("--fanout", type=int, default=10, help="neighbor/labor: fanout per layer")
    p.add_argument("--cv-fanout", type=int, default=2, help="cv: sampled neighbours per layer")
    p.add_argument("--num-parts", type=int, default=None, help="cluster_gcn: partitions")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--patience", type=int, default=10, help="epochs without improvement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--eval-chunk", type=int, default=8192)
    p.add_argument("--save", default=None, metavar="PATH",
                   help="mvs: save the run (model, optimizer, sampler, histories) to this file "
                        "with dgl_mvs.save_checkpoint (atomically); unrelated to --K")
    p.add_argument("--save-every", type=int, default=100, help="steps between saves")
    p.add_argument("--resume", action="store_true", help="mvs: continue from --save PATH")
    p.add_argument("--output", default=None, help="JSON result file")
    p.add_argument("--plot", default=None, help="PNG plot of loss and validation metric")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def load(args):
    kwargs = {"root": args.data_root} if args.data_root else {}
    if args.dataset == "synthetic":
        kwargs = dict(num_nodes=args.num_nodes, avg_degree=args.avg_degree,
                      num_classes=args.num_classes, feat_dim=args.feat_dim,
                      multilabel=args.multilabel, signal_to_noise=args.snr,
                      homophily=args.homophily, seed=args.seed)
    elif args.dataset == "cora":
        kwargs = dict(seed=args.seed)
    ds = load_dataset(args.dataset, **kwargs)
    g = ds[0]
    if args.model in ("gcn", "gat"):  # GCN/GAT aggregate over the node itself as well
        g = dgl.add_self_loop(dgl.remove_self_loop(g))
    return g, ds.num_classes, ds.multilabel


def make_loader(args, g, train_nids, device, model=None, multilabel=False):
    """The DataLoader (or None for full-graph training) and the MVS sampler if any."""
    L = args.layers
    feats = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])
    common = dict(device=device, num_workers=args.num_workers)
    uniform = dict(batch_size=args.batch_size, shuffle=True, drop_last=False, **common)
    if args.sampler == "mvs":
        fanouts = [args.cv_fanout] * L if args.blocks == "cv" else None
        blocks = args.blocks
        if blocks == "neighbor":
            blocks = dgl.dataloading.NeighborSampler([args.fanout] * L)
        elif blocks == "labor":
            blocks = dgl.dataloading.LaborSampler([args.fanout] * L)
        if blocks == "onehop":
            sampler = dgl_mvs.MVSSampler(
                g, train_nids, args.batch_size, model=model, block_sampler="onehop",
                probabilities=args.probabilities,
                draw=args.draw, seed=args.seed, multilabel=multilabel, **feats)
            return mvs_loader(g, sampler, common), sampler
        sampler = dgl_mvs.MVSSampler(
            g, train_nids, args.batch_size, L, block_sampler=blocks, fanouts=fanouts,
            checkpoint_every=args.K, pool_ratio=args.gamma, probabilities=args.probabilities,
            draw=args.draw, seed=args.seed, **feats)
        return mvs_loader(g, sampler, common), sampler
    if args.sampler == "cv":
        sampler = dgl_mvs.ControlVariateSampler([args.cv_fanout] * L, **feats)
    elif args.sampler == "neighbor":
        sampler = dgl.dataloading.NeighborSampler([args.fanout] * L, **feats)
    elif args.sampler == "labor":
        sampler = dgl.dataloading.LaborSampler([args.fanout] * L, **feats)
    elif args.sampler == "cluster_gcn":
        # Partitions of ~128 nodes, as in the paper's setup; batch of batch_size nodes.
        parts = args.num_parts or max(2, g.num_nodes() // 128)
        cache = os.path.join(tempfile.gettempdir(), f"dgl_mvs_cluster_{g.num_nodes()}_{parts}.pkl")
        sampler = dgl.dataloading.ClusterGCNSampler(
            g, parts, cache_path=cache, prefetch_ndata=["feat", "label", "train_mask"])
        per_batch = max(1, args.batch_size // 128)
        return dgl.dataloading.DataLoader(
            g, torch.arange(parts), sampler, batch_size=per_batch, shuffle=True, **common), None
    elif args.sampler == "saint":
        sampler = dgl.dataloading.SAINTSampler(
            "node", budget=args.batch_size, prefetch_ndata=["feat", "label", "train_mask"])
        steps = math.ceil(train_nids.numel() / args.batch_size)
        return dgl.dataloading.DataLoader(g, torch.arange(steps), sampler, **common), None
    else:
        return None, None
    return dgl.dataloading.DataLoader(g, train_nids, sampler, **uniform), None


def mvs_loader(g, sampler, common):
    """An epoch's DataLoader over the sampler's step numbers (rebuilt after a resume).

    Its own generator keeps the loader from drawing from torch's global one, so that a resumed
    run's dropout masks match an uninterrupted run's.
    """
    return dgl.dataloading.DataLoader(
        g, sampler.step_ids(), sampler, generator=torch.Generator(), **common)


def batches(loader, g, train_mask, device):
    """Uniform view of a training step: (graphs, x, labels, output-row mask, nodes touched)."""
    if loader is None:  # full-graph gradient descent: one step per epoch
        graph = g.to(device)
        yield None, graph, graph.ndata["feat"], graph.ndata["label"], graph.ndata["train_mask"]
        return
    for item in loader:
        if isinstance(item, dgl.DGLGraph):  # cluster_gcn / saint subgraphs
            mask = item.ndata["train_mask"]
            yield None, item, item.ndata["feat"], item.ndata["label"], mask
        else:
            _, _, blocks = item
            yield blocks, None, blocks[0].srcdata["feat"], blocks[-1].dstdata["label"], None


def run(args) -> dict:
    torch.manual_seed(args.seed)
    dgl.seed(args.seed)
    device = torch.device(args.device)
    g, num_classes, multilabel = load(args)
    train_nids = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    model = GNN(args.model, g.ndata["feat"].shape[1], args.hidden, num_classes, args.layers,
                control_variates=(args.sampler == "cv" or args.blocks == "cv"))
    model = model.to(device)
    history = dgl_mvs.History(g, model_widths(model, args))
    # The hook applies dropout to hidden-layer inputs after the history exchange (for every
    # sampler alike), so that histories hold clean activations.
    history.attach(model.layers, dropout=args.dropout)
    loader, sampler = make_loader(args, g, train_nids, device, model, multilabel)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    stopper = EarlyStopping(patience=args.patience)
    masks = {"val": g.ndata["val_mask"], "test": g.ndata["test_mask"]}
    curve, steps, touched, train_time, eval_time = [], 0, [], 0.0, 0.0
    progress = not args.quiet
    if progress:
        from tqdm.auto import tqdm
    first_epoch = 0
    if args.resume:
        if sampler is None or not args.save:
            raise SystemExit("--resume needs --sampler mvs and --save PATH")
        state = dgl_mvs.load_checkpoint(args.save, model=model, optimizer=opt,
                                        sampler=sampler, history=history)
        steps, curve = state["steps"], state["curve"]
        stopper.best, stopper.best_state, stopper.bad_checks = state["stopper"]
        first_epoch = sampler.epoch
    start = time.perf_counter()
    for epoch in range(first_epoch, args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)  # keeps a resume point inside this epoch
            loader = mvs_loader(g, sampler, dict(device=device, num_workers=args.num_workers))
        tick = time.perf_counter()
        model.train()
        stream = batches(loader, g, g.ndata["train_mask"], device)
        if progress and loader is not None:
            stream = tqdm(stream, total=len(loader), desc=f"epoch {epoch}", leave=False)
        for blocks, graph, x, labels, mask in stream:
            # MVS, optional: a checkpoint step that only refreshes histories and scores
            score_only = (sampler is not None and args.checkpoint_steps == "score"
                          and sampler.is_checkpoint_batch(blocks))
            if blocks is not None:  # the standard DGL block loop
                with torch.set_grad_enabled(not score_only):
                    logits = model(blocks, x)
                    loss = weighted_loss(blocks, logits, labels, multilabel)
                touched.append(blocks[0].num_src_nodes())
            else:  # a (sub)graph: train on its training nodes
                logits = model([graph] * args.layers, x)[mask]
                labels = labels[mask.to(labels.device)]
                if labels.numel() == 0:
                    continue
                loss = weighted_loss([graph], logits, labels, multilabel)
                touched.append(graph.num_nodes())
            if not score_only:
                opt.zero_grad()
                loss.backward()
                opt.step()
            if sampler is not None:
                sampler.update_scores(blocks, gradient_scores(logits, labels, multilabel))
            steps += 1
            curve.append({"step": steps, "time": time.perf_counter() - start,
                          "loss": float(loss)})
            if sampler is not None and args.save and steps % args.save_every == 0:
                dgl_mvs.save_checkpoint(
                    args.save, model=model, optimizer=opt, sampler=sampler,
                    history=history, extra={"steps": steps, "curve": curve, "stopper": (
                        stopper.best, stopper.best_state, stopper.bad_checks)})
            if args.max_steps and steps >= args.max_steps:
                break
        train_time += time.perf_counter() - tick
        tick = time.perf_counter()
        val = evaluate(model, history, {"val": masks["val"]}, multilabel=multilabel,
                       chunk_size=args.eval_chunk, device=device)["val"]
        eval_time += time.perf_counter() - tick
        curve[-1]["val"] = val
        if progress:
            print(f"epoch {epoch:3d}  steps {steps:5d}  loss {curve[-1]['loss']:.4f}  "
                  f"val {val:.4f}")
        if stopper.step(val, model) or (args.max_steps and steps >= args.max_steps):
            break
    stopper.restore(model)
    test = evaluate(model, history, masks, multilabel=multilabel, chunk_size=args.eval_chunk,
                    device=device)
    result = {
        "dataset": args.dataset, "model": args.model, "sampler": args.sampler,
        "batch_size": args.batch_size, "seed": args.seed,
        "metric": "micro_f1" if multilabel else "accuracy",
        "test": test["test"], "best_val": stopper.best, "steps": steps,
        "epochs": epoch + 1, "train_time_s": train_time, "eval_time_s": eval_time,
        "nodes_per_step": sum(touched) / max(1, len(touched)),
        "args": vars(args), "curve": curve,
    }
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)
    return result


def model_widths(model, args):
    """Input widths of layers 1..L-1 (the histories): hidden for every model here."""
    return [args.hidden] * (args.layers - 1)


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    evals = [c for c in curve if "val" in c]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for col, key in enumerate(("step", "time")):
        axes[0, col].plot([c[key] for c in curve], [c["loss"] for c in curve], lw=0.8)
        axes[0, col].set_ylabel("training loss")
        axes[1, col].plot([c[key] for c in evals], [c["val"] for c in evals], marker="o")
        axes[1, col].set_ylabel(f"validation {result['metric']}")
        axes[1, col].set_xlabel("steps" if key == "step" else "wall time (s)")
    fig.suptitle(f"{result['sampler']} / {result['model']} / {result['dataset']}: "
                 f"test {result['test']:.4f}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    result = run(args)
    print(f"{result['sampler']}: test {result['metric']} {result['test']:.4f}  "
          f"(best val {result['best_val']:.4f}, {result['steps']} steps, "
          f"{result['train_time_s']:.1f} s training, "
          f"{result['nodes_per_step']:.0f} nodes per step)")
    return result


if __name__ == "__main__":
    main()
