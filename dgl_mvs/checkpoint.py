"""Checkpoints of an MVS training run: atomic saves, checked loads, bit-identical resumption.

A checkpoint holds what a run needs to continue as if it had never stopped: the model and
optimizer state, the :class:`~dgl_mvs.MVSSampler` state (score table, resume point, frozen
probabilities), the :class:`~dgl_mvs.History` state (histories, last-write records, clock)
and the random generator states of the process (torch CPU, CUDA when initialised, NumPy's
and Python's global generators).  The sampler draws every pool and batch from a generator
seeded with ``(seed, step)`` (its blocks with ``(seed, rank, step)``), so its draws need no
saved generator.

**Resuming bit-identically.**  Two things beyond loading the checkpoint:

* After :func:`load_checkpoint`, call ``sampler.set_epoch(sampler.epoch)`` and build the
  resumed epoch's DataLoader with ``sampler.step_ids()`` (the steps left in that epoch); start
  the epoch loop at ``sampler.epoch``.
* Give every DataLoader its own generator, ``DataLoader(..., generator=torch.Generator())``.
  Otherwise each ``iter(loader)`` draws a worker base seed from torch's *global* generator, the
  one dropout uses: the uninterrupted run drew it at the start of the epoch, the resumed run
  draws it again at the resume point, and dropout masks differ from there on.

With DataLoader workers the resumed run is the same too (with any number of workers): the
state holds what they read, the probabilities the training process published for the
current interval and the one-hop control-variate snapshot with its refresh step.

``dgl.seed`` sets DGL's global C++ generator, which has no way to read its state back, so it
cannot be saved.  An :class:`~dgl_mvs.MVSSampler` built without ``seed=`` draws its seed from
it once, at construction, and a load gives it the saved run's seed.  dgl_mvs's own blocks
(one-hop, ``"history"``, ``"cv"``, ``"exact"``) do not use that generator; a stock DGL block
sampler passed as ``block_sampler=`` (``NeighborSampler``, ...) does, and with one a resumed
run is a valid continuation but not a bit-identical one.

**Safe loading.**  A checkpoint holds only tensors and plain Python values (numbers, strings,
None, lists, tuples, dicts) and :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``, which builds nothing else: a crafted file cannot run code.
An ``extra=`` holding other objects needs ``load_checkpoint(..., trust_extra=True)``, which
unpickles without that restriction and so runs whatever code the file names: use it only for
files you trust.  Before anything is unpickled, the file's SHA-256 checksum is verified, so a
flipped byte or a truncated copy is refused.  Before anything is assigned, the sampler's and
the history's graphs are checked against fingerprints of the graphs the checkpoint was saved
on (node count and edge list), so a checkpoint of another graph with as many nodes is refused
too; the training set is checked through the sampler's state, which holds ``train_nids``.
Node features are not checked.

**File format (version 2).**  A standard ``torch.save`` zip archive of a dict of plain data,
whose zip comment, the last 90 bytes of the file, is ``dgl_mvs.checkpoint sha256:`` and the
64 hex digits of the SHA-256 of every byte before it.  ``torch.load(path, weights_only=True)``
reads it like any torch file.  Files of format version 1 (dgl_mvs before the checksum:
unrestricted pickles) are refused unless ``trust_extra=True``.

**Temporary files.**  A save writes ``.{name}.{host}.{pid}.{random}.tmp`` next to the target
and renames it; a save killed midway leaves that file behind, and the next save to the same
name removes the temporary files of writers on this host whose process has ended.

Examples
--------
>>> import os, tempfile
>>> import dgl, torch, torch.nn.functional as F
>>> from dgl.nn import SAGEConv
>>> import dgl_mvs
>>> from dgl_mvs.checkpoint import load_checkpoint, save_checkpoint
>>> def build():
...     src = torch.arange(3000) % 300                      # the same graph every time
...     g = dgl.graph((src, (src * 7 + torch.arange(3000) // 300) % 300))
...     g.ndata["feat"] = torch.ones(300, 8)
...     g.ndata["label"] = torch.arange(300) % 3
...     layers = torch.nn.ModuleList([SAGEConv(8, 16, "mean"), SAGEConv(16, 3, "mean")])
...     history = dgl_mvs.History(g, widths=[16])
...     _ = history.attach(layers)
...     sampler = dgl_mvs.MVSSampler(g, torch.arange(200), batch_size=32, num_layers=2,
...         block_sampler="history", checkpoint_every=4, prefetch_node_feats=["feat"],
...         prefetch_labels=["label"])
...     opt = torch.optim.Adam(layers.parameters(), lr=0.01)
...     return g, layers, history, sampler, opt
>>> def train(g, layers, sampler, opt, stop_after=None):
...     for epoch in range(sampler.epoch, 2):
...         sampler.set_epoch(epoch)
...         loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler,
...                                             generator=torch.Generator())
...         for step, (_, _, blocks) in enumerate(loader):
...             h = F.relu(layers[0](blocks[0], blocks[0].srcdata["feat"]))
...             logits = layers[1](blocks[1], h)
...             labels = blocks[-1].dstdata["label"]
...             loss = dgl_mvs.training.weighted_loss(blocks, logits, labels)
...             opt.zero_grad(); loss.backward(); opt.step()
...             sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
...             if stop_after is not None and step + 1 == stop_after:
...                 return
>>> path = os.path.join(tempfile.mkdtemp(), "run.pt")
>>> g, layers, history, sampler, opt = build()
>>> train(g, layers, sampler, opt, stop_after=3)          # interrupted after 3 steps
>>> save_checkpoint(path, model=layers, optimizer=opt, sampler=sampler, history=history,
...                 extra={"note": "after step 2"})
>>> g, layers, history, sampler, opt = build()             # e.g. in a new process
>>> load_checkpoint(path, model=layers, optimizer=opt, sampler=sampler, history=history)
{'note': 'after step 2'}
>>> sampler.epoch, sampler.step_ids()[:3].tolist()        # resumes at step 3 of epoch 0
(0, [3, 4, 5])
>>> train(g, layers, sampler, opt)                          # continues where it stopped
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import tempfile
import warnings
import zipfile
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from .history import History
from .sampler import MVSSampler

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

_FORMAT = "dgl_mvs.checkpoint"
_VERSION = 2  # 2: weights_only payload, SHA-256 trailer, graph fingerprints

# The checksum trailer, the zip comment of the torch.save archive (see the module docstring).
_TRAILER_PREFIX = f"{_FORMAT} sha256:".encode("ascii")
_TRAILER_SIZE = len(_TRAILER_PREFIX) + 64
_HEX_DIGEST = re.compile(rb"[0-9a-f]{64}")
_EOCD_SIGNATURE = b"PK\x05\x06"  # zip end-of-central-directory record
_EOCD_SIZE = 22  # its length without the comment; its last 2 bytes: the comment's length
_CHUNK = 1 << 20
_MAX_KEYED_NODES = 3_037_000_499  # largest n with n * n < 2**63 (edge keys src * n + dst)


# ---------------------------------------------------------------------- random generators
def rng_state() -> dict:
    """The states of the process-wide random generators that a training loop may use.

    torch's CPU generator (dropout, initialisation, ``torch.rand``), every CUDA device's
    generator when CUDA is initialised, NumPy's global generator and Python's ``random``.
    DGL's global generator (``dgl.seed``) cannot be read back and is not included.

    Returns
    -------
    dict
        ``{"torch", "cuda", "numpy", "python"}``; ``"cuda"`` is None when CUDA is not
        initialised.  Only tensors and plain Python values, for ``torch.save``.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.checkpoint import rng_state, set_rng_state
    >>> state = rng_state()
    >>> a = torch.rand(3)
    >>> set_rng_state(state)
    >>> torch.equal(a, torch.rand(3))
    True
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def _check_rng_state(state: Any) -> None:
    if not isinstance(state, dict) or "torch" not in state:
        raise ValueError("checkpoint's random generator state is malformed")
    torch_state = state["torch"]
    if not torch.is_tensor(torch_state) or torch_state.dtype != torch.uint8 \
            or torch_state.shape != torch.get_rng_state().shape:
        raise ValueError("checkpoint's torch generator state is malformed")


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`.

    CUDA generators are restored when the state has them and this process has as many CUDA
    devices; otherwise they are left alone (with a warning when the state had some).
    """
    _check_rng_state(state)
    torch.set_rng_state(state["torch"].cpu())
    if state.get("numpy") is not None:
        saved = state["numpy"]
        np.random.set_state((saved["kind"], saved["keys"].cpu().numpy().astype(np.uint32),
                             saved["pos"], saved["has_gauss"], saved["cached"]))
    if state.get("python") is not None:
        random.setstate(_as_python_state(state["python"]))
    cuda = state.get("cuda")
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            warnings.warn(
                f"the checkpoint holds the generator states of {len(cuda)} CUDA device(s), "
                f"this process has {torch.cuda.device_count() if torch.cuda.is_available() else 0}"
                "; CUDA generators were left as they are",
                RuntimeWarning, stacklevel=2,
            )


def _as_python_state(state: Any) -> tuple:
    # torch.save keeps tuples, but be lenient with lists (e.g. a state that went through JSON).
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


# ---------------------------------------------------------------------- graph fingerprints
def _graph_fingerprint(g: Any) -> dict:
    """Node count, edge count and the SHA-256 of the edge list in a canonical order.

    Edges are hashed as sorted ``src * num_nodes + dst`` keys (int64, little-endian), so the
    fingerprint depends on the graph's structure only: not on its edge IDs' order, idtype or
    device.  Node and edge features are not part of it.
    """
    n = g.num_nodes()
    src, dst = (ids.to("cpu", torch.int64) for ids in g.edges())
    if n <= _MAX_KEYED_NODES:
        edge_keys = src * n + dst
        if not bool((edge_keys[1:] >= edge_keys[:-1]).all()):  # sorting can take seconds
            edge_keys = torch.sort(edge_keys).values
        edges = [edge_keys]
    else:  # src * n + dst would overflow: sort by (src, dst) with two stable sorts
        order = torch.sort(dst, stable=True).indices
        order = order[torch.sort(src[order], stable=True).indices]
        edges = [src[order], dst[order]]
    digest = hashlib.sha256(f"{n} {src.numel()}\n".encode())
    for ids in edges:
        digest.update(ids.numpy().astype("<i8", copy=False))
    return {"num_nodes": n, "num_edges": src.numel(), "sha256": digest.hexdigest()}


def _fingerprint(g: Any, memo: dict[int, dict]) -> dict:
    """:func:`_graph_fingerprint`, once per graph object (sampler and history often share one)."""
    if id(g) not in memo:
        memo[id(g)] = _graph_fingerprint(g)
    return memo[id(g)]


def _check_graph(saved: Any, now: dict) -> None:
    """Raise ValueError naming the graphs if the saved fingerprint is not ``now``."""
    if not isinstance(saved, dict) or set(saved) != set(now):
        raise ValueError("the checkpoint's graph fingerprint is missing or malformed")
    if saved == now:
        return
    counts = f"{saved['num_nodes']} nodes and {saved['num_edges']} edges"
    if (saved["num_nodes"], saved["num_edges"]) == (now["num_nodes"], now["num_edges"]):
        raise ValueError(f"the checkpoint was saved on another graph (both graphs have {counts}, "
                         "but not the same edges)")
    raise ValueError(f"the checkpoint was saved on another graph ({counts}; this graph has "
                     f"{now['num_nodes']} nodes and {now['num_edges']} edges)")


# ---------------------------------------------------------------------- saving
def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    sampler: MVSSampler | None = None,
    history: History | None = None,
    extra: Any = None,
) -> None:
    """Save a training run atomically: the previous file at ``path`` survives a failed save.

    The checkpoint is written with ``torch.save`` to a temporary file in the directory of
    ``path``, sealed with its SHA-256 checksum, flushed and ``fsync``-ed, then renamed onto
    ``path`` with ``os.replace`` (atomic on POSIX and Windows) and the directory is
    ``fsync``-ed.  A crash, a full disk or a pre-emption during the save therefore leaves
    either the old checkpoint or the new one, never a truncated file; the temporary file of a
    killed save is removed by the next save to ``path`` (see the module documentation).  Call
    it after ``sampler.update_scores`` of a step: the run resumes at the next step.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its directory must exist.
    model : nn.Module, optional
        Its ``state_dict()``.
    optimizer : torch.optim.Optimizer, optional
        Its ``state_dict()`` (and its class name, checked on load).
    sampler : MVSSampler, optional
        :meth:`MVSSampler.state_dict`: scores and written mask, resume step, frozen
        probabilities, configuration and training set; and a fingerprint of its graph.
    history : History, optional
        :meth:`History.state_dict`: histories, last-write records and the clock; and a
        fingerprint of its graph.
    extra : object, optional
        Epoch counters, metric curves, early-stopping state, ..., returned by
        :func:`load_checkpoint`.  Tensors, ``int``, ``float``, ``bool``, ``str``, None and
        lists, tuples and dicts of them load by default; other objects (NumPy arrays and
        scalars, sets, instances of your classes) are pickled as such and need
        ``load_checkpoint(..., trust_extra=True)``.

    Notes
    -----
    The file also records the random generator states (:func:`rng_state`), the devices and
    dtypes of the model's parameters and the installed torch and DGL versions.  The graph
    fingerprints hash the edge lists, which takes seconds on graphs of ~100M edges.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from dgl_mvs.checkpoint import load_checkpoint, save_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> model = torch.nn.Linear(4, 2)
    >>> save_checkpoint(path, model=model, extra={"epoch": 3})
    >>> load_checkpoint(path, model=torch.nn.Linear(4, 2))
    {'epoch': 3}
    >>> load_checkpoint(path, model=torch.nn.Linear(4, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: checkpoint ... does not fit: model: parameter 'weight' has shape (2, 4) in ...
    """
    import dgl

    if optimizer is not None and model is None:
        warnings.warn("saving an optimizer without its model: the parameter shapes of a "
                      "load can then be checked against the optimizer state only",
                      RuntimeWarning, stacklevel=2)
    memo: dict[int, dict] = {}
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "model": model.state_dict() if model is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        "sampler": sampler.state_dict() if sampler is not None else None,
        "history": history.state_dict() if history is not None else None,
        "graphs": {
            "sampler": _fingerprint(sampler.g, memo) if sampler is not None else None,
            "history": _fingerprint(history.g, memo) if history is not None else None,
        },
        "rng": rng_state(),
        "extra": extra,
        "devices": {
            "model": (sorted({str(p.device) for p in model.parameters()})
                      if model is not None else None),
            "sampler": str(sampler.train_nids.device) if sampler is not None else None,
            "history": str(history.g.device) if history is not None else None,
        },
        # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses
        "versions": {"torch": str(torch.__version__), "dgl": str(dgl.__version__)},
    }
    _atomic_save(payload, os.fspath(path))


def _atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` + seal into a temporary file of this process, then rename onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    basename = os.path.basename(path)
    _remove_stale_temp_files(directory, basename)  # first: they may be what filled the disk
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(basename), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w+b") as f:  # w+: _seal reads the archive back to hash it
            torch.save(obj, f)
            _seal(f)
            f.flush()
            os.fsync(f.fileno())
        try:  # mkstemp creates 0600 files; keep the mode of the file being replaced
            os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- the checksum trailer
