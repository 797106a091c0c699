"""Per-node scores for minimal-variance sampling: gradient norms and a score table.

The score of node ``i`` is an estimate of the norm of its per-sample gradient.  For a last
linear layer ``z = W a + b`` and ``delta_i = d loss_i / d z_i``, the gradient of ``loss_i``
with respect to ``(W, b)`` is ``(delta_i a_i^T, delta_i)``, whose norm is exactly
``||delta_i|| * sqrt(||a_i||^2 + 1)``; no per-sample backward pass is needed.
"""
from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "cross_entropy_grad_norm",
    "bce_grad_norm",
    "autograd_grad_norm",
    "ScoreTable",
]


def _out_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def _check_logits(logits, name: str = "logits") -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor")
    if logits.dim() != 2:
        raise ValueError(f"{name} must be 2-D (nodes x classes), got shape "
                         f"{tuple(logits.shape)}")


def _scale_by_input(norm: torch.Tensor, last_input: torch.Tensor | None) -> torch.Tensor:
    """Multiply by sqrt(||a_i||^2 + 1), the factor from the weight and bias of z = W a + b."""
    if last_input is None:
        return norm
    if not isinstance(last_input, torch.Tensor) or not last_input.is_floating_point():
        raise ValueError("last_input must be a floating-point tensor (nodes x features)")
    if last_input.dim() != 2 or last_input.shape[0] != norm.shape[0]:
        raise ValueError(f"last_input must have shape ({norm.shape[0]}, F), one row per node, "
                         f"got {tuple(last_input.shape)}")
    a = last_input.detach().to(norm.dtype)
    return norm * torch.sqrt((a * a).sum(1) + 1.0)


def cross_entropy_grad_norm(logits: torch.Tensor, labels: torch.Tensor,
                            last_input: torch.Tensor | None = None) -> torch.Tensor:
    """Per-node gradient norm of softmax cross-entropy, in closed form.

    ``loss_i = F.cross_entropy(logits[i], labels[i])`` has ``d loss_i / d logits_i =
    softmax(logits_i) - onehot(labels_i)``.  Its norm is returned, times
    ``sqrt(||a_i||^2 + 1)`` when the input ``a`` of the last linear layer is given, which makes
    it the exact norm of the per-sample gradient with respect to that layer's weight and bias.

    Parameters
    ----------
    logits : Tensor
        ``(N, C)`` logits of the batch's nodes.
    labels : Tensor
        ``(N,)`` integer class labels in ``[0, C)``.
    last_input : Tensor, optional
        ``(N, F)`` input of the last linear layer, ``logits = last_input @ W.T + b``.

    Returns
    -------
    Tensor
        ``(N,)`` detached non-negative norms, float32 (float64 for float64 logits).

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.scores import cross_entropy_grad_norm
    >>> logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    >>> norms = cross_entropy_grad_norm(logits, torch.tensor([0, 0]))
    >>> round(norms[0].item(), 4), norms[1].item() < 1e-8  # unsure; confident and right
    (0.7071, True)
    """
    _check_logits(logits)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() \
            or labels.dtype == torch.bool or labels.dim() != 1:
        raise ValueError("labels must be a 1-D integer tensor of class indices")
    n, c = logits.shape
    if labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} entries but logits has {n} rows")
    if n:
        lo, hi = (int(v) for v in torch.aminmax(labels))  # one pass: called every step
        if lo < 0 or hi >= c:
            raise ValueError(f"labels must lie in [0, {c}), got values in [{lo}, {hi}]")
    with torch.no_grad():
        z = logits.detach().to(_out_dtype(logits))
        # softmax by hand: torch.softmax over a few classes is several times slower on CPU.
        e = (z - z.amax(1, keepdim=True)).exp_()
        total = e.sum(1)
        others = e.scatter_(1, labels.to(e.device).long()[:, None], 0.0)
        # 1 - p_y computed as the sum of the other classes: no cancellation when p_y ~ 1.
        norm = torch.hypot(others.sum(1), torch.linalg.vector_norm(others, dim=1))
        return _scale_by_input(norm / total, last_input)


