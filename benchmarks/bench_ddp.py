"""MVSSampler under DDP on one machine: the score exchange's cost, and throughput for 1-4 ranks.

    python benchmarks/bench_ddp.py              # 200k nodes, B = 512 per rank, 1/2/4 ranks
    python benchmarks/bench_ddp.py --quick      # 20k nodes, smoke run

Two measurements, each in gloo process groups of ``R`` ranks on this machine (file:// init,
``torch.multiprocessing`` spawn, CPU threads divided among the ranks):

* **exchange**: a ``barrier`` (the floor of any per-step synchronisation, shared memory
  included) and :func:`dgl_mvs.distributed.exchange_rows` alone, the one ``all_gather`` per
  step that keeps the ranks' score tables identical, for ``B`` rows per rank (median of
  ``--repeats`` calls, after a warm-up);
* **training**: DGL's example GraphSAGE (hidden 256) wrapped in
  ``torch.nn.parallel.DistributedDataParallel``, trained with ``MVSSampler`` defaults and
  ``DataLoader(use_ddp=True)``: steps per second, seeds per second (all ranks: ``R * B`` per
  step) and the time spent in the exchange inside ``update_scores`` (per step, and as a share
  of the step).

Prints a table and writes ``results/bench_ddp.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-nodes", type=int, default=200_000)
    p.add_argument("--avg-degree", type=float, default=15.0)
    p.add_argument("--batch-size", type=int, default=512, help="seeds per rank and step")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--steps", type=int, default=40, help="timed training steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=200, help="timed exchanges")
    p.add_argument("--exchange-rows", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--out", default=str(ROOT / "results" / "bench_ddp.json"))
    p.add_argument("--quick", action="store_true")
    return p.parse_args(argv)


def _rank(rank, world_size, init_file, graph_file, args, out_file):
    os.environ.setdefault("DGLBACKEND", "pytorch")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    import dgl
    import torch.nn.functional as F

    import dgl_mvs
    import dgl_mvs.sampler as sampler_module
    from bench_training import SAGE
    from dgl_mvs.distributed import exchange_rows

    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    result = {"ranks": world_size, "exchange_ms": {}}
    # A barrier: the least that any synchronisation costs (a shared-memory table still needs
    # one per step, so that every rank's rows are written before the next draw).
    times = []
    for i in range(args.repeats + 10):
        tick = time.perf_counter()
        dist.barrier()
        if i >= 10:
            times.append(time.perf_counter() - tick)
    result["barrier_ms"] = statistics.median(times) * 1e3
    # The exchange alone.
    for rows in args.exchange_rows:
        nodes = torch.randint(0, 1 << 30, (rows,))
        values = torch.rand(rows)
        times = []
        for i in range(args.repeats + 10):
            dist.barrier()
            tick = time.perf_counter()
            exchange_rows(nodes, values, rows, tag=1.0)
            if i >= 10:
                times.append(time.perf_counter() - tick)
        result["exchange_ms"][rows] = statistics.median(times) * 1e3

    # Training, with the exchange inside update_scores timed.
    (g,), _ = dgl.load_graphs(graph_file)
    train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    num_classes = int(g.ndata["label"].max()) + 1
    torch.manual_seed(0)
    model = SAGE(g.ndata["feat"].shape[1], 256, num_classes)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=0.01)
    sampler = dgl_mvs.MVSSampler(g, train, args.batch_size, model=model,
                                 prefetch_node_feats=["feat"], prefetch_labels=["label"])
    spent = []
    original = sampler_module.exchange_rows

    def timed(*a, **k):
        tick = time.perf_counter()
        out = original(*a, **k)
        spent.append(time.perf_counter() - tick)
        return out

    sampler_module.exchange_rows = timed
    step_times, exchange_times, epoch = [], [], 0
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler, use_ddp=True)
    iterator = iter(loader)
    dist.barrier()
    while len(step_times) < args.warmup + args.steps:
        tick = time.perf_counter()
        spent.clear()
        try:
            _, _, blocks = next(iterator)
        except StopIteration:
            epoch += 1
            sampler.set_epoch(epoch)
            loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler, use_ddp=True)
            iterator = iter(loader)
            continue
        x, y = blocks[0].srcdata["feat"], blocks[-1].dstdata["label"]
        logits = ddp(blocks, x)
        w = blocks[-1].dstdata["mvs_weight"]
        loss = (w * F.cross_entropy(logits, y, reduction="none")).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, y))
        step_times.append(time.perf_counter() - tick)
        exchange_times.append(sum(spent))
    step_times, exchange_times = step_times[args.warmup:], exchange_times[args.warmup:]
    total = sum(step_times)
    result.update({
        "steps_per_s": len(step_times) / total,
        "seeds_per_s": len(step_times) * args.batch_size * world_size / total,
        "median_step_ms": statistics.median(step_times) * 1e3,
        "mean_step_ms": statistics.mean(step_times) * 1e3,
        "step_exchange_ms": statistics.median(exchange_times) * 1e3,
        "mean_exchange_ms": statistics.mean(exchange_times) * 1e3,
        "score_every": sampler.score_every,
    })
    result["exchange_share"] = result["mean_exchange_ms"] / result["mean_step_ms"]
    if rank == 0:
        torch.save(result, out_file)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    warnings.filterwarnings("ignore")
    os.environ.setdefault("DGLBACKEND", "pytorch")
    args = parse_args(argv)
    if args.quick:
        args.num_nodes, args.steps, args.repeats = 20_000, 10, 50
    import dgl
    import torch.multiprocessing as mp

    import dgl_mvs

    ds = dgl_mvs.data.load_dataset(
        "synthetic", num_nodes=args.num_nodes, avg_degree=args.avg_degree, num_classes=10,
        feat_dim=64, signal_to_noise=0.5, homophily=0.5, seed=0)
    g = ds[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        graph_file = os.path.join(tmp, "graph.bin")
        dgl.save_graphs(graph_file, [g])
        for world_size in args.ranks:
            out_file = os.path.join(tmp, f"result{world_size}.pt")
            mp.start_processes(
                _rank, args=(world_size, os.path.join(tmp, f"init{world_size}"), graph_file,
                             args, out_file),
                nprocs=world_size, start_method="spawn")
            results.append(torch.load(out_file))
    print(f"\n{g.num_nodes()} nodes, {g.num_edges()} edges, SAGE hidden 256, B = "
          f"{args.batch_size} per rank, {os.cpu_count()} CPU cores, gloo\n")
    rows = args.exchange_rows
    print(f"{'ranks':>5s} {'steps/s':>8s} {'seeds/s':>9s} {'ms/step':>8s} "
          f"{'exch ms':>8s} {'exch %':>7s} {'barrier':>10s}  "
          + "  ".join(f"{'all_gather ' + str(r):>15s}" for r in rows))
    for r in results:
        print(f"{r['ranks']:5d} {r['steps_per_s']:8.2f} {r['seeds_per_s']:9.0f} "
              f"{r['median_step_ms']:8.1f} {r['step_exchange_ms']:8.3f} "
              f"{100 * r['exchange_share']:6.2f}% {r['barrier_ms']:7.3f} ms  "
              + "  ".join(f"{r['exchange_ms'][n]:12.3f} ms" for n in rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(
        {"args": vars(args), "cpu_count": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