def _seal(f: BinaryIO) -> None:
    """Append the checksum trailer to the ``torch.save`` archive in ``f``, as its zip comment.

    The archive ends with a zip end-of-central-directory record whose last two bytes give
    the length of the archive's comment (0 from ``torch.save``).  They are set to the
    trailer's length, every byte of the file is hashed, and the trailer is appended: the
    file stays a valid zip archive, which ``torch.load`` reads as before.
    """
    size = f.seek(0, os.SEEK_END)
    f.seek(max(size - _EOCD_SIZE, 0))
    record = f.read(_EOCD_SIZE)
    if len(record) != _EOCD_SIZE or record[:4] != _EOCD_SIGNATURE or record[-2:] != b"\0\0":
        raise RuntimeError("torch.save did not end its file with a plain zip end record")
    f.seek(size - 2)
    f.write(_TRAILER_SIZE.to_bytes(2, "little"))
    digest = _sha256(f, size)
    f.seek(size)
    f.write(_TRAILER_PREFIX + digest.encode("ascii"))


def _sha256(f: BinaryIO, end: int) -> str:
    """Hex SHA-256 of the first ``end`` bytes of ``f``, read in chunks."""
    digest = hashlib.sha256()
    f.seek(0)
    left = end
    while left > 0:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            break  # the file shrank under us: the digest will not match
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


