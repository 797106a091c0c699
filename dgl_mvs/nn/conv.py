"""Control-variate versions of the linear aggregators, as DGL message functions.

On a control-variate block (:func:`dgl_mvs.blocks.control_variate_blocks`) these layers compute
VR-GCN's estimator

``z_v = sum_{u in N(v)} a_uv hbar_u + sum_{u in sampled(v)} |N(v)| / s_v a_uv (h_u - hbar_u)``

with two ``update_all`` calls (``fn.u_mul_e`` + ``fn.sum``), where ``hbar`` is the history left
in ``block.srcdata["mvs_history"]`` by :class:`dgl_mvs.History`.  On any other graph (the full
graph, history or exact blocks) they compute the exact aggregation ``sum_u a_uv h_u``, so the
same module serves training, checkpoints and inference.  ``a_uv`` is taken from
``edata["edge_weights"]`` when present (e.g. GCN's symmetric normalisation computed on the full
graph by :func:`dgl_mvs.gcn_norm`), and is the mean over in-neighbours otherwise.  Everything is
device-agnostic: it runs wherever DGL's message passing runs.
"""
from __future__ import annotations

from typing import Callable

import dgl.function as fn
import torch
from dgl import DGLGraph
from torch import Tensor, nn

from .. import keys

__all__ = ["CVGraphConv", "CVSAGEConv", "aggregate"]


def _is_cv_block(graph: DGLGraph) -> bool:
    return graph.is_block and keys.HISTORY_WEIGHTS in graph.edata


def aggregate(graph: DGLGraph, h: Tensor, edge_weight: Tensor | None = None) -> Tensor:
    """Weighted in-neighbour aggregation of ``h`` for the destination nodes of ``graph``.

    On a control-variate block this is the control-variate estimator (see module docstring);
    otherwise the exact ``sum_u a_uv h_u`` with ``a`` from ``edge_weight``,
    ``edata["edge_weights"]`` or the in-neighbour mean, in that order.
    """
    with graph.local_scope():
        if _is_cv_block(graph):
            if keys.HISTORY not in graph.srcdata:
                raise RuntimeError(
                    "a control-variate block reached a control-variate layer without history: "
                    "attach the model's layers to a dgl_mvs.History (history.attach(layers))"
                )
            past = graph.srcdata[keys.HISTORY]
            if past.shape != h.shape:
                # The layer may have transformed h before aggregating (weight first).
                raise RuntimeError("history and input shapes differ inside aggregate()")
            graph.srcdata["_hbar"] = past
            graph.srcdata["_delta"] = h - past
            graph.update_all(fn.u_mul_e("_hbar", keys.HISTORY_WEIGHTS, "_m"), fn.sum("_m", "_z"))
            full = graph.dstdata["_z"]
            graph.update_all(fn.u_mul_e("_delta", keys.EDGE_WEIGHTS, "_m"), fn.sum("_m", "_z"))
            return full + graph.dstdata["_z"]
        graph.srcdata["_h"] = h
        if edge_weight is None and keys.EDGE_WEIGHTS in graph.edata:
            edge_weight = graph.edata[keys.EDGE_WEIGHTS]
        if edge_weight is not None:
            graph.edata["_a"] = edge_weight
            graph.update_all(fn.u_mul_e("_h", "_a", "_m"), fn.sum("_m", "_z"))
        else:
            graph.update_all(fn.copy_u("_h", "_m"), fn.mean("_m", "_z"))
        return graph.dstdata["_z"]


def _cv_transform(graph: DGLGraph, h: Tensor, linear: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply a linear map to ``h`` and, on control-variate blocks, to the history alike."""
    if _is_cv_block(graph) and keys.HISTORY in graph.srcdata:
        graph.srcdata[keys.HISTORY] = linear(graph.srcdata[keys.HISTORY])
    return linear(h)


class CVGraphConv(nn.Module):
    """GCN layer ``act(sum_u a_uv h_u W + b)`` with the control-variate estimator on CV blocks.

    Parameters
    ----------
    in_feats, out_feats : int
        Input and output widths.
    bias : bool, default True
        Add a learnable bias.
    activation : callable, optional
        Applied to the output.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_mvs.nn import CVGraphConv
    >>> g = dgl.rand_graph(50, 300)
    >>> CVGraphConv(8, 4)(g, torch.randn(50, 8)).shape
    torch.Size([50, 4])
    """

    def __init__(
        self,
        in_feats: int,
        out_feats: int,
        bias: bool = True,
        activation: Callable[[Tensor], Tensor] | None = None,
    ):
        super().__init__()
        self.in_feats, self.out_feats = in_feats, out_feats
        self.weight = nn.Parameter(torch.empty(in_feats, out_feats))
        self.bias = nn.Parameter(torch.zeros(out_feats)) if bias else None
        self.activation = activation
        nn.init.xavier_uniform_(self.weight)

    def forward(self, graph: DGLGraph, feat: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        """Aggregate then transform (or transform first when it shrinks the width)."""
        with graph.local_scope():
            if self.in_feats > self.out_feats:
                h = _cv_transform(graph, feat, lambda x: x @ self.weight)
                out = aggregate(graph, h, edge_weight)
            else:
                out = aggregate(graph, feat, edge_weight) @ self.weight
        if self.bias is not None:
            out = out + self.bias
        return self.activation(out) if self.activation is not None else out


class CVSAGEConv(nn.Module):
    """GraphSAGE layer ``act(W_self h_v + W_neigh agg_u(h_u) + b)`` with control variates.

    The neighbour term is the mean over the full in-neighbourhood (or the weights in
    ``edata["edge_weights"]``), estimated with control variates on CV blocks; the self term
    uses the node's own fresh input.  With the mean it matches ``dgl.nn.SAGEConv(..., "mean")``
    (copy ``fc_self``, ``fc_neigh`` and ``bias`` to compare).

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_mvs.nn import CVSAGEConv
    >>> g = dgl.rand_graph(50, 300)
    >>> CVSAGEConv(8, 4)(g, torch.randn(50, 8)).shape
    torch.Size([50, 4])
    """

    def __init__(
        self,
        in_feats: int,
        out_feats: int,
        bias: bool = True,
        activation: Callable[[Tensor], Tensor] | None = None,
    ):
        super().__init__()
        self.in_feats, self.out_feats = in_feats, out_feats
        self.fc_self = nn.Linear(in_feats, out_feats, bias=False)
        self.fc_neigh = nn.Linear(in_feats, out_feats, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_feats)) if bias else None
        self.activation = activation
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_uniform_(self.fc_self.weight, gain=gain)
        nn.init.xavier_uniform_(self.fc_neigh.weight, gain=gain)

    def forward(self, graph: DGLGraph, feat: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        """Self term on the destination rows plus the aggregated neighbour term."""
        num_dst = graph.num_dst_nodes() if graph.is_block else graph.num_nodes()
        with graph.local_scope():
            if self.in_feats > self.out_feats:
                h = _cv_transform(graph, feat, self.fc_neigh)
                neigh = aggregate(graph, h, edge_weight)
            else:
                neigh = self.fc_neigh(aggregate(graph, feat, edge_weight))
        out = self.fc_self(feat[:num_dst]) + neigh
        if self.bias is not None:
            out = out + self.bias
        return self.activation(out) if self.activation is not None else out
