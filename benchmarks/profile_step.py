"""Where a training step's time goes, phase by phase, for MVSSampler against NeighborSampler.

    python benchmarks/profile_step.py                     # 4 graphs, B = 512, 40 rounds
    python benchmarks/profile_step.py --quick             # small synthetic graphs, 8 rounds
    python benchmarks/profile_step.py --graphs debian --cprofile mvs   # + cProfile of mvs

Samplers (each with its own copy of DGL's example GraphSAGE, hidden 256, Adam), in DGL's
``DataLoader`` with ``num_workers=0`` as a user runs them:

* ``mvs``: ``dgl_mvs.MVSSampler(g, train, B, model=model)`` with its defaults;
* ``onehop`` / ``onehop-cv``: ``dgl_mvs.OneHopSampler`` with uniform seeds (``shuffle=True``),
  exact last layer (``[-1, -1]``) / control variates (``[-1, 2]``);
* ``neighbor``: DGL's ``NeighborSampler([10, 10])`` (``labor``: ``LaborSampler([10, 10])``).

Every round runs one step of each sampler, in a shuffled order (machine load hits all alike),
and times its phases:

* ``sample``: the block sampler's ``sample()`` (for ``mvs`` with the seed draw, reported
  apart as ``draw``), without snapshot refreshes;
* ``gather``: the rest of ``next(loader)``: the DataLoader's feature and label prefetch
  (one-hop blocks carry their first-layer rows from ``sample`` already), and a new
  DataLoader per epoch for ``mvs``;
* ``forward``, ``backward`` (with ``zero_grad``), ``optim`` (``optimizer.step()``);
* ``scores``: ``update_scores`` (``mvs``), without the refreshes it triggers;
* ``refresh``: score refreshes (``refresh_scores``) and control-variate snapshot refreshes
  (``OneHopSampler.refresh``) amortised: each kind's mean cost over the steps between two of
  them (timed once at the end of the run where none fell in it).

Medians over the rounds per phase, their sum (``total``), and every phase's ratio to
``neighbor``'s total.  Also input rows, first-layer output rows and edges per step.  Results
go to ``--out`` (JSON).  Absolute times depend on the machine's load; compare ratios from one
run.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
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
import bench_training  # noqa: E402
import dgl_mvs  # noqa: E402

GRAPHS = {
    "synthetic-100k": bench_training.DATASETS["synthetic-100k"],
    "synthetic-deg100": bench_training.DATASETS["synthetic-deg100"],
    "debian": "debian",
    # The acceptance graph of bench_step.py: 1M nodes, 20M edges.
    "synthetic-1m": dict(num_nodes=1_000_000, avg_degree=20, num_classes=10, feat_dim=64,
                         signal_to_noise=0.5, homophily=0.5),
}
PHASES = ("sample", "draw", "gather", "forward", "backward", "optim", "scores", "refresh")
SAMPLERS = ("mvs", "onehop", "onehop-cv", "neighbor", "labor")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    p.add_argument("--samplers", nargs="+", default=["mvs", "onehop", "onehop-cv", "neighbor"],
                   choices=SAMPLERS)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cprofile", nargs="*", default=[], choices=SAMPLERS, metavar="SAMPLER",
                   help="also print a cProfile of the loader and update_scores (sampling, "
                        "gather, scores; not the model) in 20 steps of these samplers")
    p.add_argument("--out", default=str(ROOT / "results" / "profile_step.json"))
    p.add_argument("--quick", action="store_true",
                   help="synthetic graphs of 20k nodes (Debian as is), 8 rounds")
    return p.parse_args(argv)


def load_graph(name: str, quick: bool):
    if GRAPHS[name] == "debian":
        import debian_graph

        g, meta = debian_graph.load()
        num_classes = len(meta["classes"])
    else:
        params = dict(GRAPHS[name])
        if quick:
            params["num_nodes"] = 20_000
        ds = dgl_mvs.data.load_dataset("synthetic", seed=0, **params)
        g, num_classes = ds[0], ds.num_classes
    g.create_formats_()
    return g, num_classes


class _Timed:
    """Wraps a bound method; adds each call's seconds to ``self.seconds``."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        tick = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - tick
            self.calls += 1

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class Runner:
    """One sampler with its own model; ``step()`` trains one mini-batch and times its phases."""

    def __init__(self, name, g, train, num_classes, batch):
        torch.manual_seed(0)
        self.name, self.g, self.train, self.batch = name, g, train, batch
        self.model = bench_training.SAGE(g.ndata["feat"].shape[1], 256, num_classes)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.01)
        feats = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])
        tick = time.perf_counter()
        self.mvs = None
        if name == "mvs":
            self.mvs = dgl_mvs.MVSSampler(g, train, batch, model=self.model, **feats)
            self.sampler = self.mvs
            self.onehop = self.mvs.block_sampler
        elif name.startswith("onehop"):
            fanouts = [-1, -1] if name == "onehop" else [-1, 2]
            self.sampler = self.onehop = dgl_mvs.OneHopSampler(g, self.model, fanouts, **feats)
        else:
            cls = dgl.dataloading.NeighborSampler if name == "neighbor" \
                else dgl.dataloading.LaborSampler
            self.sampler, self.onehop = cls([10, 10], **feats), None
        self.setup = time.perf_counter() - tick
        # Instance attributes shadow the methods: DataLoader, update_scores and after_step
        # call these wrappers.
        self.sample = self.sampler.sample = _Timed(self.sampler.sample)
        self.draw = self.score_refresh = self.snapshot_refresh = None
        if self.mvs is not None:
            self.draw = self.mvs._draw_step = _Timed(self.mvs._draw_step)
            self.score_refresh = self.mvs.refresh_scores = _Timed(self.mvs.refresh_scores)
        if self.onehop is not None and self.onehop.cv_layers:
            self.snapshot_refresh = self.onehop.refresh = _Timed(self.onehop.refresh)
        self.epoch = 0
        self.loader = self._loader()
        self.iterator = iter(self.loader)
        self.times = {phase: [] for phase in PHASES}
        self.refreshes = {"score": [], "snapshot": []}
        self.rows, self.first_rows, self.edges = [], [], []

    def _loader(self):
        if self.mvs is not None:
            self.mvs.set_epoch(self.epoch)
            return dgl.dataloading.DataLoader(self.g, self.mvs.step_ids(), self.mvs)
        return dgl.dataloading.DataLoader(self.g, self.train, self.sampler,
                                          batch_size=self.batch, shuffle=True)

    def _next(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.epoch += 1
            self.loader = self._loader()
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def _refresh_seconds(self) -> tuple[float, float]:
        score = self.score_refresh.take() if self.score_refresh else 0.0
        snap = self.snapshot_refresh.take() if self.snapshot_refresh else 0.0
        if score:
            self.refreshes["score"].append(score)
        if snap:
            self.refreshes["snapshot"].append(snap)
        return score, snap

    def step(self, record: bool, prof: cProfile.Profile | None = None) -> None:
        if prof is not None:  # profile the sampler's side only: the loader and the scores
            prof.enable()
        t0 = time.perf_counter()
        _, _, blocks = self._next()
        t1 = time.perf_counter()
        if prof is not None:
            prof.disable()
        sample = self.sample.take()
        draw = self.draw.take() if self.draw else 0.0
        _, snap_in_sample = self._refresh_seconds()  # OneHopSampler's own schedule
        x, y = blocks[0].srcdata["feat"], blocks[-1].dstdata["label"]
        logits = self.model(blocks, x)
        if self.mvs is not None:
            w = blocks[-1].dstdata["mvs_weight"]
            loss = (w * F.cross_entropy(logits, y, reduction="none")).sum()
        else:
            loss = F.cross_entropy(logits, y)
        t2 = time.perf_counter()
        self.opt.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        self.opt.step()
        t4 = time.perf_counter()
        if prof is not None:
            prof.enable()
        if self.mvs is not None:
            self.mvs.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, y))
        t5 = time.perf_counter()
        if prof is not None:
            prof.disable()
        score_in, snap_in = self._refresh_seconds()
        if not record:
            return
        for phase, seconds in (("sample", sample - draw - snap_in_sample), ("draw", draw),
                               ("gather", (t1 - t0) - sample), ("forward", t2 - t1),
                               ("backward", t3 - t2), ("optim", t4 - t3),
                               ("scores", (t5 - t4) - score_in - snap_in)):
            self.times[phase].append(seconds)
        self.rows.append(blocks[0].num_src_nodes())
        self.first_rows.append(blocks[0].num_dst_nodes())
        self.edges.append(sum(b.num_edges() for b in blocks))

    def amortised_refresh(self) -> dict:
        """Mean seconds per step of each refresh kind (timed once now where none ran)."""
        out = {}
        if self.mvs is not None and self.mvs.score_every:
            if not self.refreshes["score"]:
                self.mvs.refresh_scores()
                self._refresh_seconds()
            out["score"] = statistics.mean(self.refreshes["score"]) / self.mvs.score_every
            out["score_every_steps"] = self.mvs.score_every
        if self.snapshot_refresh is not None:
            if not self.refreshes["snapshot"]:
                self.onehop.refresh()
                self._refresh_seconds()
            every = self.onehop.refresh_every or max(1, self.g.num_nodes() // 2)
            steps = max(1.0, every / self.batch)
            out["snapshot"] = statistics.mean(self.refreshes["snapshot"]) / steps
            out["snapshot_every_steps"] = steps
        return out


def profile_graph(name: str, args) -> dict:
    tick = time.perf_counter()
    g, num_classes = load_graph(name, args.quick)
    train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    mean_degree = g.num_edges() / g.num_nodes()
    print(f"\n== {name}: {g.num_nodes()} nodes, {g.num_edges()} edges (mean in-degree "
          f"{mean_degree:.1f}, max {int(g.in_degrees().max())}), {train.numel()} training "
          f"nodes, batch {args.batch_size} ({time.perf_counter() - tick:.1f} s to load)",
          flush=True)
    runners = [Runner(s, g, train, num_classes, args.batch_size) for s in args.samplers]
    order = random.Random(0)
    for round_ in range(args.warmup + args.rounds):
        order.shuffle(runners)
        for runner in runners:
            runner.step(record=round_ >= args.warmup)
    runners.sort(key=lambda r: args.samplers.index(r.name))
    result = {"graph": name, "nodes": g.num_nodes(), "edges": g.num_edges(),
              "batch_size": args.batch_size, "rounds": args.rounds, "samplers": {}}
    for r in runners:
        phases = {p: statistics.median(r.times[p]) * 1e3 for p in PHASES if p != "refresh"}
        amortised = r.amortised_refresh()
        phases["refresh"] = (amortised.get("score", 0.0) + amortised.get("snapshot", 0.0)) * 1e3
        phases["total"] = sum(phases.values())
        result["samplers"][r.name] = {
            "ms": phases, "refresh": amortised, "setup_s": r.setup,
            "input_rows": statistics.mean(r.rows), "max_input_rows": max(r.rows),
            "first_layer_rows": statistics.mean(
                r.first_rows), "edges": statistics.mean(r.edges),
        }
    print(table(result), flush=True)
    for s in args.cprofile:
        runner = next((r for r in runners if r.name == s), None)
        if runner is not None:
            print(f"\ncProfile of the loader and update_scores in 20 {s} steps on {name} "
                  "(seconds in all 20 steps):")
            print(profile_runner(runner))
    return result


def table(result) -> str:
    rows = result["samplers"]
    base = rows.get("neighbor", {}).get("ms", {}).get("total")
    cols = list(PHASES) + ["total"]
    out = [f"{'sampler':10s} " + " ".join(f"{c:>8s}" for c in cols)
           + f" {'x NS':>5s} {'in rows':>8s} {'(max)':>7s} {'l0 rows':>8s} {'edges':>8s}"]
    out.append("-" * len(out[0]))
    for name, r in rows.items():
        ms = r["ms"]
        out.append(f"{name:10s} " + " ".join(f"{ms[c]:8.2f}" for c in cols)
                   + f" {ms['total'] / base if base else float('nan'):5.2f}"
                   + f" {r['input_rows']:8.0f} {r['max_input_rows']:7d} "
                   f"{r['first_layer_rows']:8.0f} {r['edges']:8.0f}")
    if base:
        out.append("ratio of each phase to neighbor's total step:")
        for name, r in rows.items():
            out.append(f"{name:10s} " + " ".join(f"{r['ms'][c] / base:8.2f}" for c in cols))
        ns = rows["neighbor"]["ms"]
        out.append("difference to neighbor, ms (positive: spends more):")
        for name, r in rows.items():
            if name != "neighbor":
                out.append(f"{name:10s} " + " ".join(f"{r['ms'][c] - ns[c]:+8.2f}"
                                                     for c in cols))
    out.append("(ms: medians per step; refresh: amortised mean; sample excludes draw; rows: "
               "input rows per step (mean, max), first-layer output rows, edges of all blocks)")
    return "\n".join(out)


def profile_runner(runner, steps: int = 20) -> str:
    """cProfile of the loader and ``update_scores`` (not the model) over ``steps`` steps."""
    prof = cProfile.Profile()
    for _ in range(steps):
        runner.step(record=False, prof=prof)
    out = []
    for order, restriction, title in (
            ("cumulative", _WATCHED, "selected functions by cumulative time"),
            ("tottime", 15, "top 15 by own time")):
        stream = io.StringIO()
        pstats.Stats(prof, stream=stream).sort_stats(order).print_stats(restriction)
        lines = stream.getvalue().splitlines()
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        out += [f"-- {title}"] + [line for line in lines[start:] if line.strip()]
    return "\n".join(out)


#: Sampling-side functions whose cumulative time the cProfile summary lists.
_WATCHED = ("(_next|create_block|_in_edge_block|_first_block|_exact_block|_cv_block|rows|"
            "_draw_step|draw|update_scores|write|cross_entropy_grad_norm|sample_blocks|"
            "_sample_neighbors|to_block|_prefetch|fetch|onehop_blocks)\\b")


def main(argv=None):
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.warmup = 8, 2
    results = []
    for name in args.graphs:
        results.append(profile_graph(name, args))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results},
                                             indent=1))


if __name__ == "__main__":
    main()
