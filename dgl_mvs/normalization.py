"""Full-graph edge normalisations, computed once on ``g`` and carried to blocks as weights.

On a sampled block, ``GraphConv(norm="both")`` takes degrees from the block, not from the graph,
so its normalisation is wrong.  Computing the weights on the full graph and passing them as
``edata["edge_weights"]`` (DGL's convention) keeps every block kind exact.
"""
from __future__ import annotations

import torch
from dgl import DGLGraph
from torch import Tensor

from .blocks import check_graph

__all__ = ["gcn_norm", "mean_norm"]


def gcn_norm(g: DGLGraph) -> Tensor:
    """Symmetric GCN weights ``1 / sqrt(d_out(u) d_in(v))`` for every edge ``u -> v`` of ``g``.

    The same values as ``dgl.nn.EdgeWeightNorm(norm="both")`` on unit weights; add self-loops
    to ``g`` first for Kipf and Welling's ``D^-1/2 (A + I) D^-1/2``.  Use with
    ``GraphConv(norm="none")`` and ``edge_weight=block.edata["edge_weights"]``.

    Examples
    --------
    >>> import dgl, torch
    >>> import dgl_mvs
    >>> g = dgl.graph((torch.tensor([0, 1, 1]), torch.tensor([1, 0, 2])))
    >>> g.edata["w"] = dgl_mvs.gcn_norm(g)
    >>> [round(x, 4) for x in g.edata["w"].tolist()]
    [1.0, 0.7071, 0.7071]
    """
    check_graph(g)
    src, dst = g.edges()
    out_deg = g.out_degrees().clamp(min=1).to(torch.float32)
    in_deg = g.in_degrees().clamp(min=1).to(torch.float32)
    return (out_deg[src.long()] * in_deg[dst.long()]).rsqrt()


def mean_norm(g: DGLGraph) -> Tensor:
    """Right-normalised weights ``1 / d_in(v)``: the mean over in-neighbours, as edge weights.

    Examples
    --------
    >>> import dgl, torch
    >>> import dgl_mvs
    >>> g = dgl.graph((torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])))
    >>> dgl_mvs.mean_norm(g).tolist()
    [0.5, 0.5, 1.0]
    """
    check_graph(g)
    _, dst = g.edges()
    return 1.0 / g.in_degrees().clamp(min=1).to(torch.float32)[dst.long()]
