"""A control-variate wrapper for any ``dgl.nn`` convolution (GAT included)."""
from __future__ import annotations

import dgl
from dgl import DGLGraph
from torch import Tensor, nn

from .. import keys

__all__ = ["ControlVariate"]


def _sampled_block(block: DGLGraph) -> DGLGraph:
    """The sampled edges of a control-variate block as a block over the same nodes."""
    src, dst = block.edges()
    picked = block.edata[keys.SAMPLED]
    sub = dgl.create_block(
        (src[picked], dst[picked]),
        num_src_nodes=block.num_src_nodes(),
        num_dst_nodes=block.num_dst_nodes(),
        idtype=block.idtype,
        device=block.device,
    )
    sub.edata[keys.EDGE_WEIGHTS] = block.edata[keys.EDGE_WEIGHTS][picked]
    return sub


class ControlVariate(nn.Module):
    """Run a stock layer ``f`` on control-variate blocks as ``f_full(hbar) + f_s(h) - f_s(hbar)``.

    ``f_full`` runs on all in-edges of the block with histories ``hbar`` as inputs, ``f_s`` on
    the sampled edges only, with the fresh inputs and with the histories.  For a layer that is
    linear in its neighbour inputs (``GraphConv`` with edge weights, ``SAGEConv`` mean) this is
    VR-GCN's estimator; for a nonlinear one (``GATConv``) it is a control variate on the layer
    output: exact when the histories equal the fresh inputs, a low-variance approximation
    otherwise.  On any other graph the wrapper calls the layer unchanged.  The dedicated
    :class:`CVGraphConv` / :class:`CVSAGEConv` do the linear case with two message passes
    instead of three layer calls.

    Parameters
    ----------
    conv : nn.Module
        A layer called as ``conv(graph, feat, **kwargs)``.
    edge_weight : bool, default False
        Pass ``edge_weight=`` to the layer: the full-graph weights for ``f_full`` and the
        scaled weights of the sampled edges for ``f_s`` (for ``GraphConv(norm="none")``).

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl.nn import GATConv
    >>> from dgl_mvs.nn import ControlVariate
    >>> layer = ControlVariate(GATConv(8, 4, num_heads=1, allow_zero_in_degree=True))
    >>> g = dgl.rand_graph(30, 200)
    >>> layer(g, torch.randn(30, 8)).shape
    torch.Size([30, 1, 4])
    """

    def __init__(self, conv: nn.Module, edge_weight: bool = False):
        super().__init__()
        self.conv = conv
        self.edge_weight = edge_weight
        if hasattr(conv, "_allow_zero_in_degree"):
            conv._allow_zero_in_degree = True

    def forward(self, graph: DGLGraph, feat: Tensor, **kwargs) -> Tensor:
        """Estimate the layer output for the destination nodes of ``graph``."""
        if not (graph.is_block and keys.SAMPLED in graph.edata):
            if self.edge_weight and keys.EDGE_WEIGHTS in graph.edata:
                kwargs.setdefault("edge_weight", graph.edata[keys.EDGE_WEIGHTS])
            return self.conv(graph, feat, **kwargs)
        if keys.HISTORY not in graph.srcdata:
            raise RuntimeError(
                "a control-variate block reached ControlVariate without history: attach the "
                "model's layers to a dgl_mvs.History (history.attach(layers))"
            )
        past = graph.srcdata[keys.HISTORY]
        sampled = _sampled_block(graph)
        full_kw, sampled_kw = dict(kwargs), dict(kwargs)
        if self.edge_weight:
            full_kw["edge_weight"] = graph.edata[keys.HISTORY_WEIGHTS]
            sampled_kw["edge_weight"] = sampled.edata[keys.EDGE_WEIGHTS]
        return (
            self.conv(graph, past, **full_kw)
            + self.conv(sampled, feat, **sampled_kw)
            - self.conv(sampled, past, **sampled_kw)
        )
