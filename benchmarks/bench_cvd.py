"""Dropout-aware control variates (CVD) against exact last layers and plain control variates.

    python benchmarks/bench_cvd.py                     # 3 graphs x 2 models x 2 lr x 3 seeds
    python benchmarks/bench_cvd.py --datasets debian --models sage --lrs 0.001 --seeds 0 \\
        --variants exact cv2 cvd2 cvd4 cvd8 cvdsqrt1 cvd2-r20 cvd8-x64
    python benchmarks/bench_cvd.py --step-rounds 60 --out results/bench_cvd_steps.json  # ms/step
    python benchmarks/bench_cvd.py --summarize results/bench_cvd.json

Every run is ``benchmarks/bench_training.py``'s ``onehop`` run (its models, graphs, training
loop and full-graph evaluation; uniform seeds, ``dgl_mvs.OneHopSampler`` in DGL's DataLoader)
with the last layer's blocks given by the variant.  For each (graph, model, lr, seed) the
variants run one after the other (interleaved), so that machine load affects all alike.

Variants (the first layer always reads the precomputed aggregate):

* ``exact``: the last layer reads every in-edge (``fanouts=[-1, -1]``);
* ``default``: the cost rule, :func:`dgl_mvs.onehop.default_fanouts`;
* ``cv<s>``: control variates with ``s`` sampled neighbours, as before CVD: the model's
  dropout is made functional (``F.dropout``, the same masks), so that no dropout hook tags
  its output and the dropout noise enters with ``d / s``;
* ``cvd<s>``: dropout-aware control variates (the model's ``nn.Dropout`` as is);
* ``cvdsqrt<c>``: CVD with ``s_v = ceil(c * sqrt(d_v))`` per destination;
* suffix ``-x<D>``: every in-edge for destinations of degree at most ``D`` (exact there), the
  variant's draws above (the hubs);
* suffix ``-r<k>``: the snapshot refreshed every ``k`` steps (default: every half graph of
  seeds, ``OneHopSampler``'s ``refresh_every``);
* suffix ``-e<k>``: ``k`` epochs instead of ``--epochs`` (time to ``exact``'s best when it
  takes a cheaper variant more epochs).

Recorded per run (``--out``, JSON): best validation accuracy, test accuracy at it, training
time (wall, including the sampler's construction and every snapshot refresh), the number of
snapshot refreshes and their time (so the time can be re-estimated with cheaper refreshes),
first-layer rows per step, the validation curve (per step and time), and the time to the best
validation accuracy of ``exact`` with the same seed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_training  # noqa: E402
import dgl_mvs  # noqa: E402
import dgl_mvs.onehop as onehop  # noqa: E402

#: The clock of step_times and refresh timing (``--clock``).
CLOCK = time.perf_counter

_VARIANT = re.compile(r"^(exact|default|cvd|cv)(sqrt)?(\d+(?:\.\d+)?)?((?:-[rxe]\d+)*)$")


def parse_variant(name: str) -> dict:
    """``name`` as a dict: fanout of the last layer, dropout split, counts rule, refresh."""
    m = _VARIANT.match(name)
    if m is None or (m.group(1) in ("cv", "cvd") and m.group(3) is None) \
            or (m.group(1) in ("exact", "default") and (m.group(2) or m.group(3))):
        raise ValueError(f"unknown variant {name!r}: exact, default, cv<s>, cvd<s>, "
                         "cvdsqrt<c>, with suffixes -x<D>, -r<k> and -e<epochs>")
    kind, sqrt, number = m.group(1), bool(m.group(2)), m.group(3)
    suffix = dict((s[0], int(s[1:])) for s in m.group(4).split("-") if s)
    spec = dict(name=name, kind=kind, split=kind != "cv", refresh_steps=suffix.get("r"),
                epochs=suffix.get("e"),
                exact_up_to=suffix.get("x"), sqrt=float(number) if sqrt else None,
                s=None if sqrt or number is None else int(number))
    if kind == "exact" and spec["exact_up_to"]:
        raise ValueError(f"{name!r}: -x<D> needs the hubs' draws, "
                         f"e.g. cvd8-x{spec['exact_up_to']}")
    return spec


def counts_rule(spec: dict):
    """``_draw_counts(degree, fanout)`` for the variant (None: the package's own)."""
    if spec["sqrt"] is None and spec["exact_up_to"] is None:
        return None
    c, s, top = spec["sqrt"], spec["s"], spec["exact_up_to"]

    def counts(degree, fanout):
        draws = (c * degree.double().sqrt()).ceil().long() if c is not None \
            else torch.full_like(degree, s)
        draws = torch.minimum(draws.to(degree.dtype), degree)
        return draws if top is None else torch.where(degree <= top, degree, draws)

    return counts


def fanouts_of(spec: dict, g) -> list[int] | None:
    if spec["kind"] == "exact":
        return [-1, -1]
    if spec["kind"] == "default":
        return None
    # A positive entry marks the control-variate layer; the counts rule may override s.
    return [-1, spec["s"] or 2]


class FunctionalDropout(nn.Module):
    """``F.dropout`` (the same masks as ``nn.Dropout``), which no dgl_mvs hook tags."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, h):
        return F.dropout(h, self.p, self.training)


@contextlib.contextmanager
def patched(spec: dict, model_name: str, batch: int, record: dict):
    """The variant's sampler options, counts rule and dropout, for one bench_training run."""
    real_sampler, real_model = dgl_mvs.OneHopSampler, bench_training.MODEL_CLASSES[model_name]
    real_counts = onehop._draw_counts

    def sampler(*args, **kwargs):
        if spec["refresh_steps"]:
            kwargs["refresh_every"] = spec["refresh_steps"] * batch
        made = real_sampler(*args, **kwargs)
        refresh = made.refresh

        def timed_refresh(*a, **k):
            tick = CLOCK()
            try:
                return refresh(*a, **k)
            finally:
                record["refresh_s"] += CLOCK() - tick
                record["refreshes"] += 1

        made.refresh = timed_refresh
        record["fanouts"] = list(made.fanouts)
        return made

    class Functional(real_model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.dropout = FunctionalDropout(self.dropout.p)

    dgl_mvs.OneHopSampler = sampler
    if not spec["split"]:
        bench_training.MODEL_CLASSES[model_name] = Functional
    rule = counts_rule(spec)
    if rule is not None:
        onehop._draw_counts = rule
    try:
        yield
    finally:
        dgl_mvs.OneHopSampler = real_sampler
        bench_training.MODEL_CLASSES[model_name] = real_model
        onehop._draw_counts = real_counts


@contextlib.contextmanager
def counts_of(spec: dict):
    """Only the variant's counts rule (for steps of a sampler built under :func:`patched`)."""
    real, rule = onehop._draw_counts, counts_rule(spec)
    if rule is not None:
        onehop._draw_counts = rule
    try:
        yield
    finally:
        onehop._draw_counts = real


def step_times(g, num_classes, dataset, model_name, specs, args) -> list[dict]:
    """Mean (and median) milliseconds per training step of each variant, and per refresh.

    Every round runs one step of each variant in a shuffled order (the same machine load for
    all), from asking the DataLoader for the blocks to the end of ``optimizer.step()``;
    automatic refreshes are off during the rounds and timed apart (median of 3 calls).
    """
    import random

    import dgl

    rng = random.Random(0)
    train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    weighted = model_name == "gcn-ew"
    feats = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])
    states = []
    for spec in specs:
        record = {"refreshes": 0, "refresh_s": 0.0, "fanouts": None}
        torch.manual_seed(0)
        with patched(spec, model_name, args.batch_size, record):
            model = bench_training.MODEL_CLASSES[model_name](
                g.ndata["feat"].shape[1], args.hidden, num_classes)
            sampler = dgl_mvs.OneHopSampler(
                g, model, fanouts_of(spec, g),
                edge_weight=bench_training.GCN_WEIGHT if weighted else None, **feats)
        sampler.auto_refresh = False
        loader = dgl.dataloading.DataLoader(g, train, sampler, batch_size=args.batch_size,
                                            shuffle=True)
        states.append(dict(spec=spec, model=model, sampler=sampler, loader=loader,
                           it=iter(loader), opt=torch.optim.Adam(model.parameters(), lr=1e-3),
                           times=[], rows=[], record=record))

    def step(state):
        with counts_of(state["spec"]):
            tick = CLOCK()
            try:
                _, _, blocks = next(state["it"])
            except StopIteration:
                state["it"] = iter(state["loader"])
                _, _, blocks = next(state["it"])
            x, y = blocks[0].srcdata["feat"], blocks[-1].dstdata["label"]
            loss = F.cross_entropy(state["model"](blocks, x), y)
            state["opt"].zero_grad()
            loss.backward()
            state["opt"].step()
            return CLOCK() - tick, x.shape[0]

    for r in range(args.step_rounds + 5):
        order = list(states)
        rng.shuffle(order)
        for state in order:
            seconds, rows = step(state)
            if r >= 5:  # warm-up rounds
                state["times"].append(seconds)
                state["rows"].append(rows)
    out = []
    for state in states:
        refresh = []
        if state["sampler"].cv_layers:
            for _ in range(3):
                tick = CLOCK()
                state["sampler"].refresh()
                refresh.append(CLOCK() - tick)
        sampler = state["sampler"]
        steps = math.ceil(train.numel() / args.batch_size)
        period = sampler.refresh_period(args.batch_size)
        step_ms = 1e3 * statistics.mean(state["times"])  # hub steps count: the mean
        refresh_ms = 1e3 * statistics.median(refresh) if refresh else 0.0
        per_epoch = steps // period if period else 0
        out.append(dict(
            dataset=dataset, model=model_name, variant=state["spec"]["name"],
            fanouts=list(sampler.fanouts), step_ms=step_ms,
            median_ms=1e3 * statistics.median(state["times"]), refresh_ms=refresh_ms,
            rows_per_step=statistics.mean(state["rows"]), steps_per_epoch=steps,
            refreshes_per_epoch=per_epoch,
            epoch_s=(steps * step_ms + per_epoch * refresh_ms) / 1e3,
        ))
        sampler.detach()
    return out


