"""Checkpoints: bit-identical resumption in a new process, the same batches with workers,
atomic saves, and loads that refuse a mismatch while changing nothing.

The runs use DGL's and torch's default threads: dgl_mvs orders block sources by node ID
rather than by thread scheduling (see the last test), so a seed means one run.
"""
from __future__ import annotations

import contextlib
import copy
import doctest
import io
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dgl
import numpy as np
import pytest
import torch
from dgl.utils.internal import get_num_threads, set_num_threads

import dgl_mvs
from dgl_mvs.blocks import control_variate_blocks, exact_blocks, history_blocks
from conftest import random_graph
from dgl_mvs import checkpoint as checkpoint_module
from dgl_mvs.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dgl_mvs.training import evaluate, gradient_scores, weighted_loss
from models import GNN

HERE = Path(__file__).resolve().parent
STEP = dgl_mvs.keys.STEP

# The schedule of the resume test: 200 training nodes, batches of 16 -> 13 steps per epoch,
# a checkpoint step every 5 steps.  Save after step 7 (resume at 8: mid-epoch, mid-interval),
# continue to step 19: crosses the epoch boundary (13) and the checkpoints 10 and 15.
STEPS_PER_EPOCH, K = 13, 5
SAVE_AT, TOTAL = 8, 20
DGL_THREADS = None  # threads of DGL and torch in the runs; None: leave them as they are
VAL = torch.arange(400) >= 300


@contextlib.contextmanager
def dgl_threads(num):
    if num is None:
        yield
        return
    before_dgl, before_torch = get_num_threads(), torch.get_num_threads()
    torch.set_num_threads(num)  # torch's pool and BLAS: float results depend on it
    set_num_threads(num)  # DGL's OpenMP pool
    try:
        yield
    finally:
        set_num_threads(before_dgl)
        torch.set_num_threads(before_torch)


def build(num_nodes=400, hidden=16, widths=None, train=None, optimizer="adam",
          probabilities="frozen", **sampler_kwargs):
    """Graph, model (2-layer SAGE, dropout 0.5), History, MVSSampler, optimizer: from scratch."""
    g = random_graph(num_nodes=num_nodes)
    torch.manual_seed(0)
    model = GNN("sage", 12, hidden, 5, 2, dropout=0.5)
    history = dgl_mvs.History(g, widths or [hidden])
    history.attach(model.layers)
    options = dict(batch_size=16, num_layers=2, block_sampler="history", checkpoint_every=K,
                   pool_ratio=0.5, seed=7, score_timeout=60.0,
                   probabilities=probabilities,
                   prefetch_node_feats=["feat"], prefetch_labels=["label"])
    options.update(sampler_kwargs)
    nids = torch.arange(0, 400, 2) if train is None else train
    sampler = dgl_mvs.MVSSampler(g, nids, **options)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return g, model, history, sampler, opt


def train(run, stop, *, num_workers=0, save_at=None, path=None):
    """The standard DGL loop until global step ``stop``; returns [(step, output_nodes)].

    Starts at the sampler's resume point; one DataLoader per epoch, built after set_epoch, with
    its own generator so that iter(loader) leaves torch's global generator (dropout) alone.
    Evaluates (layer-wise inference, which refreshes the histories) at every epoch end.
    """
    g, model, history, sampler, opt = run
    model.train()
    seen = []
    epoch = sampler.epoch
    while True:
        sampler.set_epoch(epoch)
        loader = dgl.dataloading.DataLoader(
            g, sampler.step_ids(), sampler, num_workers=num_workers,
            generator=torch.Generator(),
        )
        for _, output_nodes, blocks in loader:
            step = int(blocks[-1].dstdata[STEP][0])
            if step >= stop:
                return seen
            logits = model(blocks, blocks[0].srcdata["feat"])
            labels = blocks[-1].dstdata["label"]
            loss = weighted_loss(blocks, logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sampler.update_scores(blocks, gradient_scores(logits, labels))
            seen.append((step, output_nodes.clone()))
            if save_at is not None and step + 1 == save_at:
                save_checkpoint(path, model=model, optimizer=opt, sampler=sampler,
                                history=history, extra={"next_step": step + 1})
        evaluate(model, history, {"val": VAL})
        epoch += 1


def final_state(run) -> dict:
    g, model, history, sampler, opt = run
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(opt.state_dict()),
        "sampler": sampler.state_dict(),  # scores, written, resume step, frozen p
        "history": history.state_dict(),  # histories, last writes, clock
        "torch_rng": torch.get_rng_state(),
    }


