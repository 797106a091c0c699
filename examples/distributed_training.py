"""GraphSAGE on DistDGL with MVS-GNN seeds and one-hop blocks, or DGL's NeighborSampler.

The shape of DGL's ``examples/distributed/graphsage/node_classification.py``: partition the
graph, start a graph server per partition, and run trainers that read the ``DistGraph``; the
first layer's aggregates added before partitioning, the seeds, the blocks and the weighted
loss are the changes (marked ``# MVS``).  Validation is exact (the full-graph output, from
one-hop blocks) for every sampler.

1. Partition (once)::

    python examples/distributed_training.py partition --dataset synthetic --num-parts 2 \\
        --out-dir data

2a. On a cluster, with DGL's launcher (ip_config.txt lists the machines, one per partition)::

    python3 dgl/tools/launch.py --workspace ~/dgl_mvs --num_trainers 1 --num_samplers 0 \\
        --num_servers 1 --part_config data/synthetic.json --ip_config ip_config.txt \\
        "python3 examples/distributed_training.py train --graph-name synthetic"

2b. On this machine, each partition's "machine" simulated in its own namespace::

    python -m dgl_mvs.local_cluster run --part-config data/synthetic.json -- \\
        python examples/distributed_training.py train --graph-name synthetic

``python examples/distributed_training.py local`` does 1 and 2b for both samplers.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import dgl.nn as dglnn  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import dgl_mvs  # noqa: E402
from dgl_mvs.local_cluster import initialize, run_local_cluster  # noqa: E402


class DistSAGE(nn.Module):
    def __init__(self, in_feats, n_hidden, n_classes, n_layers=2, dropout=0.5):
        super().__init__()
        self.layers = nn.ModuleList()
        self.layers.append(dglnn.SAGEConv(in_feats, n_hidden, "mean"))
        for _ in range(1, n_layers - 1):
            self.layers.append(dglnn.SAGEConv(n_hidden, n_hidden, "mean"))
        self.layers.append(dglnn.SAGEConv(n_hidden, n_classes, "mean"))
        self.dropout = nn.Dropout(dropout)

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if i != len(self.layers) - 1:
                h = F.relu(h)
                h = self.dropout(h)
        return h


def partition(args):
    dataset = dgl_mvs.data.load_dataset(args.dataset, **(
        dict(num_nodes=args.num_nodes, homophily=args.homophily,
             signal_to_noise=args.signal_to_noise, seed=0)
        if args.dataset == "synthetic" else {}))
    g = dataset[0]
    g.ndata["label"] = g.ndata["label"].long()
    # MVS: the first layer's full-graph aggregation, partitioned with the features
    dgl_mvs.distgraph.add_aggregates(g, ["mean", "mean"])
    dgl.distributed.partition_graph(
        g, args.dataset, args.num_parts, args.out_dir,
        balance_ntypes=g.ndata["train_mask"], balance_edges=True,
    )
    with open(os.path.join(args.out_dir, "num_classes.json"), "w") as f:
        json.dump({"num_classes": dataset.num_classes}, f)


def inputs(g, input_nodes, blocks):
    """One-hop blocks carry their input rows; DGL's blocks are read from the DistGraph."""
    if "feat" in blocks[0].srcdata:
        return blocks[0].srcdata["feat"]
    return g.ndata["feat"][input_nodes]


def evaluate(g, model, nodes, batch_size):
    """Exact accuracy on ``nodes`` (this trainer's share), summed over the trainers."""
    sampler = dgl_mvs.DistOneHopSampler(g, model)  # the full-graph output, one hop of rows
    loader = dgl.dataloading.DistNodeDataLoader(g, nodes, sampler, batch_size=batch_size)
    model.eval()
    counts = torch.zeros(2)
    with torch.no_grad():
        for input_nodes, output_nodes, blocks in loader:
            pred = model(blocks, inputs(g, input_nodes, blocks)).argmax(1)
            counts += torch.tensor([float((pred == g.ndata["label"][output_nodes]).sum()),
                                    float(output_nodes.numel())])
    model.train()
    torch.distributed.all_reduce(counts)
    return float(counts[0] / counts[1])