def step_summary(rows) -> str:
    lines = [f"{'dataset':16s} {'model':6s} {'variant':14s} {'ms/step':>8s} {'median':>7s} "
             f"{'x exact':>7s} "
             f"{'rows/step':>9s} {'refresh ms':>10s} {'refr/epoch':>10s} {'s/epoch':>8s} "
             f"{'x exact':>7s}"]
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        group = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        exact = next((r for r in group if r["variant"] == "exact"), None)
        for r in group:
            lines.append(
                f"{dataset:16s} {model:6s} {r['variant']:14s} {r['step_ms']:8.1f} "
                f"{r.get('median_ms', math.nan):7.1f} "
                f"{r['step_ms'] / exact['step_ms'] if exact else math.nan:7.2f} "
                f"{r['rows_per_step']:9.0f} {r['refresh_ms']:10.0f} "
                f"{r['refreshes_per_epoch']:10d} {r['epoch_s']:8.1f} "
                f"{r['epoch_s'] / exact['epoch_s'] if exact else math.nan:7.2f}")
    lines.append("\n'ms/step': mean over interleaved rounds (sampling, forward, backward, "
                 "optimizer step; no refresh; 'median' beside it, which hides the steps "
                 "with hubs); 's/epoch': steps x ms/step + refreshes x "
                 "refresh ms, the refreshes at OneHopSampler's default period (half the graph's "
                 "nodes of seeds).")
    return "\n".join(lines)


