"""Checkpoint safety: loading runs no code from the file, corrupted checkpoints and checkpoints
of another graph are refused and change nothing, killed saves leave no temporary files
behind, and files of format version 1 (unrestricted pickles) load only when trusted.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import dgl
import pytest
import torch

import dgl_mvs
from conftest import random_graph
from dgl_mvs import checkpoint as checkpoint_module
from dgl_mvs.checkpoint import load_checkpoint, rng_state, save_checkpoint
from models import GNN

FEATS = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])


def build(g=None, seed=0, blocks="history"):
    """Graph, 2-layer SAGE model, its History, an MVSSampler and Adam with non-zero moments."""
    g = random_graph() if g is None else g
    torch.manual_seed(seed)
    model = GNN("sage", 12, 16, 5, 2)
    history = dgl_mvs.History(g, [16])
    history.attach(model.layers)
    if blocks == "onehop":  # the default: one-hop blocks, whose state holds snapshots
        sampler = dgl_mvs.MVSSampler(g, torch.arange(0, 400, 2), 16, model=model, seed=7,
                                     **FEATS)
    else:
        sampler = dgl_mvs.MVSSampler(g, torch.arange(0, 400, 2), batch_size=16, num_layers=2,
                                     block_sampler=blocks, checkpoint_every=5, seed=7, **FEATS)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = sum((p ** 2).sum() for p in model.parameters())
    loss.backward()
    opt.step()
    nodes = torch.arange(0, 400, 2)
    sampler.scores.write(nodes, (nodes.float() * 7 % 13) / 10 + 0.1 * seed + 0.05)
    return g, model, history, sampler, opt


def state_of(run) -> dict:
    """Everything a load could change, as copies."""
    g, model, history, sampler, opt = run
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": {k: {n: v.clone() for n, v in s.items()}
                      for k, s in opt.state_dict()["state"].items()},
        "sampler": sampler.state_dict(),
        "history": history.state_dict(),
        "epoch": sampler.epoch,
        "torch_rng": torch.get_rng_state(),
    }


def assert_same(a, b, where="state"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def load_all(path, run, **kwargs):
    g, model, history, sampler, opt = run
    return load_checkpoint(path, model=model, optimizer=opt, sampler=sampler, history=history,
                           **kwargs)


def save_all(path, run, extra=None):
    g, model, history, sampler, opt = run
    save_checkpoint(path, model=model, optimizer=opt, sampler=sampler, history=history,
                    extra=extra)


# ---------------------------------------------------------------------- no code runs on load
class RunsCode:
    """Unpickling this object runs ``code``: what a crafted checkpoint would do."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _version_1_file(path, model, extra):
    """What save_checkpoint wrote before format version 2: one unrestricted torch.save."""
    torch.save({
        "format": "dgl_mvs.checkpoint", "version": 1, "model": model.state_dict(),
        "optimizer": None, "optimizer_class": None, "sampler": None, "history": None,
        "rng": rng_state(), "extra": extra,
        "devices": {"model": ["cpu"], "sampler": None, "history": None},
        "versions": {"torch": torch.__version__, "dgl": dgl.__version__},
    }, path)


def _write_current(path, model, payload):
    save_checkpoint(path, model=model, extra={"note": payload})


def _write_version_1(path, model, payload):
    _version_1_file(path, model, {"note": payload})


def _write_torch_file(path, model, payload):
    torch.save({"weights": model.state_dict(), "note": payload}, path)


def _write_bare_pickle(path, model, payload):
    with open(path, "wb") as f:
        pickle.dump({"note": payload}, f)