def bce_grad_norm(logits: torch.Tensor, targets: torch.Tensor,
                  last_input: torch.Tensor | None = None,
                  mean_over_classes: bool = True) -> torch.Tensor:
    """Per-node gradient norm of multi-label sigmoid binary cross-entropy, in closed form.

    ``loss_i = F.binary_cross_entropy_with_logits(logits, targets, reduction='none').mean(1)``
    has ``d loss_i / d logits_i = (sigmoid(logits_i) - targets_i) / C``; with
    ``mean_over_classes=False`` the loss is the sum over classes and the ``1 / C`` goes away.

    Parameters
    ----------
    logits : Tensor
        ``(N, C)`` logits (a 1-D ``(N,)`` tensor is read as one class).
    targets : Tensor
        Targets in ``[0, 1]`` of the same shape.
    last_input : Tensor, optional
        ``(N, F)`` input of the last linear layer; see :func:`cross_entropy_grad_norm`.
    mean_over_classes : bool, default True
        Whether the per-node loss averages (True) or sums (False) over classes.

    Returns
    -------
    Tensor
        ``(N,)`` detached non-negative norms.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.scores import bce_grad_norm
    >>> bce_grad_norm(torch.zeros(1, 4), torch.ones(1, 4), mean_over_classes=False)
    tensor([1.])
    """
    if isinstance(logits, torch.Tensor) and logits.dim() == 1:
        logits = logits[:, None]
        if isinstance(targets, torch.Tensor) and targets.dim() == 1:
            targets = targets[:, None]
    _check_logits(logits)
    if not isinstance(targets, torch.Tensor) or targets.shape != logits.shape:
        got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets)
        raise ValueError(f"targets must have the shape of logits {tuple(logits.shape)}, "
                         f"got {got}")
    with torch.no_grad():
        dtype = _out_dtype(logits)
        delta = torch.sigmoid(logits.detach().to(dtype)) - targets.detach().to(dtype)
        norm = torch.linalg.vector_norm(delta, dim=1)
        if mean_over_classes:
            norm = norm / logits.shape[1]
        return _scale_by_input(norm, last_input)


def autograd_grad_norm(per_node_loss: torch.Tensor, logits: torch.Tensor,
                       last_input: torch.Tensor | None = None) -> torch.Tensor:
    """Per-node gradient norm of any loss, through one autograd call on the logits.

    Because ``loss_i`` depends on ``logits_i`` only, row ``i`` of the gradient of
    ``per_node_loss.sum()`` with respect to ``logits`` is ``d loss_i / d logits_i``.  The graph
    is retained, so the caller can still call ``backward`` on the (weighted) loss.

    Parameters
    ----------
    per_node_loss : Tensor
        ``(N,)`` unreduced losses, e.g. ``F.cross_entropy(logits, y, reduction='none')``.
    logits : Tensor
        ``(N, C)`` tensor that ``per_node_loss`` was computed from, part of the autograd graph.
    last_input : Tensor, optional
        ``(N, F)`` input of the last linear layer; see :func:`cross_entropy_grad_norm`.

    Returns
    -------
    Tensor
        ``(N,)`` detached non-negative norms.

    Notes
    -----
    Losses that couple rows (a batch-level normalisation after the logits, say) break the
    per-row reading; compute ``logits`` as the last per-node tensor.

    Examples
    --------
    >>> import torch, torch.nn.functional as F
    >>> from dgl_mvs.scores import autograd_grad_norm
    >>> logits = torch.zeros(2, 3, requires_grad=True)
    >>> loss = F.cross_entropy(logits, torch.tensor([0, 2]), reduction="none")
    >>> autograd_grad_norm(loss, logits)
    tensor([0.8165, 0.8165])
    >>> loss.mean().backward()  # the graph is still there
    """
    _check_logits(logits)
    if not isinstance(per_node_loss, torch.Tensor) or per_node_loss.shape != logits.shape[:1]:
        raise ValueError(f"per_node_loss must have shape ({logits.shape[0]},), one loss per row "
                         f"of logits, got {tuple(getattr(per_node_loss, 'shape', ()))}")
    if not per_node_loss.requires_grad or not logits.requires_grad:
        raise ValueError("per_node_loss must be computed from logits with autograd enabled "
                         "(logits.requires_grad is False or the loss is detached)")
    (delta,) = torch.autograd.grad(per_node_loss.sum(), logits, retain_graph=True,
                                   allow_unused=True)
    if delta is None:
        raise ValueError("per_node_loss does not depend on logits")
    with torch.no_grad():
        norm = torch.linalg.vector_norm(delta.detach().to(_out_dtype(logits)), dim=1)
        return _scale_by_input(norm, last_input)


def check_score_values(values: torch.Tensor) -> None:
    """Raise ValueError unless every score is finite and non-negative (nothing is written).

    One reduction and one comparison on the happy path (NaN propagates through ``aminmax``
    and fails the comparison); the counts of each kind of bad value only on failure.
    """
    if values.numel() == 0:
        return
    lo, hi = torch.aminmax(values)
    if bool((lo >= 0) & (hi < math.inf)):
        return
    raise ValueError("scores must be finite and non-negative; got "
                     f"{int(torch.isnan(values).sum())} NaN, "
                     f"{int(torch.isinf(values).sum())} infinite and "
                     f"{int((values < 0).sum())} negative value(s); nothing written")