def snapshot(run) -> dict:
    """Everything a load could change, including the sampler's live resume fields."""
    g, model, history, sampler, opt = run
    state = final_state(run)
    state["live"] = (sampler.epoch, sampler.schedule.start, sampler.schedule.resume_epoch,
                     sampler._last_updated_step, int(sampler._frozen_interval[0]),
                     sampler._frozen_p.clone(), history.clock)
    state["rng"] = rng_state()
    return state


def assert_same(a, b, path="state"):
    """Exact equality (torch.equal, same dtype) of nested dicts/lists/tensors."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype, f"{path}: dtype"
        assert torch.equal(a, b), f"{path}: values differ"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_same_batches(a, b):
    assert [s for s, _ in a] == [s for s, _ in b]
    for (step, x), (_, y) in zip(a, b):
        assert torch.equal(x, y), f"step {step} drew other seeds"


def resume(path, num_workers):
    """Rebuild everything from scratch, load the checkpoint, train to TOTAL."""
    run = build()
    g, model, history, sampler, opt = run
    torch.manual_seed(12345)  # whatever the generators hold now, the load restores them
    extra = load_checkpoint(path, model=model, optimizer=opt, sampler=sampler, history=history)
    assert extra == {"next_step": SAVE_AT}
    assert sampler.epoch == SAVE_AT // STEPS_PER_EPOCH
    assert int(sampler.step_ids()[0]) == SAVE_AT % STEPS_PER_EPOCH
    batches = train(run, TOTAL, num_workers=num_workers)
    return {"batches": batches, "state": final_state(run)}


def _child_main(argv):
    """Entry of the subprocesses (this file run as a script)."""
    mode = argv[0]
    if mode == "resume":
        path, out = argv[1], argv[2]
        with dgl_threads(DGL_THREADS):
            results = {str(nw): resume(path, nw) for nw in (0, 2)}
        torch.save(results, out)
    elif mode == "killed-save":
        real_save = torch.save

        def half_then_hang(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            print("HALF", flush=True)
            signal.pause()  # killed here, mid-save

        torch.save = half_then_hang
        save_checkpoint(argv[1], model=torch.nn.Linear(64, 64), extra={"version": 2})
    else:
        raise SystemExit(f"unknown mode {mode}")


def _run_child(*args, **kwargs):
    env = dict(os.environ, DGLBACKEND="pytorch", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(Path(__file__)), *args], env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


# ---------------------------------------------------------------------- resumption
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted runs (0 and 2 workers), an interrupted run that saves, resumed runs."""
    tmp = tmp_path_factory.mktemp("state")
    path, out = tmp / "run.pt", tmp / "resumed.pt"
    with dgl_threads(DGL_THREADS):
        ref_run = build()
        reference = {"batches": train(ref_run, TOTAL), "state": final_state(ref_run)}
        workers_run = build()
        with_workers = {"batches": train(workers_run, TOTAL, num_workers=2),
                        "state": final_state(workers_run)}
        interrupted = build()
        first = train(interrupted, SAVE_AT, save_at=SAVE_AT, path=path)
    proc = _run_child("resume", str(path), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(out, weights_only=False)
    return {"reference": reference, "workers": with_workers, "first": first,
            "resumed": resumed, "path": path}


def test_resume_point_is_mid_epoch_and_mid_interval():
    assert SAVE_AT % STEPS_PER_EPOCH != 0 and SAVE_AT % K != 0
    assert SAVE_AT < STEPS_PER_EPOCH < TOTAL  # the continuation crosses an epoch boundary
    assert any(step % K == 0 for step in range(SAVE_AT, TOTAL))  # ... and a checkpoint step
    g, model, history, sampler, opt = build()
    assert sampler.steps_per_epoch == STEPS_PER_EPOCH


def test_resume_in_a_new_process_is_bit_identical(runs):
    reference, resumed = runs["reference"], runs["resumed"]["0"]
    assert_same_batches(runs["first"], reference["batches"][:SAVE_AT])
    assert_same_batches(resumed["batches"], reference["batches"][SAVE_AT:])
    # parameters, Adam moments and step counts, scores and written mask, frozen p, resume
    # step, histories, last-write records, History clock, torch's generator: all torch.equal
    assert_same(resumed["state"], reference["state"])
    assert resumed["state"]["history"]["clock"] == reference["state"]["history"]["clock"] > 0
    assert bool(reference["state"]["sampler"]["scores"]["written"].any())


def test_same_seed_same_batches_with_workers(runs):
    reference = runs["reference"]
    assert_same_batches(runs["workers"]["batches"], reference["batches"])
    assert_same(runs["workers"]["state"], reference["state"])
    # ... and after a resume in a new process, with 2 workers
    resumed = runs["resumed"]["2"]
    assert_same_batches(resumed["batches"], reference["batches"][SAVE_AT:])
    assert_same(resumed["state"], reference["state"])


def test_resume_with_step_probabilities_in_process(tmp_path):
    """probabilities="step" reads the latest scores at every draw: scores must round-trip."""
    path = tmp_path / "step.pt"
    with dgl_threads(DGL_THREADS):
        ref_run = build(probabilities="step")
        ref = train(ref_run, TOTAL)
        train(build(probabilities="step"), SAVE_AT, save_at=SAVE_AT, path=path)
        run = build(probabilities="step")
        g, model, history, sampler, opt = run
        load_checkpoint(path, model=model, optimizer=opt, sampler=sampler, history=history)
        assert_same_batches(train(run, TOTAL), ref[SAVE_AT:])
    assert_same(final_state(run), final_state(ref_run))


@pytest.mark.parametrize("draw", ["systematic", "poisson"])
def test_draws_need_no_generator_state(draw):
    """A draw depends on (seed, rank, step) and the scores only: no generator to save."""
    samplers = [build(probabilities="step", draw=draw)[3] for _ in range(2)]
    nodes = torch.arange(0, 400, 2)
    for sampler in samplers:
        sampler.scores.write(nodes, (nodes.double() * 7919 % 101) / 10 + 0.05)
    steps = list(range(1, 40))
    before = torch.get_rng_state()
    forward = [samplers[0]._draw_step(s) for s in steps]
    assert torch.equal(torch.get_rng_state(), before)  # draws leave the global generator alone
    torch.manual_seed(99)
    backward = [samplers[1]._draw_step(s) for s in reversed(steps)][::-1]
    for (seeds_a, w_a), (seeds_b, w_b) in zip(forward, backward):
        assert torch.equal(seeds_a, seeds_b) and torch.equal(w_a, w_b)
    assert not torch.equal(forward[0][0], forward[1][0])


def test_rng_state_round_trip():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


# ---------------------------------------------------------------------- one-hop blocks, workers
# The default blocks (exact one-hop) and control-variate blocks (fanouts=[-1, 2]): 120 training
# nodes, batches of 8 -> 15 steps per epoch, an interval of 2 steps (p fixed per interval),
# score refreshes every 10 steps, control-variate snapshot refreshes after steps 18 and 37.
# Saved after step 22: mid-epoch (epoch 1), mid-interval, between two snapshot refreshes.
HOP_EPOCHS, HOP_STEPS, HOP_SAVE = 3, 15, 23


def build_onehop(fanouts=None, seed=3):
    g = random_graph(num_nodes=300, num_edges=2400)
    torch.manual_seed(0)
    model = GNN("sage", 12, 16, 5, 2, dropout=0.5)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(0, 240, 2), 8, model=model, fanouts=fanouts,
                                 seed=seed, score_every=10, prefetch_node_feats=["feat"],
                                 prefetch_labels=["label"])
    return g, model, sampler, torch.optim.Adam(model.parameters(), lr=0.01)


