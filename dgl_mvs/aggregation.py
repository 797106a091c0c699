"""Linear neighbour aggregations: what a layer computes, and the first layer's, precomputed.

GCN, GraphSAGE-mean and GIN aggregate their input linearly, before any weight or
nonlinearity: ``agg_v = sum_{u in N(v)} c_uv x_u`` with coefficients ``c`` fixed by the graph
(``1 / d_in(v)`` for the mean, ``1 / sqrt(d_out(u) d_in(v))`` for GCN's symmetric norm, ...).
So the first layer's aggregation of raw features can be computed once per graph with DGL's
message passing and kept in ``g.ndata``; a mini-batch then needs each node's own row of it,
not its neighbourhood (VR-GCN's preprocessing).  This module names those aggregations
(:class:`Aggregation`), reads them off ``dgl.nn`` layers (:func:`aggregation_of`) and computes
them on a graph (:func:`aggregate`, :class:`FeatureAggregates`).
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import dgl
import dgl.function as fn
import torch
from dgl import DGLGraph
from torch import Tensor, nn

from .blocks import check_edge_weight

__all__ = [
    "Aggregation", "aggregation_of", "aggregations_of", "aggregate", "FeatureAggregates",
    "row_checksums",
]

#: Aggregation kinds: ``c_uv`` is ``w_uv`` times ``1 / d_in(v)`` ("mean"), 1 ("sum"),
#: ``1 / sqrt(d_out(u) d_in(v))`` ("both"), ``1 / d_out(u)`` ("left"); "gcn" is GraphSAGE's
#: ``(sum_{N(v)} w x_u + x_v) / (d_in(v) + 1)``.  Degrees are clamped at 1 as in DGL.
KINDS = ("mean", "sum", "both", "left", "gcn")

# dgl.nn's names for the same aggregations (GraphConv's norms, SAGEConv's and GINConv's types).
_ALIASES = {"right": "mean", "none": "sum"}

#: The alternatives for a layer whose aggregation cannot be precomputed (each of them runs
#: in tests/test_trust.py).
_ALTERNATIVES = (
    "Use history embeddings: MVSSampler(g, train_nids, batch_size, num_layers=2, "
    "block_sampler='history') with dgl_mvs.History(g, widths=[hidden]).attach(model.layers); "
    "or DGL's sampled blocks with importance-sampled seeds: MVSSampler(g, train_nids, "
    "batch_size, block_sampler=dgl.dataloading.NeighborSampler([10, 10])); or, with uniform "
    "seeds, dgl.dataloading.NeighborSampler([10, 10]) itself."
)
_NOT_LINEAR_HELP = (
    "Its aggregation is not linear in its input, so one-hop blocks cannot precompute it. "
    + _ALTERNATIVES
)

#: Where to go when the first layer cannot read precomputed aggregates of fixed raw features.
DGL_BLOCKS_HELP = (
    "use DGL's sampled blocks: dgl.dataloading.NeighborSampler([10, 10]) (with importance-"
    "sampled seeds: MVSSampler(..., block_sampler=dgl.dataloading.NeighborSampler([10, 10])))"
)


@dataclass(frozen=True)
class Aggregation:
    """How a layer aggregates in-neighbours, when that is linear in the layer's input.

    Parameters
    ----------
    kind : str
        One of ``"mean"``, ``"sum"``, ``"both"``, ``"left"``, ``"gcn"`` (GraphConv's names
        ``"right"`` and ``"none"`` are read as ``"mean"`` and ``"sum"``).
    self_term : bool
        Whether the layer also reads each destination's own input row apart from the
        aggregation (``SAGEConv``, ``GINConv``); then its first block carries both rows.
    source : str
        What the aggregation was read from, for messages.

    Examples
    --------
    >>> from dgl.nn import SAGEConv
    >>> from dgl_mvs.aggregation import aggregation_of
    >>> aggregation_of(SAGEConv(8, 4, "mean"))
    Aggregation(kind='mean', self_term=True, source='SAGEConv(aggregator_type=mean)')
    """

    kind: str
    self_term: bool = True
    source: str = field(default="", compare=False)

    def __post_init__(self):
        kind = _ALIASES.get(self.kind, self.kind)
        if kind not in KINDS:
            raise ValueError(
                f"unknown aggregation {self.kind!r}; expected one of {KINDS + tuple(_ALIASES)}"
            )
        object.__setattr__(self, "kind", kind)

    @property
    def exact_on_blocks(self) -> bool:
        """Whether the layer is exact on a block holding every in-edge of its destinations.

        ``"both"`` and ``"left"`` read source out-degrees, which a block does not have.
        """
        return self.kind not in ("both", "left")

    def coefficients(
        self, g: DGLGraph, src: Tensor, dst: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        """``c_uv`` of the edges ``src -> dst`` of ``g`` (not defined for "gcn")."""
        if self.kind == "gcn":
            raise ValueError("GraphSAGE's 'gcn' aggregation has no per-edge coefficients")
        c = torch.ones(src.numel(), device=src.device) if weights is None else weights.float()
        if self.kind == "mean":
            c = c / g.in_degrees(dst).clamp(min=1).to(c.dtype)
        elif self.kind == "both":
            deg = g.out_degrees(src).clamp(min=1) * g.in_degrees(dst).clamp(min=1)
            c = c * deg.to(c.dtype).rsqrt()
        elif self.kind == "left":
            c = c / g.out_degrees(src).clamp(min=1).to(c.dtype)
        return c

    def block_factor(self, in_degree: Tensor) -> Tensor:
        """What the layer multiplies a message by on a block whose sources have out-degree 1.

        ``in_degree`` is each destination's in-degree on that block.
        """
        k = in_degree.clamp(min=1).float()
        if self.kind == "mean":
            return 1.0 / k
        if self.kind == "both":
            return k.rsqrt()
        return torch.ones_like(k)


def aggregation_of(layer: object) -> Aggregation:
    """The :class:`Aggregation` of a ``dgl.nn`` layer, or a clear error if it has none.

    ``SAGEConv`` ("mean", "gcn"), ``GraphConv`` (every norm) and ``GINConv`` ("sum", "mean")
    aggregate linearly.  A string is read as an aggregation name (with a self term).

    Raises
    ------
    ValueError
        For layers whose aggregation is not linear (attention, max, LSTM) or is unknown.
    """
    if isinstance(layer, Aggregation):
        return layer
    if isinstance(layer, str):
        return Aggregation(layer, self_term=True, source=repr(layer))
    name = type(layer).__name__
    if hasattr(layer, "_aggre_type") and name.startswith("SAGEConv"):
        kind = layer._aggre_type
        if kind in ("mean", "gcn"):
            return Aggregation(kind, self_term=True, source=f"SAGEConv(aggregator_type={kind})")
        raise ValueError(
            f"SAGEConv(aggregator_type={kind!r}) is not supported. {_NOT_LINEAR_HELP}"
        )
    if hasattr(layer, "_norm") and name.startswith("GraphConv"):
        return Aggregation(layer._norm, self_term=False, source=f"GraphConv(norm={layer._norm})")
    if hasattr(layer, "_aggregator_type") and name.startswith("GINConv"):
        kind = layer._aggregator_type
        if kind in ("sum", "mean"):
            return Aggregation(kind, self_term=True, source=f"GINConv(aggregator_type={kind})")
        raise ValueError(f"GINConv(aggregator_type={kind!r}) is not supported. {_NOT_LINEAR_HELP}")
    if "GAT" in name or "Attention" in name:
        raise ValueError(
            f"{name} weighs neighbours by attention, which depends on the layer's input, so "
            f"one-hop blocks cannot precompute its aggregation. {_ALTERNATIVES}"
        )
    raise ValueError(
        f"cannot tell how {name} aggregates its neighbours. dgl_mvs reads SAGEConv ('mean', "
        "'gcn'), GraphConv and GINConv ('sum', 'mean'); if your layer aggregates linearly, name "
        "its aggregation instead: 'mean', 'sum', 'both', 'left' or 'gcn'. Otherwise: "
        + _NOT_LINEAR_HELP
    )


def is_gnn_layer(module: object) -> bool:
    """Whether ``module`` is a graph convolution: a ``dgl.nn`` conv module or a dgl_mvs layer."""
    return isinstance(module, nn.Module) and any(
        k.__module__.startswith(("dgl.nn.pytorch.conv", "dgl_mvs.nn"))
        for k in type(module).__mro__
    )


def _find_layers(module: nn.Module) -> list:
    """The GNN layers under ``module`` in registration order, not looking inside a layer."""
    found = []
    for child in module.children():
        found.extend([child] if is_gnn_layer(child) else _find_layers(child))
    return found


def _layer_list(model: object) -> list:
    """The GNN layers of ``model``, first layer first.

    ``model.layers`` when it exists (DGL's GraphSAGE and GCN examples), a list of layers (or
    aggregation names) itself, or else the graph convolutions found among the model's
    submodules in the order they were registered (``self.conv1``, ``self.conv2``, or
    ``self.gat_layers``, as DGL's RGCN and GAT examples write them).  A module registered
    once but called twice (tied layers) is found once: list such layers in ``model.layers``.
    """
    model = getattr(model, "module", model)  # DistributedDataParallel
    if isinstance(model, (str, Aggregation)):
        raise ValueError("give one aggregation per layer, e.g. ['mean', 'mean']")
    layers = getattr(model, "layers", None)
    if isinstance(layers, (nn.ModuleList, nn.Sequential, list, tuple)):
        return list(layers)
    if isinstance(model, (nn.ModuleList, nn.Sequential, list, tuple)):
        return list(model)
    if isinstance(model, nn.Module):
        found = _find_layers(model)
        if not found:
            raise ValueError(
                f"found no graph convolution (dgl.nn conv module) in {type(model).__name__}: "
                "keep the GNN layers in self.layers, first layer first (as DGL's examples do), "
                "or pass the list of layers"
            )
        return found
    raise ValueError(
        f"expected a model (nn.Module), a list of its GNN layers or a list of aggregation "
        f"names, got {type(model).__name__}"
    )


def aggregations_of(model: object) -> list[Aggregation]:
    """One :class:`Aggregation` per GNN layer of ``model`` (or of a list of layers/names)."""
    layers = _layer_list(model)
    if not layers:
        raise ValueError("the model has no layers")
    return [aggregation_of(layer) for layer in layers]


def aggregate(
    g: DGLGraph,
    x: Tensor,
    aggregation: Aggregation | str,
    edge_weight: Tensor | None = None,
    *,
    progress: bool | None = None,
) -> Tensor:
    """Every node's aggregation of ``x`` over its in-neighbours, with DGL's ``update_all``.

    The same values as the layer's own aggregation on the full graph: for ``SAGEConv('mean')``
    the mean of ``x`` over in-neighbours, for ``GraphConv(norm='both')``
    ``D_in^-1/2 A D_out^-1/2 x``, for "gcn" ``(sum_u x_u + x_v) / (d_in(v) + 1)``.  Runs on
    ``g``'s device, in column chunks with a progress bar on large graphs.

    Parameters
    ----------
    g : DGLGraph
        Homogeneous graph.
    x : Tensor
        ``(N, F)`` node features.
    aggregation : Aggregation or str
    edge_weight : Tensor, optional
        ``(E,)`` weights ``w_uv`` multiplied into the messages.
    progress : bool, optional
        Show a progress bar (default: when ``E * F`` exceeds 2**31, e.g. 20M edges and 128
        features).

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_mvs.aggregation import aggregate
    >>> g = dgl.graph((torch.tensor([0, 1]), torch.tensor([2, 2])))
    >>> aggregate(g, torch.tensor([[1.0], [3.0], [5.0]]), "mean").squeeze(1).tolist()
    [0.0, 0.0, 2.0]
    """
    aggregation = aggregation_of(aggregation)
    if x.dim() != 2 or x.shape[0] != g.num_nodes():
        raise ValueError(f"features must have shape ({g.num_nodes()}, F), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"features must be floating point to be aggregated, got {x.dtype}")
    kind = aggregation.kind
    x = x.to(g.device)
    out_norm = in_norm = None
    if kind in ("both", "left"):
        deg = g.out_degrees().clamp(min=1).to(x.dtype)
        out_norm = deg.rsqrt() if kind == "both" else 1.0 / deg
    if kind == "both":
        in_norm = g.in_degrees().clamp(min=1).to(x.dtype).rsqrt()
    reduce = fn.mean if kind == "mean" else fn.sum
    # DGL fuses these message functions with the reduction (no per-edge messages), so a
    # chunk costs its output: at most 2**26 values (256 MB of float32) at a time.
    cols = max(1, (1 << 26) // max(1, g.num_nodes()))
    chunks = list(range(0, x.shape[1], cols))
    if progress is None:  # a bar when the pass takes more than a moment
        progress = g.num_edges() * x.shape[1] > (1 << 31)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"aggregating features ({aggregation.kind})")
    parts = []
    with g.local_scope():
        if edge_weight is not None:
            g.edata["_w"] = edge_weight.to(device=g.device, dtype=x.dtype)
            message = fn.u_mul_e("_h", "_w", "_m")
        else:
            message = fn.copy_u("_h", "_m")
        for start in chunks:
            h = x[:, start:start + cols]
            g.ndata["_h"] = h if out_norm is None else h * out_norm[:, None]
            g.update_all(message, reduce("_m", "_z"))
            z = g.ndata["_z"]
            if in_norm is not None:
                z = z * in_norm[:, None]
            if kind == "gcn":
                z = (z + h) / (g.in_degrees().to(x.dtype)[:, None] + 1.0)
            parts.append(z)
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class _Source:
    """A tensor as it was read: the object itself (weakly) and torch's version counter.

    Changes when the tensor is replaced or written through torch; not when it moves to
    shared memory (``share_memory_()``, which keeps the object and its version).  Blind to
    writes that bypass the counter (``t.data.mul_``, through ``t.numpy()``): the per-row
    checksums catch those.  Process-local: re-taken when a :class:`FeatureAggregates` is
    unpickled in another process.
    """

    __slots__ = ("ref", "version", "meta")

    def __init__(self, t: Tensor):
        self.ref = weakref.ref(t)
        self.version = t._version
        self.meta = (tuple(t.shape), t.dtype, str(t.device))

    def matches(self, t: Tensor | None) -> bool:
        return t is not None and self.ref() is t and t._version == self.version \
            and self.meta == (tuple(t.shape), t.dtype, str(t.device))


def aggregate_key(kind: str, feature: str) -> str:
    """Node-data key of the ``kind`` aggregation of ``feature``: ``"mvs_agg_{kind}_{feature}"``."""
    return f"mvs_agg_{kind}_{feature}"


def checksum_key(kind: str, feature: str) -> str:
    """Node-data key of the checksums of the ``feature`` rows that its ``kind`` aggregate read."""
    return f"mvs_agg_check_{kind}_{feature}"


_CHECK_WEIGHTS: dict[tuple, Tensor] = {}


def _checksum_weights(width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A fixed positive vector per width: checksums do not depend on the process or the run."""
    key = (width, dtype, str(device))
    if key not in _CHECK_WEIGHTS:
        gen = torch.Generator().manual_seed(width)
        _CHECK_WEIGHTS[key] = (0.5 + torch.rand(width, generator=gen)).to(dtype).to(device)
    return _CHECK_WEIGHTS[key]


def row_checksums(x: Tensor, chunk_rows: int = 1 << 16) -> Tensor:
    """One number per row of ``x`` (``x @ w`` for a fixed ``w``), float32; in row chunks."""
    x = x.flatten(1)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    w = _checksum_weights(x.shape[1], dtype, x.device)
    parts = [torch.mv(part.to(dtype), w) for part in x.split(chunk_rows)] if x.shape[0] else []
    return torch.cat(parts).float() if parts else x.new_zeros(0, dtype=torch.float32)


def rows_changed(rows: Tensor, checksums: Tensor) -> Tensor:
    """Which of ``rows`` no longer give the ``checksums`` taken from them (a bool per row).

    The tolerance covers float32 rounding (``1e-4 ||x|| ||w||``, more for rows wider than
    1000); a change below it (a relative change of about ``1e-4`` of a row) is not seen.
    """
    rows = rows.flatten(1)
    now = row_checksums(rows).to(checksums.device)
    w = _checksum_weights(rows.shape[1], torch.float32, rows.device)
    scale = torch.linalg.vector_norm(rows.float(), dim=1) * torch.linalg.vector_norm(w)
    tol = (1e-4 * max(1.0, rows.shape[1] / 1000.0)) * scale.to(checksums.device) + 1e-30
    return ~((now - checksums.float()).abs() <= tol)


class StaleAggregates(RuntimeError):
    """Raised while building a first block whose raw rows no longer match the aggregates."""

    def __init__(self, feature: str, changed: int):
        self.feature, self.changed = feature, changed
        super().__init__(
            f"{changed} row(s) of g.ndata[{feature!r}] changed after the first layer's "
            "aggregates were computed from them"
        )


#: The FeatureAggregates of this process by number (the first block carries it, so that the
#: first layer's hook, in the training process, can check rows built by a worker).
_LIVE: "weakref.WeakValueDictionary[int, FeatureAggregates]" = weakref.WeakValueDictionary()


def live_aggregates(number: int) -> "FeatureAggregates | None":
    """The :class:`FeatureAggregates` of this process with this number, if any."""
    return _LIVE.get(number)


class FeatureAggregates:
    """The first layer's aggregation of each input feature, kept in ``g.ndata``, and checked.

    ``g.ndata["mvs_agg_{kind}_{feature}"]`` holds the aggregation of ``g.ndata[feature]`` for
    every node, and ``g.ndata["mvs_agg_check_{kind}_{feature}"]`` one checksum per node of the
    feature rows it was computed from.  Changes are found two ways:

    * **globally**, per batch, from torch's version counter and the tensor's identity (a
      feature or edge-weight tensor replaced or written through torch, edges added or
      removed): the aggregates are recomputed;
    * **per row**, when a first block gathers a node's raw features (:meth:`rows`): its
      checksum must still match.  This catches writes that bypass the version counter
      (``.data.mul_``, through ``.numpy()``) on every row a batch reads.

    Recomputation happens in the training process, in place (DataLoader workers that share
    the memory see it); a DataLoader worker cannot recompute for the training process, so
    there a stale row is an error naming what to do.  Not detected: changes below the
    checksum's float32 tolerance, changes to nodes that no batch's first block reads (their
    effect on their neighbours' aggregates shows only once one of those is read by the
    :meth:`check_block` sample or the version counter), and edge weights written without the
    version counter.

    Parameters
    ----------
    g : DGLGraph
    features : list[str]
        ``g.ndata`` keys of the first layer's input features (fixed, floating point, 2-D).
    aggregation : Aggregation
    edge_weight : str, optional
        ``g.edata`` key of the weights ``w_uv``.
    """

    def __init__(
        self,
        g: DGLGraph,
        features: Sequence[str],
        aggregation: Aggregation,
        edge_weight: str | None = None,
    ):
        self.g = g
        self.aggregation = aggregation
        self.edge_weight = edge_weight
        self.features = list(features)
        for key in self.features:
            check_input_feature(g, key)
        check_edge_weight(g, edge_weight)
        self._built: dict[str, tuple] = {}
        self._owned: dict[str, int] = {}  # data_ptr of the g.ndata tensors this object made
        self.number = _new_number()
        _LIVE[self.number] = self
        self.update()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_built"] = list(self._built)  # weak references do not pickle
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickled (a spawned worker, a copy): re-take the process-local fingerprints."""
        self.__dict__.update(state)
        self._built = {f: self._sources(f) for f in state["_built"] if f in self.g.ndata}
        self._owned = {k: self.g.ndata[k].data_ptr() for k in self._owned if k in self.g.ndata}

    # ------------------------------------------------------------------ keys
    def key(self, feature: str) -> str:
        """``g.ndata`` key of the aggregation of ``feature``."""
        return aggregate_key(self.aggregation.kind, feature)

    def checksum_key(self, feature: str) -> str:
        """``g.ndata`` key of the checksums of ``feature``'s rows."""
        return checksum_key(self.aggregation.kind, feature)

    def _sources(self, feature: str) -> tuple:
        """What the aggregate of ``feature`` is built from: compare with :meth:`_current`."""
        weight = self.g.edata[self.edge_weight] if self.edge_weight is not None else None
        return (_Source(self.g.ndata[feature]), None if weight is None else _Source(weight),
                self.g.num_edges())

    def _current(self, feature: str) -> bool:
        """Whether the feature, the edge weights and the edge count are as when built."""
        built = self._built.get(feature)
        if built is None:
            return False
        source, weight_source, num_edges = built
        weight = self.g.edata[self.edge_weight] if self.edge_weight is not None else None
        return source.matches(self.g.ndata[feature]) and num_edges == self.g.num_edges() \
            and (weight_source.matches(weight) if weight_source is not None else weight is None)

    # ------------------------------------------------------------------ building
    def update(self, progress: bool | None = None, force: bool = False) -> None:
        """(Re)compute the aggregations whose sources changed (all of them with ``force``)."""
        weight = self.g.edata[self.edge_weight] if self.edge_weight is not None else None
        for feature in self.features:
            key, check = self.key(feature), self.checksum_key(feature)
            if not force and self._current(feature) \
                    and key in self.g.ndata and check in self.g.ndata:
                continue
            x = check_input_feature(self.g, feature)
            sums = row_checksums(x)
            bad = ~torch.isfinite(sums)
            if bool(bad.any()):
                raise ValueError(
                    f"g.ndata[{feature!r}] has {int(bad.sum())} row(s) with NaN or infinite "
                    "values: the first layer's aggregates would spread them to every neighbour"
                )
            self._store(key, aggregate(self.g, x, self.aggregation, weight, progress=progress))
            self._store(check, sums)
            self._built[feature] = self._sources(feature)

    def _store(self, name: str, value: Tensor) -> None:
        """Into this object's own tensor in place (workers sharing it see it), else a new one.

        Never in place into a tensor another object made: graphs derived from ``g`` (e.g.
        ``dgl.add_self_loop(g)``) share node-data tensors with it.
        """
        live = self.g.ndata[name] if name in self.g.ndata else None
        if live is not None and self._owned.get(name) == live.data_ptr() \
                and live.shape == value.shape and live.dtype == value.dtype:
            live.copy_(value)
            return
        value = value.contiguous()
        if value.device.type == "cpu":
            value.share_memory_()  # DataLoader workers read it
        self.g.ndata[name] = value
        self._owned[name] = value.data_ptr()

    def stale(self) -> list[str]:
        """The features whose tensor, edge weights or edges changed (version counter, identity)."""
        return [f for f in self.features if not self._current(f)]

    def check(self) -> None:
        """Recompute stale aggregations (training process) or raise (worker process)."""
        stale = self.stale()
        if not stale:
            return
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(stale_in_worker_message(stale))
        self.update()

    # ------------------------------------------------------------------ reading
    def rows(self, feature: str, nodes: Tensor, with_features: bool = True) -> Tensor:
        """``[features of nodes; aggregations of nodes]`` (or the aggregations alone).

        With the features, their checksums are compared with those the aggregates were built
        from: :class:`StaleAggregates` if a row changed.  ``index_select`` into one
        preallocated tensor: several times faster on the CPU than advanced indexing followed
        by a concatenation.
        """
        idx = nodes.long()
        agg = self.g.ndata[self.key(feature)]
        if not with_features:
            return torch.index_select(agg, 0, idx)
        raw = self.g.ndata[feature]
        num = idx.numel()
        out = torch.empty((2 * num,) + tuple(raw.shape[1:]), dtype=raw.dtype, device=raw.device)
        torch.index_select(raw, 0, idx, out=out[:num])
        changed = rows_changed(out[:num], torch.index_select(
            self.g.ndata[self.checksum_key(feature)], 0, idx.to(raw.device)))
        if bool(changed.any()):
            raise StaleAggregates(feature, int(changed.sum()))
        torch.index_select(agg.to(raw.dtype), 0, idx, out=out[num:])
        return out

    def check_block(self, block: object, sample: int = 16) -> None:
        """In the training process: a sample of the first block's raw rows against ``g.ndata``.

        A block built by a DataLoader worker carries the rows of the worker's copy of the
        features; persistent workers (or workers started before a change) keep an old copy
        unless the features are in shared memory.
        """
        num = block.num_dst_nodes()
        if num == 0:
            return
        picks = torch.linspace(0, num - 1, min(num, sample)).long()
        nodes = block.dstdata[dgl.NID][picks.to(block.device)].long()
        for feature in self.features:
            if feature not in block.srcdata:
                continue
            built = block.srcdata[feature][picks.to(block.device)]
            now = self.g.ndata[feature][nodes.to(self.g.device)]
            if not torch.equal(built.to(now.device), now):
                raise RuntimeError(
                    f"the first block's rows of g.ndata[{feature!r}] differ from the training "
                    "process's: the features changed after the DataLoader's worker processes "
                    "copied them (persistent_workers=True keeps that copy). Call "
                    "sampler.update_aggregates() after changing features, then iterate a new "
                    "DataLoader (with persistent workers, put the features in shared memory "
                    f"before creating it: g.ndata[{feature!r}].share_memory_())"
                )

    def __repr__(self) -> str:
        return (
            f"FeatureAggregates(features={self.features}, aggregation={self.aggregation.kind}, "
            f"edge_weight={self.edge_weight!r})"
        )


def _new_number() -> int:
    return int.from_bytes(os.urandom(7), "little") + 1  # 0 means "none"


def stale_in_worker_message(features: Sequence[str]) -> str:
    """The error of a DataLoader worker that finds the aggregates of ``features`` stale."""
    names = ", ".join(f"g.ndata[{f!r}]" for f in features)
    return (
        f"{names} (or the graph's edges or edge weights) changed after the sampler precomputed "
        "the first layer's aggregates, and a DataLoader worker cannot recompute them for the "
        "training process: call sampler.update_aggregates() in the training process after "
        "changing features or edges, before iterating the DataLoader (workers that outlive "
        "it, persistent_workers=True, keep the features they copied unless these are in "
        "shared memory: g.ndata[...].share_memory_() before creating the DataLoader)"
    )


def check_input_feature(g: DGLGraph, key: str) -> Tensor:
    """``g.ndata[key]``, or a clear error unless it is a fixed ``(N, F)`` floating tensor."""
    if key not in g.ndata:
        raise KeyError(f"input feature {key!r} is not in g.ndata (keys: {list(g.ndata.keys())})")
    value = g.ndata[key]
    if not value.is_floating_point() or value.dim() != 2:
        raise ValueError(
            f"g.ndata[{key!r}] must be an (N, F) floating-point tensor to be aggregated "
            f"by the first layer, got dtype {value.dtype} and shape {tuple(value.shape)}"
        )
    if value.requires_grad:
        raise ValueError(
            f"g.ndata[{key!r}] requires grad (learnable input features): one-hop blocks give "
            "the first layer aggregates precomputed once from fixed features, through which "
            "no gradient reaches the table. Keep the learnable table in the model (e.g. "
            "nn.Embedding, indexed with input_nodes) and " + DGL_BLOCKS_HELP
        )
    return value