def train(args):
    initialize(args.ip_config)  # dgl.distributed.initialize (+ the simulated machine's ID)
    torch.distributed.init_process_group("gloo")
    torch.set_num_threads(args.num_threads)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    g = dgl.distributed.DistGraph(args.graph_name)
    book = g.get_partition_book()
    every = torch.arange(g.num_nodes())
    train_mask = g.ndata["train_mask"][every].bool()  # stored as uint8
    val_nid = dgl.distributed.node_split(g.ndata["val_mask"], book, force_even=True)
    with open(os.path.join(os.path.dirname(os.environ["DGL_CONF_PATH"]),
                           "num_classes.json")) as f:
        n_classes = json.load(f)["num_classes"]

    torch.manual_seed(args.seed)
    model = DistSAGE(g.ndata["feat"].shape[1], args.num_hidden, n_classes, len(args.fanouts))
    model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    blocks = dgl.dataloading.NeighborSampler(args.fanouts)
    if args.sampler.startswith("mvs"):
        # MVS: exact one-hop blocks (or DGL's, "mvs-neighbor"); every trainer passes all
        # training nodes and draws from its partition's
        if args.sampler == "mvs":
            blocks = dgl_mvs.DistOneHopSampler(g, model.module)
        sampler = dgl_mvs.DistMVSSampler(g, train_mask, args.batch_size, blocks, seed=args.seed)
    else:
        train_nid = dgl.distributed.node_split(g.ndata["train_mask"], book, force_even=True)

    history, tick, steps, seeds = [], time.perf_counter(), 0, 0
    for epoch in range(args.epochs):
        if args.sampler.startswith("mvs"):
            sampler.set_epoch(epoch)  # MVS
            loader = dgl.dataloading.DistNodeDataLoader(g, sampler.step_ids(), sampler,  # MVS
                                                        batch_size=1)
        else:
            loader = dgl.dataloading.DistNodeDataLoader(
                g, train_nid, blocks, batch_size=args.batch_size, shuffle=True, drop_last=False)
        for input_nodes, output_nodes, mfgs in loader:
            x = inputs(g, input_nodes, mfgs)
            y = g.ndata["label"][output_nodes].long()
            logits = model(mfgs, x)
            if args.sampler.startswith("mvs"):
                w = mfgs[-1].dstdata["mvs_weight"]  # MVS: R / (p_i |train|)
                loss = (w * F.cross_entropy(logits, y, reduction="none")).sum()
            else:
                loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if args.sampler.startswith("mvs"):
                sampler.update_scores(mfgs, dgl_mvs.cross_entropy_grad_norm(logits, y))  # MVS
            steps += 1
            seeds += output_nodes.numel()
        train_time = time.perf_counter() - tick
        acc = evaluate(g, model.module, val_nid, 1024)
        tick = time.perf_counter() - train_time  # evaluation is not training time
        history.append({"epoch": epoch, "train_time": train_time, "val_acc": acc,
                        "steps": steps, "seeds": seeds})
        if rank == 0:
            print(f"{args.sampler} epoch {epoch} | {train_time:.1f} s of training | "
                  f"{steps / train_time:.1f} steps/s | {seeds / train_time:.0f} seeds/s on "
                  f"rank 0 | val acc {acc:.4f}", flush=True)
    if rank == 0 and args.out:
        with open(args.out, "w") as f:
            json.dump({"sampler": args.sampler, "trainers": world, "history": history}, f)
    torch.distributed.barrier()
    dgl.distributed.exit_client()