def train_onehop(run, num_workers, save_at=None, path=None):
    """The README's loop from the sampler's resume point to the end of HOP_EPOCHS epochs:
    [(step, seeds, loss)]; a checkpoint after step ``save_at - 1``."""
    g, model, sampler, opt = run
    out = []
    for epoch in range(sampler.epoch, HOP_EPOCHS):
        sampler.set_epoch(epoch)
        model.train()
        loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler,
                                            num_workers=num_workers,
                                            generator=torch.Generator())
        for _, output_nodes, blocks in loader:
            step = int(blocks[-1].dstdata[STEP][0])
            logits = model(blocks, blocks[0].srcdata["feat"])
            labels = blocks[-1].dstdata["label"]
            loss = weighted_loss(blocks, logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sampler.update_scores(blocks, gradient_scores(logits, labels))
            out.append((step, output_nodes.clone(), loss.detach().clone()))
            if save_at is not None and step + 1 == save_at:
                save_checkpoint(path, model=model, optimizer=opt, sampler=sampler)
    return out


def assert_same_losses(a, b):
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    for (step, seeds, loss), (_, seeds2, loss2) in zip(a, b):
        assert torch.equal(seeds, seeds2), f"step {step} drew other seeds"
        assert torch.equal(loss, loss2), f"step {step}: loss {loss.item()} != {loss2.item()}"


@pytest.mark.parametrize("fanouts", [None, [-1, 2]], ids=["exact", "control-variates"])
def test_onehop_runs_with_workers_are_reproducible_and_resume_exactly(tmp_path, fanouts):
    """num_workers=0 and 2 give the same losses, two runs with workers too, for 3 epochs; a
    save mid-epoch and a resume (0 or 2 workers) continue the uninterrupted run exactly."""
    path = tmp_path / "onehop.pt"
    reference = train_onehop(build_onehop(fanouts), 0, save_at=HOP_SAVE, path=path)
    assert len(reference) == HOP_EPOCHS * HOP_STEPS
    sampler = build_onehop(fanouts)[2]
    assert sampler.schedule.interval == 2 and HOP_SAVE % 2 == 1
    if fanouts:
        assert sampler._snapshot_period == 19  # refreshes after steps 18 and 37
    for _ in range(2):
        assert_same_losses(train_onehop(build_onehop(fanouts), 2), reference)
    for num_workers in (0, 2):
        run = build_onehop(fanouts)
        torch.manual_seed(12345)  # the load restores the generators
        load_checkpoint(path, model=run[1], optimizer=run[3], sampler=run[2])
        assert (run[2].epoch, run[2].schedule.start) == divmod(HOP_SAVE, HOP_STEPS)
        assert_same_losses(train_onehop(run, num_workers), reference[HOP_SAVE:])


def test_dgl_seed_sets_the_default_seed():
    """Without seed=, dgl.seed decides the draws (as for DGL's samplers); a resumed sampler
    built without seed= continues the saved run's seed."""
    def first_seeds(**kwargs):
        sampler = build_onehop(seed=None)[2] if not kwargs else kwargs["sampler"]
        loader = dgl.dataloading.DataLoader(sampler.g, sampler.step_ids(), sampler)
        return sampler, [o for _, o, _ in itertools.islice(loader, 3)]

    dgl.seed(1)
    one, a = first_seeds()
    dgl.seed(1)
    _, b = first_seeds()
    dgl.seed(2)
    two, c = first_seeds()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert one.seed != two.seed
    two.load_state_dict(one.state_dict())  # built without seed=: takes the saved run's
    assert two.seed == one.seed
    with pytest.raises(ValueError, match="seed"):
        build_onehop(seed=5)[2].load_state_dict(one.state_dict())


def test_a_worker_waiting_for_skipped_scores_says_so():
    """Workers wait for the interval's p; update_scores skipped there: a clear error, soon."""
    g, model, sampler, opt = build_onehop()
    sampler.score_timeout = 3.0
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler, num_workers=1)
    tick = time.monotonic()
    with pytest.raises(RuntimeError, match=r"update_scores at step 1\b.*after every step"):
        for _, output_nodes, blocks in loader:
            if int(blocks[-1].dstdata[STEP][0]) != 1:  # the last step of interval 0
                sampler.update_scores(blocks, torch.ones(output_nodes.numel()))
    assert time.monotonic() - tick < 30


