"""Small models used by several tests: stock dgl.nn layers in a plain DGL block loop."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from dgl.nn import GATConv, GINConv, GraphConv, SAGEConv
from torch import nn

from dgl_mvs.nn import ControlVariate, CVGraphConv, CVSAGEConv


def make_layers(kind: str, in_feats: int, hidden: int, out: int, num_layers: int) -> nn.ModuleList:
    dims = [in_feats] + [hidden] * (num_layers - 1) + [out]
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        if kind == "gcn":  # right normalisation: destination degree, exact on history blocks
            layers.append(GraphConv(a, b, norm="right", allow_zero_in_degree=True))
        elif kind == "gcn_ew":  # full-graph symmetric normalisation through edge weights
            layers.append(GraphConv(a, b, norm="none", allow_zero_in_degree=True))
        elif kind == "sage":
            layers.append(SAGEConv(a, b, "mean"))
        elif kind == "gat":
            layers.append(GATConv(a, b, num_heads=1, allow_zero_in_degree=True))
        elif kind == "gin":
            layers.append(GINConv(nn.Linear(a, b), "sum"))
        elif kind == "cvgat":
            layers.append(ControlVariate(GATConv(a, b, num_heads=1)))
        elif kind == "cvsage_wrap":
            layers.append(ControlVariate(SAGEConv(a, b, "mean")))
        elif kind == "cvgcn":
            layers.append(CVGraphConv(a, b))
        elif kind == "cvsage":
            layers.append(CVSAGEConv(a, b))
        else:
            raise ValueError(kind)
    return nn.ModuleList(layers)


class GNN(nn.Module):
    """model(blocks, x): the standard DGL mini-batch forward."""

    def __init__(self, kind, in_feats, hidden, out, num_layers, dropout=0.0):
        super().__init__()
        self.kind = kind
        self.layers = make_layers(kind, in_feats, hidden, out, num_layers)
        self.dropout = nn.Dropout(dropout)

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            if self.kind == "gcn_ew":
                h = layer(block, h, edge_weight=block.edata["edge_weights"])
            else:
                h = layer(block, h)
            if self.kind in ("gat", "cvgat"):
                h = h.flatten(1)
            if i != len(self.layers) - 1:
                h = self.dropout(F.relu(h))
        return h