def local(args):
    """Partition into a temporary folder and run both samplers on simulated machines."""
    work = tempfile.mkdtemp(prefix="dgl_mvs_dist_")
    try:
        parts = os.path.join(work, "parts")
        print(f"$ python {sys.argv[0]} partition --dataset {args.dataset} "
              f"--num-parts {args.num_parts} --out-dir {parts}", flush=True)
        partition(argparse.Namespace(dataset=args.dataset, num_parts=args.num_parts,
                                     out_dir=parts, num_nodes=args.num_nodes,
                                     homophily=args.homophily,
                                     signal_to_noise=args.signal_to_noise))
        results = {}
        for name in args.samplers:
            out = os.path.join(work, f"{name}.json")
            command = [sys.executable, os.path.abspath(__file__), "train",
                       "--graph-name", args.dataset, "--sampler", name, "--out", out,
                       "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                       "--seed", str(args.seed), "--lr", str(args.lr)]
            part_config = os.path.join(parts, f"{args.dataset}.json")
            print(f"$ python -m dgl_mvs.local_cluster run --part-config {part_config} -- "
                  "python " + " ".join(command[1:]), flush=True)
            codes = run_local_cluster(part_config, command, timeout=args.timeout)
            if any(codes):
                raise SystemExit(f"trainers exited with {codes}")
            with open(out) as f:
                results[name] = json.load(f)
        for name, result in results.items():
            last = result["history"][-1]
            best = max(h["val_acc"] for h in result["history"])
            print(f"{name:8s} {result['trainers']} trainers: best val acc {best:.4f}, "
                  f"{last['steps'] / last['train_time']:.1f} steps/s per trainer, "
                  f"{last['train_time']:.1f} s of training")
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    part = sub.add_parser("partition", help="partition a dataset for DistDGL")
    part.add_argument("--dataset", default="synthetic", choices=["cora", "synthetic"])
    part.add_argument("--num-nodes", type=int, default=20000, help="synthetic graph size")
    part.add_argument("--num-parts", type=int, default=2)
    part.add_argument("--homophily", type=float, default=0.7, help="synthetic graph")
    part.add_argument("--signal-to-noise", type=float, default=2.0, help="synthetic graph")
    part.add_argument("--out-dir", default="data")
    tr = sub.add_parser("train", help="a trainer (started by launch.py or local_cluster)")
    tr.add_argument("--graph-name", required=True)
    tr.add_argument("--ip-config", default=os.environ.get("DGL_IP_CONFIG", "ip_config.txt"))
    tr.add_argument("--sampler", default="mvs", choices=["mvs", "mvs-neighbor", "neighbor"],
                    help="mvs: MVS seeds on one-hop blocks; mvs-neighbor: MVS seeds on "
                         "NeighborSampler blocks; neighbor: DGL's NeighborSampler")
    tr.add_argument("--fanouts", type=int, nargs="+", default=[10, 10])
    tr.add_argument("--num-hidden", type=int, default=128)
    tr.add_argument("--batch-size", type=int, default=256, help="seeds per trainer and step")
    tr.add_argument("--lr", type=float, default=3e-3)
    tr.add_argument("--epochs", type=int, default=5)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--num-threads", type=int, default=1)
    tr.add_argument("--out", default=None, help="rank 0 writes its per-epoch figures here")
    loc = sub.add_parser("local", help="partition and train on simulated machines of this host")
    loc.add_argument("--dataset", default="synthetic", choices=["cora", "synthetic"])
    loc.add_argument("--num-nodes", type=int, default=20000)
    loc.add_argument("--num-parts", type=int, default=2)
    loc.add_argument("--homophily", type=float, default=0.7)
    loc.add_argument("--signal-to-noise", type=float, default=2.0)
    loc.add_argument("--lr", type=float, default=3e-3)
    loc.add_argument("--samplers", nargs="+", default=["mvs", "neighbor"],
                     choices=["mvs", "mvs-neighbor", "neighbor"])
    loc.add_argument("--epochs", type=int, default=5)
    loc.add_argument("--batch-size", type=int, default=256)
    loc.add_argument("--seed", type=int, default=0)
    loc.add_argument("--timeout", type=float, default=1800)
    loc.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    {"partition": partition, "train": train, "local": local}[args.what](args)


if __name__ == "__main__":
    main()
