"""Checkpoints of an MVS training run: atomic saves, checked loads, bit-identical resumption.

A checkpoint holds what a run needs to continue as if it had never stopped: the model and
optimizer state, the :class:`~dgl_mvs.MVSSampler` state (score table, resume point, frozen
probabilities), the :class:`~dgl_mvs.History` state (histories, last-write records, clock)
and the random generator states of the process (torch CPU, CUDA when initialised, NumPy's
and Python's global generators).  The sampler draws every pool and batch from a generator
seeded with ``(seed, rank, step)``, so its draws need no saved generator.

**Resuming bit-identically.**  Two things beyond loading the checkpoint:

* After :func:`load_checkpoint`, call ``sampler.set_epoch(sampler.epoch)`` and build the
  resumed epoch's DataLoader with ``sampler.step_ids()`` (the steps left in that epoch); start
  the epoch loop at ``sampler.epoch``.
* Give every DataLoader its own generator, ``DataLoader(..., generator=torch.Generator())``.
  Otherwise each ``iter(loader)`` draws a worker base seed from torch's *global* generator, the
  one dropout uses: the uninterrupted run drew it at the start of the epoch, the resumed run
  draws it again at the resume point, and dropout masks differ from there on.

``dgl.seed`` sets DGL's global C++ generator, which has no way to read its state back, so it
cannot be saved.  dgl_mvs's own blocks (``"history"``, ``"cv"``, ``"exact"``) do not use it;
a stock DGL block sampler passed as ``blocks=`` (``NeighborSampler``, ...) does, and with one
a resumed run is a valid continuation but not a bit-identical one.

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
...         blocks="history", checkpoint_every=4, prefetch_node_feats=["feat"],
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

import os
import random
import tempfile
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from .history import History
from .sampler import MVSSampler

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

_FORMAT = "dgl_mvs.checkpoint"
_VERSION = 1


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
    ``path``, flushed and ``fsync``-ed, then renamed onto ``path`` with ``os.replace`` (atomic
    on POSIX and Windows) and the directory is ``fsync``-ed.  A crash, a full disk or a
    pre-emption during the save therefore leaves either the old checkpoint or the new one,
    never a truncated file.  Call it after ``sampler.update_scores`` of a step: the run
    resumes at the next step.

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
        probabilities, configuration and training set.
    history : History, optional
        :meth:`History.state_dict`: histories, last-write records and the clock.
    extra : object, optional
        Anything picklable (epoch counters, metric curves, early-stopping state, ...), returned
        by :func:`load_checkpoint`.

    Notes
    -----
    The file also records the random generator states (:func:`rng_state`), the devices and
    dtypes of the model's parameters and the installed torch and DGL versions.

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
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "model": model.state_dict() if model is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        "sampler": sampler.state_dict() if sampler is not None else None,
        "history": history.state_dict() if history is not None else None,
        "rng": rng_state(),
        "extra": extra,
        "devices": {
            "model": (sorted({str(p.device) for p in model.parameters()})
                      if model is not None else None),
            "sampler": str(sampler.train_nids.device) if sampler is not None else None,
            "history": str(history.g.device) if history is not None else None,
        },
        "versions": {"torch": torch.__version__, "dgl": dgl.__version__},
    }
    _atomic_save(payload, os.fspath(path))


def _atomic_save(obj: Any, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
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
) -> Any:
    """Load a :func:`save_checkpoint` file into freshly built objects; return its ``extra``.

    Everything is checked before anything changes: the graph's node count, the sampler's
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

    Returns
    -------
    object
        The ``extra`` passed to :func:`save_checkpoint`.

    Raises
    ------
    ValueError
        The file is not a readable dgl_mvs checkpoint, or it does not fit the objects.

    Notes
    -----
    The file is read with ``torch.load(weights_only=False)`` (``extra`` may hold any Python
    object): load only checkpoints you trust.

    Examples
    --------
    See :func:`save_checkpoint` and the module documentation for a resumed training loop.
    """
    path = os.fspath(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated, corrupted or not a torch file
        raise ValueError(f"{path} is not a readable checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a dgl_mvs checkpoint (written by save_checkpoint)")
    if ckpt.get("version") != _VERSION:
        raise ValueError(f"{path} has checkpoint format version {ckpt.get('version')}, "
                         f"this dgl_mvs reads version {_VERSION}")

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

    check("model", model, _check_model)
    check("optimizer", optimizer,
          lambda opt, state: _check_optimizer(opt, state, ckpt.get("optimizer_class")))
    check("sampler", sampler, lambda s, state: s._check_state_dict(state))
    check("history", history, lambda h, state: h._check_state_dict(state))
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