def run_variant(g, num_classes, dataset, model, lr, seed, spec, args) -> dict:
    targs = bench_training.parse_args([
        "--epochs", str(spec["epochs"] or args.epochs), "--lr", str(lr),
        "--hidden", str(args.hidden),
        "--evals-per-epoch", str(args.evals_per_epoch), f"--tag=-{spec['name']}",
    ])
    targs.onehop_fanouts = fanouts_of(spec, g)
    record = {"refreshes": 0, "refresh_s": 0.0, "fanouts": None}
    with patched(spec, model, args.batch_size, record):
        result = bench_training.run(g, num_classes, model, "onehop", args.batch_size, seed,
                                    targs, dataset)
    result.update(dataset=dataset, variant=spec["name"], lr=lr, **record)
    result["steps_per_epoch"] = math.ceil(int(g.ndata["train_mask"].sum()) / args.batch_size)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+",
                   default=["synthetic-100k", "synthetic-deg100", "debian"],
                   choices=[d for d in bench_training.DATASETS if d != "cora"])
    p.add_argument("--models", nargs="+", default=["sage", "gcn-ew"], choices=["sage", "gcn-ew"])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 1e-2])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["exact", "cv2", "cvd2", "cvd4", "cvd8"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--evals-per-epoch", type=int, default=4)
    p.add_argument("--num-nodes", type=int, default=None, help="override the synthetic size")
    p.add_argument("--avg-degree", type=float, default=None,
                   help="override the synthetic mean degree (the dataset is then named "
                        "'<name>@d<degree>' in the results)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--clock", choices=["cpu", "wall"], default="wall",
                   help="cpu: time every run by the process's CPU time (time.process_time), "
                        "which other processes' load does not inflate; with one thread "
                        "(--threads 1, OMP_NUM_THREADS=1) it is the run's compute time")
    p.add_argument("--out", default=str(ROOT / "results" / "bench_cvd.json"))
    p.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    p.add_argument("--step-rounds", type=int, default=0,
                   help="instead of training: time this many interleaved steps per variant "
                        "(median) and a snapshot refresh, per (graph, model)")
    p.add_argument("--summarize", nargs="+", default=None, metavar="JSON",
                   help="only print the tables of earlier result files")
    return p.parse_args(argv)


def main(argv=None):
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.summarize:
        runs = [r for path in args.summarize for r in json.loads(Path(path).read_text())]
        steps = [r for r in runs if "step_ms" in r]
        runs = [r for r in runs if "step_ms" not in r]
        print(summary(runs) if runs else "")
        print(step_summary(steps) if steps else "")
        return
    specs = [parse_variant(v) for v in args.variants]
    # bench_training.load reads its synthetic overrides from its global ARGS.
    bench_training.ARGS = argparse.Namespace(num_nodes=args.num_nodes,
                                             avg_degree=args.avg_degree)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":  # bench_training times its runs with time.perf_counter
        bench_training.time = argparse.Namespace(perf_counter=time.process_time)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    out = Path(args.out)
    if args.step_rounds:
        rows = []
        for dataset in args.datasets:
            for model in args.models:
                g, num_classes = bench_training.load(dataset, model, False)
                rows += step_times(g, num_classes, _label(dataset, args), model, specs, args)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(rows, indent=1))
        print(step_summary(rows))
        return
    runs = json.loads(out.read_text()) if args.resume and out.exists() else []
    done = {_key(r) for r in runs}
    for name in args.datasets:
        dataset = _label(name, args)
        for model in args.models:
            g, num_classes = bench_training.load(name, model, False)
            for lr in args.lrs:
                for seed in args.seeds:
                    for spec in specs:
                        if (dataset, model, lr, seed, spec["name"]) in done:
                            continue
                        r = run_variant(g, num_classes, dataset, model, lr, seed, spec, args)
                        runs.append(r)
                        print(f"{dataset:17s} {model:6s} lr={lr:g} seed={seed} "
                              f"{spec['name']:14s} val={r['best_val']:.4f} "
                              f"test={r['test_at_best_val']:.4f} "
                              f"train={r['train_time_s']:6.1f}s refreshes={r['refreshes']} "
                              f"({r['refresh_s']:.1f}s) rows/step={r['input_rows_per_step']:.0f}",
                              flush=True)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text(json.dumps(runs, indent=1))
    print()
    print(summary(runs))