def test_standalone_onehop_sampler_in_workers_warns_once_about_its_snapshot():
    """DGL's DataLoader with workers: the snapshot cannot refresh there; one warning says what
    to do (the flag is shared, so the other worker and later epochs stay quiet)."""
    g = random_graph(num_nodes=300, num_edges=2400)
    torch.manual_seed(0)
    model = GNN("sage", 12, 16, 5, 2)
    sampler = dgl_mvs.OneHopSampler(g, model, [-1, 2], prefetch_node_feats=["feat"])
    for num_workers in (0, 2):
        loader = dgl.dataloading.DataLoader(g, torch.arange(200), sampler, batch_size=16,
                                            num_workers=num_workers)
        assert len(list(loader)) == 13
        # (pytest records the workers' warnings in their own memory: read the shared flag)
        assert int(sampler._worker_warned[0]) == (num_workers > 0)
    with pytest.warns(RuntimeWarning, match=r"Call sampler.refresh\(\) in the training loop"):
        sampler._warn_in_worker()
    refreshed = sampler.refreshed
    sampler.refresh()  # the advice
    assert sampler.refreshed == refreshed + 1


# ---------------------------------------------------------------------- atomic saves
def _saved_run(path):
    run = build()
    with dgl_threads(DGL_THREADS):
        train(run, 4, save_at=4, path=path)
    return run


