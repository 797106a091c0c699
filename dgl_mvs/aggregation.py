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

from dataclasses import dataclass, field
from typing import Sequence

import dgl.function as fn
import torch
from dgl import DGLGraph
from torch import Tensor, nn

from .blocks import check_edge_weight

__all__ = ["Aggregation", "aggregation_of", "aggregations_of", "aggregate", "FeatureAggregates"]

#: Aggregation kinds: ``c_uv`` is ``w_uv`` times ``1 / d_in(v)`` ("mean"), 1 ("sum"),
#: ``1 / sqrt(d_out(u) d_in(v))`` ("both"), ``1 / d_out(u)`` ("left"); "gcn" is GraphSAGE's
#: ``(sum_{N(v)} w x_u + x_v) / (d_in(v) + 1)``.  Degrees are clamped at 1 as in DGL.
KINDS = ("mean", "sum", "both", "left", "gcn")

# dgl.nn's names for the same aggregations (GraphConv's norms, SAGEConv's and GINConv's types).
_ALIASES = {"right": "mean", "none": "sum"}

_NOT_LINEAR_HELP = (
    "Its aggregation is not linear in its input, so it cannot be precomputed. Use "
    "blocks='history' or blocks='cv' (history embeddings), or keep DGL's sampled blocks and draw "
    "only the seeds by importance: MVSSampler(..., blocks=dgl.dataloading.NeighborSampler([10, "
    "10]))."
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
        raise ValueError(f"{name} weighs neighbours by attention. {_NOT_LINEAR_HELP}")
    raise ValueError(
        f"cannot tell how {name} aggregates its neighbours. dgl_mvs reads SAGEConv ('mean', "
        "'gcn'), GraphConv and GINConv ('sum', 'mean'); if your layer aggregates linearly, name "
        "its aggregation instead: 'mean', 'sum', 'both', 'left' or 'gcn'. Otherwise: "
        + _NOT_LINEAR_HELP
    )


def _layer_list(model: object) -> list:
    """The GNN layers of ``model``: ``model.layers`` (DGL's examples), or the list itself."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    if isinstance(model, (str, Aggregation)):
        raise ValueError("give one aggregation per layer, e.g. ['mean', 'mean']")
    layers = getattr(model, "layers", model)
    if isinstance(layers, nn.Module) and not isinstance(layers, (nn.ModuleList, nn.Sequential)):
        raise ValueError(
            f"{type(model).__name__} has no `layers` list: pass the list of its GNN layers "
            "(first layer first), as DGL's examples keep them in `self.layers`"
        )
    try:
        return list(layers)
    except TypeError:
        raise ValueError(
            f"expected a model with a `layers` list, a list of layers or a list of aggregation "
            f"names, got {type(model).__name__}"
        ) from None


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
    cols = max(1, (1 << 26) // max(1, g.num_edges()))  # bounds the per-chunk work and memory
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


def _fingerprint(t: Tensor) -> tuple:
    """Changes when ``t`` is replaced or written in place (torch's version counter)."""
    return (t.data_ptr(), t._version, tuple(t.shape), t.dtype, str(t.device))


def aggregate_key(kind: str, feature: str) -> str:
    """Node-data key of the ``kind`` aggregation of ``feature``: ``"mvs_agg_{kind}_{feature}"``."""
    return f"mvs_agg_{kind}_{feature}"


class FeatureAggregates:
    """The first layer's aggregation of each input feature, kept in ``g.ndata``.

    ``g.ndata[key]`` holds the aggregation of ``g.ndata[feature]`` for every node, with key
    ``"mvs_agg_{kind}_{feature}"``.  It is computed once, and recomputed when the features
    (or the edge weights) it was built from have been replaced or written since; that check
    reads torch's version counters, so it costs nothing per step.  In a DataLoader worker
    process a stale aggregate is an error instead (the worker cannot update the main
    process's copy): call :meth:`update` in the training process after changing features.

    Parameters
    ----------
    g : DGLGraph
    features : list[str]
        ``g.ndata`` keys of the first layer's input features.
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
            if key not in g.ndata:
                raise KeyError(
                    f"input feature {key!r} is not in g.ndata (keys: {list(g.ndata.keys())})"
                )
            value = g.ndata[key]
            if not value.is_floating_point() or value.dim() != 2:
                raise ValueError(
                    f"g.ndata[{key!r}] must be an (N, F) floating-point tensor to be aggregated "
                    f"by the first layer, got dtype {value.dtype} and shape {tuple(value.shape)}"
                )
        check_edge_weight(g, edge_weight)
        self._built: dict[str, tuple] = {}
        self.update()

    def key(self, feature: str) -> str:
        """``g.ndata`` key of the aggregation of ``feature``."""
        return aggregate_key(self.aggregation.kind, feature)

    def _sources(self, feature: str) -> tuple:
        weight = self.g.edata[self.edge_weight] if self.edge_weight is not None else None
        return (
            _fingerprint(self.g.ndata[feature]),
            None if weight is None else _fingerprint(weight),
            self.g.num_edges(),
        )

    def update(self, progress: bool | None = None) -> None:
        """(Re)compute every aggregation whose features or weights changed."""
        weight = self.g.edata[self.edge_weight] if self.edge_weight is not None else None
        for feature in self.features:
            sources = self._sources(feature)
            key = self.key(feature)
            if self._built.get(feature) == sources and key in self.g.ndata:
                continue
            value = aggregate(
                self.g, self.g.ndata[feature], self.aggregation, weight, progress=progress
            )
            if value.device.type == "cpu":
                value.share_memory_()  # DataLoader workers read it
            self.g.ndata[key] = value
            self._built[feature] = self._sources(feature)

    def check(self) -> None:
        """Recompute stale aggregations (training process) or raise (worker process)."""
        stale = [f for f in self.features if self._built.get(f) != self._sources(f)]
        if not stale:
            return
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(
                f"g.ndata{stale} changed after the sampler precomputed their aggregation, and "
                "a DataLoader worker cannot recompute it for the training process: call "
                "sampler.update_aggregates() in the training process after changing features"
            )
        self.update()

    def rows(self, feature: str, nodes: Tensor, with_features: bool = True) -> Tensor:
        """``[features of nodes; aggregations of nodes]`` (or the aggregations alone).

        ``index_select`` into one preallocated tensor: several times faster on the CPU than
        advanced indexing followed by a concatenation.
        """
        idx = nodes.long()
        agg = self.g.ndata[self.key(feature)]
        if not with_features:
            return torch.index_select(agg, 0, idx)
        raw = self.g.ndata[feature]
        num = idx.numel()
        out = torch.empty((2 * num,) + tuple(raw.shape[1:]), dtype=raw.dtype, device=raw.device)
        torch.index_select(raw, 0, idx, out=out[:num])
        torch.index_select(agg.to(raw.dtype), 0, idx, out=out[num:])
        return out

    def __repr__(self) -> str:
        return (
            f"FeatureAggregates(features={self.features}, aggregation={self.aggregation.kind}, "
            f"edge_weight={self.edge_weight!r})"
        )