def _label(dataset: str, args) -> str:
    """The dataset's name in the results: with the overridden synthetic size and degree."""
    if not dataset.startswith("synthetic"):
        return dataset
    if args.avg_degree is not None:
        dataset += f"@d{args.avg_degree:g}"
    if args.num_nodes is not None:
        dataset += f"@n{args.num_nodes}"
    return dataset


def _key(r):
    return (r["dataset"], r["model"], r["lr"], r["seed"], r["variant"])


def _val_at_epochs(r) -> list[float]:
    """Best validation accuracy so far at the end of each epoch."""
    per = r["steps_per_epoch"]
    out = []
    for e in range(1, r["epochs"] + 1):
        vals = [p["val"] for p in r["curve"] if p["step"] <= e * per]
        out.append(max(vals) if vals else math.nan)
    return out


def summary(runs) -> str:
    lines = []
    header = (f"{'dataset':16s} {'model':6s} {'lr':>6s} {'variant':14s} {'n':>2s} "
              f"{'best val':>8s} {'test':>15s} {'train s':>7s} {'x exact':>7s} "
              f"{'to exact':>8s} {'x':>5s} {'refr':>4s} {'refr s':>6s} {'rows/step':>9s}  "
              f"val after epoch 1..E")
    lines += [header, "-" * len(header)]
    groups = sorted({(r["dataset"], r["model"], r["lr"]) for r in runs})
    for dataset, model, lr in groups:
        group = [r for r in runs if (r["dataset"], r["model"], r["lr"]) == (dataset, model, lr)]
        exact = {r["seed"]: r for r in group if r["variant"] == "exact"}
        exact_time = statistics.mean(r["train_time_s"] for r in exact.values()) if exact \
            else math.nan
        own = statistics.mean(bench_training.time_to(r["curve"], r["best_val"])
                              for r in exact.values()) if exact else math.nan
        order = list(dict.fromkeys(r["variant"] for r in group))
        for name in order:
            rs = [r for r in group if r["variant"] == name]
            tests = [r["test_at_best_val"] for r in rs]
            std = statistics.stdev(tests) if len(tests) > 1 else 0.0
            reach = [bench_training.time_to(r["curve"], exact[r["seed"]]["best_val"])
                     for r in rs if r["seed"] in exact]
            t_reach = statistics.mean(reach) if reach and all(map(math.isfinite, reach)) \
                else math.inf
            train = statistics.mean(r["train_time_s"] for r in rs)
            epochs = [statistics.mean(v) for v in zip(*(_val_at_epochs(r) for r in rs))]
            lines.append(
                f"{dataset:16s} {model:6s} {lr:6g} {name:14s} {len(rs):2d} "
                f"{statistics.mean(r['best_val'] for r in rs):8.4f} "
                f"{statistics.mean(tests):7.4f}±{std:.4f} {train:7.1f} "
                f"{train / exact_time:7.2f} {t_reach:8.1f} {t_reach / own:5.2f} "
                f"{statistics.mean(r['refreshes'] for r in rs):4.0f} "
                f"{statistics.mean(r['refresh_s'] for r in rs):6.1f} "
                f"{statistics.mean(r['input_rows_per_step'] for r in rs):9.0f}  "
                + " ".join(f"{v:.3f}" for v in epochs)
            )
    lines.append(
        "\n'train s': training wall time incl. the sampler's construction and its snapshot "
        "refreshes ('refr': their number during training, 'refr s': their time); 'x exact': "
        "over exact's; 'to exact': mean seconds to reach exact's best validation accuracy "
        "(same seed; inf: some seed never did); 'x': that over exact's own time to its best.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
