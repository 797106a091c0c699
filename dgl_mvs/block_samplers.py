"""dgl_mvs's block kinds as plain DGL block samplers, for seeds that DGL's DataLoader draws.

With ``dgl.dataloading.DataLoader(g, train_nids, sampler, batch_size=..., shuffle=True)`` these
give uniform mini-batches with history blocks (MVS-GNN's inner loop without importance
sampling) or with VR-GCN's control variates.  :class:`dgl_mvs.MVSSampler` draws the seeds by
importance instead.  Wrapped in :func:`dgl.dataloading.as_edge_prediction_sampler`, they leave
the excluded edges (``exclude="self"``, ``"reverse_id"``, ...) out of every block, as DGL's
``NeighborSampler`` does.
"""
from __future__ import annotations

from typing import Sequence

import torch
from dgl import DGLGraph
from dgl.dataloading import BlockSampler
from torch import Tensor

from .blocks import control_variate_blocks, exact_blocks, history_blocks

__all__ = ["HistorySampler", "ControlVariateSampler", "ExactSampler"]


class HistorySampler(BlockSampler):
    """Uniform-seed history blocks (:func:`dgl_mvs.history_blocks`) for ``DataLoader``.

    Parameters
    ----------
    num_layers : int
        Number of GNN layers.
    edge_weight : str, optional
        ``g.edata`` key of full-graph edge weights, put in ``block.edata["edge_weights"]``.
    prefetch_node_feats, prefetch_labels, prefetch_edge_feats, output_device
        As in :class:`dgl.dataloading.NeighborSampler`.

    Examples
    --------
    >>> import dgl, torch
    >>> import dgl_mvs
    >>> g = dgl.rand_graph(100, 600)
    >>> sampler = dgl_mvs.HistorySampler(2)
    >>> loader = dgl.dataloading.DataLoader(g, torch.arange(40), sampler, batch_size=8)
    >>> input_nodes, output_nodes, blocks = next(iter(loader))
    >>> len(blocks), output_nodes.numel()
    (2, 8)
    """

    def __init__(
        self,
        num_layers: int,
        edge_weight: str | None = None,
        prefetch_node_feats: Sequence[str] | None = None,
        prefetch_labels: Sequence[str] | None = None,
        prefetch_edge_feats: Sequence[str] | None = None,
        output_device: torch.device | str | None = None,
    ):
        super().__init__(prefetch_node_feats, prefetch_labels, prefetch_edge_feats, output_device)
        self.num_layers = num_layers
        self.edge_weight = edge_weight

    def sample_blocks(
        self, g: DGLGraph, seed_nodes: Tensor, exclude_eids: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list]:
        return history_blocks(
            g, seed_nodes, self.num_layers, self.edge_weight, exclude_eids=exclude_eids
        )


class ExactSampler(HistorySampler):
    """Full-neighbourhood blocks (:func:`dgl_mvs.exact_blocks`) that also refresh histories.

    Like :class:`dgl.dataloading.MultiLayerFullNeighborSampler`, with the marks that let an
    attached :class:`dgl_mvs.History` record every layer input it computes.

    Examples
    --------
    >>> import dgl, torch
    >>> import dgl_mvs
    >>> g = dgl.rand_graph(100, 600)
    >>> _, _, blocks = dgl_mvs.ExactSampler(2).sample(g, torch.arange(4))
    >>> blocks[-1].num_dst_nodes()
    4
    """

    def sample_blocks(
        self, g: DGLGraph, seed_nodes: Tensor, exclude_eids: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list]:
        return exact_blocks(
            g, seed_nodes, self.num_layers, self.edge_weight, exclude_eids=exclude_eids
        )


class ControlVariateSampler(BlockSampler):
    """Uniform-seed control-variate blocks (VR-GCN) for ``DataLoader``.

    Parameters
    ----------
    fanouts : list[int]
        Sampled neighbours per layer, first layer first; VR-GCN uses 2.
    edge_weight : str, optional
        ``g.edata`` key of full-graph weights ``a_uv`` (default: mean over in-neighbours).
    prefetch_node_feats, prefetch_labels, prefetch_edge_feats, output_device
        As in :class:`dgl.dataloading.NeighborSampler`.

    Examples
    --------
    >>> import dgl, torch
    >>> import dgl_mvs
    >>> g = dgl.rand_graph(100, 600)
    >>> sampler = dgl_mvs.ControlVariateSampler([2, 2])
    >>> loader = dgl.dataloading.DataLoader(g, torch.arange(40), sampler, batch_size=8)
    >>> input_nodes, output_nodes, blocks = next(iter(loader))
    >>> "mvs_history_weights" in blocks[-1].edata
    True
    """

    def __init__(
        self,
        fanouts: Sequence[int],
        edge_weight: str | None = None,
        prefetch_node_feats: Sequence[str] | None = None,
        prefetch_labels: Sequence[str] | None = None,
        prefetch_edge_feats: Sequence[str] | None = None,
        output_device: torch.device | str | None = None,
    ):
        super().__init__(prefetch_node_feats, prefetch_labels, prefetch_edge_feats, output_device)
        self.fanouts = list(fanouts)
        self.edge_weight = edge_weight

    def sample_blocks(
        self, g: DGLGraph, seed_nodes: Tensor, exclude_eids: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list]:
        return control_variate_blocks(
            g, seed_nodes, self.fanouts, self.edge_weight, exclude_eids=exclude_eids
        )