CRAFTED = {
    "in extra of a current checkpoint": (_write_current, r"trust_extra=True"),
    "in a version-1 checkpoint": (_write_version_1, r"older dgl_mvs.*trust_extra=True"),
    "in another torch file": (_write_torch_file, r"not a dgl_mvs checkpoint"),
    "in a bare pickle": (_write_bare_pickle, r"not a readable checkpoint"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_a_crafted_file_runs_no_code_on_load(tmp_path, name):
    write, message = CRAFTED[name]
    marker = tmp_path / "pwned"
    path = tmp_path / "crafted.pt"
    torch.manual_seed(0)
    write(path, torch.nn.Linear(4, 2), RunsCode(f"open({str(marker)!r}, 'w').write('pwned')"))
    model = torch.nn.Linear(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, model=model)
    assert not marker.exists(), "loading the checkpoint ran code from it"
    assert_same(model.state_dict(), before)


def test_trust_extra_is_an_explicit_opt_in(tmp_path):
    """trust_extra=True unpickles anything, so it runs the code: only for trusted files."""
    marker = tmp_path / "ran"
    path = tmp_path / "crafted.pt"
    _write_current(path, torch.nn.Linear(4, 2), RunsCode(f"open({str(marker)!r}, 'w')"))
    with pytest.raises(ValueError, match="trust_extra=True"):
        load_checkpoint(path, model=torch.nn.Linear(4, 2))
    assert not marker.exists()
    load_checkpoint(path, model=torch.nn.Linear(4, 2), trust_extra=True)
    assert marker.exists()


def test_plain_extra_loads_by_default_and_other_objects_need_trust(tmp_path):
    model = torch.nn.Linear(4, 2)
    path = tmp_path / "ckpt.pt"
    # what examples/compare_samplers.py stores: counters, a curve, early-stopping state
    extra = {"steps": 5, "curve": [{"step": 5, "time": 0.25, "loss": 1.5, "val": 0.5}],
             "stopper": (0.5, model.state_dict(), 1), "name": "run", "none": None}
    save_checkpoint(path, model=model, extra=extra)
    assert_same(load_checkpoint(path, model=torch.nn.Linear(4, 2)), extra)
    save_checkpoint(path, model=model, extra={"tags": {"a", "b"}})  # a set: not plain data
    with pytest.raises(ValueError, match=r"set.*trust_extra=True"):
        load_checkpoint(path, model=torch.nn.Linear(4, 2))
    loaded = load_checkpoint(path, model=torch.nn.Linear(4, 2), trust_extra=True)
    assert loaded == {"tags": {"a", "b"}}


@pytest.mark.parametrize("blocks", ["history", "onehop"])
def test_a_checkpoint_is_plain_data_sealed_by_its_checksum(tmp_path, blocks):
    """torch.load(weights_only=True) reads every part; the last 90 bytes hold the SHA-256."""
    run = build(blocks=blocks)
    path = tmp_path / "run.pt"
    save_all(path, run, extra={"epoch": 1})
    ckpt = torch.load(path, weights_only=True)
    assert (ckpt["format"], ckpt["version"]) == ("dgl_mvs.checkpoint", 2)
    assert type(ckpt["versions"]["torch"]) is str and type(ckpt["versions"]["dgl"]) is str
    assert (ckpt["sampler"]["blocks"] is None) == (blocks == "history")
    assert ckpt["graphs"]["sampler"] == ckpt["graphs"]["history"]
    assert ckpt["graphs"]["sampler"]["num_nodes"] == 400
    data = path.read_bytes()
    trailer = data[-90:]
    assert trailer.startswith(b"dgl_mvs.checkpoint sha256:")
    assert trailer[26:].decode() == hashlib.sha256(data[:-90]).hexdigest()
    assert data[-112:-108] == b"PK\x05\x06" and data[-92:-90] == (90).to_bytes(2, "little")


# ---------------------------------------------------------------------- corrupted files
def test_single_byte_flips_are_refused_and_change_nothing(tmp_path):
    path = tmp_path / "run.pt"
    save_all(path, build(), extra={"epoch": 1})
    data = path.read_bytes()
    run = build(seed=1)  # other parameters, moments and scores than the saved ones
    before = state_of(run)
    # 40 positions spread over the file, and every byte of the zip end record and trailer
    spread = torch.linspace(0, len(data) - 1, 40).long().tolist()
    positions = sorted(set(spread) | set(range(len(data) - 112, len(data))))
    bad = tmp_path / "bad.pt"
    for i, position in enumerate(positions):
        flipped = bytearray(data)
        flipped[position] ^= 1 << (i % 8)
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="not a readable checkpoint"):  # no other type
            load_all(bad, run)
    assert_same(state_of(run), before)
    assert load_all(path, run) == {"epoch": 1}  # the intact file loads


def test_truncated_files_are_refused(tmp_path):
    path = tmp_path / "run.pt"
    save_all(path, build())
    data = path.read_bytes()
    run = build(seed=1)
    before = state_of(run)
    bad = tmp_path / "bad.pt"
    for size in (0, 10, 22, len(data) // 2, len(data) - 90, len(data) - 1):
        bad.write_bytes(data[:size])
        with pytest.raises(ValueError, match="not a readable checkpoint"):
            load_all(bad, run)
    bad.write_bytes(data + b"\0")  # an appended byte: the trailer is no longer at the end
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_all(bad, run)
    assert_same(state_of(run), before)


# ---------------------------------------------------------------------- another graph
def _with_edges(g, src, dst, idtype=torch.int64):
    other = dgl.graph((src, dst), num_nodes=g.num_nodes(), idtype=idtype)
    for key, value in g.ndata.items():
        other.ndata[key] = value.clone()
    return other


def test_a_checkpoint_of_another_graph_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    g = random_graph()
    save_all(path, build(g))
    src, dst = g.edges()
    # as many nodes and edges, the same features and training set; other edges
    rotated = _with_edges(g, (src + 1) % g.num_nodes(), dst)
    run = build(rotated, seed=1)
    before = state_of(run)
    with pytest.raises(ValueError) as info:
        load_all(path, run)
    text = str(info.value)
    assert "sampler: the checkpoint was saved on another graph" in text, text
    assert "history: the checkpoint was saved on another graph" in text, text
    assert "not the same edges" in text
    _, model, history, sampler, _ = run
    with pytest.raises(ValueError, match="sampler: the checkpoint was saved on another graph"):
        load_checkpoint(path, sampler=sampler)
    with pytest.raises(ValueError, match="history: the checkpoint was saved on another graph"):
        load_checkpoint(path, history=history)
    assert_same(state_of(run), before)
    # another random graph of 400 nodes (other edge count): refused too
    with pytest.raises(ValueError, match="another graph .*400 nodes"):
        load_all(path, build(random_graph(seed=1), seed=1))


def test_the_same_graph_loads_whatever_its_edge_order_and_idtype(tmp_path):
    path = tmp_path / "run.pt"
    saved = build()
    save_all(path, saved, extra="ok")
    assert load_all(path, build(seed=1)) == "ok"  # the same graph, built again
    g = random_graph()
    src, dst = g.edges()
    order = torch.randperm(g.num_edges(), generator=torch.Generator().manual_seed(0))
    for idtype in (torch.int64, torch.int32):
        run = build(_with_edges(g, src[order], dst[order], idtype), seed=1)
        assert load_all(path, run) == "ok"
        assert_same(state_of(run)["sampler"], state_of(saved)["sampler"])


# ---------------------------------------------------------------------- temporary files
def _dead_pid() -> int:
    """The ID of a process that has ended (and been reaped)."""
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            return proc.pid
    pytest.skip("could not find a process ID that stays unused")


def test_a_save_removes_only_the_temp_files_of_dead_writers(tmp_path):
    host, dead = checkpoint_module._host_tag(), _dead_pid()
    stale = [f".ckpt.pt.{host}.{dead}.abcd1234.tmp", f".ckpt.pt.{host}.{dead}.x_9.tmp"]
    kept = [
        f".ckpt.pt.{host}.{os.getpid()}.live1234.tmp",  # this process: may be saving now
        f".ckpt.pt.{host}.{os.getppid()}.live5678.tmp",  # a live process
        f".ckpt.pt.another-host.{dead}.abcd1234.tmp",  # another host's: its PIDs are unknown
        f".other.pt.{host}.{dead}.abcd1234.tmp",  # another checkpoint's
        f".ckpt.pt.{host}.{dead}.abcd1234.tmp.bak",  # not a temp file name
        ".ckpt.pt.abcd1234.tmp",  # the old naming, without a PID: cannot tell
        "notes.txt",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 100)
    (tmp_path / f".ckpt.pt.{host}.{dead}.adir.tmp").mkdir()  # not a regular file
    kept.append(f".ckpt.pt.{host}.{dead}.adir.tmp")
    model = torch.nn.Linear(4, 2)
    save_checkpoint(tmp_path / "ckpt.pt", model=model)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["ckpt.pt"])
    assert load_checkpoint(tmp_path / "ckpt.pt", model=torch.nn.Linear(4, 2)) is None


def test_temp_files_are_named_after_their_writer(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def spy(src, dst):
        renamed.append(os.path.basename(src))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", spy)
    save_checkpoint(tmp_path / "ckpt.pt", model=torch.nn.Linear(4, 2))
    host = re.escape(checkpoint_module._host_tag())
    assert len(renamed) == 1
    assert re.fullmatch(rf"\.ckpt\.pt\.{host}\.{os.getpid()}\.[A-Za-z0-9_]+\.tmp", renamed[0])


def test_the_next_save_removes_a_killed_save_s_temp_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    env = dict(os.environ, DGLBACKEND="pytorch", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, str(Path(__file__)), "killed-save", str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HALF", proc.stderr.read()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # dies with half a file written
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.pt.")
    save_checkpoint(path, model=torch.nn.Linear(4, 2), extra=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path, model=torch.nn.Linear(4, 2)) == 2


def _killed_save(path: str) -> None:
    """Child process: a save that hangs halfway through writing its temporary file."""
    real_save = torch.save

    def half_then_hang(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        f.flush()
        print("HALF", flush=True)
        signal.pause()

    torch.save = half_then_hang
    save_checkpoint(path, model=torch.nn.Linear(64, 64))


# ---------------------------------------------------------------------- format version 1
def test_version_1_files_are_refused_unless_trusted(tmp_path):
    path = tmp_path / "old.pt"
    saved = torch.nn.Linear(4, 2)
    _version_1_file(path, saved, {"epoch": 7})
    model = torch.nn.Linear(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"older dgl_mvs .*version 1.*trust_extra=True"):
        load_checkpoint(path, model=model)
    assert_same(model.state_dict(), before)
    assert load_checkpoint(path, model=model, trust_extra=True) == {"epoch": 7}
    assert_same(model.state_dict(), saved.state_dict())


if __name__ == "__main__":
    if sys.argv[1:2] == ["killed-save"]:
        _killed_save(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1:]}")
