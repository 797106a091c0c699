"""dgl_mvs's block kinds as DGL block samplers, and the one place where a kind is chosen.

With ``dgl.dataloading.DataLoader(g, train_nids, sampler, batch_size=..., shuffle=True)`` these
give uniform mini-batches with history blocks (MVS-GNN's inner loop without importance
sampling) or with VR-GCN's control variates.  Wrapped in
:func:`dgl.dataloading.as_edge_prediction_sampler`, they leave the excluded edges
(``exclude="self"``, ``"reverse_id"``, ...) out of every block, as DGL's ``NeighborSampler``
does.

:class:`dgl_mvs.MVSSampler` draws the seeds by importance and builds the blocks with two of
these objects, chosen once by :func:`choose_block_samplers`: the step sampler and the
checkpoint sampler (exact blocks for the pool of a checkpoint step).  The samplers of this
package take an optional ``generator`` in ``sample_blocks``, through which the MVS sampler makes
every step's blocks a function of ``(seed, rank, step)``; :func:`sample_blocks_with` calls any
block sampler, the user's own included, the same way.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import torch
from dgl import DGLGraph
from dgl.dataloading import BlockSampler, NeighborSampler
from torch import Tensor

from .aggregation import _layer_list, aggregation_of
from .blocks import check_num_layers, control_variate_blocks, exact_blocks, history_blocks
from .onehop import OneHopSampler

__all__ = [
    "HistorySampler",
    "ControlVariateSampler",
    "ExactSampler",
    "BLOCK_KINDS",
    "BlockChoice",
    "choose_block_samplers",
    "sample_blocks_with",
]

#: The block kinds :class:`dgl_mvs.MVSSampler` builds by name.
BLOCK_KINDS = ("onehop", "history", "cv", "exact")
#: Fanout per layer of the DGL ``NeighborSampler`` blocks that :class:`dgl_mvs.MVSSampler`
#: falls back to when the model cannot use one-hop blocks (DGL's examples use 10).
FALLBACK_FANOUT = 10


class HistorySampler(BlockSampler):
    """Uniform-seed history blocks (:func:`dgl_mvs.blocks.history_blocks`) for ``DataLoader``.

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
        self, g: DGLGraph, seed_nodes: Tensor, exclude_eids: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, list]:
        return history_blocks(
            g, seed_nodes, self.num_layers, self.edge_weight, exclude_eids=exclude_eids
        )


class ExactSampler(HistorySampler):
    """Full-neighbourhood blocks (:func:`dgl_mvs.blocks.exact_blocks`) that also refresh histories.

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
        self, g: DGLGraph, seed_nodes: Tensor, exclude_eids: Tensor | None = None,
        generator: torch.Generator | None = None,
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
        self, g: DGLGraph, seed_nodes: Tensor, exclude_eids: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, list]:
        """Blocks for ``seed_nodes``, neighbours drawn with ``generator`` (default: global)."""
        return control_variate_blocks(
            g, seed_nodes, self.fanouts, self.edge_weight, generator, exclude_eids=exclude_eids
        )


#: Block samplers whose ``sample_blocks`` take a ``generator``.
_SEEDED = (HistorySampler, ControlVariateSampler, OneHopSampler)


def sample_blocks_with(
    sampler: BlockSampler,
    g: DGLGraph,
    seed_nodes: Tensor,
    exclude_eids: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, list]:
    """``sampler.sample_blocks``, given ``generator`` where the sampler takes one.

    DGL's own block samplers (``NeighborSampler``, ...) draw from DGL's global generator.
    """
    if isinstance(sampler, _SEEDED):
        return sampler.sample_blocks(g, seed_nodes, exclude_eids, generator=generator)
    return sampler.sample_blocks(g, seed_nodes, exclude_eids)


class BlockChoice(NamedTuple):
    """The block samplers of an :class:`dgl_mvs.MVSSampler`, chosen once."""

    #: ``"onehop"``, ``"history"``, ``"cv"``, ``"exact"`` or ``"custom"`` (a block sampler given).
    kind: str
    #: Blocks of an ordinary step.
    step: BlockSampler
    #: Blocks of a checkpoint step (the exact pool pass), or None without checkpoint steps.
    checkpoint: BlockSampler | None
    num_layers: int | None
    #: Sampled neighbours per layer (one-hop and control-variate blocks), else None.
    fanouts: list[int] | None


def _custom_num_layers(block_sampler: BlockSampler, num_layers: int | None,
                       model: object) -> int | None:
    """The number of blocks of a user's block sampler: ``num_layers``, else its fanouts (DGL's
    ``NeighborSampler``, ``LaborSampler``), else the model's layers; None if none tells."""
    sampler_layers = getattr(block_sampler, "fanouts", None)
    sampler_layers = len(sampler_layers) if isinstance(sampler_layers, (list, tuple)) else None
    if num_layers is not None:
        check_num_layers(num_layers)
        if sampler_layers is not None and sampler_layers != num_layers:
            raise ValueError(
                f"num_layers={num_layers}, but the {type(block_sampler).__name__} passed as "
                f"block_sampler builds {sampler_layers} blocks (one per fanout): pass "
                f"num_layers={sampler_layers}, or give it {num_layers} fanouts"
            )
        return num_layers
    if sampler_layers is not None:
        return sampler_layers
    if model is not None:
        try:
            return len(_layer_list(model))
        except ValueError:
            return None
    return None