def _crash_in_torch_save(monkeypatch):
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)


def _crash_in_replace(monkeypatch):
    def fail(src, dst):
        raise OSError("interrupted before the rename")

    monkeypatch.setattr(checkpoint_module.os, "replace", fail)


def _crash_in_fsync(monkeypatch):
    def fail(fd):
        raise KeyboardInterrupt  # e.g. SIGINT while flushing to disk

    monkeypatch.setattr(checkpoint_module.os, "fsync", fail)


@pytest.mark.parametrize("crash", [_crash_in_torch_save, _crash_in_replace, _crash_in_fsync])
def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, crash):
    path = tmp_path / "run.pt"
    _saved_run(path)
    good = path.read_bytes()
    run = build()
    g, model, history, sampler, opt = run
    with dgl_threads(DGL_THREADS):
        train(run, 6)  # a later state of the run, whose save fails partway
    crash(monkeypatch)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_checkpoint(path, model=model, optimizer=opt, sampler=sampler, history=history,
                        extra={"next_step": 6})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # temp file removed
    fresh = build()
    extra = load_checkpoint(path, model=fresh[1], optimizer=fresh[4], sampler=fresh[3],
                            history=fresh[2])
    assert extra == {"next_step": 4}
    assert int(fresh[3].step_ids()[0]) == 4


def test_a_killed_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    model = torch.nn.Linear(64, 64)
    save_checkpoint(path, model=model, extra={"version": 1})
    good = path.read_bytes()
    env = dict(os.environ, DGLBACKEND="pytorch", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, str(Path(__file__)), "killed-save", str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HALF", proc.stderr.read()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the process dies with half a file written
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert path.read_bytes() == good
    loaded = torch.nn.Linear(64, 64)
    assert load_checkpoint(path, model=loaded) == {"version": 1}
    assert torch.equal(loaded.weight, model.weight)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.pt.")  # the dead temp file
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / leftovers[0], model=loaded)


# ---------------------------------------------------------------------- refused mismatches
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("mismatch") / "run.pt"
    _saved_run(path)
    return path