def _trailer_digest(f: BinaryIO, path: str) -> str | None:
    """The checksum a sealed file records, or None for a plain ``torch.save`` zip archive.

    Raises ValueError for anything else: a truncated or corrupted file, or not a zip archive.
    """
    size = f.seek(0, os.SEEK_END)
    tail_size = min(size, _EOCD_SIZE + _TRAILER_SIZE)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    if len(tail) >= _EOCD_SIZE and tail[-_EOCD_SIZE:-_EOCD_SIZE + 4] == _EOCD_SIGNATURE \
            and tail[-2:] == b"\0\0":
        return None  # a zip archive without a comment: format version 1, or not dgl_mvs's
    record, trailer = tail[:_EOCD_SIZE], tail[_EOCD_SIZE:]
    digest = trailer[len(_TRAILER_PREFIX):]
    if len(tail) == _EOCD_SIZE + _TRAILER_SIZE and record[:4] == _EOCD_SIGNATURE \
            and record[-2:] == _TRAILER_SIZE.to_bytes(2, "little") \
            and trailer.startswith(_TRAILER_PREFIX) and _HEX_DIGEST.fullmatch(digest):
        return digest.decode("ascii")
    raise ValueError(f"{path} is not a readable checkpoint: it is truncated or corrupted, or "
                     "was not written by save_checkpoint (no checksum at its end)")


