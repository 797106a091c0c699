"""Per-step sampling cost of MVS blocks against DGL's NeighborSampler and LaborSampler.

Usage::

    DGLBACKEND=pytorch .venv/bin/python benchmarks/bench_sampler.py            # full, ~3 min
    DGLBACKEND=pytorch .venv/bin/python benchmarks/bench_sampler.py --quick    # smoke run

On a synthetic DC-SBM graph (default 1M nodes, average degree 20, power-law degrees) and for
each number of layers ``L`` (default 2 and 5) it measures, side by side in one process:

(a) **Block building for identical seed sets.**  Every repeat draws one random set of
    ``--batch-size`` training nodes and hands the same tensor to
    ``dgl_mvs.blocks.history_blocks(g, seeds, L)``,
    ``dgl_mvs.blocks.control_variate_blocks(g, seeds, [2]*L)``,
    ``NeighborSampler([10]*L).sample_blocks`` and ``LaborSampler([10]*L).sample_blocks``.
(b) **A full MVSSampler step**, ``sampler.sample(g, torch.tensor([step]))``: the seed draw
    from the pool (frozen probabilities, systematic draw, Horvitz-Thompson weights) plus block
    building, for ``pool_ratio`` 1.0 and 0.1.  Scores are written first (random positive,
    heavy-tailed) and each interval's checkpoint is published through ``update_scores`` outside
    the timer, as the training loop does; checkpoint steps themselves are not timed here
    (they build exact blocks for the whole pool).  One real checkpoint step (pool_ratio 0.1,
    L = 2) is timed once and reported separately.  ``sampler.draw_step`` alone is timed too,
    so the full step splits into draw and block building; a breakdown of the draw (frozen
    read, systematic / Poisson draw, the shuffle inside it, ``mvs_probabilities`` as used by
    ``probabilities="step"``) follows.

All timed calls of one ``L`` run round-robin (a shuffled order per repeat), so machine load
affects every sampler alike; the tables give medians and the ratio to NeighborSampler at the
same ``L``.  Node and edge counts are per block (first layer first: ``src/dst/edges``) and
summed over the blocks, medians over the repeats.

Threads: ``--threads 1`` (the default) runs torch and DGL's OpenMP single-threaded.  On a
small machine shared with other processes, multi-threaded OpenMP regions wait for descheduled
threads (measured here: a 0.3 ms ``g.in_edges`` call took 27 ms at the median with 2 threads
on 2 busy cores), which would measure the machine's load, not the samplers.  ``--threads 0``
keeps the libraries' defaults.

Goals (issue 4): history blocks no slower than NeighborSampler at L = 2 and at most 0.2x of
it at L = 5.  PASS/FAIL is printed for (a) and for (b).  Writes ``results/bench_sampler.json``.
"""
from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-nodes", type=int, default=1_000_000)
    parser.add_argument("--avg-degree", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=21,
                        help="timed rounds per L (each round calls every sampler once)")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--pool-ratios", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--cv-fanout", type=int, default=2)
    parser.add_argument("--dgl-fanout", type=int, default=10)
    parser.add_argument("--full-step-blocks", nargs="+", default=["history"],
                        choices=["history", "cv"],
                        help="block kinds of the MVSSampler full-step measurement (b)")
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenMP threads; 0 keeps the library defaults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20k nodes, 3 repeats")
    parser.add_argument("--out", default="results/bench_sampler.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_nodes = min(args.num_nodes, 20_000)
        args.repeats = min(args.repeats, 3)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads > 0:
    # Before torch and DGL load their OpenMP runtime.
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ.setdefault("DGLBACKEND", "pytorch")

import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import dgl  # noqa: E402
import torch  # noqa: E402

import dgl_mvs  # noqa: E402
from dgl_mvs import keys  # noqa: E402
from dgl_mvs.data import synthetic_graph  # noqa: E402

NS_NAME = "dgl-neighbor"
GOALS = {2: 1.0, 5: 0.2}  # history / NeighborSampler time, at most


# ----------------------------------------------------------------------------- helpers
def block_stats(blocks) -> list[dict]:
    rows = []
    for b in blocks:
        row = {"src": b.num_src_nodes(), "dst": b.num_dst_nodes(), "edges": b.num_edges()}
        if keys.FRESH in b.srcdata:
            row["fresh_src"] = int(b.srcdata[keys.FRESH].sum())
        if keys.SAMPLED in b.edata:
            row["sampled_edges"] = int(b.edata[keys.SAMPLED].sum())
        rows.append(row)
    return rows


def median_stats(samples: list[list[dict]]) -> list[dict]:
    """Per-block medians over repeats of the counts in ``block_stats``."""
    out = []
    for i, first in enumerate(samples[0]):
        out.append({k: int(statistics.median(s[i][k] for s in samples)) for k in first})
    return out


def summarise(name: str, times: list[float], stats: list[list[dict]] | None) -> dict:
    row = {
        "name": name,
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "max_ms": 1e3 * max(times),
        "times_ms": [1e3 * t for t in times],
    }
    if stats:
        per_block = median_stats(stats)
        row["blocks"] = per_block
        row["input_nodes"] = per_block[0]["src"]
        row["nodes_sum"] = sum(b["src"] for b in per_block)
        row["edges_sum"] = sum(b["edges"] for b in per_block)
    return row


def fake_checkpoint_blocks(pool: torch.Tensor, step: int, idtype) -> list:
    """What ``update_scores`` reads of a checkpoint's blocks: the pool as output nodes."""
    empty = torch.zeros(0, dtype=idtype)
    block = dgl.create_block((empty, empty), num_src_nodes=pool.numel(),
                             num_dst_nodes=pool.numel(), idtype=idtype)
    block.dstdata[dgl.NID] = pool.to(idtype)
    block.dstdata[keys.STEP] = torch.full((pool.numel(),), step, dtype=torch.int64)
    return [block]


def _pool_label(pool_ratio: float | None) -> str:
    """``gamma`` as printed; ``None`` is MVSSampler's default pool of ``K`` batches."""
    return "K*B" if pool_ratio is None else f"{pool_ratio:g}"


class FullStep:
    """An MVSSampler whose non-checkpoint steps are timed through ``sampler.sample``."""

    def __init__(self, g, train, args, num_layers, pool_ratio, block_kind, probabilities):
        kwargs = {"blocks": block_kind, "pool_ratio": pool_ratio,
                  "checkpoint_every": args.checkpoint_every, "probabilities": probabilities,
                  "seed": args.seed}
        if block_kind == "cv":
            kwargs["fanouts"] = [args.cv_fanout] * num_layers
        else:
            kwargs["num_layers"] = num_layers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # batch larger than a tiny pool
            self.sampler = dgl_mvs.MVSSampler(g, train, args.batch_size, **kwargs)
        self.g = g
        self.name = f"mvs-{block_kind} pool={_pool_label(pool_ratio)} p={probabilities}"
        self.config = {"blocks": block_kind, "pool_ratio": pool_ratio,
                       "probabilities": probabilities, "pool_size": self.sampler.pool_size,
                       "checkpoint_every": args.checkpoint_every}
        gen = torch.Generator().manual_seed(args.seed + 17)
        # Heavy-tailed positive scores, as gradient norms are.
        self.score_gen = gen
        self.sampler.scores.write(train, torch.rand(train.numel(), generator=gen) ** 4 + 1e-3)
        self.published = -1
        count = self.sampler.steps_per_epoch
        k = args.checkpoint_every
        steps = [t for t in range(1, 10 * (args.repeats + 2) * k) if t % k != 0]
        self.steps = steps[: args.repeats + 1]  # the first one warms up
        self.count = count
        self.next = 0

    def prepare(self) -> int:
        """Publish the checkpoint of the next step's interval (untimed); return the index."""
        step = self.steps[self.next % len(self.steps)]
        self.next += 1
        s = self.sampler
        interval = step // s.checkpoint_every
        if interval != self.published:
            pool = s._pool(interval)
            ckpt = interval * s.checkpoint_every
            s.set_epoch(ckpt // self.count)
            scores = torch.rand(pool.numel(), generator=self.score_gen) ** 4 + 1e-3
            s.update_scores(fake_checkpoint_blocks(pool, ckpt, self.g.idtype), scores)
            self.published = interval
        s.set_epoch(step // self.count)
        self.step = step
        return step % self.count

    def run(self, index: int):
        return self.sampler.sample(self.g, torch.tensor([index]))

    def draw_only(self, _index: int):
        return self.sampler._draw_step(self.step)


def timed(fn, arg):
    t = time.perf_counter()
    out = fn(arg)
    return time.perf_counter() - t, out


# ----------------------------------------------------------------------------- (a) + (b)
def bench_layers(g, train, args, num_layers: int, rng: random.Random) -> dict:
    seed_gen = torch.Generator().manual_seed(args.seed * 1000 + num_layers)
    cv_gen = torch.Generator().manual_seed(args.seed + 3)
    ns = dgl.dataloading.NeighborSampler([args.dgl_fanout] * num_layers)
    labor = dgl.dataloading.LaborSampler([args.dgl_fanout] * num_layers)
    block_fns = {
        "mvs-history": lambda s: dgl_mvs.blocks.history_blocks(g, s, num_layers),
        f"mvs-cv(fanout {args.cv_fanout})": lambda s: dgl_mvs.blocks.control_variate_blocks(
            g, s, [args.cv_fanout] * num_layers, generator=cv_gen),
        NS_NAME: lambda s: ns.sample_blocks(g, s),
        "dgl-labor": lambda s: labor.sample_blocks(g, s),
    }
    full_steps = []
    for kind in args.full_step_blocks:
        for ratio in args.pool_ratios:
            full_steps.append(FullStep(g, train, args, num_layers, ratio, kind, "frozen"))
        if kind == "history":  # the per-step-update variant: probabilities every step
            # costs O(pool) per step: shown at the largest pool and at the default (K batches)
            for ratio in (max(args.pool_ratios), None):
                full_steps.append(FullStep(g, train, args, num_layers, ratio, kind, "step"))

    # Every entry: (kind, name, prepare() -> argument, fn(argument) -> result or blocks).
    entries = [("a", name, None, fn) for name, fn in block_fns.items()]
    for fs in full_steps:
        entries.append(("b", fs.name, fs, fs.run))
        entries.append(("draw", fs.name, fs, fs.draw_only))
    times = {(k, n): [] for k, n, _, _ in entries}
    stats = {(k, n): [] for k, n, _, _ in entries}

    def one_round(timed_round: bool) -> None:
        seeds = train[torch.randperm(train.numel(), generator=seed_gen)[: args.batch_size]]
        prepared = {id(fs): fs.prepare() for fs in full_steps}
        order = list(entries)
        rng.shuffle(order)
        for kind, name, fs, fn in order:
            arg = seeds if fs is None else prepared[id(fs)]
            dt, out = timed(fn, arg)
            if timed_round:
                times[(kind, name)].append(dt)
                if kind != "draw":
                    stats[(kind, name)].append(block_stats(out[2]))
            del out

    t0 = time.perf_counter()
    one_round(False)  # warm-up: first calls pay allocations and lazy initialisation
    for r in range(args.repeats):
        one_round(True)
        print(f"  L={num_layers}: round {r + 1}/{args.repeats} "
              f"({time.perf_counter() - t0:.0f} s)", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    rows_a = [summarise(n, times[("a", n)], stats[("a", n)]) for k, n, _, _ in entries
              if k == "a"]
    ns_ms = next(r["median_ms"] for r in rows_a if r["name"] == NS_NAME)
    for r in rows_a:
        r["ratio_to_neighbor"] = r["median_ms"] / ns_ms
    rows_b = []
    for fs in full_steps:
        row = summarise(fs.name, times[("b", fs.name)], stats[("b", fs.name)])
        draw = summarise(fs.name, times[("draw", fs.name)], None)
        row.update(fs.config)
        row["ratio_to_neighbor"] = row["median_ms"] / ns_ms
        row["draw_median_ms"] = draw["median_ms"]
        row["draw_times_ms"] = draw["times_ms"]
        row["draw_share"] = draw["median_ms"] / row["median_ms"]
        rows_b.append(row)
    return {"num_layers": num_layers, "neighbor_median_ms": ns_ms,
            "block_building": rows_a, "full_step": rows_b,
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- draw breakdown
def bench_draw_parts(g, train, args) -> list[dict]:
    """Where a step's draw goes, per pool size: each piece timed round-robin."""
    rows = []
    for ratio in args.pool_ratios:
        fs = FullStep(g, train, args, 2, ratio, "history", "frozen")
        fs.prepare()
        s = fs.sampler
        pool = s._pool(0)
        probs = s._frozen_p.clone()  # noqa: SLF001 -- the frozen p of interval 0
        gen = torch.Generator().manual_seed(5)
        picked = dgl_mvs.draws.systematic_draw(probs, gen)
        parts = {
            "draw_step (frozen, systematic, weights)": lambda: s._draw_step(fs.step),
            "frozen p read (clone)": lambda: s._interval_probabilities(0, pool),  # noqa: SLF001
            "systematic_draw": lambda: dgl_mvs.draws.systematic_draw(probs, gen),
            "  of which randperm(pool)": lambda: torch.randperm(probs.numel(), generator=gen),
            "poisson_draw": lambda: dgl_mvs.draws.poisson_draw(probs, gen),
            "horvitz_thompson_weights": lambda: dgl_mvs.draws.horvitz_thompson_weights(
                probs[picked], probs.numel()),
            "scores.read(pool) + mvs_probabilities ('step')":
                lambda: s._pool_probabilities(pool),  # noqa: SLF001
        }
        times = {k: [] for k in parts}
        n_rep = max(5, 2 * args.repeats)
        for rep in range(n_rep + 1):
            names = list(parts)
            random.Random(rep).shuffle(names)
            for k in names:
                dt, _ = timed(lambda _: parts[k](), None)
                if rep:
                    times[k].append(dt)
        rows.append({"pool_ratio": ratio, "pool_size": pool.numel(),
                     "parts_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()}})
    return rows


def bench_checkpoint(g, train, args) -> dict | None:
    ratio, num_layers = min(args.pool_ratios), 2
    if 2 not in args.layers:
        num_layers = min(args.layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s = dgl_mvs.MVSSampler(g, train, args.batch_size, num_layers, pool_ratio=ratio,
                               checkpoint_every=args.checkpoint_every, seed=args.seed)
    t = time.perf_counter()  # includes the pool's uniform draw, as in training
    _, _, blocks = s.sample(g, torch.tensor([0]))
    seconds = time.perf_counter() - t
    per_block = block_stats(blocks)
    del blocks
    return {"pool_ratio": ratio, "num_layers": num_layers, "pool_size": s.pool_size,
            "seconds": seconds, "blocks": per_block,
            "input_nodes": per_block[0]["src"],
            "edges_sum": sum(b["edges"] for b in per_block)}


# ----------------------------------------------------------------------------- report
def fmt_blocks(blocks: list[dict]) -> str:
    parts = []
    for b in blocks:
        s = f"{b['src']}/{b['dst']}/{b['edges']}"
        if "sampled_edges" in b:
            s += f"(s{b['sampled_edges']})"
        parts.append(s)
    return " | ".join(parts)


def print_layer(res: dict) -> None:
    L = res["num_layers"]
    print(f"\n=== L = {L}: (a) block building for identical seed sets "
          f"(median over repeats; x NS = time / NeighborSampler) ===")
    print(f"{'sampler':<22} {'median ms':>10} {'min ms':>9} {'x NS':>8} {'input':>8} "
          f"{'nodes sum':>10} {'edges sum':>10}   per block src/dst/edges, first layer first")
    for r in res["block_building"]:
        print(f"{r['name']:<22} {r['median_ms']:>10.2f} {r['min_ms']:>9.2f} "
              f"{r['ratio_to_neighbor']:>8.3f} {r['input_nodes']:>8} {r['nodes_sum']:>10} "
              f"{r['edges_sum']:>10}   {fmt_blocks(r['blocks'])}")
    if res["full_step"]:
        print(f"--- L = {L}: (b) full MVSSampler step, sampler.sample(g, [step]) "
              f"(non-checkpoint steps) ---")
        print(f"{'config':<36} {'pool':>8} {'median ms':>10} {'x NS':>8} {'draw ms':>8} "
              f"{'draw %':>7} {'input':>8} {'edges sum':>10}")
        for r in res["full_step"]:
            print(f"{r['name']:<36} {r['pool_size']:>8} {r['median_ms']:>10.2f} "
                  f"{r['ratio_to_neighbor']:>8.3f} {r['draw_median_ms']:>8.2f} "
                  f"{100 * r['draw_share']:>6.0f}% {r['input_nodes']:>8} {r['edges_sum']:>10}")


def verdicts(results: list[dict]) -> list[dict]:
    out = []
    for res in results:
        L = res["num_layers"]
        if L not in GOALS:
            continue
        goal = GOALS[L]
        hist = next(r for r in res["block_building"] if r["name"] == "mvs-history")
        out.append({"what": "(a) history_blocks", "L": L, "ratio": hist["ratio_to_neighbor"],
                    "goal": goal, "pass": hist["ratio_to_neighbor"] <= goal})
        for r in res["full_step"]:
            if r["blocks"] != "history":
                continue
            out.append({"what": f"(b) full step, pool={_pool_label(r['pool_ratio'])}, "
                                f"p={r['probabilities']}",
                        "L": L, "ratio": r["ratio_to_neighbor"], "goal": goal,
                        "pass": r["ratio_to_neighbor"] <= goal})
    return out


def main(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t_all = time.perf_counter()
    t = time.perf_counter()
    ds = synthetic_graph(args.num_nodes, avg_degree=args.avg_degree, feat_dim=16,
                         seed=args.seed)
    g = ds[0]
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    g.create_formats_()
    fmt_s = time.perf_counter() - t
    train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    deg = g.in_degrees().float()
    graph = {"nodes": g.num_nodes(), "edges": g.num_edges(), "idtype": str(g.idtype),
             "train_nodes": train.numel(), "avg_degree": g.num_edges() / g.num_nodes(),
             "max_in_degree": int(deg.max()),
             "degree_weighted_mean_in_degree": float((deg * deg).sum() / deg.sum()),
             "generate_s": gen_s, "create_formats_s": fmt_s}
    print(f"graph: {g.num_nodes():,} nodes, {g.num_edges():,} edges "
          f"(avg degree {graph['avg_degree']:.1f}, max {graph['max_in_degree']}), "
          f"{train.numel():,} train nodes; generated in {gen_s:.1f} s, formats {fmt_s:.1f} s; "
          f"threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"{args.repeats} repeats; load avg {load_before[0]:.2f}")

    rng = random.Random(args.seed)
    results = []
    for L in args.layers:
        res = bench_layers(g, train, args, L, rng)
        results.append(res)
        print_layer(res)

    parts = bench_draw_parts(g, train, args)
    print("\n=== draw breakdown per step (median ms; B = "
          f"{args.batch_size}, frozen p unless noted) ===")
    names = list(parts[0]["parts_ms"])
    print(f"{'piece':<48}" + "".join(f"{'pool ' + str(p['pool_size']):>16}" for p in parts))
    for k in names:
        print(f"{k:<48}" + "".join(f"{p['parts_ms'][k]:>16.2f}" for p in parts))

    ckpt = bench_checkpoint(g, train, args)
    print(f"\ncheckpoint step (exact blocks for the whole pool), pool_ratio "
          f"{ckpt['pool_ratio']:g} = {ckpt['pool_size']:,} seeds, L = {ckpt['num_layers']}: "
          f"{ckpt['seconds']:.2f} s, {ckpt['input_nodes']:,} input nodes, "
          f"{ckpt['edges_sum']:,} edges ({fmt_blocks(ckpt['blocks'])})")

    checks = verdicts(results)
    print("\n=== goals (history blocks vs NeighborSampler at the same L) ===")
    for c in checks:
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['what']:<40} L={c['L']}: "
              f"{c['ratio']:.3f}x NeighborSampler (goal <= {c['goal']}x)")

    load_after = os.getloadavg()
    meta = {"torch": torch.__version__, "dgl": dgl.__version__,
            "dgl_mvs": dgl_mvs.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "loadavg_before": load_before, "loadavg_after": load_after,
            "total_seconds": time.perf_counter() - t_all,
            "argv": sys.argv[1:], "args": vars(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "graph": graph, "layers": results,
                               "draw_breakdown": parts, "checkpoint": ckpt,
                               "goals": checks}, indent=1))
    print(f"\nwrote {out} ({meta['total_seconds']:.0f} s in all; load avg "
          f"{load_before[0]:.2f} -> {load_after[0]:.2f})")


if __name__ == "__main__":
    main(ARGS)