def onehop_refusal(model: object) -> str | None:
    """Why ``model``'s layers cannot run on one-hop blocks (None if they can).

    One-hop blocks precompute the first layer's aggregation, which needs every layer to
    aggregate linearly (GCN, SAGE-mean, GIN); attention (GAT) and SAGE-pool/LSTM do not.
    """
    try:
        layers = _layer_list(model)
    except ValueError:
        return None  # the layers themselves are not found: OneHopSampler says how to give them
    for index, layer in enumerate(layers):
        try:
            aggregation_of(layer)
        except ValueError:
            return (f"layer {index} ({type(layer).__name__}) does not aggregate its input "
                    "linearly")
    return None


def choose_block_samplers(
    block_sampler: str | BlockSampler | None,
    g: DGLGraph,
    *,
    model: object = None,
    num_layers: int | None = None,
    fanouts: Sequence[int] | None = None,
    edge_weight: str | None = None,
    prefetch_node_feats: Sequence[str] | None = None,
    prefetch_labels: Sequence[str] | None = None,
    output_device=None,
) -> BlockChoice:
    """The step and checkpoint block samplers for :class:`dgl_mvs.MVSSampler`'s argument.

    A block kind name becomes the block sampler of this package that builds it (the one-hop
    kind is built from ``model``); a block sampler object is used as given, with checkpoint
    steps on the same sampler unless it is a :class:`dgl_mvs.OneHopSampler` (which has no
    checkpoint steps).  Raises ValueError naming what is missing.
    """
    if isinstance(block_sampler, BlockSampler) and fanouts is not None:
        raise ValueError(
            f"fanouts={list(fanouts)} applies to the blocks MVSSampler builds ('onehop', "
            f"'cv'); the {type(block_sampler).__name__} passed as block_sampler has its own: "
            "give them to it (dgl.dataloading.NeighborSampler([10, 10]), "
            "dgl_mvs.OneHopSampler(g, model, fanouts=[-1, 2])) and drop fanouts="
        )
    if block_sampler is None:  # the default: one-hop blocks where the model allows them
        # (with fanouts= the user configures one-hop blocks: OneHopSampler's error then)
        reason = onehop_refusal(model) if model is not None and fanouts is None else None
        if reason is None:
            block_sampler = "onehop"
        else:
            num = len(_layer_list(model))
            fallback = [FALLBACK_FANOUT] * num
            warnings.warn(
                f"MVSSampler: {reason}, so its default one-hop blocks (a precomputed first "
                f"layer) cannot be used: it uses DGL's NeighborSampler({fallback}) blocks "
                "with MVS seeds instead. To choose, pass block_sampler=dgl.dataloading."
                f"NeighborSampler([...]) (or block_sampler='history', history embeddings)",
                UserWarning, stacklevel=3,
            )
            block_sampler = NeighborSampler(fallback)
    if isinstance(block_sampler, str) and block_sampler == "onehop":
        if model is None:
            raise ValueError(
                "MVSSampler's default blocks (exact one-hop blocks over a precomputed first "
                "layer) read how the model's layers aggregate: pass model=model (its layers "
                "in model.layers, as in DGL's examples), or block_sampler='history' / 'cv' / "
                "'exact' / a DGL block sampler with num_layers"
            )
        block_sampler = OneHopSampler(
            g, model, fanouts, edge_weight=edge_weight, prefetch_node_feats=prefetch_node_feats,
            # the same blocks serve evaluation (MVSSampler.evaluation_sampler), with labels
            prefetch_labels=prefetch_labels, output_device=output_device,
        )
    if isinstance(block_sampler, OneHopSampler):
        block_sampler._check_graph(g)  # built for this graph (or one with the same edges)
        block_sampler.auto_refresh = False  # refreshed from update_scores, in this process
        return BlockChoice("onehop", block_sampler, None, len(block_sampler.aggregations),
                           block_sampler.fanouts)
    if isinstance(block_sampler, BlockSampler):
        return BlockChoice("custom", block_sampler, block_sampler,
                           _custom_num_layers(block_sampler, num_layers, model), None)
    if not isinstance(block_sampler, str) or block_sampler not in BLOCK_KINDS:
        raise ValueError(
            f"MVSSampler's blocks must be one of {BLOCK_KINDS} or a "
            f"dgl.dataloading.BlockSampler, got {block_sampler!r}"
        )
    kind = block_sampler
    if kind == "cv":
        if not fanouts:
            raise ValueError("block_sampler='cv' needs fanouts, e.g. fanouts=[2, 2]")
        if num_layers is not None and num_layers != len(fanouts):
            raise ValueError(f"num_layers={num_layers} but {len(fanouts)} fanouts given")
        num_layers = len(fanouts)
    elif num_layers is None:
        raise ValueError(f"block_sampler={kind!r} needs num_layers")
    check_num_layers(num_layers)
    exact = ExactSampler(num_layers, edge_weight)
    if kind == "history":
        step = HistorySampler(num_layers, edge_weight)
    elif kind == "cv":
        step = ControlVariateSampler(fanouts, edge_weight)
    else:
        step = exact
    return BlockChoice(kind, step, exact, num_layers, list(fanouts) if fanouts else None)