def _verify(f: BinaryIO, path: str, digest: str) -> None:
    """Raise ValueError unless the bytes before the trailer hash to ``digest``."""
    size = f.seek(0, os.SEEK_END)
    if _sha256(f, size - _TRAILER_SIZE) != digest:
        raise ValueError(f"{path} is not a readable checkpoint: it is corrupted (its content "
                         "does not match the SHA-256 checksum it was saved with)")


# ---------------------------------------------------------------------- temporary files
def _host_tag() -> str:
    """This host's name as it appears in temporary file names: letters, digits and '-'."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def _temp_prefix(basename: str) -> str:
    """``.{basename}.{host}.{pid}.``: mkstemp appends a random part and ``.tmp``."""
    return f".{basename}.{_host_tag()}.{os.getpid()}."


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still be running (when unsure: True)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # e.g. PermissionError: another user's
        return True
    return True


def _remove_stale_temp_files(directory: str, basename: str) -> None:
    """Remove the temporary files that killed saves to ``basename`` left in ``directory``.

    Only regular files named as :func:`_temp_prefix` names them, written on this host by a
    process that has ended: never another file, never a live writer's (which may be saving
    right now, e.g. this process in another thread).  Files of other hosts, on a shared file
    system, are kept: their processes cannot be checked.  Best effort: errors are ignored.
    """
    pattern = re.compile(rf"\.{re.escape(basename)}\.{re.escape(_host_tag())}\.([0-9]+)"
                         r"\.[A-Za-z0-9_]+\.tmp")
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        try:
            if match and entry.is_file(follow_symlinks=False) \
                    and not _process_alive(int(match.group(1))):
                os.unlink(entry.path)
        except OSError:  # removed by a concurrent save, or not ours to remove
            pass


# ---------------------------------------------------------------------- loading
def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    sampler: MVSSampler | None = None,
    history: History | None = None,
    map_location: Any = "cpu",
    restore_rng: bool = True,
    trust_extra: bool = False,
) -> Any:
    """Load a :func:`save_checkpoint` file into freshly built objects; return its ``extra``.

    The file's checksum is verified before anything is unpickled, and it is unpickled with
    ``torch.load(weights_only=True)``, which builds tensors and plain Python values only.
    Everything is then checked before anything changes: the sampler's and history's graphs
    (node count and edges, against fingerprints saved with the checkpoint), the sampler's
    configuration (batch size, ``K``, pool size, seed, rank, block kind, ...) and training set,
    the history's layer widths, shapes and dtype, the model's parameter and buffer names,
    shapes and dtypes, and the optimizer's class, parameter groups and state shapes.  Any
    mismatch raises one ValueError listing every difference, and then the model, optimizer,
    sampler, history and random generators are exactly as they were.  Only after all checks
    pass are the states assigned, and then the random generator states are restored.

    Tensors are read onto ``map_location`` and copied into the live objects, on their own
    devices: a checkpoint written on a GPU loads into a run on the CPU and vice versa (the
    continuation is then valid but not bit-identical).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_checkpoint`.
    model, optimizer, sampler, history : optional
        The objects to restore, built as for the saved run.  Each one passed must be in the
        checkpoint; parts of the checkpoint whose object is not passed are ignored.
    map_location : default "cpu"
        As for :func:`torch.load`.
    restore_rng : bool, default True
        Restore the random generator states saved with the checkpoint (needed for a
        bit-identical continuation when the model uses dropout).
    trust_extra : bool, default False
        Unpickle without ``weights_only``, for a checkpoint whose ``extra`` holds objects
        other than tensors and plain values, or a file of format version 1.  **This runs any
        code the file names: use it only for files you trust** (that you wrote yourself).
        The checksum and the other checks still apply to version 2 files.

    Returns
    -------
    object
        The ``extra`` passed to :func:`save_checkpoint`.

    Raises
    ------
    ValueError
        The file is not a readable dgl_mvs checkpoint (corrupted, truncated, of another
        format), holds objects that need ``trust_extra=True``, or does not fit the objects.
    FileNotFoundError, OSError
        The file cannot be opened.

    Examples
    --------
    See :func:`save_checkpoint` and the module documentation for a resumed training loop.
    """
    path = os.fspath(path)
    ckpt = _read(path, map_location, trust_extra)
    problems: list[str] = []

    def check(name: str, obj: Any, fn) -> None:
        if obj is None:
            return
        if ckpt.get(name) is None:
            problems.append(f"{name}: the checkpoint has no {name} state")
            return
        try:
            fn(obj, ckpt[name])
        except ValueError as err:
            problems.append(f"{name}: {err}")

    graphs = ckpt.get("graphs") if isinstance(ckpt.get("graphs"), dict) else {}
    memo: dict[int, dict] = {}

    def check_graph(name: str, g: Any) -> None:
        if ckpt["version"] != 1:  # format version 1 saved no fingerprints
            _check_graph(graphs.get(name), _fingerprint(g, memo))

    def check_sampler(s: MVSSampler, state: dict) -> None:
        check_graph("sampler", s.g)
        s.check_state_dict(state)

    def check_history(h: History, state: dict) -> None:
        check_graph("history", h.g)
        h.check_state_dict(state)

    check("model", model, _check_model)
    check("optimizer", optimizer,
          lambda opt, state: _check_optimizer(opt, state, ckpt.get("optimizer_class")))
    check("sampler", sampler, check_sampler)
    check("history", history, check_history)
    if restore_rng:
        try:
            _check_rng_state(ckpt.get("rng"))
        except ValueError as err:
            problems.append(f"random generators: {err}")
    if problems:
        raise ValueError(f"checkpoint {path} does not fit: " + "; ".join(problems))

    # All checks passed: assign.
    if model is not None:
        model.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if sampler is not None:
        sampler.load_state_dict(ckpt["sampler"])
    if history is not None:
        history.load_state_dict(ckpt["history"])
    if restore_rng:
        set_rng_state(ckpt["rng"])
    return ckpt.get("extra")


def _read(path: str, map_location: Any, trust_extra: bool) -> dict:
    """The checkpoint's dict: checksum verified, then unpickled, then its header checked.

    The file is opened once, so a concurrent save that replaces ``path`` cannot swap the
    bytes between the check and the load.
    """
    with open(path, "rb") as f:
        digest = _trailer_digest(f, path)
        if digest is None:
            return _read_version_1(f, path, map_location, trust_extra)
        _verify(f, path, digest)
        f.seek(0)
        ckpt = _unpickle(f, path, map_location, trust_extra)
    _check_header(ckpt, path, _VERSION)
    return ckpt


def _read_version_1(f: BinaryIO, path: str, map_location: Any, trust_extra: bool) -> dict:
    """A plain ``torch.save`` file: a version-1 checkpoint (only if trusted) or not dgl_mvs's."""
    if not _names_the_format(f, path):
        raise ValueError(f"{path} is not a dgl_mvs checkpoint (written by save_checkpoint)")
    if not trust_extra:
        raise ValueError(
            f"{path} was written by an older dgl_mvs (checkpoint format version 1, an "
            "unrestricted pickle without a checksum) and can be loaded only with "
            "trust_extra=True, which runs any code the file names: pass it only for a file "
            "you trust; the next save_checkpoint writes the current format"
        )
    f.seek(0)
    ckpt = _unpickle(f, path, map_location, trust_extra=True)
    _check_header(ckpt, path, 1)
    return ckpt


def _names_the_format(f: BinaryIO, path: str) -> bool:
    """Whether the archive's pickle mentions the format name; reads it without unpickling."""
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            return any(_FORMAT.encode() in archive.read(name) for name in pickles)
    except Exception as err:  # zipfile raises many types for a damaged archive
        raise ValueError(f"{path} is not a readable checkpoint: {err}") from err


def _unpickle(f: BinaryIO, path: str, map_location: Any, trust_extra: bool) -> Any:
    """``torch.load``, restricted to tensors and plain values unless ``trust_extra``."""
    try:
        return torch.load(f, map_location=map_location, weights_only=not trust_extra)
    except Exception as err:  # torch raises many types for a file it cannot read
        if trust_extra:
            raise ValueError(f"{path} is not a readable checkpoint: {err}") from err
        # weights_only's message says to load with weights_only=False: name our option instead
        reason = str(err).rpartition("WeightsUnpickler error:")[2].strip() or str(err)
        raise ValueError(
            f"{path} holds objects other than tensors and plain Python values (e.g. in its "
            f"extra=), which a safe load does not build ({reason}); "
            "load_checkpoint(..., trust_extra=True) loads it but runs any code the file "
            "names: pass it only for a file you trust"
        ) from err


def _check_header(ckpt: Any, path: str, version: int) -> None:
    """Raise ValueError unless ``ckpt`` is a dgl_mvs checkpoint dict of format ``version``."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a dgl_mvs checkpoint (written by save_checkpoint)")
    if ckpt.get("version") != version:
        raise ValueError(f"{path} has checkpoint format version {ckpt.get('version')!r}, "
                         f"this dgl_mvs reads version {_VERSION}")


def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


def _check_model(model: nn.Module, saved: dict) -> None:
    current = model.state_dict()
    diffs = []
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    if missing:
        diffs.append(f"the checkpoint lacks {missing}")
    if unexpected:
        diffs.append(f"the model lacks {unexpected}")
    for key, value in current.items():
        if key not in saved or not torch.is_tensor(value):
            continue
        other = saved[key]
        if not torch.is_tensor(other):
            diffs.append(f"{key!r} is not a tensor in the checkpoint")
        elif _shape(other) != _shape(value):
            diffs.append(f"parameter {key!r} has shape {_shape(other)} in the checkpoint, "
                         f"{_shape(value)} in the model")
        elif other.dtype != value.dtype:
            diffs.append(f"parameter {key!r} has dtype {other.dtype} in the checkpoint, "
                         f"{value.dtype} in the model")
    if diffs:
        raise ValueError("; ".join(diffs))


def _check_optimizer(optimizer: torch.optim.Optimizer, saved: dict, saved_class) -> None:
    if saved_class is not None and saved_class != type(optimizer).__name__:
        raise ValueError(f"the checkpoint holds a {saved_class} state, the optimizer is a "
                         f"{type(optimizer).__name__}")
    groups = optimizer.param_groups
    saved_groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(saved_groups, list) or "state" not in saved:
        raise ValueError("the checkpoint's optimizer state is malformed")
    if len(saved_groups) != len(groups):
        raise ValueError(f"{len(saved_groups)} parameter groups in the checkpoint, "
                         f"{len(groups)} in the optimizer")
    params = {}
    for index, (group, saved_group) in enumerate(zip(groups, saved_groups)):
        if len(saved_group["params"]) != len(group["params"]):
            raise ValueError(f"parameter group {index} has {len(saved_group['params'])} "
                             f"parameters in the checkpoint, {len(group['params'])} in the "
                             "optimizer")
        params.update(zip(saved_group["params"], group["params"]))
    diffs = []
    for pid, entry in saved["state"].items():
        param = params.get(pid)
        if param is None:
            diffs.append(f"state for unknown parameter {pid}")
            continue
        for name, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0 and _shape(value) != _shape(param):
                diffs.append(f"state {name!r} of parameter {pid} has shape {_shape(value)}, "
                             f"the parameter has {_shape(param)}")
    if diffs:
        raise ValueError("; ".join(diffs))