def _check_existing(g, key: str, written_key: str, shape: tuple) -> None:
    """An existing ``g.ndata[key]`` (and its written mask) must be a score table."""
    scores = g.ndata[key]
    if scores.shape != shape or scores.dtype != torch.float32:
        raise ValueError(f"g.ndata[{key!r}] exists with shape {tuple(scores.shape)} and "
                         f"dtype {scores.dtype}, not a float32 ({shape[0]},) score table; "
                         "pass another key")
    written = g.ndata[written_key] if written_key in g.ndata else None
    if written is not None and (written.shape != shape or written.dtype != torch.bool):
        raise ValueError(f"g.ndata[{written_key!r}] is not a bool ({shape[0]},) mask")


def _check_initial(initial: object, name: str) -> None:
    if isinstance(initial, bool) or not isinstance(initial, numbers.Real) \
            or not math.isfinite(initial) or initial <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {initial!r}")


class ScoreTable:
    """Per-node scores stored as node data of a DGL graph, shared with DataLoader workers.

    The table owns two node-data fields: ``g.ndata[key]`` (float32 scores) and
    ``g.ndata[key + "_written"]`` (bool, whether a node has ever been scored).  On a CPU graph
    both live in shared memory, so DataLoader worker processes forked from the training
    process see the writes that it makes afterwards (and vice versa).  Writes are in place:
    the tensors are never reallocated.

    Parameters
    ----------
    g : DGLGraph
        A homogeneous graph.
    key : str, default "mvs_score"
        Node-data name of the scores.  If ``g.ndata[key]`` already holds a float32 tensor of
        shape ``(num_nodes,)`` it is reused, so a table can be re-attached to a graph; if
        ``key + "_written"`` is absent then, every existing score counts as written.
    initial : float, default 1.0
        Score reported for nodes when none of the queried nodes has been written yet.
    private : bool, default False
        Start from a copy of an existing ``g.ndata[key]`` instead of the tensor itself:
        processes forked from one parent (data-parallel ranks) otherwise share its memory.
    fresh : bool, default False
        Start unwritten in tensors of its own whatever ``g.ndata[key]`` holds (a table of
        the same shape and dtype, which whoever holds it keeps): a new run does not inherit
        another run's scores.

    Notes
    -----
    Unscored nodes are optimistic: :meth:`read` gives a node that was never written the
    largest written score among the nodes queried with it (``initial`` if none of them was
    written).  They therefore keep being drawn, with high probability, until they get a real
    score; and before any write all nodes read equal, which gives uniform probabilities.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_mvs.scores import ScoreTable
    >>> g = dgl.graph(([0, 1, 2, 3], [1, 2, 3, 4]))
    >>> table = ScoreTable(g)
    >>> table.write(torch.tensor([1, 3]), torch.tensor([0.5, 2.0]))
    >>> table.read(torch.tensor([0, 1, 2, 3]))
    tensor([2.0000, 0.5000, 2.0000, 2.0000])
    """

    def __init__(self, g, key: str = "mvs_score", initial: float = 1.0,
                 private: bool = False, fresh: bool = False) -> None:
        # Imported here so that the functions above work without loading DGL.
        from .blocks import check_graph

        try:
            check_graph(g)
        except TypeError as err:  # a ValueError, as for every other argument here
            raise ValueError(f"g must be a DGLGraph: {err}") from None
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        _check_initial(initial, "initial")
        self.key = key
        self.written_key = key + "_written"
        self.initial = float(initial)
        n = g.num_nodes()
        shape = (n,)
        if key in g.ndata and not fresh:
            scores = g.ndata[key]
            _check_existing(g, key, self.written_key, shape)
            written = g.ndata[self.written_key] if self.written_key in g.ndata else None
            if written is None:
                written = torch.ones(shape, dtype=torch.bool, device=scores.device)
            elif private:
                written = written.clone()
            if private:  # a copy of the values: memory inherited from a parent stays its own
                scores = scores.clone()
        else:
            if key in g.ndata:  # fresh: only another table may be replaced
                _check_existing(g, key, self.written_key, shape)
            scores = torch.full(shape, self.initial, dtype=torch.float32, device=g.device)
            written = torch.zeros(shape, dtype=torch.bool, device=g.device)
        if scores.device.type == "cpu":
            # Shared memory BEFORE storing: forked workers map the same pages.
            scores.share_memory_()
            written.share_memory_()
        g.ndata[key] = scores
        g.ndata[self.written_key] = written
        self._scores = scores
        self._written = written
        self.num_nodes = n

    # -- helpers -------------------------------------------------------------------------
    def _nodes(self, nodes) -> torch.Tensor:
        if nodes is None:
            return torch.arange(self.num_nodes, device=self._scores.device)
        if not isinstance(nodes, torch.Tensor):
            nodes = torch.as_tensor(nodes)
        if nodes.dim() != 1 or nodes.is_floating_point() or nodes.dtype == torch.bool:
            raise ValueError(f"nodes must be a 1-D integer tensor of node ids, got dtype "
                             f"{nodes.dtype} and shape {tuple(nodes.shape)}")
        nodes = nodes.to(self._scores.device).long()
        if nodes.numel() and bool(((nodes < 0) | (nodes >= self.num_nodes)).any()):
            raise ValueError(f"node ids must lie in [0, {self.num_nodes}), got values in "
                             f"[{nodes.min().item()}, {nodes.max().item()}]")
        return nodes

    # -- public API ----------------------------------------------------------------------
    @property
    def values(self) -> torch.Tensor:
        """The live score tensor (``g.ndata[key]``); change it through :meth:`write`."""
        return self._scores

    def written(self, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Bool mask: whether each of ``nodes`` (default: all) has been written."""
        return self._written[self._nodes(nodes)].clone()

    def read(self, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of ``nodes`` (default: all), a new float32 tensor on the table's device.

        Nodes never written read as the largest written score among ``nodes``, or as
        ``initial`` if none of them was written.
        """
        return self._read(self._nodes(nodes))

    def _read(self, nodes: torch.Tensor) -> torch.Tensor:
        """:meth:`read` of int64 ``nodes`` known to be in range (no checks)."""
        scores = self._scores[nodes]
        mask = self._written[nodes]
        # Computed without a host sync: -inf marks "nothing written among nodes".
        best = torch.where(mask, scores, torch.full_like(scores, -math.inf)).amax() \
            if nodes.numel() else scores.new_tensor(-math.inf)
        fill = torch.where(torch.isinf(best), scores.new_tensor(self.initial), best)
        return torch.where(mask, scores, fill)

    def write(self, nodes: torch.Tensor, scores: torch.Tensor) -> None:
        """Store ``scores`` for ``nodes`` in place; nothing is written if validation fails.

        If a node appears more than once, one of its values is kept (which one is unspecified).

        Raises
        ------
        ValueError
            If ``nodes`` and ``scores`` are not 1-D of equal length, a score is negative or not
            finite, or a node id is out of range.
        """
        nodes = self._nodes(nodes)
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(scores, dtype=torch.float32)
        if scores.dim() != 1 or scores.shape[0] != nodes.shape[0]:
            raise ValueError(f"scores must be 1-D with one value per node ({nodes.shape[0]}), "
                             f"got shape {tuple(scores.shape)}")
        values = scores.detach().to(device=self._scores.device, dtype=torch.float32)
        check_score_values(values)
        self._store(nodes, values)

    def _store(self, nodes: torch.Tensor, values: torch.Tensor, mark: bool = True) -> None:
        """Store checked float32 ``values`` at int64 ``nodes`` known to be in range (no checks:
        :class:`dgl_mvs.MVSSampler` writes the rows of its own blocks).  ``mark=False`` leaves
        the written mask as it is (where every one of ``nodes`` is marked already)."""
        self._scores[nodes] = values
        if mark:
            self._written.index_fill_(0, nodes, True)

    def state_dict(self) -> dict:
        """A copy of the table: ``{"num_nodes", "key", "initial", "scores", "written"}``."""
        return {
            "num_nodes": self.num_nodes,
            "key": self.key,
            "initial": self.initial,
            "scores": self._scores.detach().cpu().clone(),
            "written": self._written.cpu().clone(),
        }

    def check_state_dict(self, state: dict) -> None:
        """Raise ValueError if ``state`` does not fit this table (nothing is changed)."""
        if not isinstance(state, dict):
            raise ValueError(f"score state must be a dict, got {type(state).__name__}")
        for field in ("num_nodes", "scores", "written"):
            if field not in state:
                raise ValueError(f"state is missing {field!r}")
        if state["num_nodes"] != self.num_nodes:
            raise ValueError(f"state has {state['num_nodes']} nodes, the table has "
                             f"{self.num_nodes}")
        scores, written = state["scores"], state["written"]
        if not torch.is_tensor(scores) or not torch.is_tensor(written) \
                or tuple(scores.shape) != (self.num_nodes,) \
                or tuple(written.shape) != (self.num_nodes,):
            raise ValueError("state's scores and written must be tensors of shape "
                             f"({self.num_nodes},)")
        if not scores.is_floating_point():
            raise ValueError(f"state's scores must be floating point, got {scores.dtype}")
        if "initial" in state:
            _check_initial(state["initial"], "state's initial")

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` in place (the shared tensors stay shared).

        A state that does not fit (node count, shapes) raises ValueError and changes nothing.
        """
        self.check_state_dict(state)
        self._scores.copy_(state["scores"])
        self._written.copy_(state["written"].bool())
        if "initial" in state:
            self.initial = float(state["initial"])

    def __repr__(self) -> str:
        return (f"ScoreTable(key={self.key!r}, num_nodes={self.num_nodes}, "
                f"written={int(self._written.sum())}, initial={self.initial})")