MISMATCHES = {
    "node count": (dict(num_nodes=420), r"400 nodes"),
    "history widths": (dict(widths=[32]), r"widths \[16\].*\[32\]"),
    "batch size": (dict(batch_size=8), r"batch_size.*\(16, 8\)"),
    "K": (dict(checkpoint_every=4), r"checkpoint_every.*\(5, 4\)"),
    "seed": (dict(seed=8), r"seed.*\(7, 8\)"),
    "train_nids": (dict(train=torch.arange(1, 400, 2)), r"different train_nids"),
    "train_nids count": (dict(train=torch.arange(0, 300, 2)), r"200 nodes saved, 150 now"),
    "model shapes": (dict(hidden=32), r"model: parameter .* shape"),
    "optimizer class": (dict(optimizer="sgd"), r"Adam state, the optimizer is a SGD"),
}


@pytest.mark.parametrize("name", list(MISMATCHES))
def test_a_mismatch_is_refused_and_changes_nothing(saved, name):
    kwargs, message = MISMATCHES[name]
    run = build(**kwargs)
    g, model, history, sampler, opt = run
    with dgl_threads(DGL_THREADS):
        if name != "history widths":  # (that model cannot run on that history)
            train(run, 2)  # non-trivial state: scores, histories, optimizer moments
    torch.manual_seed(4321)
    before = snapshot(run)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(saved, model=model, optimizer=opt, sampler=sampler, history=history)
    assert_same(snapshot(run), before)


def test_every_difference_is_named(saved):
    g, model, history, sampler, opt = build(num_nodes=420, hidden=32, batch_size=8)
    with pytest.raises(ValueError) as info:
        load_checkpoint(saved, model=model, optimizer=opt, sampler=sampler, history=history)
    text = str(info.value)
    for part in ("model:", "optimizer:", "sampler:", "history:"):
        assert part in text, text


def test_missing_parts_and_unreadable_files_are_refused(saved, tmp_path):
    g, model, history, sampler, opt = build()
    partial = tmp_path / "model_only.pt"
    save_checkpoint(partial, model=model)
    before = snapshot((g, model, history, sampler, opt))
    with pytest.raises(ValueError, match="no sampler state"):
        load_checkpoint(partial, model=model, sampler=sampler)
    assert_same(snapshot((g, model, history, sampler, opt)), before)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(saved.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(truncated, model=model)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not a dgl_mvs checkpoint"):
        load_checkpoint(other, model=model)
    # parts that are not asked for are ignored: the model alone loads from a full checkpoint
    assert load_checkpoint(saved, model=model, restore_rng=False) == {"next_step": 4}


def test_state_dict_methods_refuse_on_their_own(saved):
    ckpt = torch.load(saved, weights_only=False)
    g, model, history, sampler, opt = build(num_nodes=420)
    with pytest.raises(ValueError, match="400 nodes"):
        sampler.load_state_dict(ckpt["sampler"])
    with pytest.raises(ValueError, match="400 nodes"):
        history.load_state_dict(ckpt["history"])
    with pytest.raises(ValueError, match="400 nodes"):
        sampler.scores.load_state_dict(ckpt["sampler"]["scores"])


def test_checkpoint_docstrings_run():
    result = doctest.testmod(checkpoint_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _cv_blocks(g, seeds, num_layers):
    return control_variate_blocks(
        g, seeds, [2] * num_layers, generator=torch.Generator().manual_seed(0))


def test_blocks_do_not_depend_on_thread_scheduling():
    """dgl.to_block orders new sources by OpenMP scheduling; dgl_mvs's blocks do not."""
    g = random_graph()
    seeds = torch.arange(0, 400, 3)
    with dgl_threads(2):
        signatures = []
        for _ in range(60):
            for make in (exact_blocks, history_blocks, _cv_blocks):
                _, _, blocks = make(g, seeds, 2)
                signatures.append(torch.cat([b.srcdata[dgl.NID] for b in blocks]))
    for i in range(2, len(signatures)):
        assert torch.equal(signatures[i], signatures[i % 3])


if __name__ == "__main__":
    _child_main(sys.argv[1:])
